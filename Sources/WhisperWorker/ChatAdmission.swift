import Foundation
import Synchronization
import WhisperChat
import WhisperConcurrency

/// WhisperChat's admission rules run against the clock, with their state locked (chats start on
/// the loop and end on the store's thread) and the token budget kept in a file across restarts.
final class ChatAdmission: Sendable {
    let settings: AdmissionSettings
    /// nil inside when there is no such limit (a lock, being ~Copyable, is not optional itself).
    private let limiter: Locked<RateLimiter?>
    private let budget: Locked<TokenBudget?>
    private let budgetPath: String?
    private let inProgress = Atomic<Int>(0)
    private let spent = Atomic<Int>(0)
    private let now: @Sendable () -> Double
    private let log: @Sendable (String) -> Void

    enum Refusal: Error, Sendable {
        case rateLimited(retryAfter: Double, rate: Rate)
        case budgetSpent(resetsAt: Double, limit: Rate, now: Double)
        case busy(limit: Int)
    }

    /// `budgetPath`: where the budget's state is kept (read now, written after each spend).
    init(
        settings: AdmissionSettings, budgetPath: String?, now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 },
        log: @escaping @Sendable (String) -> Void
    ) {
        self.settings = settings
        self.now = now
        self.log = log
        limiter = Locked(settings.chatRate.map { RateLimiter($0) })
        self.budgetPath = settings.tokenBudget == nil ? nil : budgetPath
        if let limit = settings.tokenBudget {
            let saved = budgetPath.flatMap { try? String(contentsOfFile: $0, encoding: .utf8) }
            let (restored, wasRead) = TokenBudget.restore(saved ?? "", limit: limit, now: now())
            if saved != nil, !wasRead, let budgetPath { log("token budget: \(budgetPath) cannot be read; counting from zero") }
            budget = Locked(restored)
        } else {
            budget = Locked(nil)
        }
    }

    /// A user's chats (`cost` of them) against `CHAT_RATE_LIMIT`.
    func admitUser(_ userID: String, cost: Int = 1) -> Refusal? {
        guard let rate = settings.chatRate else { return nil }
        let time = now()
        switch limiter.withLock({ $0?.admit(userID, cost: cost, now: time) }) {
        case .admitted?, nil: return nil
        case .refused(let retryAfter)?: return .rateLimited(retryAfter: retryAfter, rate: rate)
        }
    }

    /// One chat's LLM work may start (budget left, a slot under `LLM_MAX_CONCURRENT`); when it
    /// is admitted, ``finish(tokens:)`` must follow, once.
    func begin() -> Refusal? {
        if let limit = settings.tokenBudget {
            let time = now()
            if let resetsAt = budget.withLock({ budget in budget?.isSpent(now: time) == true ? budget?.resetsAt(now: time) : nil }) {
                return .budgetSpent(resetsAt: resetsAt, limit: limit, now: time)
            }
        }
        if let limit = settings.llmMaxConcurrent {
            let after = inProgress.add(1, ordering: .acquiringAndReleasing).newValue
            if after > limit {
                inProgress.subtract(1, ordering: .acquiringAndReleasing)
                return .busy(limit: limit)
            }
        }
        return nil
    }

    /// The end of admitted work that spent `tokens`.
    func finish(tokens: Int) {
        if settings.llmMaxConcurrent != nil { inProgress.subtract(1, ordering: .acquiringAndReleasing) }
        if tokens > 0 { spent.add(tokens, ordering: .relaxed) }
        guard settings.tokenBudget != nil, tokens > 0 else { return }
        let time = now()
        let budgetPath = budgetPath
        let log = log
        budget.withLock { budget in
            budget?.record(tokens, now: time)
            guard let persisted = budget?.persisted, let budgetPath else { return }
            // Written under the lock, so records land in order; atomic (a temporary file
            // renamed), not synced: a crash may forget the last chats' tokens, never tear the record.
            do {
                try FileManager.default.createDirectory(
                    atPath: (budgetPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try Data(persisted.utf8).write(to: URL(fileURLWithPath: budgetPath), options: .atomic)
            } catch {
                log("token budget: cannot write \(budgetPath): \(error)")
            }
        }
    }

    /// Tokens spent since the worker started (reported by the LLM, else estimated).
    var spentTokens: Int { spent.load(ordering: .relaxed) }

    /// Tokens left in the budget's window; nil without a budget.
    func remainingTokens() -> Int? {
        let time = now()
        return budget.withLock { $0?.remaining(now: time) }
    }
}

extension ChatAdmission.Refusal {
    /// Seconds until asking again may succeed (`Retry-After`, whole seconds, at least 1).
    var retryAfterSeconds: Int {
        switch self {
        case .rateLimited(let retryAfter, _): max(1, Int(retryAfter.rounded(.up)))
        case .budgetSpent(let resetsAt, _, let now): max(1, Int((resetsAt - now).rounded(.up)))
        case .busy: 1
        }
    }

    var message: String {
        switch self {
        case .rateLimited(_, let rate):
            "rate limit: at most \(rate.count) chats per user per \(Rate(count: 1, period: rate.period).description.dropFirst(2)) "
                + "(CHAT_RATE_LIMIT=\(rate)); try again in \(retryAfterSeconds) s"
        case .budgetSpent(let resetsAt, let limit, _):
            "the character's LLM token budget is spent (LLM_TOKEN_BUDGET=\(limit)); it resets at "
                + ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: resetsAt))
        case .busy(let limit):
            "too many LLM calls in progress (LLM_MAX_CONCURRENT=\(limit)); try again"
        }
    }
}
