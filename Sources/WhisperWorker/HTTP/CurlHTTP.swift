import CWorkerLibs
import Foundation
import Synchronization
import WhisperConcurrency

/// Blocking HTTP requests on libcurl, for worker threads: the LLM client and Discord's REST
/// API. Easy handles are pooled so connections (and TLS sessions) are reused. Header values
/// given here (an API key, a bot token) are never put into an error's text.
final class CurlHTTP: Sendable {
    struct Answer: Sendable {
        var status: Int
        /// Lower-case names; the last value of a repeated header.
        var headers: [String: String]
        var body: [UInt8]
    }

    struct Failure: Error, Sendable, CustomStringConvertible {
        var timedOut: Bool
        var description: String
    }

    private let idleHandles = Locked<[CurlHandle]>([])

    /// A libcurl easy handle. Only one thread uses one at a time: it is taken out of the pool
    /// for a request and put back after.
    private struct CurlHandle: @unchecked Sendable {
        // @unchecked: the handle moves between threads only through the pool's lock, and is
        // used by one thread at a time (libcurl's rule for easy handles).
        let raw: UnsafeMutableRawPointer
    }

    /// libcurl's global set-up, once (the worker loaded the library before making a client).
    static let globalInit: Void = {
        if (try? WorkerLibraries.load(.curl)) != nil { _ = wl_curl_global_init(Int(CURL_GLOBAL_ALL)) }
    }()

    init() { _ = Self.globalInit }

    deinit {
        idleHandles.withLock { handles in for handle in handles { wl_curl_easy_cleanup(handle.raw) } }
    }

    /// One request, as either path (blocking here, or `CurlMulti`) sends it.
    struct Request: Sendable {
        var method: String
        var url: String
        var headers: [String]
        var body: [UInt8]?
        var connectTimeout: Double
        var timeout: Double
        var bodyLimit = 8 << 20
        /// The response headers to keep (lower-case names); nil keeps all.
        var keptHeaders: [String]?
    }

    /// Collects what libcurl hands the callbacks, and owns the header list, for one transfer.
    final class Exchange {
        var body: [UInt8] = []
        var headers: [String: String] = [:]
        let limit: Int
        /// Lower-case names of the headers to keep; nil keeps all.
        let kept: [[UInt8]]?
        var headerList: UnsafeMutablePointer<curl_slist>?

        init(limit: Int, keeping kept: [String]? = nil) {
            self.limit = limit
            self.kept = kept?.map { Array($0.utf8) }
        }

        /// One header line as libcurl gives it (`Name: value\r\n`, or a status line).
        func take(headerLine line: UnsafeRawBufferPointer) {
            if line.starts(with: "HTTP/".utf8) {
                headers = [:]  // A new response (after a 100 Continue or a redirect).
                return
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { return }
            var name = [UInt8]()
            name.reserveCapacity(colon)
            for byte in line[..<colon] where byte != 0x20 && byte != 0x09 {
                name.append(byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte)
            }
            if let kept, !kept.contains(name) { return }
            var value = line[(colon + 1)...]
            while let first = value.first, first == 0x20 || first == 0x09 { value = value.dropFirst() }
            while let last = value.last, last == 0x20 || last == 0x09 || last == 0x0D || last == 0x0A { value = value.dropLast() }
            headers[String(decoding: name, as: UTF8.self)] = String(decoding: value, as: UTF8.self)
        }

        deinit { wl_curl_slist_free_all(headerList) }
    }

    func perform(
        method: String, url: String, headers: [String], body: [UInt8]?, connectTimeout: Double, timeout: Double,
        bodyLimit: Int = 8 << 20
    ) -> Result<Answer, Failure> {
        let handle = idleHandles.withLock { $0.popLast() } ?? wl_curl_easy_init().map(CurlHandle.init)
        guard let handle else { return .failure(Failure(timedOut: false, description: "curl_easy_init failed")) }
        defer {
            wl_curl_easy_reset(handle.raw)
            idleHandles.withLock { $0.append(handle) }
        }
        let request = Request(
            method: method, url: url, headers: headers, body: body, connectTimeout: connectTimeout, timeout: timeout, bodyLimit: bodyLimit)
        let exchange = Exchange(limit: bodyLimit)
        Self.configure(handle.raw, request, exchange)
        return Self.answer(handle.raw, wl_curl_easy_perform(handle.raw), exchange)
    }

    /// Sets `curl` up for `request`; `exchange` must live until the transfer is over.
    static func configure(_ curl: UnsafeMutableRawPointer, _ request: Request, _ exchange: Exchange) {
        let context = Unmanaged.passUnretained(exchange).toOpaque()
        for header in request.headers { exchange.headerList = wl_curl_slist_append(exchange.headerList, header) }
        _ = wl_curl_set_string(curl, CURLOPT_URL, request.url)
        _ = wl_curl_set_pointer(curl, CURLOPT_HTTPHEADER, exchange.headerList)
        _ = wl_curl_set_string(curl, CURLOPT_CUSTOMREQUEST, request.method)
        _ = wl_curl_set_long(curl, CURLOPT_NOSIGNAL, 1)
        _ = wl_curl_set_long(curl, CURLOPT_CONNECTTIMEOUT_MS, Int(request.connectTimeout * 1000))
        _ = wl_curl_set_long(curl, CURLOPT_TIMEOUT_MS, Int(max(0.001, request.timeout) * 1000))
        _ = wl_curl_set_pointer(curl, CURLOPT_WRITEDATA, context)
        _ = wl_curl_set_write_function(curl, CURLOPT_WRITEFUNCTION) { data, size, count, context in
            let exchange = Unmanaged<Exchange>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            guard exchange.body.count + length <= exchange.limit, let data else { return 0 }
            data.withMemoryRebound(to: UInt8.self, capacity: length) { exchange.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: length)) }
            return length
        }
        _ = wl_curl_set_pointer(curl, CURLOPT_HEADERDATA, context)
        _ = wl_curl_set_write_function(curl, CURLOPT_HEADERFUNCTION) { data, size, count, context in
            let exchange = Unmanaged<Exchange>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            guard let data else { return length }
            exchange.take(headerLine: UnsafeRawBufferPointer(start: data, count: length))
            return length
        }
        if let body = request.body {
            // Copied by libcurl, so the transfer does not depend on this array's lifetime.
            _ = wl_curl_set_long(curl, CURLOPT_POSTFIELDSIZE, body.count)
            if body.isEmpty {
                _ = wl_curl_set_string(curl, CURLOPT_COPYPOSTFIELDS, "")
            } else {
                body.withUnsafeBufferPointer { bytes in
                    _ = wl_curl_set_pointer(curl, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress!))
                }
            }
        }
    }

    /// The outcome of a finished transfer.
    static func answer(_ curl: UnsafeMutableRawPointer, _ code: CURLcode, _ exchange: Exchange) -> Result<Answer, Failure> {
        guard code == CURLE_OK else {
            return .failure(Failure(timedOut: code == CURLE_OPERATION_TIMEDOUT, description: String(cString: wl_curl_easy_strerror(code))))
        }
        var status = 0
        _ = wl_curl_get_long(curl, CURLINFO_RESPONSE_CODE, &status)
        return .success(Answer(status: status, headers: exchange.headers, body: exchange.body))
    }
}
