import CWorkerLibs
import Foundation
import Synchronization
import WhisperCore

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
    private static let globalInit: Void = {
        if (try? WorkerLibraries.load(.curl)) != nil { _ = wl_curl_global_init(Int(CURL_GLOBAL_ALL)) }
    }()

    init() { _ = Self.globalInit }

    deinit {
        idleHandles.withLock { handles in for handle in handles { wl_curl_easy_cleanup(handle.raw) } }
    }

    /// Collects what libcurl hands the callbacks.
    private final class Exchange {
        var body: [UInt8] = []
        var headers: [String: String] = [:]
        let limit: Int
        init(limit: Int) { self.limit = limit }
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
        let curl = handle.raw
        let exchange = Exchange(limit: bodyLimit)
        let context = Unmanaged.passUnretained(exchange).toOpaque()
        var list: UnsafeMutablePointer<curl_slist>?
        for header in headers { list = wl_curl_slist_append(list, header) }
        defer { wl_curl_slist_free_all(list) }

        _ = wl_curl_set_string(curl, CURLOPT_URL, url)
        _ = wl_curl_set_pointer(curl, CURLOPT_HTTPHEADER, list)
        _ = wl_curl_set_string(curl, CURLOPT_CUSTOMREQUEST, method)
        _ = wl_curl_set_long(curl, CURLOPT_NOSIGNAL, 1)
        _ = wl_curl_set_long(curl, CURLOPT_CONNECTTIMEOUT_MS, Int(connectTimeout * 1000))
        _ = wl_curl_set_long(curl, CURLOPT_TIMEOUT_MS, Int(max(0.001, timeout) * 1000))
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
            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
            if line.hasPrefix("HTTP/") {
                exchange.headers = [:]  // A new response (after a 100 Continue or a redirect).
            } else if let colon = line.firstIndex(of: ":") {
                let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
                exchange.headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
            }
            return length
        }
        let code: CURLcode
        if let body {
            code = body.withUnsafeBufferPointer { bytes -> CURLcode in
                _ = wl_curl_set_long(curl, CURLOPT_POSTFIELDSIZE, bytes.count)
                _ = wl_curl_set_pointer(curl, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress ?? UnsafePointer(bitPattern: 1)))
                return wl_curl_easy_perform(curl)
            }
        } else {
            code = wl_curl_easy_perform(curl)
        }
        guard code == CURLE_OK else {
            return .failure(Failure(timedOut: code == CURLE_OPERATION_TIMEDOUT, description: String(cString: wl_curl_easy_strerror(code))))
        }
        var status = 0
        _ = wl_curl_get_long(curl, CURLINFO_RESPONSE_CODE, &status)
        return .success(Answer(status: status, headers: exchange.headers, body: exchange.body))
    }
}
