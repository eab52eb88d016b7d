import Testing
import WhisperCore

@Suite struct NotifyMessageTests {
    func parse(_ text: String) -> Result<NotifyMessage, NotifyMessage.ParseError> { NotifyMessage.parse(Array(text.utf8)) }

    @Test func parsesEveryKnownKey() throws {
        let message = try parse(
            "READY=1\nSTATUS=warming up\nWATCHDOG=1\nWATCHDOG_USEC=2000000\nEXTEND_TIMEOUT_USEC=5000000\nERRNO=5\n"
                + "X_WHISPERD_FACET=llm:degraded:429 from upstream\nX_WHISPERD_INFLIGHT=3\nMAINPID=77\n"
        ).get()
        #expect(message.isReady)
        #expect(message.status == "warming up")
        #expect(message.watchdog == .ping)
        #expect(message.watchdogInterval == .seconds(2))
        #expect(message.extendTimeout == .seconds(5))
        #expect(message.errno == 5)
        #expect(message.facets == [Facet(name: "llm", level: .degraded, detail: "429 from upstream")])
        #expect(message.inflight == 3)
        #expect(message.mainPID == 77)
    }

    @Test func ignoresUnknownKeys() throws {
        let message = try parse("FDSTORE=1\nX_SOMETHING=else\nSTOPPING=1").get()
        #expect(message.isStopping)
        #expect(!message.isReady)
    }

    @Test func watchdogTriggerAndReloading() throws {
        #expect(try parse("WATCHDOG=trigger").get().watchdog == .trigger)
        #expect(try parse("RELOADING=1").get().isReloading)
    }

    @Test(arguments: ["", "READY", "READY=2", "WATCHDOG_USEC=-5", "WATCHDOG_USEC=abc", "X_WHISPERD_FACET=llm",
        "X_WHISPERD_FACET=llm:broken", "X_WHISPERD_INFLIGHT=-1", "ERRNO=x", "WATCHDOG=maybe"])
    func malformedDatagramsAreRejected(_ text: String) {
        guard case .failure = parse(text) else {
            Issue.record("accepted \(text.debugDescription)")
            return
        }
    }

    @Test func nonUTF8AndNULAreRejected() {
        #expect(NotifyMessage.parse([0xff, 0xfe]) == .failure(.notUTF8))
        #expect(NotifyMessage.parse(Array("READY=1\0".utf8)) == .failure(.notUTF8))
    }

    /// libpq's errors span lines; a facet detail that did too broke the datagram (found by the
    /// chaos suite's database outage: whisperd rejected the worker's "store:down" as malformed).
    @Test func aMultiLineFacetDetailIsFoldedOntoItsLine() throws {
        let libpq = "down:server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n"
        let line = Facet.notifyLine("store", libpq)
        #expect(line == "X_WHISPERD_FACET=store:down:server closed the connection unexpectedly This probably means the server terminated abnormally")
        let message = try parse(line + "\nX_WHISPERD_INFLIGHT=0").get()
        #expect(message.facets == [Facet(name: "store", level: .down, detail: "server closed the connection unexpectedly This probably means the server terminated abnormally")])
        #expect(Facet.notifyLine("llm", "ok") == "X_WHISPERD_FACET=llm:ok")
        let long = Facet.notifyLine("store", "down:" + String(repeating: "x\r\n", count: 500))
        #expect(!long.contains("\n") && !long.contains("\r") && long.count <= "X_WHISPERD_FACET=store:".count + 220)
        #expect((try? parse(long).get())?.facets.first?.level == .down)
    }

    @Test func llmSpending_isReadAsCounts() throws {
        let message = try parse("X_WHISPERD_LLM_TOKENS=2880\nX_WHISPERD_LLM_BUDGET_REMAINING=0\nX_WHISPERD_INFLIGHT=0").get()
        #expect(message.llmTokens == 2880)
        #expect(message.llmBudgetRemaining == 0)
        for bad in ["X_WHISPERD_LLM_TOKENS=-1", "X_WHISPERD_LLM_TOKENS=many", "X_WHISPERD_LLM_BUDGET_REMAINING="] {
            #expect(throws: NotifyMessage.ParseError.self) { try parse(bad).get() }
        }
    }
}
