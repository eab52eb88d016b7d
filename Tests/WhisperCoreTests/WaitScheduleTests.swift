import Testing
import WhisperCore

/// `whisperd wait`'s schedule and loop against a hand-advanced clock: attempts "take" the time
/// the test says, pauses advance it, nothing sleeps.
@Suite struct WaitScheduleTests {
    /// Shared by the clock and the attempts, which "take" time by advancing it.
    final class Time {
        var elapsed: Duration = .zero
        var pauses: [Duration] = []
    }

    struct FakeClock: WaitClock {
        let time: Time

        func now() -> Duration { time.elapsed }

        mutating func sleep(_ duration: Duration) {
            time.pauses.append(duration)
            time.elapsed += duration
        }
    }

    @Test func pausesDoubleFromTheFirstToTheCap() {
        let schedule = WaitSchedule(timeout: .seconds(60))
        let pauses = (0..<8).map { schedule.delay(afterAttempt: $0, elapsed: .zero) }
        #expect(pauses == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800), .milliseconds(1600), .seconds(2), .seconds(2), .seconds(2)])
    }

    @Test func theLastPauseEndsBeforeTheDeadline_andNoneIsLeftAfterIt() {
        let schedule = WaitSchedule(timeout: .seconds(10))
        #expect(schedule.delay(afterAttempt: 9, elapsed: .milliseconds(9500)) == .milliseconds(499))
        #expect(schedule.delay(afterAttempt: 9, elapsed: .seconds(10)) == nil)
        #expect(schedule.delay(afterAttempt: 9, elapsed: .seconds(11)) == nil)
        // An attempt gets at most its own timeout, and never more than the time left.
        #expect(schedule.attemptBudget(elapsed: .zero) == .seconds(5))
        #expect(schedule.attemptBudget(elapsed: .milliseconds(8500)) == .milliseconds(1500))
        #expect(schedule.attemptBudget(elapsed: .seconds(12)) == .zero)
    }

    @Test func aDependencyThatAnswersLate_isReadyOnTheAttemptAfterItCameUp() {
        let time = Time()
        var clock = FakeClock(time: time)
        // Up from 1.0 s on; each attempt takes 10 ms.
        let outcome = WaitRun.run(WaitSchedule(timeout: .seconds(30)), clock: &clock) { _ in
            time.elapsed += .milliseconds(10)
            return time.elapsed >= .seconds(1) ? nil : "connect: Connection refused"
        }
        // Attempts at 0, 0.11, 0.32, 0.73 fail; 1.54 answers.
        #expect(outcome == .ready(attempts: 5, after: .milliseconds(1550)))
        #expect(time.pauses == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800)])
    }

    @Test func aDependencyThatNeverAnswers_timesOutAtTheDeadline_withTheLastFailure() {
        let time = Time()
        var clock = FakeClock(time: time)
        var budgets: [Duration] = []
        let outcome = WaitRun.run(WaitSchedule(timeout: .seconds(5)), clock: &clock) { budget in
            budgets.append(budget)
            time.elapsed += .milliseconds(50)
            return "HTTP 503 Service Unavailable"
        }
        guard case .timedOut(let attempts, let after, let lastFailure) = outcome else {
            Issue.record("expected a timeout, got \(outcome)")
            return
        }
        #expect(lastFailure == "HTTP 503 Service Unavailable")
        #expect(after >= .seconds(5) && after < .milliseconds(5100))
        #expect(attempts == budgets.count && attempts == 7)
        // The last attempt had only what was left of the five seconds.
        #expect(budgets.last! < .milliseconds(200))
        #expect(time.pauses.allSatisfy { $0 <= .seconds(2) })
    }

    @Test func anAttemptThatHangs_isCutToTheTimeLeft_andCountsOnce() {
        let time = Time()
        var clock = FakeClock(time: time)
        let outcome = WaitRun.run(WaitSchedule(timeout: .seconds(3), attemptTimeout: .seconds(5)), clock: &clock) { budget in
            time.elapsed += budget  // a connect that hangs until its budget runs out
            return "connect: timed out"
        }
        #expect(outcome == .timedOut(attempts: 1, after: .seconds(3), lastFailure: "connect: timed out"))
    }

    @Test(arguments: [
        ("http://postgres:9464/health", WaitTarget.http(host: "postgres", port: 9464, path: "/health")),
        ("http://db", WaitTarget.http(host: "db", port: 80, path: "/")),
        ("http://[::1]:8080?x=1", WaitTarget.http(host: "::1", port: 8080, path: "/?x=1")),
        ("http://10.0.0.7:8000/api/x", WaitTarget.http(host: "10.0.0.7", port: 8000, path: "/api/x")),
    ])
    func httpTargets(text: String, expected: WaitTarget) throws {
        #expect(try WaitTarget.parseHTTP(text).get() == expected)
    }

    @Test func badTargets_areRefusedWithTheReason() {
        func reason(_ result: Result<WaitTarget, WaitTargetError>) -> String? {
            if case .failure(let error) = result { return error.description }
            return nil
        }
        #expect(reason(WaitTarget.parseHTTP("https://db/health"))?.contains("https is not supported") == true)
        #expect(reason(WaitTarget.parseHTTP("db:80"))?.contains("expected http://") == true)
        #expect(reason(WaitTarget.parseHTTP("http://u:p@db/"))?.contains("credentials") == true)
        #expect(reason(WaitTarget.parseHTTP("http://db:99999/"))?.contains("not a port") == true)
        #expect(reason(WaitTarget.parseHTTP("http://db/a b"))?.contains("path") == true)
        #expect(reason(WaitTarget.parseTCP("postgres"))?.contains("expected HOST:PORT") == true)
        #expect(reason(WaitTarget.parseTCP("po$tgres:5432"))?.contains("not a host") == true)
        #expect(reason(WaitTarget.parseTCP("[::1:5432"))?.contains("unclosed") == true)
        #expect(try! WaitTarget.parseTCP("[::1]:5432").get() == .tcp(host: "::1", port: 5432))
    }
}
