import Testing
import WhisperCore

@Suite struct RingBufferTests {
    @Test func keepsTheLastCapacityElementsOldestFirst() {
        var ring = RingBuffer<Int>(capacity: 3)
        #expect(ring.elements.isEmpty)
        #expect(ring.last == nil)
        ring.append(1)
        ring.append(2)
        #expect(ring.elements == [1, 2])
        #expect(ring.last == 2)
        for value in 3...7 { ring.append(value) }
        #expect(ring.elements == [5, 6, 7])
        #expect(ring.count == 3)
        #expect(ring.last == 7)
    }

    @Test func wrapsAtEveryPosition() {
        for extra in 0..<10 {
            var ring = RingBuffer<Int>(capacity: 4)
            for value in 0..<(4 + extra) { ring.append(value) }
            #expect(ring.elements == Array(extra..<(4 + extra)))
            #expect(ring.last == 3 + extra)
        }
    }
}

@Suite struct ResourceHistoryTests {
    func at(_ seconds: Double) -> Instant { Instant(nanoseconds: Int64(seconds * 1e9)) }

    @Test func cpuIsTheDeltaOverTheElapsedTime() {
        var history = ResourceHistory(capacity: 10)
        history.record(ResourceSample(at: at(100), memoryBytes: 10 << 20, cpuMicroseconds: 1_000_000, restarts: 0))
        // 2.5 s of CPU in 5 s: half a core.
        history.record(ResourceSample(at: at(105), memoryBytes: 20 << 20, cpuMicroseconds: 3_500_000, restarts: 0))
        history.record(ResourceSample(at: at(110), memoryBytes: nil, cpuMicroseconds: 13_500_000, restarts: 1))
        let points = history.points()
        #expect(points.count == 3)
        #expect(points.map(\.at) == [at(100), at(105), at(110)])
        #expect(points[0].cpuPercent == nil)
        #expect(points[1].cpuPercent == 50)
        #expect(points[2].cpuPercent == 200)
        #expect(points.map(\.memoryBytes) == [10 << 20, 20 << 20, nil])
        #expect(points.map(\.restarts) == [0, 0, 1])
    }

    @Test func aCounterThatWentBackOrIsMissingHasNoCPU() {
        var history = ResourceHistory(capacity: 10)
        history.record(ResourceSample(at: at(0), memoryBytes: 1024, cpuMicroseconds: 9_000_000, restarts: 0))
        history.record(ResourceSample(at: at(5), memoryBytes: 1024, cpuMicroseconds: 100, restarts: 0))
        history.record(ResourceSample(at: at(10), memoryBytes: 1024, cpuMicroseconds: nil, restarts: 0))
        history.record(ResourceSample(at: at(15), memoryBytes: 1024, cpuMicroseconds: 500_100, restarts: 0))
        #expect(history.points().map(\.cpuPercent) == [nil, nil, nil, nil])
        history.record(ResourceSample(at: at(20), memoryBytes: 1024, cpuMicroseconds: 1_000_100, restarts: 0))
        #expect(history.points().last?.cpuPercent == 10)
    }

    @Test func keepsOneHourAndDropsOutOfOrderSamples() {
        var history = ResourceHistory()
        #expect(ResourceHistory.defaultCapacity == 720)
        for tick in 0..<1000 {
            history.record(ResourceSample(at: at(Double(tick) * 5), memoryBytes: UInt64(tick) << 10, cpuMicroseconds: nil, restarts: tick))
        }
        history.record(ResourceSample(at: at(10), memoryBytes: 0, cpuMicroseconds: nil, restarts: 0))
        let points = history.points()
        #expect(points.count == 720)
        #expect(points.first?.restarts == 280)
        #expect(points.last?.at == at(4995))
        #expect(points.last?.memoryBytes == 999 << 10)
        #expect(ResourceHistory.bytesPerPoint == 16)
    }
}

@Suite struct DashboardAccessTests {
    let now = Instant(nanoseconds: 1_000_000_000)

    @Test func loginNeedsTheExactTokenAndGivesASession() {
        var sessions = DashboardSessions()
        #expect(sessions.login(token: "abc", expected: "abd", id: "s1", csrf: "c1", label: "l1", now: now) == nil)
        #expect(sessions.login(token: "ab", expected: "abc", id: "s1", csrf: "c1", label: "l1", now: now) == nil)
        #expect(sessions.login(token: "", expected: "", id: "s1", csrf: "c1", label: "l1", now: now) == nil)
        #expect(sessions.sessions.isEmpty)
        let session = sessions.login(token: "abc", expected: "abc", id: "s1", csrf: "c1", label: "l1", now: now)
        #expect(session?.csrf == "c1")
        #expect(sessions.session("s1", now: now) == session)
        #expect(sessions.session("s2", now: now) == nil)
        #expect(sessions.session(nil, now: now) == nil)
        #expect(sessions.session("s1", now: now.advanced(by: DashboardSessions.defaultLifetime)) == nil)
        sessions.logout("s1")
        #expect(sessions.session("s1", now: now) == nil)
    }

    @Test func aShorterLifetime_endsASessionSooner() {
        var sessions = DashboardSessions(lifetime: .seconds(60))
        let now = Instant(nanoseconds: 1_000_000_000)
        _ = sessions.login(token: "abc", expected: "abc", id: "s1", csrf: "c1", label: "l1", now: now)
        #expect(sessions.session("s1", now: now.advanced(by: .seconds(59))) != nil)
        #expect(sessions.session("s1", now: now.advanced(by: .seconds(60))) == nil)
    }

    @Test func oldSessionsAreForgottenPastCapacity() {
        var sessions = DashboardSessions()
        for index in 0...DashboardSessions.capacity {
            _ = sessions.login(token: "t", expected: "t", id: "s\(index)", csrf: "c", label: "l", now: now)
        }
        #expect(sessions.sessions.count == DashboardSessions.capacity)
        #expect(sessions.session("s0", now: now) == nil)
        #expect(sessions.session("s\(DashboardSessions.capacity)", now: now) != nil)
    }

    @Test func hostMustBeWhisperdsOwnAddress() {
        #expect(DashboardAccess.isOwnHost("127.0.0.1:9464", listenHost: "127.0.0.1", port: 9464))
        #expect(DashboardAccess.isOwnHost("localhost:9464", listenHost: "127.0.0.1", port: 9464))
        #expect(DashboardAccess.isOwnHost("[::1]:9464", listenHost: "::1", port: 9464))
        #expect(!DashboardAccess.isOwnHost("evil.example:9464", listenHost: "127.0.0.1", port: 9464))
        #expect(!DashboardAccess.isOwnHost("127.0.0.1:80", listenHost: "127.0.0.1", port: 9464))
        #expect(!DashboardAccess.isOwnHost(nil, listenHost: "127.0.0.1", port: 9464))
        #expect(!DashboardAccess.isOwnHost("localhost:9464", listenHost: "10.0.0.5", port: 9464))
    }

    @Test func changesNeedSessionOriginAndCSRF() {
        let session = DashboardSessions.Session(id: "s", csrf: "csrf-1", label: "l", created: now)
        let host = "127.0.0.1:9464"
        #expect(DashboardAccess.mayChange(session: session, csrfHeader: "csrf-1", origin: "http://127.0.0.1:9464", host: host) == .allowed)
        guard case .refused(401, _) = DashboardAccess.mayChange(session: nil, csrfHeader: "csrf-1", origin: "http://127.0.0.1:9464", host: host)
        else { Issue.record("no session must be 401"); return }
        for (csrf, origin) in [("csrf-1", nil), ("csrf-1", "http://evil.example"), ("csrf-1", "null"), (nil, "http://127.0.0.1:9464"), ("csrf-2", "http://127.0.0.1:9464")] {
            guard case .refused(403, _) = DashboardAccess.mayChange(session: session, csrfHeader: csrf, origin: origin, host: host) else {
                Issue.record("csrf \(csrf ?? "nil") origin \(origin ?? "nil") must be refused")
                continue
            }
        }
    }

    @Test func cookiesAreFoundByName() {
        #expect(DashboardAccess.cookie("a", in: "a=1; b=2") == "1")
        #expect(DashboardAccess.cookie("b", in: "a=1; b=2") == "2")
        #expect(DashboardAccess.cookie("c", in: "a=1; b=2") == nil)
        #expect(DashboardAccess.cookie("ab", in: "a=1;b=2") == nil)
        #expect(DashboardAccess.cookie("a", in: nil) == nil)
    }

    @Test func constantTimeEqualsIsEquality() {
        #expect(DashboardSessions.constantTimeEquals("", ""))
        #expect(DashboardSessions.constantTimeEquals("xyz", "xyz"))
        #expect(!DashboardSessions.constantTimeEquals("xyz", "xy"))
        #expect(!DashboardSessions.constantTimeEquals("xy", "xyz"))
        #expect(!DashboardSessions.constantTimeEquals("xyz", "xya"))
    }
}
