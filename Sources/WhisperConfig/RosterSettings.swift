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
    /// `health.exec` (Compose's healthcheck): `test` as arguments; `.some(nil)` is `[NONE]`/`disable`.
    var execTest: [String]??
    var exec = ProbeSettings()
    /// `health.tcp`.
    var tcpPort: Int?
    var tcp = ProbeSettings()
    /// `health.ready_log_line`.
    var readyLogLine: String?
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
        result.execTest = other.execTest ?? execTest
        result.exec = exec.overlaid(with: other.exec)
        result.tcpPort = other.tcpPort ?? tcpPort
        result.tcp = tcp.overlaid(with: other.tcp)
        result.readyLogLine = other.readyLogLine ?? readyLogLine
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

    /// `port`: the service's `port:`, the TCP probe's default.
    func healthPolicy(port: Int?) -> HealthPolicy {
        let http = ProbePolicy(
            check: .http(path: httpPath!), interval: httpInterval!, timeout: httpTimeout!, retries: httpRetries!,
            startPeriod: httpStartPeriod!, startInterval: min(httpInterval!, .milliseconds(250)))
        let execProbe = (execTest ?? nil).map { exec.policy(.exec(arguments: $0), defaults: ProbeSettings.composeDefaults) }
        let tcpProbe = (tcpPort ?? port).map { tcp.policy(.tcp(port: $0), defaults: ProbeSettings.tcpDefaults) }
        // The check `ready:` names; with another mode, an exec or tcp block given is liveness after readiness.
        let probe: ProbePolicy? =
            switch ready! {
            case .http: http
            case .exec: execProbe
            case .tcp: tcpProbe
            case .notify, .started, .log: execProbe ?? (tcp.isGiven ? tcpProbe : nil)
            }
        return HealthPolicy(
            ready: ready!, readyTimeout: readyTimeout!, watchdog: watchdog!, probe: probe, readyLogPattern: readyLogLine,
            onUnhealthy: onUnhealthy!)
    }

    var logPolicy: LogPolicy { LogPolicy(maxSizeBytes: logMaxSize!, maxFiles: logMaxFiles!) }
}

/// A probe's schedule as written; `nil` fields fall back to the probe kind's defaults.
struct ProbeSettings {
    var interval: Duration?
    var timeout: Duration?
    var retries: Int?
    var startPeriod: Duration?
    var startInterval: Duration?
    /// Set when the roster wrote a block for it (a tcp block alone makes a liveness probe).
    var isGiven = false

    /// Compose's healthcheck defaults: every 30s, 30s timeout, 3 retries, no start period, 5s while starting.
    static let composeDefaults = ProbeSettings(
        interval: .seconds(30), timeout: .seconds(30), retries: 3, startPeriod: .zero, startInterval: .seconds(5))
    static let tcpDefaults = ProbeSettings(
        interval: .seconds(30), timeout: .seconds(5), retries: 3, startPeriod: .zero, startInterval: .milliseconds(250))

    func overlaid(with other: ProbeSettings) -> ProbeSettings {
        ProbeSettings(
            interval: other.interval ?? interval, timeout: other.timeout ?? timeout, retries: other.retries ?? retries,
            startPeriod: other.startPeriod ?? startPeriod, startInterval: other.startInterval ?? startInterval,
            isGiven: isGiven || other.isGiven)
    }

    func policy(_ check: ProbeCheck, defaults: ProbeSettings) -> ProbePolicy {
        let merged = defaults.overlaid(with: self)
        return ProbePolicy(
            check: check, interval: merged.interval!, timeout: merged.timeout!, retries: merged.retries!,
            startPeriod: merged.startPeriod!, startInterval: merged.startInterval!)
    }
}
