import Testing
import WhisperCore
@testable import WhisperDaemon
@testable import WhisperSystem

/// `/metrics` from the supervisor's state: the core keeps totals, the exporter's counters
/// follow them (and start over when a total goes back, as after a restart of whisperd's count).
@Suite struct MetricsExporterTests {
    static func status(_ name: String) -> ServiceStatus {
        var supervisor = Supervisor(seed: 1)
        let spec = ServiceSpec(name: ServiceName(name)!, kind: .character, launch: LaunchSpec(arguments: ["/bin/true"]))
        _ = supervisor.handle(.rosterLoaded(Roster(services: [spec])), now: Instant(nanoseconds: 1))
        return supervisor.status(of: ServiceName(name)!)!
    }

    static func snapshot(_ status: ServiceStatus, usage: CgroupUsage? = nil, dropped: Int = 0) -> MetricsExporter.Snapshot {
        MetricsExporter.Snapshot(
            status: status, limits: Limits(memoryBytes: 64 << 20), usage: usage, logLinesDropped: dropped, notifyRejected: 0, notifyMalformed: 0)
    }

    /// The sample lines of one metric (`name{labels} value`), without help and type lines.
    static func samples(_ text: [UInt8], _ metric: String) -> [String] {
        String(decoding: text, as: UTF8.self).split(separator: "\n").map(String.init)
            .filter { $0.hasPrefix(metric + "{") || $0.hasPrefix(metric + " ") }
    }

    @Test func aCharactersSeries_followItsStatus() {
        let exporter = MetricsExporter(version: "9.9.9")
        var elena = Self.status("elena")
        elena.pid = 4100
        elena.isReady = true
        elena.state = .running
        elena.restartsByReason = ["Error": 2]
        let usage = CgroupUsage(memoryBytes: 1000, memoryPeakBytes: 2000, cpuMicroseconds: 1_500_000, pids: 3)
        let text = exporter.render([Self.snapshot(elena, usage: usage, dropped: 5)])
        #expect(Self.samples(text, "whisperd_build_info") == [#"whisperd_build_info{version="9.9.9"} 1.0"#])
        #expect(Self.samples(text, "whisperd_character_up") == [#"whisperd_character_up{character="elena"} 1.0"#])
        #expect(Self.samples(text, "whisperd_character_ready") == [#"whisperd_character_ready{character="elena"} 1.0"#])
        #expect(Self.samples(text, "whisperd_character_memory_bytes") == [#"whisperd_character_memory_bytes{character="elena"} 1000.0"#])
        #expect(Self.samples(text, "whisperd_character_memory_limit_bytes") == [#"whisperd_character_memory_limit_bytes{character="elena"} 67108864.0"#])
        #expect(Self.samples(text, "whisperd_character_cpu_seconds_total") == [#"whisperd_character_cpu_seconds_total{character="elena"} 1.5"#])
        #expect(Self.samples(text, "whisperd_character_restarts_total") == [#"whisperd_character_restarts_total{character="elena",reason="Error"} 2.0"#])
        #expect(Self.samples(text, "whisperd_character_log_lines_dropped_total") == [#"whisperd_character_log_lines_dropped_total{character="elena"} 5.0"#])
        #expect(Self.samples(text, "whisperd_character_state") == [#"whisperd_character_state{character="elena",state="running"} 1.0"#])
        #expect(Self.samples(text, "whisperd_llm_tokens_total").isEmpty, "made only once the worker reports tokens")
    }

    @Test func oneStateSeriesAtATime_andCountersFollowTheirTotals() {
        let exporter = MetricsExporter(version: "1")
        var elena = Self.status("elena")
        elena.state = .running
        elena.restartsByReason = ["Error": 2]
        elena.llmTokens = 100
        _ = exporter.render([Self.snapshot(elena, dropped: 5)])
        elena.state = .backoff
        elena.pid = nil
        elena.restartsByReason = ["Error": 3, "OOMKilled": 1]
        elena.llmTokens = 160
        var text = exporter.render([Self.snapshot(elena, dropped: 5)])
        #expect(Self.samples(text, "whisperd_character_state") == [#"whisperd_character_state{character="elena",state="backoff"} 1.0"#])
        #expect(Self.samples(text, "whisperd_character_up") == [#"whisperd_character_up{character="elena"} 0.0"#])
        #expect(
            Set(Self.samples(text, "whisperd_character_restarts_total")) == [
                #"whisperd_character_restarts_total{character="elena",reason="Error"} 3.0"#,
                #"whisperd_character_restarts_total{character="elena",reason="OOMKilled"} 1.0"#,
            ])
        #expect(Self.samples(text, "whisperd_llm_tokens_total") == [#"whisperd_llm_tokens_total{character="elena"} 160.0"#])
        // A total that goes back (the count started over) starts the counter over.
        text = exporter.render([Self.snapshot(elena, dropped: 2)])
        #expect(Self.samples(text, "whisperd_character_log_lines_dropped_total") == [#"whisperd_character_log_lines_dropped_total{character="elena"} 2.0"#])
    }

    @Test func aForgottenCharacter_leavesNoSeries() {
        let exporter = MetricsExporter(version: "1")
        var job = Self.status("nightly")
        job.state = .running
        // With the series made only when the worker reports them: its LLM tokens and budget.
        var elena = Self.status("elena")
        elena.llmTokens = 100
        elena.llmBudgetRemaining = 900
        let before = String(decoding: exporter.render([Self.snapshot(elena), Self.snapshot(job)]), as: UTF8.self)
        #expect(before.contains(#"whisperd_llm_tokens_total{character="elena"}"#))
        #expect(before.contains(#"whisperd_llm_budget_remaining_tokens{character="elena"}"#))
        exporter.forget(ServiceName("elena")!)
        let text = String(decoding: exporter.render([Self.snapshot(job)]), as: UTF8.self)
        #expect(!text.contains(#"character="elena""#))
        #expect(text.contains(#"whisperd_character_up{character="nightly"}"#))
    }
}
