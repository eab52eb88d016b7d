/// What a roster says about one character or job, fully resolved (defaults applied, env files read).
public struct ServiceSpec: Hashable, Sendable {
    public var name: ServiceName
    public var kind: ServiceKind
    public var launch: LaunchSpec
    public var port: Int?
    /// `after:`, in roster order.
    public var dependencies: [Dependency]
    public var restart: RestartPolicy
    public var stopSignal: Signal
    public var stopGrace: Duration
    public var limits: Limits
    public var health: HealthPolicy
    public var logs: LogPolicy
    /// A job that runs by the clock (`schedule:` / `every:`), not at start.
    public var schedule: JobSchedule? = nil

    public init(
        name: ServiceName, kind: ServiceKind = .character, launch: LaunchSpec, port: Int? = nil,
        after dependencies: [Dependency] = [], restart: RestartPolicy = RestartPolicy(), stopSignal: Signal = .term,
        stopGrace: Duration = .seconds(10), limits: Limits = Limits(), health: HealthPolicy = HealthPolicy(),
        logs: LogPolicy = LogPolicy()
    ) {
        self.name = name
        self.kind = kind
        self.launch = launch
        self.port = port
        self.dependencies = dependencies
        self.restart = restart
        self.stopSignal = stopSignal
        self.stopGrace = stopGrace
        self.limits = limits
        self.health = health
        self.logs = logs
    }

    /// The names it waits for.
    public var after: [ServiceName] { dependencies.map(\.name) }

    public var isJob: Bool { if case .job = kind { return true } else { return false } }

    /// A stable fingerprint of everything that defines a run, so a `once-per-revision` job
    /// reruns exactly when its definition changes.
    public var revision: String {
        var text = launch.arguments.joined(separator: "\u{1}")
        text += "\u{2}" + launch.workingDirectory + "\u{2}"
        for key in launch.environment.keys.sorted() {
            text += key + "=" + (launch.environment[key] ?? "") + "\u{1}"
        }
        let hex = String(stableHash(text), radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

public enum ServiceKind: Hashable, Sendable {
    case character
    case job(JobRunMode)
}

public enum JobRunMode: String, Hashable, Sendable, CaseIterable {
    /// Runs once for each distinct definition; success is remembered in the state dir.
    case oncePerRevision = "once-per-revision"
    /// Runs every time whisperd starts.
    case everyStart = "every-start"
}

/// How to start the process. A change here means the process must be restarted.
public struct LaunchSpec: Hashable, Sendable {
    /// The built-in worker keeps its conversations in PostgreSQL when one of these is set.
    public var storesInPostgres: Bool {
        ["DATABASE_URL", "POSTGRES_URL"].contains { !(environment[$0] ?? "").isEmpty }
    }

    /// argv, argv[0] being the program (looked up on the child's PATH when it has no slash).
    public var arguments: [String]
    /// The character's own environment (base, env files, `env:`); whisperd adds its own on spawn.
    public var environment: [String: String]
    public var workingDirectory: String
    /// Identity, sandbox and per-process settings (DESIGN §10).
    public var tenant: TenantSpec

    public init(
        arguments: [String], environment: [String: String] = [:], workingDirectory: String = "/",
        tenant: TenantSpec = TenantSpec()
    ) {
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.tenant = tenant
    }
}

public struct Limits: Hashable, Sendable {
    public var memoryBytes: UInt64?
    public var memoryHighBytes: UInt64?
    public var cpus: Double?
    public var pids: Int?
    /// Relative CPU share under contention, cgroup v2's `cpu.weight` scale (1–10000, default 100;
    /// Compose `cpu_shares` / 10.24); v1 gets `cpu.shares` = weight × 1024 / 100.
    public var cpuWeight: Int?
    /// Memory protected from reclaim (Compose `mem_reservation`): v2 `memory.low`.
    public var memoryLowBytes: UInt64?
    /// The CPUs it may run on (Compose `cpuset`): `cpuset.cpus` in v1 and v2.
    public var cpuset: CPUSet?

    public init(
        memoryBytes: UInt64? = nil, memoryHighBytes: UInt64? = nil, cpus: Double? = nil, pids: Int? = nil, cpuWeight: Int? = nil,
        memoryLowBytes: UInt64? = nil, cpuset: CPUSet? = nil
    ) {
        self.memoryBytes = memoryBytes
        self.memoryHighBytes = memoryHighBytes
        self.cpus = cpus
        self.pids = pids
        self.cpuWeight = cpuWeight
        self.memoryLowBytes = memoryLowBytes
        self.cpuset = cpuset
    }
}

public enum RestartMode: String, Hashable, Sendable, CaseIterable {
    case no
    case onFailure = "on-failure"
    case always
    case unlessStopped = "unless-stopped"
}

public struct RestartPolicy: Hashable, Sendable {
    public var mode: RestartMode
    public var delay: Duration
    public var delayMax: Duration
    public var resetAfter: Duration
    public var budgetMax: Int
    public var budgetWindow: Duration

    public init(
        mode: RestartMode = .always, delay: Duration = .milliseconds(100), delayMax: Duration = .seconds(60),
        resetAfter: Duration = .seconds(600), budgetMax: Int = 5, budgetWindow: Duration = .seconds(60)
    ) {
        self.mode = mode
        self.delay = delay
        self.delayMax = delayMax
        self.resetAfter = resetAfter
        self.budgetMax = budgetMax
        self.budgetWindow = budgetWindow
    }
}

public enum ReadinessMode: String, Hashable, Sendable, CaseIterable {
    /// Ready when the child sends `READY=1` on its notify socket.
    case notify
    /// Ready as soon as the process is running.
    case started
    /// Ready when an HTTP GET on the character's port answers 2xx.
    case http
    /// Ready when a command (Compose's healthcheck `test:`) exits 0.
    case exec
    /// Ready when a TCP connect to a port succeeds.
    case tcp
    /// Ready when the service writes a line matching `ready_log_line` (process-compose's `log_ready`).
    case log
}

public enum UnhealthyAction: String, Hashable, Sendable, CaseIterable {
    case restart
    case report
}

/// What a probe checks.
public enum ProbeCheck: Hashable, Sendable {
    /// GET on the service's `port:`, 2xx passes.
    case http(path: String)
    /// A command run as the service (its user, cgroup, environment, sandbox); exit 0 passes.
    /// Compose's `[CMD, …]` is the arguments; `[CMD-SHELL, "…"]` is `/bin/sh -c "…"`.
    case exec(arguments: [String])
    /// A TCP connect to this port on 127.0.0.1.
    case tcp(port: Int)
}

/// A health check with Compose's schedule: before the service is ready it runs every
/// `startInterval`; after, every `interval` as liveness, where `retries` failures in a row
/// (not counting those within `startPeriod` of the start) make it unhealthy. At most one runs
/// at a time; one that takes longer than `timeout` fails (and an exec probe is killed).
public struct ProbePolicy: Hashable, Sendable {
    public var check: ProbeCheck
    public var interval: Duration
    public var timeout: Duration
    public var retries: Int
    public var startPeriod: Duration
    public var startInterval: Duration

    public init(
        check: ProbeCheck, interval: Duration = .seconds(30), timeout: Duration = .seconds(5), retries: Int = 3,
        startPeriod: Duration = .seconds(60), startInterval: Duration = .milliseconds(250)
    ) {
        self.check = check
        self.interval = interval
        self.timeout = timeout
        self.retries = retries
        self.startPeriod = startPeriod
        self.startInterval = startInterval
    }

    /// For log lines and incidents: "HTTP /health", "exec pg_isready", "TCP port 5432".
    public var label: String {
        switch check {
        case .http(let path): "HTTP \(path)"
        case .exec(let arguments): "exec " + (arguments.first == "/bin/sh" && arguments.count == 3 ? arguments[2] : arguments.joined(separator: " "))
        case .tcp(let port): "TCP port \(port)"
        }
    }
}

public struct HealthPolicy: Hashable, Sendable {
    public var ready: ReadinessMode
    public var readyTimeout: Duration
    /// The watchdog interval a child that pings must keep; `nil` disables it.
    public var watchdog: Duration?
    /// The check behind `ready: http | exec | tcp` (and liveness after); `nil` for the others.
    public var probe: ProbePolicy?
    /// `ready: log`: the regular expression a line of output must match.
    public var readyLogPattern: String?
    public var onUnhealthy: UnhealthyAction

    public init(
        ready: ReadinessMode = .notify, readyTimeout: Duration = .seconds(60), watchdog: Duration? = .seconds(30),
        probe: ProbePolicy? = nil, readyLogPattern: String? = nil, onUnhealthy: UnhealthyAction = .restart
    ) {
        self.ready = ready
        self.readyTimeout = readyTimeout
        self.watchdog = watchdog
        self.probe = probe
        self.readyLogPattern = readyLogPattern
        self.onUnhealthy = onUnhealthy
    }
}

public struct LogPolicy: Hashable, Sendable {
    public var maxSizeBytes: UInt64
    public var maxFiles: Int

    public init(maxSizeBytes: UInt64 = 10 * 1024 * 1024, maxFiles: Int = 3) {
        self.maxSizeBytes = maxSizeBytes
        self.maxFiles = maxFiles
    }
}

/// A validated roster: the specs in file order (jobs first, then characters).
public struct Roster: Hashable, Sendable {
    public var services: [ServiceSpec]

    public init(services: [ServiceSpec]) { self.services = services }

    public subscript(name: ServiceName) -> ServiceSpec? { services.first { $0.name == name } }
    public var names: [ServiceName] { services.map(\.name) }
}

/// FNV-1a of the text's UTF-8: stable across processes and versions, unlike `Hasher`.
func stableHash(_ text: String) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    return hash
}
