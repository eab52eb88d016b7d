import Testing
import WhisperSystem

/// Deadlines and shedding as pure functions of a connection's phase and a given time.
@Suite struct HTTPLimitsTests {
    private let second = HTTPLimits.second
    private var limits: HTTPLimits {
        HTTPLimits(
            headerTimeout: 10 * second, bodyTimeout: 5 * second, minimumBodyRate: 1000, writeTimeout: 7 * second,
            minimumWriteRate: 2000, idleTimeout: 30 * second)
    }

    @Test func eachPhaseHasItsDeadline_reckonedFromWhenItBegan() {
        #expect(limits.deadline(.readingHead(since: 100)) == 100 + 10 * second)
        // A body's deadline grows with its declared length, at the minimum rate.
        #expect(limits.deadline(.readingBody(since: 100, length: 0)) == 100 + 5 * second)
        #expect(limits.deadline(.readingBody(since: 100, length: 3000)) == 100 + 8 * second)
        #expect(limits.deadline(.writing(since: 100, bytes: 4000)) == 100 + 9 * second)
        #expect(limits.deadline(.idle(since: 100)) == 100 + 30 * second)
        #expect(limits.deadline(.handling) == nil)
        #expect(limits.deadline(.streaming) == nil)
    }

    @Test func pastItsDeadline_aRequestTimesOut_aWriterIsAborted_anIdleConnectionCloses() {
        let head = ConnectionPhase.readingHead(since: 0)
        #expect(limits.expiry(head, now: 10 * second - 1) == nil)
        #expect(limits.expiry(head, now: 10 * second) == .requestTimeout)
        #expect(limits.expiry(.readingBody(since: 0, length: 1000), now: 6 * second) == .requestTimeout)
        #expect(limits.expiry(.readingBody(since: 0, length: 1000), now: 6 * second - 1) == nil)
        #expect(limits.expiry(.writing(since: 0, bytes: 0), now: 7 * second) == .abort)
        #expect(limits.expiry(.idle(since: 0), now: 30 * second) == .close)
        #expect(limits.expiry(.handling, now: .max) == nil)
        #expect(limits.expiry(.streaming, now: .max) == nil)
    }

    @Test func aZeroRateOrAHugeLength_neverOverflows() {
        var patient = limits
        patient.minimumBodyRate = 0
        #expect(patient.deadline(.readingBody(since: 1, length: 10))! > 1_000_000 * second)
        #expect(limits.deadline(.readingBody(since: 0, length: Int(Int32.max)))! > 0)
    }

    private func standing(_ phase: ConnectionPhase, opened: Int64, completed: Int = 0) -> ConnectionStanding {
        ConnectionStanding(phase: phase, opened: opened, completedRequests: completed)
    }

    @Test func shedding_takesTheOldestThatNeverCompletedARequest_first() {
        let now = 100 * second
        let candidates: [(id: String, standing: ConnectionStanding)] = [
            ("idle since 1", standing(.idle(since: 1), opened: 0, completed: 3)),
            ("second request since 2", standing(.readingHead(since: 2), opened: 0, completed: 1)),
            ("trickler opened 5", standing(.readingHead(since: 5), opened: 5)),
            ("slow body opened 4", standing(.readingBody(since: 9, length: 100), opened: 4)),
            ("being answered", standing(.handling, opened: 0)),
            ("answer going out", standing(.writing(since: 0, bytes: 10), opened: 0)),
            ("streaming", standing(.streaming, opened: 0, completed: 1)),
        ]
        #expect(limits.shedding(candidates, now: now) == "slow body opened 4")
        #expect(limits.shedding(candidates.filter { !$0.id.contains("opened") }, now: now) == "second request since 2")
        #expect(limits.shedding(candidates.filter { $0.id.hasPrefix("idle") || $0.id.hasPrefix("answer") }, now: now) == "idle since 1")
        // A client not reading its answer (slow read) goes before the newcomer is refused.
        #expect(limits.shedding(candidates.filter { ["being answered", "answer going out", "streaming"].contains($0.id) }, now: now) == "answer going out")
        // Every connection is being answered or streams: none is shed (the newcomer gets 503).
        #expect(limits.shedding(candidates.filter { ["being answered", "streaming"].contains($0.id) }, now: now) == nil)
        #expect(limits.shedding([(id: String, standing: ConnectionStanding)](), now: now) == nil)
    }

    /// Between a client's connect and its send the server may have accepted it: one that has
    /// sent nothing goes last for a moment (the newest first), then it is a silent attacker like
    /// any other.
    @Test func shedding_sparesANewConnectionThatHasNotSentYet_forAMoment() {
        let now = 100 * second
        #expect(limits.newConnectionGrace == second / 10)
        let justConnected = ConnectionStanding(phase: .readingHead(since: now - 1), opened: now - 1, completedRequests: 0, hasSentBytes: false)
        let trickling = ConnectionStanding(phase: .readingHead(since: now - 2), opened: now - 2, completedRequests: 0, hasSentBytes: true)
        let idle = standing(.idle(since: now - 1), opened: now - 9 * second, completed: 1)
        #expect(limits.shedding([(id: "just connected", standing: justConnected), (id: "idle", standing: idle)], now: now) == "idle")
        #expect(limits.shedding([(id: "just connected", standing: justConnected), (id: "trickling", standing: trickling)], now: now) == "trickling")
        let writing = standing(.writing(since: 0, bytes: 10), opened: 0, completed: 1)
        #expect(limits.shedding([(id: "just connected", standing: justConnected), (id: "writing", standing: writing)], now: now) == "writing")
        #expect(limits.shedding([(id: "just connected", standing: justConnected)], now: now) == "just connected")
        let justNow = ConnectionStanding(phase: .readingHead(since: now), opened: now, completedRequests: 0, hasSentBytes: false)
        #expect(limits.shedding([(id: "just connected", standing: justConnected), (id: "just now", standing: justNow)], now: now) == "just now")
        #expect(limits.shedding([(id: "just connected", standing: justConnected), (id: "idle", standing: idle)], now: now + second / 10) == "just connected")
    }
}

/// Admission of a new connection: the per-peer limit, the cap, and room over the cap instead of
/// shedding a busy keep-alive connection.
extension HTTPLimitsTests {
    private typealias Candidates = [(id: String, standing: ConnectionStanding)]

    private func admit(_ limits: HTTPLimits, peer: Int = 0, overCap: Int = 0, _ candidates: Candidates, now: Int64) -> Admission<String> {
        limits.admission(peerConnections: peer, connections: candidates.count, overCap: overCap, candidates: candidates, now: now)
    }

    @Test func admission_pastThePerPeerLimit_isRefused_evenWithRoom() {
        var limits = self.limits
        limits.maxConnections = 10
        limits.maxConnectionsPerPeer = 3
        let idle = standing(.idle(since: 0), opened: 0, completed: 1)
        #expect(admit(limits, peer: 2, [("a", idle)], now: 5 * second) == .admit)
        #expect(admit(limits, peer: 3, [("a", idle)], now: 5 * second) == .refuse(.peerLimit))
        // At the cap too: nothing of that peer's (or anyone's) is shed for it.
        let full: Candidates = (0..<10).map { ("c\($0)", standing(.readingHead(since: 0), opened: 0)) }
        #expect(admit(limits, peer: 3, full, now: 5 * second) == .refuse(.peerLimit))
        limits.maxConnectionsPerPeer = nil
        #expect(admit(limits, peer: 300, [("a", idle)], now: 5 * second) == .admit)
    }

    @Test func admission_atTheCap_shedsAStalledConnection_butServesANewcomerOnceRatherThanShedABusyKeepAlive() {
        var limits = self.limits
        limits.maxConnections = 3
        #expect(limits.keepAliveGrace == second)
        #expect(limits.overCapReserve == 1)
        let now = 100 * second
        let busy: Candidates = [
            ("idle a moment", standing(.idle(since: now - second / 2), opened: 0, completed: 40)),
            ("sending its next", standing(.readingHead(since: now - second / 100), opened: 0, completed: 7)),
            ("being answered", standing(.handling, opened: 0, completed: 3)),
        ]
        // Only busy keep-alives (and one being answered): the newcomer is served once.
        #expect(admit(limits, busy, now: now) == .admitOnce)
        // The room over the cap taken: the longest idle of the busy ones gives way after all.
        #expect(admit(limits, overCap: 1, busy, now: now) == .shed("idle a moment"))
        // A connection that never completed a request still goes first (the slowloris rule)…
        let trickler = ("trickler", standing(.readingHead(since: now - 5 * second), opened: now - 5 * second))
        #expect(admit(limits, [trickler] + busy.dropFirst(), now: now) == .shed("trickler"))
        // …and so do a keep-alive idle past the grace and a writer that does not read.
        let stale = ("idle 3 s", standing(.idle(since: now - 3 * second), opened: 0, completed: 2))
        #expect(admit(limits, [stale] + busy.dropFirst(), now: now) == .shed("idle 3 s"))
        let reader = ("slow reader", standing(.writing(since: now - second / 100, bytes: 1 << 20), opened: 0, completed: 1))
        #expect(admit(limits, [reader] + busy.dropFirst(), now: now) == .shed("slow reader"))
        // Every one being answered: refused.
        let answering: Candidates = (0..<3).map { ("h\($0)", standing(.handling, opened: 0, completed: 1)) }
        #expect(admit(limits, answering, now: now) == .refuse(.full))
        #expect(admit(limits, Array(busy.prefix(2)), now: now) == .admit)
    }
}

extension HTTPLimitsTests {
    @Test func settingsFromTheEnvironment_orTheDefaults_orAClearError() throws {
        // The API's defaults are the server's, with a per-peer limit (whisperd's own listeners have none).
        #expect(
            try HTTPLimits.from([:]).get()
                == HTTPLimits(maxConnectionsPerPeer: HTTPLimits.apiConnectionsPerPeer, peerRequestRate: HTTPLimits.apiPeerRequestRate))
        #expect(HTTPLimits().maxConnectionsPerPeer == nil)
        #expect(HTTPLimits().peerRequestRate == nil)
        #expect(try HTTPLimits.from(["API_MAX_CONNECTIONS_PER_PEER": "0"]).get().maxConnectionsPerPeer == nil, "0 turns it off")
        let set = try HTTPLimits.from([
            "API_HEADER_TIMEOUT": "2.5", "API_BODY_TIMEOUT": "3", "API_BODY_MIN_RATE": "100", "API_WRITE_TIMEOUT": "4",
            "API_WRITE_MIN_RATE": "200", "API_IDLE_TIMEOUT": "5", "API_MAX_CONNECTIONS": "64", "API_MAX_BUFFERED_MIB": "8",
            "API_MAX_CONNECTIONS_PER_PEER": "16", "API_PEER_REFUSAL_DELAY": "0.25",
        ]).get()
        #expect(set.maxConnectionsPerPeer == 16)
        #expect(set.refusalDelay == HTTPLimits.second / 4)
        #expect(HTTPLimits().refusalDelay == HTTPLimits.second)
        #expect(try HTTPLimits.from(["API_PEER_REFUSAL_DELAY": "0"]).get().refusalDelay == 0, "0 refuses at once")
        #expect(set.headerTimeout == 2_500_000_000)
        #expect(set.bodyTimeout == 3 * HTTPLimits.second)
        #expect(set.minimumBodyRate == 100)
        #expect(set.writeTimeout == 4 * HTTPLimits.second)
        #expect(set.minimumWriteRate == 200)
        #expect(set.idleTimeout == 5 * HTTPLimits.second)
        #expect(set.maxConnections == 64)
        #expect(set.maxBufferedBytes == 8 << 20)
        for bad in ["0", "-1", "ten", "nan", "inf", "1e12"] {
            #expect(HTTPLimits.from(["API_HEADER_TIMEOUT": bad]) == .failure(.init(description: "API_HEADER_TIMEOUT=\(bad) is not a positive number")))
        }
        #expect(HTTPLimits.from(["API_MAX_CONNECTIONS_PER_PEER": "-3"]) == .failure(.init(description: "API_MAX_CONNECTIONS_PER_PEER=-3 is not a positive number")))
    }

    /// Held refusals go a hundredth of the delay apart, a hundredth of those held at a time (at
    /// least one): every one held can go within a delay.
    @Test func heldRefusals_goAFewAtATime_aTickApart_allWithinADelay() {
        var limits = HTTPLimits()
        #expect(limits.refusalTick == HTTPLimits.second / 100)
        limits.refusalDelay = HTTPLimits.second / 4
        #expect(limits.refusalTick == HTTPLimits.second / 400)
        limits.refusalDelay = 1
        #expect(limits.refusalTick == 1, "never a tick of 0")
        #expect(HTTPLimits.refusalsPerTick(held: 0) == 1)
        #expect(HTTPLimits.refusalsPerTick(held: 1) == 1)
        #expect(HTTPLimits.refusalsPerTick(held: 100) == 1)
        #expect(HTTPLimits.refusalsPerTick(held: 101) == 2)
        #expect(HTTPLimits.refusalsPerTick(held: 448) == 5)
        for held in [1, 37, 100, 448, 512, 5000] {
            // A hundred ticks make a delay.
            #expect(100 * HTTPLimits.refusalsPerTick(held: held) >= held)
        }
    }

    @Test func thePerAddressRequestRate_fromTheEnvironment_aBurstASecondsWorthUnlessSet_zeroTurnsItOff() throws {
        #expect(try HTTPLimits.from(["API_PEER_REQUESTS_PER_SECOND": "0"]).get().peerRequestRate == nil)
        // The per-address limits off (a proxy in front): the rate too, unless it is set.
        #expect(try HTTPLimits.from(["API_MAX_CONNECTIONS_PER_PEER": "0"]).get().peerRequestRate == nil)
        #expect(
            try HTTPLimits.from(["API_MAX_CONNECTIONS_PER_PEER": "0", "API_PEER_REQUESTS_PER_SECOND": "100"]).get().peerRequestRate
                == RequestRate(perSecond: 100, burst: 100))
        #expect(try HTTPLimits.from(["API_PEER_REQUESTS_PER_SECOND": "40"]).get().peerRequestRate == RequestRate(perSecond: 40, burst: 40))
        #expect(
            try HTTPLimits.from(["API_PEER_REQUESTS_PER_SECOND": "40", "API_PEER_REQUEST_BURST": "100"]).get().peerRequestRate
                == RequestRate(perSecond: 40, burst: 100))
        #expect(
            try HTTPLimits.from(["API_PEER_REQUEST_BURST": "7"]).get().peerRequestRate
                == RequestRate(perSecond: HTTPLimits.apiPeerRequestRate.perSecond, burst: 7))
        #expect(HTTPLimits.from(["API_PEER_REQUEST_BURST": "-1"]) == .failure(.init(description: "API_PEER_REQUEST_BURST=-1 is not a positive number")))
    }

    /// A bucket starts full, a request takes a token, an empty one says when its next token is
    /// due, and pipelined requests taken into debt are paid back before the next.
    @Test func aRequestBucket_startsFull_refillsAtItsRate_andPaysBackDebt() {
        let second = HTTPLimits.second
        var bucket = RequestBucket(rate: RequestRate(perSecond: 10, burst: 3), now: 0)
        func has(_ now: Int64) -> Bool { bucket.hasToken(now: now) }
        func next(_ now: Int64) -> Int64 { bucket.nextToken(now: now) }
        for _ in 0..<3 {
            #expect(has(0))
            bucket.take(now: 0)
        }
        #expect(!has(0))
        #expect(next(0) == second / 10)
        #expect(!has(second / 10 - 1))
        #expect(has(second / 10))
        // Never more than the burst, however long it waited.
        for _ in 0..<3 { bucket.take(now: 100 * second) }
        #expect(!has(100 * second))
        // Five in one read with three in the bucket: two in debt, the next token three tenths of a second on.
        for _ in 0..<5 { bucket.take(now: 200 * second) }
        #expect(next(200 * second) == 200 * second + 3 * second / 10)
        #expect(!has(200 * second + 3 * second / 10 - 1))
        #expect(has(200 * second + 3 * second / 10))
        // A thousand at once: in debt by one burst at most, not by a thousand.
        for _ in 0..<1000 { bucket.take(now: 300 * second) }
        #expect(next(300 * second) == 300 * second + 4 * second / 10)
    }
}

@Suite struct PeerAddressTests {
    private func address(_ bytes: [UInt8]) -> PeerAddress {
        var tuple: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &tuple) { raw in for (index, byte) in bytes.enumerated() { raw[index] = byte } }
        return PeerAddress(bytes: tuple)
    }

    /// IPv4 addresses are peers of their own; IPv6 ones count by their /64.
    @Test func ipv4ByAddress_ipv6ByItsSlash64() {
        let v4 = { (last: UInt8) in self.address([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, last]) }
        #expect(v4(1) != v4(2))
        #expect(v4(2).description == "127.0.0.2")
        let v6 = { (network: UInt8, host: UInt8) in self.address([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, network, 0, 0, 0, 0, 0, 0, 0x12, host]) }
        #expect(v6(1, 1) == v6(1, 2), "one /64")
        #expect(v6(1, 1) != v6(2, 1))
        #expect(v6(1, 9).description == "2001:db8:0:1:0:0:0:0")
        #expect(address([]) == .unix)
    }
}
