import WhisperCore

/// The settings a `defaults:` block, a character or a job may give; `nil` means "not given here".
/// Built-in defaults ⊕ `defaults:` ⊕ the entry's own, field by field (nested blocks merge too).
struct RosterSettings {
    var restart: RestartMode?
    var restartDelay: Duration?
    var restartDelayMax: Duration?
    var restartResetAfter: Duration?
    var budgetMax: Int?
    var budgetWindow: Duration?
    var stopSignal: Signal?
    var stopGrace: Duration?
    var memory: UInt64?
    var memoryHigh: UInt64?
    var cpus: Double?
    var pids: Int?
    var ready: ReadinessMode?
    var readyTimeout: Duration?
    /// `.some(nil)` is an explicit `watchdog: 0`/`off`.
    var watchdog: Duration??
    var httpPath: String?
    var httpInterval: Duration?
    var httpTimeout: Duration?
    var httpRetries: Int?
    var httpStartPeriod: Duration?
    var onUnhealthy: UnhealthyAction?
    /// Replaces, never merges: a character that lists env files lists all of them.
    var envFiles: [String]?
    var env: [String: String]?
    var logMaxSize: UInt64?
    var logMaxFiles: Int?
    // The tenant (DESIGN §10); `nil` everywhere means whisperd's defaults.
    var user: UserSpec?
    var group: GroupSpec?
    var supplementaryGroups: [GroupSpec]?
    var sandboxFilesystem: FilesystemSandbox?
    var readPaths: [String]?
    var writePaths: [String]?
    var bindPorts: [Int]?
    var oomScoreAdjust: Int?
    var cpuWeight: Int?
    var memoryLow: UInt64?
    var cpuset: CPUSet?
    /// Merged by resource: a character's `nofile` replaces the default's, others are kept.
    var resourceLimits: [ResourceLimit]?

    /// The built-in defaults (DESIGN §3). No limits unless the roster sets them, as with Compose.
    static let builtIn = RosterSettings(
        restart: .always, restartDelay: .milliseconds(100), restartDelayMax: .seconds(60),
        restartResetAfter: .seconds(600), budgetMax: 5, budgetWindow: .seconds(60), stopSignal: .term,
        stopGrace: .seconds(10), memory: nil, memoryHigh: nil, cpus: nil, pids: nil, ready: .notify,
        readyTimeout: .seconds(60), watchdog: .some(.seconds(30)), httpPath: "/health", httpInterval: .seconds(30),
        httpTimeout: .seconds(5), httpRetries: 3, httpStartPeriod: .seconds(60), onUnhealthy: .restart,
        envFiles: ["?.env"], env: [:], logMaxSize: 10 << 20, logMaxFiles: 3)

    /// `self` with every field `other` sets taken from `other`.
    func overlaid(with other: RosterSettings) -> RosterSettings {
        var result = self
        result.restart = other.restart ?? restart
        result.restartDelay = other.restartDelay ?? restartDelay
        result.restartDelayMax = other.restartDelayMax ?? restartDelayMax
        result.restartResetAfter = other.restartResetAfter ?? restartResetAfter
        result.budgetMax = other.budgetMax ?? budgetMax
        result.budgetWindow = other.budgetWindow ?? budgetWindow
        result.stopSignal = other.stopSignal ?? stopSignal
        result.stopGrace = other.stopGrace ?? stopGrace
        result.memory = other.memory ?? memory
        result.memoryHigh = other.memoryHigh ?? memoryHigh
        result.cpus = other.cpus ?? cpus
        result.pids = other.pids ?? pids
        result.ready = other.ready ?? ready
        result.readyTimeout = other.readyTimeout ?? readyTimeout
        result.watchdog = other.watchdog ?? watchdog
        result.httpPath = other.httpPath ?? httpPath
        result.httpInterval = other.httpInterval ?? httpInterval
        result.httpTimeout = other.httpTimeout ?? httpTimeout
        result.httpRetries = other.httpRetries ?? httpRetries
        result.httpStartPeriod = other.httpStartPeriod ?? httpStartPeriod
        result.onUnhealthy = other.onUnhealthy ?? onUnhealthy
        result.envFiles = other.envFiles ?? envFiles
        if let extra = other.env { result.env = (env ?? [:]).merging(extra) { _, new in new } }
        result.logMaxSize = other.logMaxSize ?? logMaxSize
        result.logMaxFiles = other.logMaxFiles ?? logMaxFiles
        result.user = other.user ?? user
        result.group = other.group ?? group
        result.supplementaryGroups = other.supplementaryGroups ?? supplementaryGroups
        result.sandboxFilesystem = other.sandboxFilesystem ?? sandboxFilesystem
        result.readPaths = other.readPaths ?? readPaths
        result.writePaths = other.writePaths ?? writePaths
        result.bindPorts = other.bindPorts ?? bindPorts
        result.oomScoreAdjust = other.oomScoreAdjust ?? oomScoreAdjust
        result.cpuWeight = other.cpuWeight ?? cpuWeight
        result.memoryLow = other.memoryLow ?? memoryLow
        result.cpuset = other.cpuset ?? cpuset
        if let extra = other.resourceLimits {
            let replaced = Set(extra.map(\.resource))
            result.resourceLimits = (resourceLimits ?? []).filter { !replaced.contains($0.resource) } + extra
        }
        return result
    }

    // Force-unwraps below are safe: callers overlay onto `builtIn`, which sets every field.
    var restartPolicy: RestartPolicy {
        RestartPolicy(
            mode: restart!, delay: restartDelay!, delayMax: restartDelayMax!, resetAfter: restartResetAfter!,
            budgetMax: budgetMax!, budgetWindow: budgetWindow!)
    }

    var limits: Limits {
        Limits(memoryBytes: memory, memoryHighBytes: memoryHigh, cpus: cpus, pids: pids, cpuWeight: cpuWeight, memoryLowBytes: memoryLow,
            cpuset: cpuset)
    }

    var healthPolicy: HealthPolicy {
        HealthPolicy(
            ready: ready!, readyTimeout: readyTimeout!, watchdog: watchdog!,
            http: HTTPProbePolicy(
                path: httpPath!, interval: httpInterval!, timeout: httpTimeout!, retries: httpRetries!,
                startPeriod: httpStartPeriod!),
            onUnhealthy: onUnhealthy!)
    }

    var logPolicy: LogPolicy { LogPolicy(maxSizeBytes: logMaxSize!, maxFiles: logMaxFiles!) }
}
