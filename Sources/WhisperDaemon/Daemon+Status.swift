import Glibc
import WhisperAPI
import WhisperConfig
import WhisperCore
import WhisperSystem

/// What the status endpoints read from the fleet (``StatusPublisher`` renders it).
extension Daemon: FleetFacts {
    func handleStatusRequest(_ request: HTTPServer.Request) -> HTTPServer.Response {
        status.response(to: request, now: Clock.monotonicNanoseconds(), facts: self)
    }

    /// One character as status shows it.
    func describe(
        _ status: ServiceStatus, now: Int64, limits: [ServiceName: Limits], detail: StatusPublisher.Detail = .full,
        dropped: [String: Int]? = nil
    ) -> CharacterStatus {
        self.status.describe(status, now: now, limits: limits, detail: detail, dropped: dropped, facts: self)
    }

    func statuses() -> [ServiceStatus] { fleet.statuses() }

    func status(of name: ServiceName) -> ServiceStatus? { fleet.status(of: name) }

    func supervisorReport(now: Int64) -> HealthReport.Supervisor {
        var supervisor = HealthReport.Supervisor(
            version: WhisperdVersion.current, pid: Int(getpid()), uptimeSeconds: Double(now - startedAt) / 1e9,
            cgroupBackend: cgroups.backend.name, cgroups: cgroups.report, shuttingDown: fleet.isShuttingDown, summary: fleet.summary,
            reexecs: completedReexecs)
        supervisor.reexecError = lastReexecError
        return supervisor
    }

    func limitsByName() -> [ServiceName: Limits] {
        Dictionary(loaded.roster.services.map { ($0.name, $0.limits) }, uniquingKeysWith: { first, _ in first })
    }

    func droppedLines() -> [String: Int] { logWriter.droppedLines() }

    func schedule(of status: ServiceStatus) -> CharacterStatus.Schedule? { fleet.scheduleDescription(status) }

    func jobTimes(of name: ServiceName) -> (next: Int64?, lastRun: Int64?)? { fleet.jobTimes(of: name) }

    func replica(of name: ServiceName) -> CharacterStatus.Replica? {
        guard let environment = loaded.roster[name]?.launch.environment, let of = environment["WHISPERD_CHARACTER"],
            let index = environment["REPLICA_INDEX"].flatMap(Int.init), let count = environment["REPLICA_COUNT"].flatMap(Int.init)
        else { return nil }
        return CharacterStatus.Replica(of: of, index: index, count: count)
    }

    func tenant(of name: ServiceName) -> CharacterStatus.Tenant? {
        guard let tenant = tenants.reports[name] else { return nil }
        return CharacterStatus.Tenant(
            uid: Int(tenant.uid), gid: Int(tenant.gid), sandbox: tenant.coverage.level.rawValue, notEnforced: tenant.coverage.missing)
    }
}
