import Foundation
import Glibc
import WhisperAPI

/// HTTP/1.1 over whisperd's control socket: one request per connection (`Connection: close`).
struct ControlClient {
    let socketPath: String

    struct Response {
        var status: Int
        var body: Data

        var text: String { String(decoding: body, as: UTF8.self) }

        /// The body as a type of the API contract; an answer of another shape is a failure that
        /// says what is missing or wrong (never a silent default).
        func decode<Value: Decodable>(_ type: Value.Type) throws -> Value {
            do {
                return try JSONDecoder().decode(type, from: body)
            } catch let error as DecodingError {
                throw OperationFailed(description: "unexpected answer from whisperd (\(status)): \(Self.explain(error)); body: \(text.prefix(300))")
            }
        }

        /// An error answer's message (`{"error": …}`), else the body as it is.
        var errorMessage: String { (try? JSONDecoder().decode(APIError.self, from: body))?.error ?? text }

        static func explain(_ error: DecodingError) -> String {
            func path(_ context: DecodingError.Context) -> String {
                context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            }
            switch error {
            case .keyNotFound(let key, let context): return "field \(path(context)).\(key.stringValue) is missing"
            case .valueNotFound(_, let context): return "field \(path(context)) is null"
            case .typeMismatch(let type, let context): return "field \(path(context)) is not \(type)"
            case .dataCorrupted(let context): return "\(context.debugDescription) at \(path(context))"
            @unknown default: return "\(error)"
            }
        }
    }

    /// whisperd is not there: exit code 3, with the socket tried.
    struct Unreachable: Error, CustomStringConvertible {
        let path: String
        let reason: String
        var description: String { "cannot reach whisperd at \(path): \(reason) (is whisperd running? --socket or WHISPERD_SOCKET choose another)" }
    }

    func get(_ path: String) throws -> Response { try send("GET", path) }
    func post(_ path: String) throws -> Response { try send("POST", path) }

    /// Sends a request; with `stream`, a 200's body is handed over chunk by chunk as it arrives
    /// (for `logs -f`) and the returned body is empty. Any other answer's body is returned.
    func send(_ method: String, _ path: String, stream: ((Data) -> Void)? = nil) throws -> Response {
        let fd = try connect()
        defer { close(fd) }
        let request = "\(method) \(path) HTTP/1.1\r\nHost: whisperd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        var bytes = Array(request.utf8)
        while !bytes.isEmpty {
            let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR { continue }
                // whisperd may answer (a refusal) and close before reading the request: the
                // answer is still there to read.
                if errno == EPIPE || errno == ECONNRESET { break }
                throw Unreachable(path: socketPath, reason: String(cString: strerror(errno)))
            }
            bytes.removeFirst(sent)
        }
        var head = Data()
        var body = Data()
        var headerComplete = false
        var status = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0, errno == EINTR { continue }
            if count <= 0 { break }
            var chunk = Data(buffer[0..<count])
            if !headerComplete {
                head.append(chunk)
                guard let range = head.range(of: Data("\r\n\r\n".utf8)) else { continue }
                headerComplete = true
                chunk = head.subdata(in: range.upperBound..<head.endIndex)
                head = head.subdata(in: head.startIndex..<range.upperBound)
                status = statusCode(head)
            }
            if let stream, status == 200 { stream(chunk) } else { body.append(chunk) }
        }
        guard headerComplete else { throw Unreachable(path: socketPath, reason: "the connection closed without a response") }
        return Response(status: status, body: body)
    }

    /// The status code in a response head, or 0.
    private func statusCode(_ head: Data) -> Int {
        let statusLine = String(decoding: head, as: UTF8.self).split(separator: "\r\n").first ?? ""
        return statusLine.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
    }

    private func connect() throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Unreachable(path: socketPath, reason: String(cString: strerror(errno))) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard socketPath.utf8.count < capacity else {
            close(fd)
            throw Unreachable(path: socketPath, reason: "path too long")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in socketPath.utf8.enumerated() { raw[index] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Unreachable(path: socketPath, reason: reason)
        }
        return fd
    }
}
