import CWhisperLinux
import Glibc

/// A small HTTP/1.1 server on the event loop, for status endpoints (`/health`) that must not
/// pull a framework into the supervisor. Keep-alive (a scraper polls over one connection),
/// pipelined requests answered in order, bodies up to 1 MiB, no chunked uploads.
public final class HTTPServer {
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var query: String
        public var headers: [(String, String)]
        public var body: [UInt8]
        /// The peer's credentials (Unix sockets only; SO_PEERCRED).
        public var peer: PeerCredentials?

        /// `key=value` pairs of the query string (no percent-decoding beyond `+`/`%20`).
        public var queryItems: [String: String] {
            var items: [String: String] = [:]
            for pair in query.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let value = parts.count > 1 ? String(parts[1]).replacingPlusAndSpaces() : ""
                items[String(parts[0])] = value
            }
            return items
        }

        /// The first header called `name` (ASCII case-insensitive, as HTTP field names are).
        public func header(_ name: String) -> String? {
            headers.first { Self.equalsIgnoringASCIICase($0.0, name) }?.1
        }

        static func equalsIgnoringASCIICase(_ left: String, _ right: String) -> Bool {
            var rightBytes = right.utf8.makeIterator()
            for byte in left.utf8 {
                guard let other = rightBytes.next() else { return false }
                if byte != other, byte | 0x20 != other | 0x20 || !(97...122).contains(byte | 0x20) { return false }
            }
            return rightBytes.next() == nil
        }
    }

    /// A large body that many clients fetch (`/metrics` of 300 characters is ~430 KB), kept in a
    /// memory file and sent with sendfile(2): the socket takes the file's pages instead of a
    /// copy of the bytes, which was half of the server's CPU and most of its tail latency.
    /// Never written after it is made, because pages in flight are the file's own.
    public final class FileBody: Sendable {
        public let fd: Int32
        public let count: Int

        /// nil when no memory file can be made (the caller sends the bytes instead).
        public init?(_ bytes: [UInt8], name: String = "http-body") {
            let fd = bytes.withUnsafeBytes { whisper_memfd_with_bytes(name, $0.baseAddress, $0.count) }
            guard fd >= 0 else { return nil }
            self.fd = fd
            self.count = bytes.count
        }

        /// The bytes again (for an encoding made later); nil if they cannot be read.
        public func bytes() -> [UInt8]? {
            var bytes = [UInt8](repeating: 0, count: count)
            let read = bytes.withUnsafeMutableBytes { whisper_pread_all(fd, $0.baseAddress, $0.count, 0) }
            return read == count ? bytes : nil
        }

        deinit { Glibc.close(fd) }
    }

    public struct Response {
        public var status: Int
        public var contentType: String
        public var body: [UInt8]
        /// Sent instead of `body` when set (see ``FileBody``).
        public var file: FileBody?
        /// More header lines (`Content-Encoding`, `Vary`).
        public var extraHeaders: [(String, String)] = []
        /// A streamed response: the head and `body` go out, then the connection stays open
        /// and this is called with a stream to write more to (until either side closes).
        public var stream: ((HTTPStream) -> Void)?
        /// An answer that comes later: called at once with a function that sends the real
        /// response, which must be called on the loop's thread, once. If the client has gone
        /// by then, the response is dropped.
        public var deferred: ((@escaping (Response) -> Void) -> Void)?

        /// A response given later (see ``deferred``).
        public static func later(_ start: @escaping (@escaping (Response) -> Void) -> Void) -> Response {
            var response = Response(status: 500, body: "")
            response.deferred = start
            return response
        }

        public init(status: Int, contentType: String = "application/json", body: String, stream: ((HTTPStream) -> Void)? = nil) {
            self.status = status
            self.contentType = contentType
            self.body = Array(body.utf8)
            self.stream = stream
        }

        public init(status: Int, contentType: String, bytes: [UInt8]) {
            self.status = status
            self.contentType = contentType
            self.body = bytes
            self.stream = nil
        }

        public init(status: Int, contentType: String, file: FileBody) {
            self.status = status
            self.contentType = contentType
            self.body = []
            self.file = file
            self.stream = nil
        }

        /// The body's length on the wire.
        public var bodyCount: Int { file?.count ?? body.count }
    }

    /// The open end of a streamed response. Writes never block the loop: a client that does
    /// not keep up (over 1 MiB behind) is disconnected.
    public final class HTTPStream {
        fileprivate weak var server: HTTPServer?
        fileprivate let fd: Int32
        public var onClose: (() -> Void)?
        public private(set) var isClosed = false

        fileprivate init(server: HTTPServer, fd: Int32) {
            self.server = server
            self.fd = fd
        }

        public func write(_ bytes: [UInt8]) {
            guard !isClosed else { return }
            server?.streamWrite(fd, bytes)
        }

        public func close() {
            guard !isClosed else { return }
            server?.finishStream(fd)
        }

        fileprivate func closed() {
            guard !isClosed else { return }
            isClosed = true
            onClose?()
            onClose = nil
        }
    }

    public typealias Handler = (Request) -> Response

    /// Decides at accept time whether a Unix-socket peer may talk to us at all.
    public typealias Authorizer = (PeerCredentials) -> Bool

    private let loop: EventLoop
    private let listenFD: Int32
    private let handler: Handler
    private let authorize: Authorizer?
    private var connections: [Int32: Connection] = [:]
    /// Every read lands here first (the loop is one thread): no 16 KiB allocation per request.
    private var readBuffer = [UInt8](repeating: 0, count: 16384)
    private let maxConnections = 256
    private var activity: UInt64 = 0
    private var isListenerClosed = false
    /// A connection that makes no progress this long is closed: a stalled partial request, an
    /// idle keep-alive, a client that stops reading its answer — so slow clients cannot hold
    /// every slot. Streams and connections waiting for a deferred answer are exempt.
    private let idleTimeout: Int64
    /// Armed only while there are connections: no timer at all when nobody is connected.
    private var sweepFD: Int32 = -1
    private var nextSweep: Int64?

    /// A piece of an answer waiting to go out.
    private enum Chunk {
        case bytes([UInt8])
        case file(FileBody)

        var count: Int {
            switch self {
            case .bytes(let bytes): bytes.count
            case .file(let file): file.count
            }
        }
    }

    private final class Connection {
        var input: [UInt8] = []
        /// What is left to send, in order: a response's head and its (shared, often cached)
        /// body go out together by sendmsg, never copied into one buffer; a file body follows
        /// its head by sendfile.
        var pending: [Chunk] = []
        var pendingBytes = 0
        /// How much of `pending[0]` is sent.
        var sentOfFirst = 0
        var isResponding = false
        var peer: PeerCredentials?
        var stream: HTTPStream?
        var closeAfterFlush = true
        /// When this connection last did something; the least recent idle one makes room.
        var lastActive: UInt64 = 0
        /// Monotonic time of its last progress (bytes in, or an answer fully sent).
        var lastProgressAt: Int64 = 0

        /// A deferred response is being worked out: nothing to send yet.
        var isAwaitingAnswer = false
        /// Watched for writability (the socket buffer was full) instead of input.
        var isWaitingToWrite = false

        var isIdle: Bool { !isResponding && input.isEmpty && stream == nil }

        func enqueue(_ bytes: [UInt8]) {
            guard !bytes.isEmpty else { return }
            pending.append(.bytes(bytes))
            pendingBytes += bytes.count
        }

        func enqueue(_ file: FileBody) {
            guard file.count > 0 else { return }
            pending.append(.file(file))
            pendingBytes += file.count
        }
    }

    public init(
        loop: EventLoop, listenFD: Int32, authorize: Authorizer? = nil, idleTimeoutSeconds: Double = 30, handler: @escaping Handler
    ) throws {
        self.idleTimeout = Int64(idleTimeoutSeconds * 1e9)
        self.loop = loop
        self.listenFD = listenFD
        self.handler = handler
        self.authorize = authorize
        // sendfile(2) has no MSG_NOSIGNAL: a client gone mid-body must give EPIPE, not SIGPIPE.
        _ = whisper_ignore_sigpipe()
        try loop.add(listenFD, .readable) { [unowned self] _ in self.acceptAll() }
    }

    /// Listens on a Unix stream socket created with `mode`; every peer is checked by `authorize`
    /// before anything it sends is read.
    public convenience init(
        loop: EventLoop, unixPath: String, mode: Int32, authorize: @escaping Authorizer, handler: @escaping Handler
    ) throws {
        let fd = whisper_unix_listen(unixPath, mode, 128)
        guard fd >= 0 else { throw SystemError("listen on \(unixPath)") }
        try self.init(loop: loop, listenFD: fd, authorize: authorize, handler: handler)
    }

    /// Listens on a literal loopback (or explicit) TCP address.
    public convenience init(loop: EventLoop, host: String, port: Int, idleTimeoutSeconds: Double = 30, handler: @escaping Handler) throws {
        let fd = whisper_tcp_listen(host, Int32(port), 128)
        guard fd >= 0 else { throw SystemError("listen on \(host):\(port)") }
        try self.init(loop: loop, listenFD: fd, idleTimeoutSeconds: idleTimeoutSeconds, handler: handler)
    }

    /// Takes no new connections; those open are served to the end.
    public func stopAccepting() {
        guard !isListenerClosed else { return }
        isListenerClosed = true
        loop.remove(listenFD)
        Glibc.close(listenFD)
    }

    public func close() {
        stopAccepting()
        for fd in connections.keys { drop(fd) }
        if sweepFD >= 0 {
            loop.remove(sweepFD)
            Glibc.close(sweepFD)
            sweepFD = -1
        }
    }

    private func acceptAll() {
        while true {
            let fd = whisper_accept(listenFD)
            if fd < 0 { return }
            if connections.count >= maxConnections, !dropLeastRecentIdleConnection() {
                // Every slot is busy with a request: say so (best effort, never blocking), then close.
                _ = Self.tooBusy.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
                Glibc.shutdown(fd, Int32(SHUT_WR))
                Glibc.close(fd)
                continue
            }
            let connection = Connection()
            activity += 1
            connection.lastActive = activity
            connection.lastProgressAt = Clock.monotonicNanoseconds()
            scheduleSweep(at: connection.lastProgressAt + idleTimeout)
            connections[fd] = connection
            if let authorize {
                let peer = PeerCredentials(socket: fd)
                connection.peer = peer
                guard let peer, authorize(peer) else {
                    // Refused before a single byte of the request is looked at.
                    respond(fd, connection, Response(status: 403, body: #"{"error":"permission denied"}"#))
                    continue
                }
            }
            do {
                try loop.add(fd, .readable) { [unowned self] _ in self.service(fd) }
            } catch {
                connections[fd] = nil
                Glibc.close(fd)
            }
        }
    }

    private static let tooBusy: [UInt8] = {
        let body = #"{"error":"too many connections; try again"}"#
        return Array(
            ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Retry-After: 1\r\nConnection: close\r\n\r\n" + body).utf8)
    }()

    private func service(_ fd: Int32) {
        guard let connection = connections[fd] else { return }
        if connection.stream != nil {
            // A streaming client only ever sends its goodbye.
            var scratch = [UInt8](repeating: 0, count: 512)
            let count = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR) { return drop(fd) }
            return flush(fd, connection)
        }
        if connection.isAwaitingAnswer {
            // Keep what a pipelining client sends; notice when it goes away.
            var buffer = [UInt8](repeating: 0, count: 16384)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR) { return drop(fd) }
            if count > 0 { connection.input += buffer[0..<count] }
            if connection.input.count > (1 << 20) + 16384 { drop(fd) }
            return
        }
        if connection.isResponding {
            flush(fd, connection)
            return serveInput(fd, connection)
        }
        let count = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            return drop(fd)
        }
        if count == 0 { return drop(fd) }
        activity += 1
        connection.lastActive = activity
        connection.lastProgressAt = Clock.monotonicNanoseconds()
        scheduleSweep(at: connection.lastProgressAt + idleTimeout)
        connection.input.append(contentsOf: readBuffer[0..<count])
        serveInput(fd, connection)
    }

    /// Answers the complete requests in the input, in order (pipelining), while each answer
    /// goes out at once; stops at an incomplete one or when the socket makes us wait.
    private func serveInput(_ fd: Int32, _ connection: Connection) {
        while connections[fd] === connection, !connection.isResponding, !connection.input.isEmpty {
            switch Self.parse(connection.input) {
            case .incomplete:
                if connection.input.count > (1 << 20) + 16384 {
                    respond(fd, connection, Response(status: 413, body: #"{"error":"request too large"}"#))
                }
                return
            case .invalid(let reason):
                respond(fd, connection, Response(status: 400, body: #"{"error":"\#(reason)"}"#))
            case .tooLarge:
                respond(fd, connection, Response(status: 413, body: #"{"error":"request too large (the limit is 1 MiB)"}"#))
            case .complete(var request, let length, let keepAlive):
                connection.input.removeFirst(length)
                request.peer = connection.peer
                respond(fd, connection, handler(request), keepAlive: keepAlive, withBody: request.method != "HEAD")
            }
        }
    }

    private func respond(_ fd: Int32, _ connection: Connection, _ response: Response, keepAlive: Bool = false, withBody: Bool = true) {
        connection.isResponding = true
        if let deferred = response.deferred {
            connection.isAwaitingAnswer = true
            deferred { [weak self, weak connection] answer in
                guard let self, let connection, self.connections[fd] === connection, connection.isAwaitingAnswer else { return }
                connection.isAwaitingAnswer = false
                self.respond(fd, connection, answer, keepAlive: keepAlive, withBody: withBody)
                self.serveInput(fd, connection)
            }
            return
        }
        let keepAlive = keepAlive && response.stream == nil
        let reason = Self.reasons[response.status] ?? "Status"
        let length = response.stream == nil ? "Content-Length: \(response.bodyCount)\r\n" : ""
        let extra = response.extraHeaders.map { "\($0.0): \($0.1)\r\n" }.joined()
        let head = "HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\n"
            + "\(length)\(extra)Connection: \(keepAlive ? "keep-alive" : "close")\r\n\r\n"
        connection.closeAfterFlush = !keepAlive
        connection.enqueue(Array(head.utf8))
        if withBody {
            if let file = response.file { connection.enqueue(file) } else { connection.enqueue(response.body) }
        }
        if let open = response.stream {
            let stream = HTTPStream(server: self, fd: fd)
            connection.stream = stream
            connection.closeAfterFlush = false
            flush(fd, connection)
            if connections[fd] === connection { open(stream) }
            return
        }
        flush(fd, connection)
    }

    fileprivate func streamWrite(_ fd: Int32, _ bytes: [UInt8]) {
        guard let connection = connections[fd] else { return }
        connection.enqueue(bytes)
        if connection.pendingBytes > 1 << 20 { return drop(fd) }
        flush(fd, connection)
    }

    fileprivate func finishStream(_ fd: Int32) {
        guard let connection = connections[fd] else { return }
        connection.closeAfterFlush = true
        flush(fd, connection)
    }

    private func flush(_ fd: Int32, _ connection: Connection) {
        while !connection.pending.isEmpty {
            let written = Self.send(fd, connection.pending, from: connection.sentOfFirst)
            if written < 0 {
                if errno == EAGAIN {
                    if !connection.isWaitingToWrite {
                        loop.modify(fd, .writable)
                        connection.isWaitingToWrite = true
                    }
                    return
                }
                if errno == EINTR { continue }
                return drop(fd)
            }
            connection.pendingBytes -= written
            var remaining = written
            while remaining > 0, let first = connection.pending.first {
                let left = first.count - connection.sentOfFirst
                if remaining < left {
                    connection.sentOfFirst += remaining
                    remaining = 0
                } else {
                    remaining -= left
                    connection.pending.removeFirst()
                    connection.sentOfFirst = 0
                }
            }
        }
        if connection.closeAfterFlush { return drop(fd) }
        connection.lastProgressAt = Clock.monotonicNanoseconds()
        scheduleSweep(at: connection.lastProgressAt + idleTimeout)
        if connection.isWaitingToWrite {
            loop.modify(fd, .readable)
            connection.isWaitingToWrite = false
        }
        if connection.stream == nil { connection.isResponding = false }
    }

    /// One send of what is first in line, the first chunk from `offset`: two byte chunks (a head
    /// and its body) go out together by sendmsg; a head followed by a file body is sent with
    /// MSG_MORE so that it leaves with the body's first segment; a file body goes by sendfile.
    private static func send(_ fd: Int32, _ chunks: [Chunk], from offset: Int) -> Int {
        let first: [UInt8]
        switch chunks[0] {
        case .file(let file):
            return whisper_sendfile(fd, file.fd, Int64(offset), file.count - offset)
        case .bytes(let bytes):
            first = bytes
        }
        return first.withUnsafeBytes { first -> Int in
            var vectors = [iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress! + offset), iov_len: first.count - offset)]
            func sendVectors(_ flags: Int32 = 0) -> Int {
                vectors.withUnsafeMutableBufferPointer { buffer -> Int in
                    var message = msghdr()
                    message.msg_iov = buffer.baseAddress
                    message.msg_iovlen = buffer.count
                    return sendmsg(fd, &message, Int32(MSG_NOSIGNAL) | flags)
                }
            }
            guard chunks.count > 1 else { return sendVectors() }
            switch chunks[1] {
            case .file:
                return sendVectors(Int32(MSG_MORE))
            case .bytes(let secondBytes):
                return secondBytes.withUnsafeBytes { second -> Int in
                    vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress!), iov_len: second.count))
                    return sendVectors()
                }
            }
        }
    }

    private func scheduleSweep(at time: Int64) {
        if sweepFD < 0 {
            sweepFD = whisper_timerfd_create()
            guard sweepFD >= 0, (try? loop.add(sweepFD, .readable, { [unowned self] _ in self.sweep() })) != nil else {
                if sweepFD >= 0 { Glibc.close(sweepFD) }
                sweepFD = -1
                return
            }
        }
        if let nextSweep, nextSweep <= time { return }
        nextSweep = time
        _ = whisper_timerfd_arm_absolute(sweepFD, time)
    }

    /// Closes the connections that made no progress within the idle timeout; re-arms for the next.
    private func sweep() {
        var expirations: UInt64 = 0
        _ = Glibc.read(sweepFD, &expirations, 8)
        nextSweep = nil
        let now = Clock.monotonicNanoseconds()
        var earliest: Int64?
        for (fd, connection) in connections where connection.stream == nil && !connection.isAwaitingAnswer {
            if now - connection.lastProgressAt >= idleTimeout {
                drop(fd)
            } else {
                earliest = min(earliest ?? .max, connection.lastProgressAt)
            }
        }
        if let earliest { scheduleSweep(at: earliest + idleTimeout) }
    }

    /// At the connection limit, an idle keep-alive connection gives way to a new one.
    private func dropLeastRecentIdleConnection() -> Bool {
        guard let (fd, _) = connections.filter({ $0.value.isIdle }).min(by: { $0.value.lastActive < $1.value.lastActive }) else {
            return false
        }
        drop(fd)
        return true
    }

    private func drop(_ fd: Int32) {
        guard let connection = connections.removeValue(forKey: fd) else { return }
        loop.remove(fd)
        Glibc.close(fd)
        connection.stream?.closed()
    }

    public enum ParseResult {
        case incomplete
        case invalid(String)
        /// A `Content-Length` over the 1 MiB limit (413, not read).
        case tooLarge
        /// The request, how many bytes of the input it took, and whether the client keeps the
        /// connection open (HTTP/1.1 unless `Connection: close`; 1.0 only with `keep-alive`).
        case complete(Request, length: Int, keepAlive: Bool)
    }

    /// One request off the front of `bytes` (public for the fuzzer). Works on the bytes, with
    /// no String splitting or generic searching: every request of a busy scraper pays for it.
    public static func parse(_ bytes: [UInt8]) -> ParseResult {
        bytes.withUnsafeBufferPointer { parse(buffer: $0) }
    }

    private static func parse(buffer bytes: UnsafeBufferPointer<UInt8>) -> ParseResult {
        guard let headLength = headEnd(bytes) else {
            return bytes.count > 16384 ? .invalid("headers too large") : .incomplete
        }
        // The head's lines, split at CRLF (the first is the request line).
        var lines: [Range<Int>] = []
        var lineStart = 0
        var index = 0
        while index + 1 < headLength {
            if bytes[index] == 13, bytes[index + 1] == 10 {
                lines.append(lineStart..<index)
                index += 2
                lineStart = index
            } else {
                index += 1
            }
        }
        lines.append(lineStart..<headLength)

        // Method, target and version, separated by runs of spaces.
        var words: [Range<Int>] = []
        var wordStart: Int?
        for position in lines[0] {
            if bytes[position] == 32 {
                if let start = wordStart { words.append(start..<position) }
                wordStart = nil
            } else if wordStart == nil {
                wordStart = position
            }
        }
        if let start = wordStart { words.append(start..<lines[0].upperBound) }
        guard words.count == 3, startsWith(bytes, words[2], "HTTP/1.") else { return .invalid("bad request line") }

        var headers: [(String, String)] = []
        headers.reserveCapacity(lines.count - 1)
        var contentLength: Range<Int>?
        var connectionValues: [Range<Int>] = []
        var hasTransferEncoding = false
        for line in lines.dropFirst() {
            guard let colon = line.first(where: { bytes[$0] == 58 }) else { return .invalid("bad header line") }
            let name = line.lowerBound..<colon
            let value = trimmed(bytes, (colon + 1)..<line.upperBound)
            headers.append((text(bytes, name), text(bytes, value)))
            if contentLength == nil, equalsIgnoringCase(bytes, name, "content-length") { contentLength = value }
            if equalsIgnoringCase(bytes, name, "transfer-encoding") { hasTransferEncoding = true }
            if equalsIgnoringCase(bytes, name, "connection") { connectionValues.append(value) }
        }
        var length = 0
        if let contentLength {
            guard let parsed = Int(text(bytes, contentLength)), parsed >= 0 else { return .invalid("bad content-length") }
            guard parsed <= 1 << 20 else { return .tooLarge }
            length = parsed
        }
        if hasTransferEncoding { return .invalid("chunked bodies are not supported") }
        let bodyStart = headLength + 4
        guard bytes.count - bodyStart >= length else { return .incomplete }

        var sawKeepAlive = false
        var sawClose = false
        for value in connectionValues {
            var tokenStart = value.lowerBound
            for position in value.lowerBound...value.upperBound where position == value.upperBound || bytes[position] == 44 {
                let token = trimmed(bytes, tokenStart..<position)
                if equalsIgnoringCase(bytes, token, "keep-alive") { sawKeepAlive = true }
                if equalsIgnoringCase(bytes, token, "close") { sawClose = true }
                tokenStart = position + 1
            }
        }
        let isHTTP10 = words[2].count == 8 && startsWith(bytes, words[2], "HTTP/1.0")
        let target = words[1]
        let questionMark = target.first { bytes[$0] == 63 }
        return .complete(
            Request(
                method: text(bytes, words[0]), path: text(bytes, target.lowerBound..<(questionMark ?? target.upperBound)),
                query: questionMark.map { text(bytes, ($0 + 1)..<target.upperBound) } ?? "", headers: headers,
                body: Array(bytes[bodyStart..<(bodyStart + length)])),
            length: bodyStart + length, keepAlive: isHTTP10 ? sawKeepAlive : !sawClose)
    }

    /// Where the head's blank line (CRLF CRLF) starts.
    private static func headEnd(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        let offset = whisper_find_blank_line(base, bytes.count)
        return offset < 0 ? nil : offset
    }

    private static func text(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    private static func trimmed(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper, bytes[lower] == 32 || bytes[lower] == 9 { lower += 1 }
        while upper > lower, bytes[upper - 1] == 32 || bytes[upper - 1] == 9 { upper -= 1 }
        return lower..<upper
    }

    private static func startsWith(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ prefix: StaticString) -> Bool {
        guard range.count >= prefix.utf8CodeUnitCount else { return false }
        for offset in 0..<prefix.utf8CodeUnitCount where bytes[range.lowerBound + offset] != prefix.utf8Start[offset] { return false }
        return true
    }

    /// ASCII case-insensitive equality with a lower-case `name`.
    private static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ name: StaticString) -> Bool {
        guard range.count == name.utf8CodeUnitCount else { return false }
        for offset in 0..<range.count {
            var byte = bytes[range.lowerBound + offset]
            if byte >= 65, byte <= 90 { byte += 32 }
            if byte != name.utf8Start[offset] { return false }
        }
        return true
    }

    static let reasons: [Int: String] = [
        200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
        404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
        422: "Unprocessable Entity", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    ]
}

/// Who is on the other end of a Unix socket, as the kernel recorded it at connect()
/// (SO_PEERCRED, SO_PEERGROUPS): no /proc lookup, so it works under `ProtectProc=invisible`
/// and cannot race with the peer exiting.
public struct PeerCredentials: Sendable {
    public let pid: Int32
    public let uid: UInt32
    public let gid: UInt32
    public let supplementaryGroups: [UInt32]

    public init?(socket fd: Int32) {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        guard whisper_peer_credentials(fd, &pid, &uid, &gid) == 0 else { return nil }
        self.pid = pid
        self.uid = uid
        self.gid = gid
        var groups = [gid_t](repeating: 0, count: 256)
        var count = whisper_peer_groups(fd, &groups, Int32(groups.count))
        if count > groups.count {  // More than 256 groups: ask again with room for all.
            groups = [gid_t](repeating: 0, count: Int(count))
            count = whisper_peer_groups(fd, &groups, Int32(groups.count))
        }
        supplementaryGroups = count > 0 ? Array(groups[0..<min(Int(count), groups.count)]) : []
    }

    /// Whether the peer is in group `gid`, as primary or supplementary group.
    public func isMember(ofGroup gid: UInt32) -> Bool {
        self.gid == gid || supplementaryGroups.contains(gid)
    }
}

extension String {
    func replacingPlusAndSpaces() -> String {
        var text = self
        text = text.split(separator: "+", omittingEmptySubsequences: false).joined(separator: " ")
        return text.split(separator: "%20", omittingEmptySubsequences: false).joined(separator: " ")
    }
}
