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

extension HTTPLimitsTests {
    @Test func settingsFromTheEnvironment_orTheDefaults_orAClearError() throws {
        #expect(try HTTPLimits.from([:]).get() == HTTPLimits())
        let set = try HTTPLimits.from([
            "API_HEADER_TIMEOUT": "2.5", "API_BODY_TIMEOUT": "3", "API_BODY_MIN_RATE": "100", "API_WRITE_TIMEOUT": "4",
            "API_WRITE_MIN_RATE": "200", "API_IDLE_TIMEOUT": "5", "API_MAX_CONNECTIONS": "64", "API_MAX_BUFFERED_MIB": "8",
        ]).get()
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
    }
}
