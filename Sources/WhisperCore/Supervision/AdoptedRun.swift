/// A process a previous whisperd started and handed over (`whisperctl reexec`): the new
/// whisperd takes it as its own run — same pid, no restart counted — with what the old one
/// knew of it.
public struct AdoptedRun: Hashable, Sendable {
    public var pid: Int32
    public var startedAt: Instant
    public var isReady: Bool
    public var restarts: Int
    public var restartsByReason: [String: Int]
    public var oomKills: Int
    public var statusText: String?
    public var facets: [Facet]

    public init(
        pid: Int32, startedAt: Instant, isReady: Bool, restarts: Int = 0, restartsByReason: [String: Int] = [:], oomKills: Int = 0,
        statusText: String? = nil, facets: [Facet] = []
    ) {
        self.pid = pid
        self.startedAt = startedAt
        self.isReady = isReady
        self.restarts = restarts
        self.restartsByReason = restartsByReason
        self.oomKills = oomKills
        self.statusText = statusText
        self.facets = facets
    }
}

extension ServiceRecord {
    /// Takes over a running process: the run goes on where the old whisperd left it. Readiness
    /// it had is kept; one it was waiting for gets a fresh `ready_timeout`, a watchdog a fresh
    /// interval, from the moment of adoption.
    mutating func adopt(_ run: AdoptedRun, _ fx: inout Effects) {
        hasStarted = true
        restarts = run.restarts
        restartsByReason = run.restartsByReason
        oomKills = run.oomKills
        statusText = run.statusText
        for facet in run.facets { facets[facet.name] = facet }
        transition(to: .starting, "adopted pid \(run.pid) from the previous whisperd", &fx)
        spawned(pid: run.pid, &fx)
        // `ready: started`: a process that outlived the re-exec has run its program.
        programStarted(&fx)
        startedAt = run.startedAt
        if run.isReady, !spec.isJob, !isReady { becomeReady("as before the re-exec", &fx) }
        if let interval = watchdogInterval { watchdogDeadline = fx.now.advanced(by: interval) }
    }
}
