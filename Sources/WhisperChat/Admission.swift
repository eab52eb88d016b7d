/// What a character takes on: how often a user may chat, how many LLM calls run at once, how many
/// tokens a window may spend, how long a conversation request may be. Pure: times are seconds
/// since the epoch, passed in; the worker keeps the state and the clock.

/// `N/<period>` as operators write it: `20/1m`, `5/30s`, `1000/1h`, `200000/1d`.
public struct Rate: Sendable, Equatable, CustomStringConvertible {
    public var count: Int
    /// Seconds.
    public var period: Double

    public init(count: Int, period: Double) {
        self.count = count
        self.period = period
    }

    /// nil unless `text` is a positive count, `/`, a positive number and a unit (s, m, h, d).
    public static func parse(_ text: String) -> Rate? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let count = Int(parts[0]), count > 0, let unit = parts[1].last else { return nil }
        let seconds: Double
        switch unit {
        case "s": seconds = 1
        case "m": seconds = 60
        case "h": seconds = 3600
        case "d": seconds = 86400
        default: return nil
        }
        guard let amount = Int(parts[1].dropLast()), amount > 0, amount <= 366 * 86400 else { return nil }
        return Rate(count: count, period: Double(amount) * seconds)
    }

    public var description: String {
        let whole = Int(period)
        for (unit, seconds) in [("d", 86400), ("h", 3600), ("m", 60)] where whole % seconds == 0 {
            return "\(count)/\(whole / seconds)\(unit)"
        }
        return "\(count)/\(whole)s"
    }
}

/// Per-key rate limiting by the generic cell rate algorithm: a key may spend `count` at once,
/// then earns one back every `period / count`; O(1) state per key, no timer.
public struct RateLimiter: Sendable {
    public let rate: Rate
    /// Per key, when its spending is paid off (its theoretical arrival time); a key paid off
    /// before now is the same as a key never seen, and is forgotten at the next prune.
    private var paidOffAt: [String: Double] = [:]
    private var pruneAt = 1024

    public enum Decision: Sendable, Equatable {
        case admitted
        /// Not now; `retryAfter` seconds until the same request would be admitted.
        case refused(retryAfter: Double)
    }

    public init(_ rate: Rate) { self.rate = rate }

    /// Admits `cost` units for `key` at `now` (and counts them), or says when to come back. A
    /// cost over the rate's count is taken as the whole count.
    public mutating func admit(_ key: String, cost: Int = 1, now: Double) -> Decision {
        let interval = rate.period / Double(rate.count)
        let start = max(paidOffAt[key] ?? now, now)
        let paidOff = start + Double(min(max(cost, 1), rate.count)) * interval
        if paidOff - now > rate.period + 1e-9 { return .refused(retryAfter: paidOff - now - rate.period) }
        paidOffAt[key] = paidOff
        if paidOffAt.count >= pruneAt { prune(now: now) }
        return .admitted
    }

    /// Keys being tracked (those that have not paid off by the last prune).
    public var trackedKeys: Int { paidOffAt.count }

    private mutating func prune(now: Double) {
        paidOffAt = paidOffAt.filter { $0.value > now }
        pruneAt = max(1024, paidOffAt.count * 2)
    }
}

/// Tokens a character may spend per window (`LLM_TOKEN_BUDGET`). Windows are aligned to
/// multiples of the period since the epoch (a day's budget starts at 00:00 UTC), so a restart
/// continues the window it was in; the state is two numbers (``persisted``).
public struct TokenBudget: Sendable, Equatable {
    public let limit: Rate
    public private(set) var windowStart: Double
    public private(set) var spent: Int

    public init(_ limit: Rate, now: Double) {
        self.limit = limit
        self.windowStart = Self.windowStart(limit, now)
        self.spent = 0
    }

    private static func windowStart(_ limit: Rate, _ now: Double) -> Double {
        (now / limit.period).rounded(.down) * limit.period
    }

    /// Moves to the window `now` is in (spending starts from zero in a new one).
    public mutating func roll(now: Double) {
        let current = Self.windowStart(limit, now)
        if current > windowStart {
            windowStart = current
            spent = 0
        }
    }

    public func remaining(now: Double) -> Int {
        Self.windowStart(limit, now) > windowStart ? limit.count : max(0, limit.count - spent)
    }

    public func isSpent(now: Double) -> Bool { remaining(now: now) == 0 }

    /// When the window `now` is in ends.
    public func resetsAt(now: Double) -> Double { Self.windowStart(limit, now) + limit.period }

    public mutating func record(_ tokens: Int, now: Double) {
        roll(now: now)
        spent = min(spent + max(0, tokens), Int.max / 2)
    }

    /// `<window start> <spent>`: what survives a restart.
    public var persisted: String { "\(Int64(windowStart)) \(spent)\n" }

    /// The budget as persisted, in the window `now` is in: a record of another window, or
    /// that cannot be read, starts from zero (and says so: `restored` is false).
    public static func restore(_ text: String, limit: Rate, now: Double) -> (budget: TokenBudget, restored: Bool) {
        var budget = TokenBudget(limit, now: now)
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count == 2, let start = Int64(fields[0]), let spent = Int(fields[1]), spent >= 0 else { return (budget, false) }
        if Double(start) == budget.windowStart { budget.spent = spent }
        return (budget, true)
    }

    /// Tokens of `text` when a provider does not report them: about four characters each
    /// (OpenAI's rule of thumb for English), at least one for a non-empty text.
    public static func estimatedTokens(_ text: String) -> Int {
        let characters = text.unicodeScalars.count
        return characters == 0 ? 0 : max(1, (characters + 3) / 4)
    }
}

/// The worker's admission settings from its environment (documented in docs/worker.md).
public struct AdmissionSettings: Sendable, Equatable {
    /// `CHAT_RATE_LIMIT`: chats per user (a conversation counts its messages); nil: none.
    public var chatRate: Rate?
    /// `LLM_MAX_CONCURRENT`: chats (each one LLM call at a time) in progress at once; nil: none.
    public var llmMaxConcurrent: Int?
    /// `LLM_TOKEN_BUDGET`: tokens per window; nil: none.
    public var tokenBudget: Rate?
    /// `CONVERSATION_MAX_TURNS`: messages in one `/api/conversation` request.
    public var conversationMaxTurns = 20
    /// `CONVERSATION_MAX_SECONDS`: wall time of one `/api/conversation` request, delays included.
    public var conversationMaxSeconds = 120.0

    public init() {}

    public struct Problem: Error, Equatable, CustomStringConvertible {
        public let description: String

        public init(description: String) { self.description = description }
    }

    public static func from(_ environment: [String: String]) -> Result<AdmissionSettings, Problem> {
        var settings = AdmissionSettings()
        func value(_ name: String) -> String? { environment[name].flatMap { $0.isEmpty ? nil : $0 } }
        func rate(_ name: String, example: String) throws(Problem) -> Rate? {
            guard let text = value(name) else { return nil }
            guard let rate = Rate.parse(text) else { throw Problem(description: "\(name)=\(text) is not a rate like \(example)") }
            return rate
        }
        func positive(_ name: String) throws(Problem) -> Double? {
            guard let text = value(name) else { return nil }
            guard let number = Double(text), number.isFinite, number > 0, number < 1e9 else {
                throw Problem(description: "\(name)=\(text) is not a positive number")
            }
            return number
        }
        do throws(Problem) {
            settings.chatRate = try rate("CHAT_RATE_LIMIT", example: "20/1m")
            settings.tokenBudget = try rate("LLM_TOKEN_BUDGET", example: "200000/1d")
            if let count = try positive("LLM_MAX_CONCURRENT") { settings.llmMaxConcurrent = max(1, Int(count)) }
            if let turns = try positive("CONVERSATION_MAX_TURNS") { settings.conversationMaxTurns = max(1, Int(turns)) }
            if let seconds = try positive("CONVERSATION_MAX_SECONDS") { settings.conversationMaxSeconds = seconds }
        } catch {
            return .failure(error)
        }
        return .success(settings)
    }
}
