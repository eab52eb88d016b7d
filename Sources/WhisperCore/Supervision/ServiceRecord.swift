/// Everything the supervisor knows about one service; the public view is ``ServiceStatus``.
struct ServiceRecord: Sendable {
    enum AfterExit: Sendable {
        /// Apply the restart policy.
        case followPolicy
        /// Start again at once (operator restart, changed command).
        case restartNow
        /// Start again once its dependencies allow (restarted with a dependency: `restart: true`).
        case restartAfterDependencies
        /// Stay down.
        case stayDown
        /// Removed from the roster: forget once gone.
        case remove
    }

    var spec: ServiceSpec
    var desired: Intent
    var state: ServiceState = .stopped
    var isReady = false
    var pid: Int32?
    var startedAt: Instant?
    var readyAt: Instant?
    var restarts = 0
    var restartsByReason: [String: Int] = [:]
    var consecutiveFailures = 0
    var recentRestarts: [Instant] = []
    var isCrashLooping = false
    var hasStarted = false
    var pendingKillReason: ExitReason?
    var sawOOMKill = false
    var oomKills = 0
    var afterExit: AfterExit = .followPolicy
    var lastExit: ExitRecord?
    var jobSucceeded = false
    /// Scheduled runs skipped because the last run was still going.
    var skippedScheduledRuns = 0

    /// Rolling restart: the new process beside the old one, and the old one draining.
    var successor: Successor?
    var retiringPID: Int32?
    var retireDeadline: Instant?

    var restartAt: Instant?
    var readyDeadline: Instant?
    var watchdogInterval: Duration?
    var watchdogDeadline: Instant?
    var probeAt: Instant?
    var isProbeInFlight = false
    var probeFailures = 0
    var killDeadline: Instant?

    var statusText: String?
    var facets: [String: Facet] = [:]
    var inflight: Int?
    /// What the worker last said of its LLM spending (kept across its restarts).
    var llmTokens: Int?
    var llmBudgetRemaining: Int?
    var reportedErrno: Int32?
    var isReloading = false

    init(spec: ServiceSpec, desired: Intent) {
        self.spec = spec
        self.desired = desired
    }

    var isAlive: Bool { pid != nil }

    var earliestDeadline: Instant? {
        var earliest = restartAt
        func consider(_ candidate: Instant?) {
            guard let candidate else { return }
            if earliest == nil || candidate < earliest! { earliest = candidate }
        }
        consider(readyDeadline)
        consider(watchdogDeadline)
        if !isProbeInFlight { consider(probeAt) }
        consider(killDeadline)
        consider(successor?.readyDeadline)
        consider(retireDeadline)
        return earliest
    }

    mutating func clearRunDeadlines() {
        readyDeadline = nil
        watchdogDeadline = nil
        probeAt = nil
        killDeadline = nil
        probeFailures = 0
        // A check of the run that ended is dropped by the shell; its verdict never comes.
        isProbeInFlight = false
    }
}

/// A snapshot of one service for status output, `/health` and metrics.
public struct ServiceStatus: Hashable, Sendable {
    public var name: ServiceName
    public var isJob: Bool
    public var state: ServiceState
    public var desired: Intent
    public var isReady: Bool
    public var pid: Int32?
    public var startedAt: Instant?
    public var readyAt: Instant?
    public var restarts: Int
    public var restartsByReason: [String: Int]
    public var oomKills: Int
    public var isCrashLooping: Bool
    public var lastExit: ExitRecord?
    public var statusText: String?
    public var facets: [Facet]
    public var inflight: Int?
    public var nextRestartAt: Instant?
    /// LLM tokens the worker reported spending since it started; tokens left in its budget.
    public var llmTokens: Int? = nil
    public var llmBudgetRemaining: Int? = nil
    /// Scheduled runs skipped because the last run was still going.
    public var skippedScheduledRuns: Int = 0

    /// Counts against `/health`: wanted up, not a job, and not ready.
    public var isUnhealthy: Bool { !isJob && desired == .up && !isReady && state != .exited }
}
