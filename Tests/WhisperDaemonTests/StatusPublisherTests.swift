import Foundation
import Testing
import WhisperAPI
import WhisperCore
@testable import WhisperDaemon
@testable import WhisperSystem

/// The status endpoints rendered from a fixed fleet (no daemon, no cgroups): what they say,
/// how long a rendering is reused, the per-character counters and `/metrics`.
@Suite struct StatusPublisherTests {
    /// A fleet that is only what the test says.
    struct Fleet: FleetFacts {
        var services: [ServiceStatus] = []
        var limits: [ServiceName: Limits] = [:]
        var dropped: [String: Int] = [:]

        func statuses() -> [ServiceStatus] { services }
        func status(of name: ServiceName) -> ServiceStatus? { services.first { $0.name == name } }
        func supervisorReport(now: Int64) -> HealthReport.Supervisor {
            HealthReport.Supervisor(
                version: "9.9.9", pid: 1, uptimeSeconds: Double(now) / 1e9, cgroupBackend: "none",
                cgroups: CgroupReport(backend: "none", notEnforced: [], providers: [:]), shuttingDown: false, summary: "test",
                reexecs: 0)
        }
        func limitsByName() -> [ServiceName: Limits] { limits }
        func droppedLines() -> [String: Int] { dropped }
        func schedule(of status: ServiceStatus) -> CharacterStatus.Schedule? { nil }
        func jobTimes(of name: ServiceName) -> (next: Int64?, lastRun: Int64?)? { nil }
        func replica(of name: ServiceName) -> CharacterStatus.Replica? { nil }
        func tenant(of name: ServiceName) -> CharacterStatus.Tenant? { nil }
    }

    static let second: Int64 = 1_000_000_000

    static func status(_ name: String, ready: Bool) -> ServiceStatus {
        var status = MetricsExporterTests.status(name)
        status.state = ready ? .running : .starting
        status.isReady = ready
        status.pid = 4100
        status.startedAt = Instant(nanoseconds: 1)
        return status
    }

    static func get(_ path: String, method: String = "GET", headers: [(String, String)] = []) -> HTTPServer.Request {
        HTTPServer.Request(method: method, path: path, query: "", headers: headers, body: [])
    }

    static func publisher() throws -> StatusPublisher {
        let loop = try EventLoop()
        return StatusPublisher(loop: loop, log: DaemonLog(), cgroups: CgroupKeeper(backend: .none(), loop: loop, log: DaemonLog()))
    }

    static func decode<T: Decodable>(_ type: T.Type, _ response: HTTPServer.Response) throws -> T {
        try JSONDecoder().decode(type, from: Data(response.body))
    }

    @Test func health_is503WhileACharacterIsNotReady_naming_it() throws {
        let publisher = try Self.publisher()
        let fleet = Fleet(services: [Self.status("elena", ready: true), Self.status("aria", ready: false)])
        let response = publisher.response(to: Self.get("/health"), now: 5 * Self.second, facts: fleet)
        #expect(response.status == 503)
        let report = try Self.decode(HealthReport.self, response)
        #expect(report.status == "degraded")
        #expect(report.notReady == ["aria"])
        #expect(report.characters.map(\.name) == ["elena", "aria"])
        #expect(report.characters.allSatisfy { $0.notifyRejected == nil }, "brief: no counters in /health")
        let ok = try Self.publisher().response(
            to: Self.get("/health"), now: 5 * Self.second, facts: Fleet(services: [Self.status("elena", ready: true)]))
        #expect(ok.status == 200)
        #expect(try Self.decode(HealthReport.self, ok).notReady == nil)
    }

    @Test func aRendering_isReusedForASecond_untilTheFleetChanges() throws {
        let publisher = try Self.publisher()
        var fleet = Fleet(services: [Self.status("elena", ready: false)])
        #expect(publisher.response(to: Self.get("/health"), now: 10 * Self.second, facts: fleet).status == 503)
        fleet.services = [Self.status("elena", ready: true)]
        #expect(
            publisher.response(to: Self.get("/health"), now: 11 * Self.second - 1, facts: fleet).status == 503,
            "the rendering of under a second ago")
        #expect(publisher.response(to: Self.get("/health"), now: 11 * Self.second, facts: fleet).status == 200, "a second later, anew")
        fleet.services = [Self.status("elena", ready: false)]
        publisher.fleetChanged()
        #expect(publisher.response(to: Self.get("/health"), now: 11 * Self.second, facts: fleet).status == 503, "an event drops it")
        let generation = publisher.generation
        publisher.fleetChanged()
        #expect(publisher.generation == generation + 1)
    }

    @Test func theCounters_showInTheList_perCharacter_andGoWithIt() throws {
        let publisher = try Self.publisher()
        let elena = ServiceName("elena")!
        let fleet = Fleet(services: [Self.status("elena", ready: true)], dropped: ["elena": 7])
        publisher.countRejectedDatagram(elena)
        publisher.countRejectedDatagram(elena)
        publisher.countMalformedDatagram(elena)
        let list = try Self.decode(CharacterList.self, publisher.response(to: Self.get("/v1/characters"), now: Self.second, facts: fleet))
        #expect(list.characters.first?.notifyRejected == 2)
        #expect(list.characters.first?.notifyMalformed == 1)
        #expect(list.characters.first?.logLinesDropped == 7)
        publisher.forget(elena)
        publisher.fleetChanged()
        let after = try Self.decode(CharacterList.self, publisher.response(to: Self.get("/v1/characters"), now: Self.second, facts: fleet))
        #expect(after.characters.first?.notifyRejected == 0)
    }

    @Test func oneCharacter_orNotFound() throws {
        let publisher = try Self.publisher()
        let fleet = Fleet(services: [Self.status("elena", ready: true)])
        let one = publisher.response(to: Self.get("/v1/characters/elena"), now: Self.second, facts: fleet)
        #expect(one.status == 200)
        #expect(try Self.decode(CharacterStatus.self, one).name == "elena")
        #expect(publisher.response(to: Self.get("/v1/characters/nobody"), now: Self.second, facts: fleet).status == 404)
        #expect(publisher.response(to: Self.get("/nothing"), now: Self.second, facts: fleet).status == 404)
    }

    @Test func onlyGETAndHEAD_withTheAllowHeader() throws {
        let publisher = try Self.publisher()
        let response = publisher.response(to: Self.get("/health", method: "POST"), now: Self.second, facts: Fleet())
        #expect(response.status == 405)
        #expect(response.extraHeaders.contains { $0.0 == "Allow" && $0.1 == "GET, HEAD" })
    }

    @Test func metrics_replayTimesToReadySeenBeforeTheFirstScrape_andCountRejectedDatagrams() throws {
        let publisher = try Self.publisher()
        let elena = ServiceName("elena")!
        publisher.recordTimeToReady(elena, seconds: 0.25)
        publisher.countRejectedDatagram(elena)
        let fleet = Fleet(services: [Self.status("elena", ready: true)], limits: [elena: Limits(memoryBytes: 64 << 20)])
        let response = publisher.response(to: Self.get("/metrics"), now: Self.second, facts: fleet)
        #expect(response.status == 200)
        let text = response.body + (response.file?.bytes() ?? [])
        #expect(!MetricsExporterTests.samples(text, "whisperd_character_time_to_ready_seconds_count").isEmpty)
        #expect(
            MetricsExporterTests.samples(text, "whisperd_character_time_to_ready_seconds_count")
                == [#"whisperd_character_time_to_ready_seconds_count{character="elena"} 1"#])
        #expect(
            MetricsExporterTests.samples(text, "whisperd_character_notify_rejected_total")
                == [#"whisperd_character_notify_rejected_total{character="elena"} 1.0"#])
        let gzip = publisher.response(to: Self.get("/metrics", headers: [("Accept-Encoding", "gzip")]), now: Self.second, facts: fleet)
        #expect(gzip.extraHeaders.contains { $0.0 == "Content-Encoding" && $0.1 == "gzip" })
    }
}
