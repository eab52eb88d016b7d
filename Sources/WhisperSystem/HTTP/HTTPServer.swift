import CWhisperLinux
import Glibc

/// A small HTTP/1.1 server on the event loop, for status endpoints (`/health`) that must not
/// pull a framework into the supervisor. Keep-alive (a scraper polls over one connection),
/// pipelined requests answered in order, bodies up to 1 MiB, no chunked uploads; deadlines and
/// caps for slow and greedy clients in ``HTTPLimits``.
public final class HTTPServer {
    public typealias Handler = (Request) -> Response

    /// Decides at accept time whether a Unix-socket peer may talk to us at all.
    public typealias Authorizer = (PeerCredentials) -> Bool

    let loop: EventLoop
    let listenFD: Int32
    /// The listening socket, for handing over across a re-exec.
    public var listeningDescriptor: Int32 { listenFD }
    let handler: Handler
    let authorize: Authorizer?
    /// Deadlines and caps that slow and greedy clients meet (see ``HTTPLimits``).
    public private(set) var limits: HTTPLimits
    var connections: [Int32: Connection] = [:]
    /// Every read lands here first (the loop is one thread): no 16 KiB allocation per request.
    var readBuffer = [UInt8](repeating: 0, count: 16384)
    var isListenerClosed = false
    /// Bytes of unfinished requests that all connections hold (``HTTPLimits/maxBufferedBytes``).
    public private(set) var bufferedBytes = 0
    /// Armed only while there are connections: no timer at all when nobody is connected.
    var sweepFD: Int32 = -1
    var nextSweep: Int64?

    /// Connections open now.
    public var connectionCount: Int { connections.count }
    /// Connections refused at once because their address held its limit (``HTTPLimits/maxConnectionsPerPeer``).
    public private(set) var refusedAtPeerLimit = 0
    /// Connections admitted past the cap for one request (``HTTPLimits/overCapReserve``).
    public private(set) var admittedOverCap = 0
    /// Turns an address waited for a token (``HTTPLimits/peerRequestRate``) instead of being read.
    public private(set) var deferredByRate = 0

    /// The peers with connections open, by address: how many each holds, and which of them wait
    /// for their turn to be read.
    var peers: [PeerAddress: Peer] = [:]
    /// Peers with a connection waiting to be read, in the order of their next turn.
    var turns = FIFO<Peer>()
    /// Peers with a connection waiting whose request bucket is empty: back in ``turns`` when
    /// they have a token (the sweep's timer).
    var parked: [Peer] = []
    /// Connections open past the cap for one request.
    var overCapCount = 0
    /// Refused connections held until their 503 is due (``HTTPLimits/refusalDelay``), oldest first.
    var delayedRefusals = FIFO<(fd: Int32, due: Int64)>()
    var delayedRefusalCount = 0
    /// When held refusals may be let go again (``HTTPLimits/refusalTick``).
    var nextRefusalTick: Int64 = 0
    var sliceWorkID: Int?

    /// Connections read per slice (then the loop looks at its other descriptors: new
    /// connections, answers ready to go out). A client waits for at most one slice of other
    /// peers' reads once its request is in.
    static let sliceSize = 32
    /// Connections accepted per turn of the listener at most.
    static let acceptBatch = 256

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

    /// One peer address's connections: how many are open, and those waiting to be read, new
    /// ones (no request completed yet) before the rest.
    final class Peer {
        let address: PeerAddress
        var connections = 0
        var newWaiting = FIFO<Connection>()
        var othersWaiting = FIFO<Connection>()
        /// In ``turns``, or parked until it has a token.
        var hasTurn = false
        /// Its requests' token bucket (``HTTPLimits/peerRequestRate``).
        var bucket: RequestBucket?
        /// When it has a token again, while parked.
        var parkedUntil: Int64?

        init(address: PeerAddress, rate: RequestRate?, now: Int64) {
            self.address = address
            bucket = rate.map { RequestBucket(rate: $0, now: now) }
        }

        func nextWaiting() -> Connection? { newWaiting.popFirst() ?? othersWaiting.popFirst() }

        var isWaiting: Bool { !newWaiting.isEmpty || !othersWaiting.isEmpty }
    }

    final class Connection {
        let fd: Int32
        /// Its peer address's record.
        let source: Peer
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
        /// When it was accepted.
        let opened: Int64
        /// Where it is, and since when: what its deadline is reckoned from.
        var phase: ConnectionPhase
        /// Requests it has sent whole (shedding spares those that have).
        var completedRequests = 0
        /// A read was tried (shedding reads one that was not before judging it).
        var hasBeenRead = false
        /// Some byte of a request came in.
        var hasSentBytes = false
        /// Watched for writability (the socket buffer was full) instead of input.
        var isWaitingToWrite = false
        /// The loop will report it (its registration is one-shot: once reported, it is not again
        /// until re-armed).
        var isArmed = true
        /// Reported ready, waiting for its peer's turn.
        var isWaiting = false
        /// Admitted past the cap: its first answer closes it.
        let isOneShot: Bool

        init(fd: Int32, source: Peer, opened: Int64, isOneShot: Bool) {
            self.fd = fd
            self.source = source
            self.opened = opened
            self.isOneShot = isOneShot
            phase = .readingHead(since: opened)
        }

        /// A deferred response is being worked out: nothing to send yet.
        var isAwaitingAnswer: Bool { phase == .handling }

        var standing: ConnectionStanding {
            ConnectionStanding(phase: phase, opened: opened, completedRequests: completedRequests, hasSentBytes: hasSentBytes)
        }

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
        loop: EventLoop, listenFD: Int32, authorize: Authorizer? = nil, limits: HTTPLimits = HTTPLimits(), handler: @escaping Handler
    ) throws {
        self.limits = limits
        self.loop = loop
        self.listenFD = listenFD
        self.handler = handler
        self.authorize = authorize
        _ = Self.ignoresSIGPIPE
        try loop.add(listenFD, .readable) { [unowned self] _ in self.acceptAll(limit: Self.acceptBatch) }
        sliceWorkID = loop.addSliceWork { [unowned self] in self.readSlice() }
    }

    /// sendfile(2) has no MSG_NOSIGNAL: a client gone mid-body must give EPIPE, not SIGPIPE. Set
    /// once per process: the call also refreshes the spawner's record of signal dispositions, a
    /// global that two servers made on two threads at once would race on.
    private static let ignoresSIGPIPE: Bool = SignalDispositions.ignoreSIGPIPE()

    /// Listens on a Unix stream socket created with `mode`; every peer is checked by `authorize`
    /// before anything it sends is read.
    public convenience init(
        loop: EventLoop, unixPath: String, mode: Int32, authorize: @escaping Authorizer, limits: HTTPLimits = HTTPLimits(),
        handler: @escaping Handler
    ) throws {
        let fd = whisper_unix_listen(unixPath, mode, Self.listenBacklog)
        guard fd >= 0 else { throw SystemError("listen on \(unixPath)") }
        try self.init(loop: loop, listenFD: fd, authorize: authorize, limits: limits, handler: handler)
    }

    /// Listens on a literal loopback (or explicit) TCP address. `reusePort`: `SO_REUSEPORT`, so
    /// the process that replaces this one (a rolling restart) listens beside it meanwhile.
    public convenience init(
        loop: EventLoop, host: String, port: Int, reusePort: Bool = false, limits: HTTPLimits = HTTPLimits(),
        handler: @escaping Handler
    ) throws {
        let fd = whisper_tcp_listen(host, Int32(port), Self.listenBacklog, reusePort ? 1 : 0)
        guard fd >= 0 else { throw SystemError("listen on \(host):\(port)") }
        try self.init(loop: loop, listenFD: fd, limits: limits, handler: handler)
    }

    /// Connections the kernel queues until they are accepted (capped by `net.core.somaxconn`):
    /// under a flood of connections a newcomer waits its turn in the queue instead of having its
    /// SYN dropped, which costs a client a second before it tries again.
    static let listenBacklog: Int32 = 1024

    /// Takes no new connections; those open are served to the end, each answer then closing its
    /// connection. A keep-alive connection between two requests is closed after `idleGrace`
    /// without a request: a client that was just sending one (a busy client always is) gets it
    /// answered, with `Connection: close`, instead of a connection closed under it. What the
    /// kernel has already queued on the listener is accepted first: with a twin listening on the
    /// same port (`reusePort`), closing a listener drops its queue unless
    /// `net.ipv4.tcp_migrate_req` moves it.
    public func stopAccepting(idleGrace: Int64 = 200_000_000) {
        guard !isListenerClosed else { return }
        acceptAll(limit: .max)
        isListenerClosed = true
        loop.remove(listenFD)
        Glibc.close(listenFD)
        limits.idleTimeout = min(limits.idleTimeout, idleGrace)
        let now = Clock.monotonicNanoseconds()
        for connection in connections.values {
            if case .idle = connection.phase { setPhase(connection, .idle(since: now)) }
        }
    }

    public func close() {
        stopAccepting()
        for fd in connections.keys { drop(fd) }
        while let (fd, _) = delayedRefusals.popFirst() { Glibc.close(fd) }
        delayedRefusalCount = 0
        if let sliceWorkID {
            loop.removeSliceWork(sliceWorkID)
            self.sliceWorkID = nil
        }
        if sweepFD >= 0 {
            loop.remove(sweepFD)
            Glibc.close(sweepFD)
            sweepFD = -1
        }
    }

    private func acceptAll(limit: Int) {
        var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var accepted = 0
        while accepted < limit {
            let fd = withUnsafeMutableBytes(of: &bytes) { whisper_accept_peer(listenFD, $0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
            if fd < 0 { return }
            accepted += 1
            let address = PeerAddress(bytes: bytes)
            let peerConnections = peers[address]?.connections ?? 0
            if connections.count >= limits.maxConnections, peerConnections < limits.maxConnectionsPerPeer ?? .max {
                readUnreadConnections()
            }
            let now = Clock.monotonicNanoseconds()
            let admission = limits.admission(
                peerConnections: peerConnections, connections: connections.count, overCap: overCapCount,
                candidates: connections.lazy.map { (id: $0.key, standing: $0.value.standing) }, now: now)
            switch admission {
            case .admit, .admitOnce:
                break
            case .shed(let victim):
                shed(victim)
            case .refuse(.peerLimit):
                refusedAtPeerLimit += 1
                if delayedRefusalCount < limits.maxDelayedRefusals, limits.refusalDelay > 0 {
                    if delayedRefusals.isEmpty { scheduleSweep(at: now + limits.refusalDelay) }
                    delayedRefusals.append((fd, now + limits.refusalDelay))
                    delayedRefusalCount += 1
                } else {
                    refuse(fd, Self.tooManyFromPeer)
                }
                continue
            case .refuse(.full):
                refuse(fd, Self.tooBusy)
                continue
            }
            let peer = peers[address] ?? {
                let peer = Peer(address: address, rate: limits.peerRequestRate, now: now)
                peers[address] = peer
                return peer
            }()
            let connection = Connection(fd: fd, source: peer, opened: now, isOneShot: admission == .admitOnce)
            peer.connections += 1
            if connection.isOneShot {
                overCapCount += 1
                admittedOverCap += 1
            }
            connections[fd] = connection
            setPhase(connection, connection.phase)
            if let authorize {
                let credentials = PeerCredentials(socket: fd)
                connection.peer = credentials
                guard let credentials, authorize(credentials) else {
                    // Refused before a single byte of the request is looked at.
                    respond(fd, connection, Response(status: 403, body: #"{"error":"permission denied"}"#))
                    continue
                }
            }
            do {
                try loop.add(fd, [.readable, .oneShot]) { [unowned self, weak connection] _ in
                    if let connection { self.ready(connection) }
                }
            } catch {
                drop(fd)
            }
        }
    }

    /// Refuses a connection it has just accepted, without reading its request: what has arrived
    /// is read once (so that closing does not reset the connection before the answer is read),
    /// then `answer`, and close.
    private func refuse(_ fd: Int32, _ answer: [UInt8]) {
        _ = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        Self.tell(fd, answer)
        Glibc.close(fd)
    }

    private static let tooManyFromPeer: [UInt8] = {
        let body = #"{"error":"too many connections from your address; try again"}"#
        return Array(
            ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Retry-After: 1\r\nConnection: close\r\n\r\n" + body).utf8)
    }()

    // MARK: - Turns

    /// The loop reported `connection`: its input waits for its peer's turn (``readSlice()``); an
    /// answer that can go on, or a streaming client's goodbye, is dealt with at once.
    private func ready(_ connection: Connection) {
        connection.isArmed = false
        guard connections[connection.fd] === connection else { return }
        if connection.isWaitingToWrite || connection.stream != nil {
            service(connection.fd)
            rearm(connection)
            return
        }
        guard !connection.isWaiting else { return }
        connection.isWaiting = true
        let peer = connection.source
        if connection.completedRequests == 0 { peer.newWaiting.append(connection) } else { peer.othersWaiting.append(connection) }
        if !peer.hasTurn {
            peer.hasTurn = true
            turns.append(peer)
        }
    }

    /// Reads up to ``sliceSize`` waiting connections, one per peer in turn (a peer with a
    /// thousand connections gets one read per round like a peer with one), each peer's new
    /// connections first; whether some are still waiting.
    private func readSlice() -> Bool {
        var count = 0
        var now: Int64?
        while count < Self.sliceSize, let peer = turns.popFirst() {
            peer.hasTurn = false
            guard peer.isWaiting else { continue }
            if peer.bucket != nil {
                let time = now ?? Clock.monotonicNanoseconds()
                now = time
                if !peer.bucket!.hasToken(now: time) {
                    park(peer, until: peer.bucket!.nextToken(now: time))
                    continue
                }
            }
            guard let connection = peer.nextWaiting() else { continue }
            if peer.isWaiting {
                peer.hasTurn = true
                turns.append(peer)
            }
            guard connection.isWaiting, connections[connection.fd] === connection else { continue }
            connection.isWaiting = false
            count += 1
            service(connection.fd)
            if connections[connection.fd] === connection { rearm(connection) }
        }
        return !turns.isEmpty
    }

    /// Leaves `peer` unread until `time`, when it has a token: its connections stay unarmed, so
    /// what its client sends waits in the kernel.
    private func park(_ peer: Peer, until time: Int64) {
        peer.hasTurn = true
        peer.parkedUntil = time
        parked.append(peer)
        deferredByRate += 1
        scheduleSweep(at: time)
    }

    /// Puts the parked peers whose token is due back in turn; when the next one is due.
    private func unpark(now: Int64) -> Int64? {
        var earliest: Int64?
        parked.removeAll { peer in
            guard let due = peer.parkedUntil else { return true }
            if due > now {
                earliest = min(earliest ?? .max, due)
                return false
            }
            peer.parkedUntil = nil
            turns.append(peer)
            return true
        }
        return earliest
    }

    /// Watches `connection` for `interest`, reported once.
    func arm(_ connection: Connection, _ interest: EventLoop.Interest) {
        loop.modify(connection.fd, interest.union(.oneShot))
        connection.isArmed = true
    }

    /// Watches `connection` again after its turn, for what it waits on.
    private func rearm(_ connection: Connection) {
        guard !connection.isArmed, !connection.isWaiting else { return }
        arm(connection, connection.isWaitingToWrite ? .writable : .readable)
    }

    private static let tooBusy: [UInt8] = {
        let body = #"{"error":"too many connections; try again"}"#
        return Array(
            ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Retry-After: 1\r\nConnection: close\r\n\r\n" + body).utf8)
    }()

    /// Sends a short answer if the socket takes it now (never blocking), and ends our side.
    private static func tell(_ fd: Int32, _ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        Glibc.shutdown(fd, Int32(SHUT_WR))
    }

    /// Too many bytes of unfinished requests held: this request is not taken now.
    private static func overloaded() -> Response {
        var response = Response(status: 503, body: #"{"error":"too many requests in progress; try again"}"#)
        response.extraHeaders = [("Retry-After", "1")]
        return response
    }

    private func service(_ fd: Int32) {
        guard let connection = connections[fd] else { return }
        if connection.stream != nil {
            // A streaming client only ever sends its goodbye.
            var scratch = [UInt8](repeating: 0, count: 512)
            let count = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR) { return drop(fd) }
            return flush(fd, connection)
        }
        if connection.isResponding, !connection.isAwaitingAnswer {
            flush(fd, connection)
            return serveInput(fd, connection)
        }
        let count = readBuffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        connection.hasBeenRead = true
        if count < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            return drop(fd)
        }
        if count == 0 { return drop(fd) }
        if connection.isAwaitingAnswer {
            // Keep what a pipelining client sends meanwhile, within the caps; notice when it goes.
            guard bufferedBytes + count <= limits.maxBufferedBytes,
                connection.input.count + count <= Self.maxHeadBytes + Self.maxBodyBytes
            else { return drop(fd) }
            receive(count, into: connection)
            return
        }
        guard bufferedBytes + count <= limits.maxBufferedBytes else {
            discardInput(connection)
            return respond(fd, connection, Self.overloaded())
        }
        if case .idle = connection.phase { setPhase(connection, .readingHead(since: Clock.monotonicNanoseconds())) }
        receive(count, into: connection)
        serveInput(fd, connection)
    }

    /// Answers the complete requests in the input, in order (pipelining), while each answer
    /// goes out at once; stops at an incomplete one or when the socket makes us wait.
    func serveInput(_ fd: Int32, _ connection: Connection) {
        while connections[fd] === connection, !connection.isResponding, !connection.input.isEmpty {
            switch Self.parse(connection.input) {
            case .incomplete:
                // The parser bounds a head (maxHeadBytes); the header deadline bounds its time.
                return
            case .awaitingBody(_, let length):
                if case .readingBody = connection.phase { return }
                setPhase(connection, .readingBody(since: Clock.monotonicNanoseconds(), length: length))
                return
            case .invalid(let reason):
                discardInput(connection)
                respond(fd, connection, Response(status: 400, body: #"{"error":"\#(reason)"}"#))
            case .tooLarge:
                discardInput(connection)
                respond(fd, connection, Response(status: 413, body: #"{"error":"request too large (the limit is 1 MiB)"}"#))
            case .complete(var request, let length, let keepAlive):
                consumeInput(length, of: connection)
                connection.completedRequests += 1
                if connection.source.bucket != nil { connection.source.bucket!.take(now: Clock.monotonicNanoseconds()) }
                request.peer = connection.peer
                respond(
                    fd, connection, handler(request), keepAlive: keepAlive && !isListenerClosed && !connection.isOneShot,
                    withBody: request.method != "HEAD")
            }
        }
    }

    // MARK: - What is buffered

    private func receive(_ count: Int, into connection: Connection) {
        connection.hasSentBytes = true
        connection.input.append(contentsOf: readBuffer[0..<count])
        bufferedBytes += count
    }

    private func consumeInput(_ count: Int, of connection: Connection) {
        if count == connection.input.count {
            // A large body's buffer is not kept by an idle connection.
            connection.input.removeAll(keepingCapacity: connection.input.capacity <= readBuffer.count)
        } else {
            connection.input.removeFirst(count)
        }
        bufferedBytes -= count
    }

    private func discardInput(_ connection: Connection) {
        bufferedBytes -= connection.input.count
        connection.input = []
    }

    // MARK: - Deadlines

    /// Moves `connection` to `phase` and makes sure the sweep comes by its deadline.
    func setPhase(_ connection: Connection, _ phase: ConnectionPhase) {
        connection.phase = phase
        if let deadline = limits.deadline(phase) { scheduleSweep(at: deadline) }
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

    /// Ends the connections past their deadline (a request that takes too long gets 408); re-arms
    /// for the next deadline.
    private func sweep() {
        var expirations: UInt64 = 0
        _ = Glibc.read(sweepFD, &expirations, 8)
        nextSweep = nil
        let now = Clock.monotonicNanoseconds()
        var earliest = unpark(now: now)
        for (fd, connection) in connections {
            switch limits.expiry(connection.phase, now: now) {
            case nil:
                if let deadline = limits.deadline(connection.phase) { earliest = min(earliest ?? .max, deadline) }
            case .requestTimeout?:
                discardInput(connection)
                respond(fd, connection, Response(status: 408, body: #"{"error":"request not received in time"}"#))
                if connections[fd] === connection, let deadline = limits.deadline(connection.phase) {
                    earliest = min(earliest ?? .max, deadline)
                }
            case .close?:
                drop(fd)
            case .abort?:
                abort(fd)
            }
        }
        if let first = delayedRefusals.first, first.due <= now, now >= nextRefusalTick {
            // A few at a time, a tick apart (``HTTPLimits/refusalTick``): a batch refused together
            // would reconnect together.
            var quota = HTTPLimits.refusalsPerTick(held: delayedRefusalCount)
            while quota > 0, let first = delayedRefusals.first, first.due <= now {
                _ = delayedRefusals.popFirst()
                delayedRefusalCount -= 1
                quota -= 1
                refuse(first.fd, Self.tooManyFromPeer)
            }
            nextRefusalTick = now + limits.refusalTick
        }
        if let first = delayedRefusals.first {
            earliest = min(earliest ?? .max, max(first.due, nextRefusalTick))
        }
        if let earliest { scheduleSweep(at: earliest) }
    }

    /// At the connection limit, before judging which connection gives way (``HTTPLimits/admission(peerConnections:connections:overCap:candidates:now:)``):
    /// connections not read yet (accepted in this burst) are read first, so a newcomer whose
    /// request is waiting in its socket is served, and a silent one is known to be silent; those
    /// of an address out of tokens are not.
    private func readUnreadConnections() {
        let now = Clock.monotonicNanoseconds()
        for fd in connections.keys {
            guard let connection = connections[fd], !connection.hasBeenRead else { continue }
            // An address without a token stays unread (its rate holds here too): judged as silent.
            if connection.source.bucket != nil, !connection.source.bucket!.hasToken(now: now) { continue }
            connection.hasBeenRead = true
            service(fd)
        }
    }

    /// Closes the connection that gives way to a new one: a silent or half-sent one told 503,
    /// an idle one without a word, a writer reset.
    private func shed(_ fd: Int32) {
        guard let connection = connections[fd] else { return }
        switch connection.phase {
        case .idle: drop(fd)
        case .writing: abort(fd)
        default:
            Self.tell(fd, Self.tooBusy)
            drop(fd)
        }
    }

    /// Closes at once: unsent bytes are dropped with the socket (RST), not kept by the kernel
    /// for a client that does not read.
    private func abort(_ fd: Int32) {
        var noLinger = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &noLinger, socklen_t(MemoryLayout<linger>.size))
        drop(fd)
    }

    func drop(_ fd: Int32) {
        guard let connection = connections.removeValue(forKey: fd) else { return }
        bufferedBytes -= connection.input.count
        connection.isWaiting = false
        if connection.isOneShot { overCapCount -= 1 }
        let peer = connection.source
        peer.connections -= 1
        if peer.connections == 0, peers[peer.address] === peer { peers[peer.address] = nil }
        loop.remove(fd)
        Glibc.close(fd)
        connection.stream?.closed()
    }
}

/// A first-in first-out queue: appends at the end, takes from the front, without moving the
/// rest each time.
struct FIFO<Element> {
    private var items: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == items.count }

    var first: Element? { head < items.count ? items[head] : nil }

    mutating func append(_ item: Element) { items.append(item) }

    mutating func popFirst() -> Element? {
        guard head < items.count else { return nil }
        let item = items[head]
        head += 1
        if head == items.count {
            items.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64, head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return item
    }
}
