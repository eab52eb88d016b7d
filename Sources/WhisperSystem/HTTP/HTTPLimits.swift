/// How long and how much a client may take of the server: deadlines, not progress, so that a
/// client trickling a byte now and then cannot hold a slot; and caps on what is buffered, so that
/// slow or greedy clients cannot grow the process. Pure: every decision is a function of its
/// inputs and a given `now` (monotonic nanoseconds). The figures are in docs/worker.md.
public struct HTTPLimits: Sendable, Equatable {
    /// A request's head must be in this long after its first byte (or after the connection
    /// opened, for its first request).
    public var headerTimeout: Int64
    /// A body must be in within this long plus its length at `minimumBodyRate`.
    public var bodyTimeout: Int64
    /// Bytes per second a body must at least arrive at, on average.
    public var minimumBodyRate: Int
    /// An answer must be taken by the client within this long plus its length at `minimumWriteRate`.
    public var writeTimeout: Int64
    /// Bytes per second a client must at least read an answer at, on average.
    public var minimumWriteRate: Int
    /// A keep-alive connection between requests is closed after this long.
    public var idleTimeout: Int64
    /// Open connections at most; past it the one that matters least is shed (``shedding(_:now:)``).
    public var maxConnections: Int
    /// Bytes of unfinished requests (heads, bodies, pipelined input) buffered by all connections
    /// together; a request that would go past it gets 503 with `Retry-After`.
    public var maxBufferedBytes: Int
    /// Open connections from one peer address at most (nginx's `limit_conn` keyed on the
    /// address); a newcomer past it is refused with 503 after ``refusalDelay`` (unread meanwhile),
    /// and no connection that address holds is shed for it. nil: no such limit (a Unix socket's
    /// peers all count as one address).
    public var maxConnectionsPerPeer: Int?
    /// How long a connection refused for its address's limit is held, unread, before its 503
    /// (HAProxy's tarpit): a client that reconnects at once when refused would otherwise make the
    /// server spend its time accepting and closing. At most ``maxDelayedRefusals`` at a time;
    /// past that, refused at once. Let go a few at a time (``refusalTick``), so a connection may be
    /// held a little longer. 0: refused at once.
    public var refusalDelay: Int64 = second
    /// Refused connections held at once at most: twice the connection cap.
    public var maxDelayedRefusals: Int { 2 * maxConnections }

    /// How often held refusals are let go (``refusalsPerTick(held:)`` at a time): a hundredth of
    /// ``refusalDelay``. Let go all at once when due, a flood's connections refused together
    /// reconnect together and are refused together again a delay later, each time a burst of
    /// closes and accepts on the loop and in the kernel; let go a few at a time, those bursts
    /// spread out within a few rounds.
    public var refusalTick: Int64 { max(1, refusalDelay / 100) }

    /// Held refusals that are due let go at one ``refusalTick``, at most: a hundredth of those
    /// held (at least one), so that all of them can go within a delay and a connection is held
    /// little past it.
    public static func refusalsPerTick(held: Int) -> Int { max(1, (held + 99) / 100) }
    /// Requests one peer address may send, on average and in a burst (a token bucket per
    /// address, nginx's `limit_req` keyed on the address but without refusing): an address whose
    /// bucket is empty is not read until it has a token again, so its requests wait in the
    /// kernel's buffers and its client blocks on its own sockets, instead of the server doing its
    /// work. nil: no such limit.
    public var peerRequestRate: RequestRate?

    /// The per-address request rate of the worker's API when the operator sets none (``from(_:)``).
    public static let apiPeerRequestRate = RequestRate(perSecond: 500, burst: 500)

    public static let second: Int64 = 1_000_000_000

    /// The per-peer limit of the worker's API when the operator sets none (``from(_:)``).
    public static let apiConnectionsPerPeer = 64

    public init(
        headerTimeout: Int64 = 10 * second, bodyTimeout: Int64 = 10 * second, minimumBodyRate: Int = 8192,
        writeTimeout: Int64 = 10 * second, minimumWriteRate: Int = 16384, idleTimeout: Int64 = 30 * second,
        maxConnections: Int = 256, maxBufferedBytes: Int = 32 << 20, maxConnectionsPerPeer: Int? = nil,
        peerRequestRate: RequestRate? = nil
    ) {
        self.peerRequestRate = peerRequestRate
        self.headerTimeout = headerTimeout
        self.bodyTimeout = bodyTimeout
        self.minimumBodyRate = minimumBodyRate
        self.writeTimeout = writeTimeout
        self.minimumWriteRate = minimumWriteRate
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.maxBufferedBytes = maxBufferedBytes
        self.maxConnectionsPerPeer = maxConnectionsPerPeer
    }

    /// Seconds (as an operator writes them) to the nanoseconds kept here.
    public static func nanoseconds(seconds: Double) -> Int64 { Int64((seconds * 1e9).rounded()) }

    /// When a connection in `phase` runs out of time; nil when the client is not what it waits on.
    public func deadline(_ phase: ConnectionPhase) -> Int64? {
        switch phase {
        case .readingHead(let since): since + headerTimeout
        case .readingBody(let since, let length): since + bodyTimeout + Self.time(length, at: minimumBodyRate)
        case .writing(let since, let bytes): since + writeTimeout + Self.time(bytes, at: minimumWriteRate)
        case .idle(let since): since + idleTimeout
        case .handling, .streaming: nil
        }
    }

    /// What becomes of a connection in `phase` at `now`: nil while it is within its deadline.
    public func expiry(_ phase: ConnectionPhase, now: Int64) -> Expiry? {
        guard let deadline = deadline(phase), now >= deadline else { return nil }
        switch phase {
        case .readingHead, .readingBody: return .requestTimeout
        case .writing: return .abort
        case .idle, .handling, .streaming: return .close
        }
    }

    /// How long `bytes` take at `rate` bytes per second (saturating, never negative).
    private static func time(_ bytes: Int, at rate: Int) -> Int64 {
        guard bytes > 0 else { return 0 }
        guard rate > 0 else { return .max / 4 }
        return Int64(bytes) * second / Int64(rate)
    }

    /// Which connection gives way to a new one at ``maxConnections``: first the oldest that has
    /// not completed a request yet (a client that connects and trickles is the attack, and a
    /// legitimate client sends its request at once), then the one reading a later request the
    /// longest, then the longest idle keep-alive, then the one whose answer has been going out
    /// the longest (a client that does not read it is the slow-read attack), and last one that
    /// has sent nothing yet and was accepted less than ``newConnectionGrace`` before `now`
    /// (between its connect and its send: under a flood of connections it may be the legitimate
    /// client), the newest of those first (the flood's latest reconnection rather than the client
    /// that came before it). Never one whose request is being answered, or that streams: nil
    /// then (503).
    public func shedding<ID>(_ candidates: some Sequence<(id: ID, standing: ConnectionStanding)>, now: Int64) -> ID? {
        rankedShedding(candidates, now: now, sparingBusy: false)?.id
    }

    /// ``shedding(_:now:)`` with the rank the connection was chosen by. `sparingBusy`: a
    /// keep-alive connection that completed a request less than ``keepAliveGrace`` ago, idle or
    /// sending its next, goes after every other (rank 5).
    private func rankedShedding<ID>(
        _ candidates: some Sequence<(id: ID, standing: ConnectionStanding)>, now: Int64, sparingBusy: Bool
    ) -> (id: ID, rank: Int, since: Int64)? {
        var best: (id: ID, rank: Int, since: Int64)?
        for (id, standing) in candidates {
            var rank: Int
            let since: Int64
            switch standing.phase {
            case .readingHead(let started), .readingBody(let started, _):
                if standing.completedRequests > 0 {
                    rank = 1
                    since = started
                } else {
                    if !standing.hasSentBytes, now - standing.opened < newConnectionGrace {
                        rank = 4
                        since = -standing.opened
                    } else {
                        rank = 0
                        since = standing.opened
                    }
                }
            case .idle(let started):
                rank = 2
                since = started
            case .writing(let started, _):
                rank = 3
                since = started
            case .handling, .streaming:
                continue
            }
            if sparingBusy, rank == 1 || rank == 2, now - since < keepAliveGrace {
                rank = 5
            }
            if let current = best, (current.rank, current.since) <= (rank, since) { continue }
            best = (id, rank, since)
        }
        return best
    }

    /// What becomes of a new connection from a peer that has `peerConnections` open, when
    /// `connections` are open in all, `overCap` of them admitted past ``maxConnections`` for one
    /// request. In order: past ``maxConnectionsPerPeer`` it is refused (503; none of that peer's
    /// connections is shed, so a client that floods cannot make room by reconnecting); under
    /// ``maxConnections`` it is admitted; at it, a connection gives way in the order of
    /// ``shedding(_:now:)``, except that keep-alive connections that completed a request less
    /// than ``keepAliveGrace`` ago, idle or sending their next, go last (busy: shed, such a
    /// client reconnects at once and the shedding goes round); when only those are left, the
    /// newcomer is admitted over the cap for one request, answered with `Connection: close` (at
    /// most ``overCapReserve`` at a time; past that a busy one is shed after all); when none may
    /// be shed (every one is being answered or streams), refused (503).
    public func admission<ID: Equatable>(
        peerConnections: Int, connections: Int, overCap: Int, candidates: some Sequence<(id: ID, standing: ConnectionStanding)>,
        now: Int64
    ) -> Admission<ID> {
        if let perPeer = maxConnectionsPerPeer, peerConnections >= perPeer { return .refuse(.peerLimit) }
        if connections < maxConnections { return .admit }
        guard let victim = rankedShedding(candidates, now: now, sparingBusy: true) else { return .refuse(.full) }
        return victim.rank == 5 && overCap < overCapReserve ? .admitOnce : .shed(victim.id)
    }

    /// An idle keep-alive connection that completed a request less than this long ago is busy
    /// (``admission(peerConnections:connections:overCap:candidates:now:)``): a second, or a
    /// tenth of the idle timeout if that is less.
    public var keepAliveGrace: Int64 { min(Self.second, idleTimeout / 10) }

    /// Connections admitted past ``maxConnections`` for one request each, at most: an eighth of
    /// the cap (at least one).
    public var overCapReserve: Int { max(1, maxConnections / 8) }

    /// How long a new connection that has sent nothing is spared by shedding: a client's request
    /// follows the handshake's last packet at once (its own processing time, not a round
    /// trip), so a tenth of a second is ample; a tenth of the header deadline if that is less.
    public var newConnectionGrace: Int64 { min(Self.second / 10, headerTimeout / 10) }
}

/// Requests per second on average, and at most `burst` at once, for one peer address
/// (``HTTPLimits/peerRequestRate``).
public struct RequestRate: Sendable, Equatable {
    public var perSecond: Int
    public var burst: Int

    public init(perSecond: Int, burst: Int) {
        self.perSecond = max(1, perSecond)
        self.burst = max(1, burst)
    }
}

/// A token bucket: `rate.burst` tokens when full, refilled at `rate.perSecond`; a request takes
/// one, and may take it into debt (requests that came in one read, pipelined), at most a burst
/// deep, which later refills pay back. Pure: times are given (monotonic nanoseconds).
public struct RequestBucket: Sendable, Equatable {
    public let rate: RequestRate
    /// Tokens in nanoseconds' worth (a token is `second / perSecond` of them): whole numbers, no
    /// rounding drift.
    private var credit: Int64
    private var updated: Int64

    public init(rate: RequestRate, now: Int64) {
        self.rate = rate
        credit = Int64(rate.burst) * Self.cost(rate)
        updated = now
    }

    private static func cost(_ rate: RequestRate) -> Int64 { HTTPLimits.second / Int64(rate.perSecond) }

    private mutating func refill(_ now: Int64) {
        guard now > updated else { return }
        credit = min(Int64(rate.burst) * Self.cost(rate), credit + (now - updated))
        updated = now
    }

    /// Whether a request may be read at `now`.
    public mutating func hasToken(now: Int64) -> Bool {
        refill(now)
        return credit >= Self.cost(rate)
    }

    /// Counts one request taken at `now`; the debt goes no deeper than one burst, so an address
    /// waits at most a burst's time for requests already taken.
    public mutating func take(now: Int64) {
        refill(now)
        credit = max(credit - Self.cost(rate), -Int64(rate.burst) * Self.cost(rate))
    }

    /// When the bucket holds a token again (`now` or later).
    public mutating func nextToken(now: Int64) -> Int64 {
        refill(now)
        return now + max(0, Self.cost(rate) - credit)
    }
}

/// What becomes of a new connection (``HTTPLimits/admission(peerConnections:connections:overCap:candidates:now:)``).
public enum Admission<ID: Equatable>: Equatable {
    /// Served as any other.
    case admit
    /// Past the cap, served one request and closed.
    case admitOnce
    /// Admitted in the place of this connection, which is closed.
    case shed(ID)
    /// Told 503 (`Retry-After`) and closed, unread.
    case refuse(Refusal)

    public enum Refusal: Equatable, Sendable {
        /// Its address holds ``HTTPLimits/maxConnectionsPerPeer`` already.
        case peerLimit
        /// Every slot holds a request being answered (or a stream).
        case full
    }
}

/// Where a connection is in its life, and since when (monotonic nanoseconds).
public enum ConnectionPhase: Equatable, Sendable {
    /// Waiting for a request's head: since the connection opened, or since the first byte of a
    /// later request (or the end of the answer before, for pipelined input).
    case readingHead(since: Int64)
    /// The head is in; `length` bytes of body are coming, since the head completed.
    case readingBody(since: Int64, length: Int)
    /// The handler is working out the answer: its bounds apply, not the client's.
    case handling
    /// An answer of `bytes` is going out, since it was queued.
    case writing(since: Int64, bytes: Int)
    /// Between requests of a keep-alive connection.
    case idle(since: Int64)
    /// A streamed response (its own backlog cap applies).
    case streaming
}

/// What the sweep does with a connection past its deadline.
public enum Expiry: Equatable, Sendable {
    /// 408 Request Timeout, then close.
    case requestTimeout
    /// Close, saying nothing (an idle keep-alive).
    case close
    /// Close at once, dropping what is unsent (a client that does not read its answer).
    case abort
}

/// What shedding weighs of one connection.
public struct ConnectionStanding: Sendable, Equatable {
    public var phase: ConnectionPhase
    /// When it was accepted.
    public var opened: Int64
    /// Requests it has sent whole.
    public var completedRequests: Int
    /// Whether any byte of a request has come from it.
    public var hasSentBytes: Bool

    public init(phase: ConnectionPhase, opened: Int64, completedRequests: Int, hasSentBytes: Bool = true) {
        self.phase = phase
        self.opened = opened
        self.completedRequests = completedRequests
        self.hasSentBytes = hasSentBytes
    }
}

extension HTTPLimits {
    /// The settings an operator may change, by environment variable (documented in docs/worker.md):
    /// what is not set keeps its default (the per-peer limit: ``apiConnectionsPerPeer``;
    /// `API_MAX_CONNECTIONS_PER_PEER=0` turns it off, `API_PEER_REFUSAL_DELAY=0` refuses at once;
    /// the per-address request rate: ``apiPeerRequestRate``, off with the per-peer limit unless
    /// set, `API_PEER_REQUESTS_PER_SECOND=0` turns it off, a burst not set is a second's worth); a value that is not a positive number is an error
    /// naming the variable, and nothing is taken.
    public static func from(_ environment: [String: String]) -> Result<HTTPLimits, SettingError> {
        var limits = HTTPLimits(maxConnectionsPerPeer: apiConnectionsPerPeer, peerRequestRate: apiPeerRequestRate)
        func number(_ name: String) -> Result<Double?, SettingError> {
            guard let text = environment[name], !text.isEmpty else { return .success(nil) }
            guard let value = Double(text), value.isFinite, value > 0, value < 1e9 else {
                return .failure(SettingError(description: "\(name)=\(text) is not a positive number"))
            }
            return .success(value)
        }
        do {
            if let seconds = try number("API_HEADER_TIMEOUT").get() { limits.headerTimeout = nanoseconds(seconds: seconds) }
            if let seconds = try number("API_BODY_TIMEOUT").get() { limits.bodyTimeout = nanoseconds(seconds: seconds) }
            if let rate = try number("API_BODY_MIN_RATE").get() { limits.minimumBodyRate = Int(rate) }
            if let seconds = try number("API_WRITE_TIMEOUT").get() { limits.writeTimeout = nanoseconds(seconds: seconds) }
            if let rate = try number("API_WRITE_MIN_RATE").get() { limits.minimumWriteRate = Int(rate) }
            if let seconds = try number("API_IDLE_TIMEOUT").get() { limits.idleTimeout = nanoseconds(seconds: seconds) }
            if let count = try number("API_MAX_CONNECTIONS").get() { limits.maxConnections = max(1, Int(count)) }
            if let mebibytes = try number("API_MAX_BUFFERED_MIB").get() { limits.maxBufferedBytes = Int(mebibytes * 1_048_576) }
            if environment["API_PEER_REFUSAL_DELAY"] == "0" {
                limits.refusalDelay = 0
            } else if let seconds = try number("API_PEER_REFUSAL_DELAY").get() {
                limits.refusalDelay = nanoseconds(seconds: seconds)
            }
            if environment["API_MAX_CONNECTIONS_PER_PEER"] == "0" {
                limits.maxConnectionsPerPeer = nil
            } else if let count = try number("API_MAX_CONNECTIONS_PER_PEER").get() {
                limits.maxConnectionsPerPeer = max(1, Int(count))
            }
            if environment["API_PEER_REQUESTS_PER_SECOND"] == "0" {
                limits.peerRequestRate = nil
            } else if limits.maxConnectionsPerPeer == nil, (environment["API_PEER_REQUESTS_PER_SECOND"] ?? "").isEmpty,
                (environment["API_PEER_REQUEST_BURST"] ?? "").isEmpty
            {
                // Per-address limits off (a reverse proxy in front: one address for every client):
                // the rate too, unless it is set.
                limits.peerRequestRate = nil
            } else {
                let perSecond = try number("API_PEER_REQUESTS_PER_SECOND").get().map { max(1, Int($0)) }
                let burst = try number("API_PEER_REQUEST_BURST").get().map { max(1, Int($0)) }
                if perSecond != nil || burst != nil {
                    let rate = perSecond ?? apiPeerRequestRate.perSecond
                    limits.peerRequestRate = RequestRate(perSecond: rate, burst: burst ?? rate)
                }
            }
        } catch {
            return .failure(error)
        }
        return .success(limits)
    }

    public struct SettingError: Error, Equatable, CustomStringConvertible {
        public let description: String

        public init(description: String) { self.description = description }
    }
}
