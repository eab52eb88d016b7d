import Testing
import WhisperChat

/// Rate limits, token budgets and admission settings against a fake clock (times passed in).
@Suite struct AdmissionTests {
    @Test func ratesParse_asOperatorsWriteThem() {
        #expect(Rate.parse("20/1m") == Rate(count: 20, period: 60))
        #expect(Rate.parse("5/30s") == Rate(count: 5, period: 30))
        #expect(Rate.parse("1000/1h") == Rate(count: 1000, period: 3600))
        #expect(Rate.parse("200000/1d") == Rate(count: 200_000, period: 86400))
        for bad in ["", "20", "20/", "/1m", "0/1m", "-1/1m", "20/0m", "20/1w", "20/m", "20/1.5m", "x/1m", "20/1m/2", " 20/1m"] {
            #expect(Rate.parse(bad) == nil, "\(bad.debugDescription)")
        }
        #expect(Rate(count: 20, period: 60).description == "20/1m")
        #expect(Rate(count: 200_000, period: 86400).description == "200000/1d")
        #expect(Rate(count: 5, period: 30).description == "5/30s")
    }

    @Test func aUser_mayBurstTheCount_thenEarnsOneBackPerInterval() {
        var limiter = RateLimiter(Rate(count: 3, period: 60))
        for _ in 0..<3 { #expect(limiter.admit("u", now: 1000) == .admitted) }
        #expect(limiter.admit("u", now: 1000) == .refused(retryAfter: 20))
        #expect(limiter.admit("u", now: 1010) == .refused(retryAfter: 10))
        // Refusals cost nothing: one is earned back 20 s after the burst.
        #expect(limiter.admit("u", now: 1020) == .admitted)
        #expect(limiter.admit("u", now: 1020) == .refused(retryAfter: 20))
        // Others are not held back by u.
        #expect(limiter.admit("v", now: 1020) == .admitted)
        // After a full period of quiet, the whole burst again.
        for _ in 0..<3 { #expect(limiter.admit("u", now: 1100) == .admitted) }
    }

    @Test func aCost_spendsThatMany_andOverTheCountIsTheWholeCount() {
        var limiter = RateLimiter(Rate(count: 4, period: 40))
        #expect(limiter.admit("u", cost: 3, now: 0) == .admitted)
        #expect(limiter.admit("u", cost: 2, now: 0) == .refused(retryAfter: 10))
        #expect(limiter.admit("u", cost: 1, now: 0) == .admitted)
        var fresh = RateLimiter(Rate(count: 4, period: 40))
        #expect(fresh.admit("w", cost: 100, now: 0) == .admitted)
        #expect(fresh.admit("w", now: 0) == .refused(retryAfter: 10))
    }

    @Test func usersPaidOff_areForgotten_soStateStaysBounded() {
        var limiter = RateLimiter(Rate(count: 1, period: 1))
        for user in 0..<5000 { _ = limiter.admit("user-\(user)", now: Double(user)) }
        #expect(limiter.trackedKeys < 2100, "\(limiter.trackedKeys)")
    }

    @Test func theBudget_countsWithinItsWindow_andResetsAtTheNext() {
        let day = 86400.0
        let noon = 20000 * day + day / 2
        var budget = TokenBudget(Rate(count: 1000, period: day), now: noon)
        #expect(budget.windowStart == 20000 * day)
        #expect(budget.resetsAt(now: noon) == 20001 * day)
        budget.record(600, now: noon)
        #expect(budget.remaining(now: noon) == 400)
        #expect(!budget.isSpent(now: noon))
        budget.record(500, now: noon + 60)
        #expect(budget.remaining(now: noon + 60) == 0)
        #expect(budget.isSpent(now: noon + 60))
        // The next day starts from zero.
        #expect(budget.remaining(now: 20001 * day) == 1000)
        budget.record(10, now: 20001 * day + 5)
        #expect(budget.spent == 10)
        #expect(budget.windowStart == 20001 * day)
        budget.record(-5, now: 20001 * day + 6)
        #expect(budget.spent == 10, "a negative count changes nothing")
    }

    @Test func theBudget_survivesARestart_inItsWindowOnly() {
        let limit = Rate(count: 1000, period: 3600)
        var budget = TokenBudget(limit, now: 7200 + 100)
        budget.record(250, now: 7200 + 200)
        #expect(budget.persisted == "7200 250\n")
        let same = TokenBudget.restore(budget.persisted, limit: limit, now: 7200 + 3000)
        #expect(same.restored && same.budget.spent == 250 && same.budget.remaining(now: 7200 + 3000) == 750)
        let later = TokenBudget.restore(budget.persisted, limit: limit, now: 10800 + 1)
        #expect(later.restored && later.budget.spent == 0 && later.budget.windowStart == 10800)
        for garbage in ["", "7200", "x 250", "7200 -1", "7200 250 9"] {
            let read = TokenBudget.restore(garbage, limit: limit, now: 7300)
            #expect(!read.restored && read.budget.spent == 0, "\(garbage.debugDescription)")
        }
    }

    @Test func tokensAreEstimated_fromTextLength_whenNotReported() {
        #expect(TokenBudget.estimatedTokens("") == 0)
        #expect(TokenBudget.estimatedTokens("hi") == 1)
        #expect(TokenBudget.estimatedTokens(String(repeating: "a", count: 400)) == 100)
    }

    @Test func settingsFromTheEnvironment_orTheDefaults_orAClearError() throws {
        let defaults = try AdmissionSettings.from([:]).get()
        #expect(defaults == AdmissionSettings())
        #expect(defaults.chatRate == nil && defaults.tokenBudget == nil && defaults.llmMaxConcurrent == nil)
        let set = try AdmissionSettings.from([
            "CHAT_RATE_LIMIT": "20/1m", "LLM_TOKEN_BUDGET": "200000/1d", "LLM_MAX_CONCURRENT": "4", "CONVERSATION_MAX_TURNS": "5",
            "CONVERSATION_MAX_SECONDS": "30", "UNRELATED": "x",
        ]).get()
        #expect(set.chatRate == Rate(count: 20, period: 60))
        #expect(set.tokenBudget == Rate(count: 200_000, period: 86400))
        #expect(set.llmMaxConcurrent == 4)
        #expect(set.conversationMaxTurns == 5)
        #expect(set.conversationMaxSeconds == 30)
        #expect(AdmissionSettings.from(["CHAT_RATE_LIMIT": "20 per minute"]) == .failure(.init(description: "CHAT_RATE_LIMIT=20 per minute is not a rate like 20/1m")))
        #expect(AdmissionSettings.from(["LLM_TOKEN_BUDGET": "lots"]) == .failure(.init(description: "LLM_TOKEN_BUDGET=lots is not a rate like 200000/1d")))
        #expect(AdmissionSettings.from(["LLM_MAX_CONCURRENT": "0"]) == .failure(.init(description: "LLM_MAX_CONCURRENT=0 is not a positive number")))
    }
}
