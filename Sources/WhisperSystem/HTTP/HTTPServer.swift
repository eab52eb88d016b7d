import CWhisperLinux
import Glibc

/// A small HTTP/1.1 server on the event loop, for status endpoints (`/health`) that must not
/// pull a framework into the supervisor. Keep-alive (a scraper polls over one connection),
/// pipelined requests answered in order, bodies up to 1 MiB, no chunked uploads.
public final class HTTPServer {
    public typealias Handler = (Request) -> Response

    /// Decides at accept time whether a Unix-socket peer may talk to us at all.
    public typealias Authorizer = (PeerCredentials) -> Bool

    let loop: EventLoop
    let listenFD: Int32
    let handler: Handler
    let authorize: Authorizer?
    var connections: [Int32: Connection] = [:]
    /// Every read lands here first (the loop is one thread): no 16 KiB allocation per request.
    var readBuffer = [UInt8](repeating: 0, count: 16384)
    let maxConnections = 256
    var activity: UInt64 = 0
    var isListenerClosed = false
    /// A connection that makes no progress this long is closed: a stalled partial request, an
    /// idle keep-alive, a client that stops reading its answer — so slow clients cannot hold
    /// every slot. Streams and connections waiting for a deferred answer are exempt.
    let idleTimeout: Int64
    /// Armed only while there are connections: no timer at all when nobody is connected.
    var sweepFD: Int32 = -1
    var nextSweep: Int64?

    /// A piece of an answer waiting to go out.
    enum Chunk {
        case bytes([UInt8])
        case file(FileBody)

        var count: Int {
            switch self {
            case .bytes(let bytes): bytes.count
            case .file(let file): file.count
            }
        }
    }

    final class Connection {
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
    func serveInput(_ fd: Int32, _ connection: Connection) {
        while connections[fd] === connection, !connection.isResponding, !connection.input.isEmpty {
            switch Self.parse(connection.input) {
            case .incomplete, .awaitingBody:
                // The parser bounds what an unfinished request may hold (head and body limits).
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

    func scheduleSweep(at time: Int64) {
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

    func drop(_ fd: Int32) {
        guard let connection = connections.removeValue(forKey: fd) else { return }
        loop.remove(fd)
        Glibc.close(fd)
        connection.stream?.closed()
    }
}
