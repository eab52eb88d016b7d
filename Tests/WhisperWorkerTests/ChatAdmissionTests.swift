import Foundation
import Synchronization
import Testing
import WhisperChat
import WhisperConcurrency
@testable import WhisperWorker

/// The worker's admission adapter with a fake clock: its refusals, its concurrency slots, and
/// the budget's file across a restart.
@Suite struct ChatAdmissionTests {
    /// A clock the test moves.
    final class FakeClock: Sendable {
        let seconds = Locked<Double>(1_000_000)
        func advance(_ by: Double) { seconds.withLock { $0 += by } }
        var now: @Sendable () -> Double { { [self] in seconds.withLock { $0 } } }
    }

    private func settings(_ environment: [String: String]) throws -> AdmissionSettings {
        try AdmissionSettings.from(environment).get()
    }

    @Test func theRateLimit_refusesWithWhenToComeBack_andAMessageNamingTheSetting() throws {
        let clock = FakeClock()
        let admission = ChatAdmission(settings: try settings(["CHAT_RATE_LIMIT": "2/1m"]), budgetPath: nil, now: clock.now, log: { _ in })
        #expect(admission.admitUser("u") == nil)
        #expect(admission.admitUser("u") == nil)
        let refusal = try #require(admission.admitUser("u"))
        #expect(refusal.retryAfterSeconds == 30)
        #expect(refusal.message == "rate limit: at most 2 chats per user per 1m (CHAT_RATE_LIMIT=2/1m); try again in 30 s")
        clock.advance(30)
        #expect(admission.admitUser("u") == nil)
        #expect(ChatAdmission(settings: AdmissionSettings(), budgetPath: nil, log: { _ in }).admitUser("u") == nil, "no limit set")
    }

    @Test func concurrentWork_isBounded_andASlotComesBackAtTheEnd() throws {
        let admission = ChatAdmission(settings: try settings(["LLM_MAX_CONCURRENT": "2"]), budgetPath: nil, log: { _ in })
        #expect(admission.begin() == nil)
        #expect(admission.begin() == nil)
        let refusal = try #require(admission.begin())
        #expect(refusal.retryAfterSeconds == 1)
        #expect(refusal.message == "too many LLM calls in progress (LLM_MAX_CONCURRENT=2); try again")
        admission.finish(tokens: 0)
        #expect(admission.begin() == nil)
    }

    @Test func theBudget_isSpent_persisted_restoredAfterARestart_andResetAtTheWindow() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("whisperd-budget-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/budget/elena"
        let clock = FakeClock()  // 1,000,000 s since the epoch: 49,600 s into 1970-01-12.
        let budget = try settings(["LLM_TOKEN_BUDGET": "100/1d"])
        let first = ChatAdmission(settings: budget, budgetPath: path, now: clock.now, log: { _ in })
        #expect(first.begin() == nil)
        first.finish(tokens: 120)
        #expect(first.remainingTokens() == 0)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "950400 120\n")
        let refusal = try #require(first.begin())
        #expect(refusal.retryAfterSeconds == 950_400 + 86_400 - 1_000_000)
        #expect(refusal.message.hasPrefix("the character's LLM token budget is spent (LLM_TOKEN_BUDGET=100/1d); it resets at 1970-01-13T00:00:00Z"))

        // A new process in the same window remembers; a record it cannot read is said, not trusted.
        let lines = Locked<[String]>([])
        let restarted = ChatAdmission(settings: budget, budgetPath: path, now: clock.now, log: { line in lines.withLock { $0.append(line) } })
        #expect(restarted.begin() != nil)
        try "garbage".write(toFile: path, atomically: true, encoding: .utf8)
        let unreadable = ChatAdmission(settings: budget, budgetPath: path, now: clock.now, log: { line in lines.withLock { $0.append(line) } })
        #expect(unreadable.remainingTokens() == 100)
        #expect(lines.withLock { $0 } == ["token budget: \(path) cannot be read; counting from zero"])

        // The next day, a new budget.
        clock.advance(86_400)
        #expect(restarted.begin() == nil)
        #expect(restarted.remainingTokens() == 100)
    }
}
