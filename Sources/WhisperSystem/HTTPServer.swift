import CWhisperLinux
import Glibc

/// A small HTTP/1.1 server on the event loop, for status endpoints (`/health`) that must not
/// pull a framework into the supervisor. One request per connection; bodies up to 1 MiB.
public final class HTTPServer {
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var query: String
        public var headers: [(String, String)]
        public var body: [UInt8]

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }
    }

    public struct Response: Sendable {
        public var status: Int
        public var contentType: String
        public var body: [UInt8]

        public init(status: Int, contentType: String = "application/json", body: String) {
            self.status = status
            self.contentType = contentType
            self.body = Array(body.utf8)
        }
    }

    public typealias Handler = (Request) -> Response

    private let loop: EventLoop
    private let listenFD: Int32
    private let handler: Handler
    private var connections: [Int32: Connection] = [:]
    private let maxConnections = 256

    private final class Connection {
        var input: [UInt8] = []
        var output: [UInt8] = []
        var isResponding = false
    }

    public init(loop: EventLoop, listenFD: Int32, handler: @escaping Handler) throws {
        self.loop = loop
        self.listenFD = listenFD
        self.handler = handler
        try loop.add(listenFD, .readable) { [unowned self] _ in self.acceptAll() }
    }

    /// Listens on a literal loopback (or explicit) TCP address.
    public convenience init(loop: EventLoop, host: String, port: Int, handler: @escaping Handler) throws {
        let fd = whisper_tcp_listen(host, Int32(port), 128)
        guard fd >= 0 else { throw SystemError("listen on \(host):\(port)") }
        try self.init(loop: loop, listenFD: fd, handler: handler)
    }

    public func close() {
        loop.remove(listenFD)
        Glibc.close(listenFD)
        for fd in connections.keys { drop(fd) }
    }

    private func acceptAll() {
        while true {
            let fd = whisper_accept(listenFD)
            if fd < 0 { return }
            if connections.count >= maxConnections {
                Glibc.close(fd)
                continue
            }
            connections[fd] = Connection()
            do {
                try loop.add(fd, .readable) { [unowned self] _ in self.service(fd) }
            } catch {
                connections[fd] = nil
                Glibc.close(fd)
            }
        }
    }

    private func service(_ fd: Int32) {
        guard let connection = connections[fd] else { return }
        if connection.isResponding { return flush(fd, connection) }
        var buffer = [UInt8](repeating: 0, count: 16384)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            return drop(fd)
        }
        if count == 0 { return drop(fd) }
        connection.input += buffer[0..<count]
        switch Self.parse(connection.input) {
        case .incomplete:
            if connection.input.count > (1 << 20) + 16384 { respond(fd, connection, Response(status: 413, body: #"{"error":"request too large"}"#)) }
        case .invalid(let reason):
            respond(fd, connection, Response(status: 400, body: #"{"error":"\#(reason)"}"#))
        case .complete(let request):
            respond(fd, connection, handler(request))
        }
    }

    private func respond(_ fd: Int32, _ connection: Connection, _ response: Response) {
        connection.isResponding = true
        let reason = Self.reasons[response.status] ?? "Status"
        let head = "HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\n"
            + "Content-Length: \(response.body.count)\r\nConnection: close\r\n\r\n"
        connection.output = Array(head.utf8) + response.body
        flush(fd, connection)
    }

    private func flush(_ fd: Int32, _ connection: Connection) {
        while !connection.output.isEmpty {
            let written = connection.output.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 {
                if errno == EAGAIN {
                    loop.modify(fd, .writable)
                    return
                }
                if errno == EINTR { continue }
                return drop(fd)
            }
            connection.output.removeFirst(written)
        }
        drop(fd)
    }

    private func drop(_ fd: Int32) {
        guard connections.removeValue(forKey: fd) != nil else { return }
        loop.remove(fd)
        Glibc.close(fd)
    }

    enum ParseResult {
        case incomplete
        case invalid(String)
        case complete(Request)
    }

    static func parse(_ bytes: [UInt8]) -> ParseResult {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headEnd = bytes.firstRange(of: separator) else {
            return bytes.count > 16384 ? .invalid("headers too large") : .incomplete
        }
        let head = String(decoding: bytes[..<headEnd.lowerBound], as: UTF8.self)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        guard !lines.isEmpty else { return .invalid("empty request") }
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1.") else { return .invalid("bad request line") }
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { return .invalid("bad header line") }
            headers.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingSpaces()))
        }
        var length = 0
        if let value = headers.first(where: { $0.0.lowercased() == "content-length" })?.1 {
            guard let parsed = Int(value), parsed >= 0, parsed <= 1 << 20 else { return .invalid("bad content-length") }
            length = parsed
        }
        if headers.contains(where: { $0.0.lowercased() == "transfer-encoding" }) {
            return .invalid("chunked bodies are not supported")
        }
        let bodyStart = headEnd.upperBound
        guard bytes.count - bodyStart >= length else { return .incomplete }
        let target = String(requestLine[1])
        let pathAndQuery = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        return .complete(
            Request(
                method: String(requestLine[0]), path: String(pathAndQuery[0]),
                query: pathAndQuery.count > 1 ? String(pathAndQuery[1]) : "", headers: headers,
                body: Array(bytes[bodyStart..<(bodyStart + length)])))
    }

    static let reasons: [Int: String] = [
        200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
        404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
        422: "Unprocessable Entity", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    ]
}

extension Substring {
    func trimmingSpaces() -> String {
        var text = self[...]
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return String(text)
    }
}
