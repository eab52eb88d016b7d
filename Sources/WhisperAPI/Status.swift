/// What `GET /v1/characters`, `/v1/characters/NAME`, `/health` and the start/stop/restart
/// answers say about one character or job.
public struct CharacterStatus: APIModel, Equatable {
    public var name: String
    /// `character` or `job`.
    public var kind: String
    /// A `ServiceState`: stopped, waiting, starting, running, stopping, backoff, crashloop, exited, failed.
    public var state: String
    /// `up` or `down`: what the operator or the roster wants.
    public var desired: String
    public var ready: Bool
    public var restarts: Int
    public var crashLoop: Bool
    /// Not in `/health` (kept small for frequent polls).
    public var logLinesDropped: Int?
    public var notifyRejected: Int?
    public var notifyMalformed: Int?
    public var pid: Int?
    public var uptimeSeconds: Double?
    public var lastExit: LastExit?
    public var oomKills: Int?
    /// Scheduled jobs only.
    public var schedule: Schedule?
    /// An instance of a character with `replicas:`.
    public var replica: Replica?
    public var tenant: Tenant?
    public var resources: Resources?
    public var restartsByReason: [String: Int]?
    public var statusText: String?
    /// Facet name -> `level` or `level:detail` (`discord` -> `down:gateway closed 4004`).
    public var facets: [String: String]?
    public var inflight: Int?
    public var llmTokens: Int?
    public var llmBudgetRemaining: Int?
    public var restartInSeconds: Double?

    public init(name: String, kind: String, state: String, desired: String, ready: Bool, restarts: Int, crashLoop: Bool) {
        self.name = name
        self.kind = kind
        self.state = state
        self.desired = desired
        self.ready = ready
        self.restarts = restarts
        self.crashLoop = crashLoop
    }

    public struct LastExit: APIModel, Equatable {
        public var reason: String
        public var secondsAgo: Double
        public var uptimeSeconds: Double
        public var peakMemoryBytes: UInt64?

        public init(reason: String, secondsAgo: Double, uptimeSeconds: Double, peakMemoryBytes: UInt64? = nil) {
            self.reason = reason
            self.secondsAgo = secondsAgo
            self.uptimeSeconds = uptimeSeconds
            self.peakMemoryBytes = peakMemoryBytes
        }

        enum CodingKeys: String, CodingKey {
            case reason
            case secondsAgo = "seconds_ago"
            case uptimeSeconds = "uptime_seconds"
            case peakMemoryBytes = "peak_memory_bytes"
        }

        public static var schemaName: String { "LastExit" }
        public static var schema: JSONSchema {
            .object(
                "The last time its process ended.",
                [
                    "reason": .string("Why, in words: `exit 1`, `signal 9 (SIGKILL)`, `OOM-killed`, `health check failed` …"),
                    "seconds_ago": .number(), "uptime_seconds": .number("How long that run lasted."),
                    "peak_memory_bytes": .integer("The run's peak memory, where the cgroup records it.", minimum: 0),
                ], optional: ["peak_memory_bytes"])
        }
        public static var example: Self { LastExit(reason: "exit 1", secondsAgo: 12.5, uptimeSeconds: 3600.25, peakMemoryBytes: 73_400_320) }
    }

    /// Which instance of which character (`replicas:`): `elena-1` is `{of: elena, index: 1, count: 3}`.
    public struct Replica: APIModel, Equatable {
        public var of: String
        public var index: Int
        public var count: Int

        public init(of: String, index: Int, count: Int) {
            self.of = of
            self.index = index
            self.count = count
        }

        public static var schemaName: String { "Replica" }
        public static var schema: JSONSchema {
            .object(
                "An instance of a character with `replicas:`.",
                ["of": .string("The character as the roster names it."), "index": .integer(minimum: 0), "count": .integer(minimum: 1)])
        }
        public static var example: Self { Replica(of: "elena", index: 1, count: 3) }
    }

    /// A scheduled job's rule, its next run and how its last run went.
    public struct Schedule: APIModel, Equatable {
        /// As the roster writes it (`30 3 * * *`, `@hourly`).
        public var rule: String
        /// Runs not started because the previous one was still running.
        public var skippedRuns: Int
        /// ISO 8601, UTC, and the same as Unix seconds.
        public var nextRun: String?
        public var nextRunUnix: Int?
        public var lastRun: String?
        public var lastRunUnix: Int?
        /// `running`, `ok` or `failed: REASON`.
        public var lastResult: String?

        public init(rule: String, skippedRuns: Int) {
            self.rule = rule
            self.skippedRuns = skippedRuns
        }

        enum CodingKeys: String, CodingKey {
            case rule
            case skippedRuns = "skipped_runs"
            case nextRun = "next_run"
            case nextRunUnix = "next_run_unix"
            case lastRun = "last_run"
            case lastRunUnix = "last_run_unix"
            case lastResult = "last_result"
        }

        public static var schemaName: String { "Schedule" }
        public static var schema: JSONSchema {
            .object(
                "A scheduled job: its rule, next run and last run.",
                [
                    "rule": .string("As the roster writes it."), "skipped_runs": .integer("Runs skipped: the last was still running.", minimum: 0),
                    "next_run": .string(format: "date-time"), "next_run_unix": .integer(),
                    "last_run": .string(format: "date-time"), "last_run_unix": .integer(),
                    "last_result": .string("`running`, `ok` or `failed: REASON`."),
                ], optional: ["next_run", "next_run_unix", "last_run", "last_run_unix", "last_result"])
        }
        public static var example: Self {
            var schedule = Schedule(rule: "30 3 * * *", skippedRuns: 0)
            schedule.nextRun = "2026-12-07T03:30:00Z"
            schedule.nextRunUnix = 1_796_614_200
            schedule.lastRun = "2026-12-06T03:30:00Z"
            schedule.lastRunUnix = 1_796_527_800
            schedule.lastResult = "ok"
            return schedule
        }
    }

    /// Who it runs as and how much of its sandbox the kernel enforces.
    public struct Tenant: APIModel, Equatable {
        public var uid: Int
        public var gid: Int
        /// `enforced`, `partly` or `not`.
        public var sandbox: String
        public var notEnforced: [String]

        public init(uid: Int, gid: Int, sandbox: String, notEnforced: [String]) {
            self.uid = uid
            self.gid = gid
            self.sandbox = sandbox
            self.notEnforced = notEnforced
        }

        enum CodingKeys: String, CodingKey {
            case uid, gid, sandbox
            case notEnforced = "not_enforced"
        }

        public static var schemaName: String { "Tenant" }
        public static var schema: JSONSchema {
            .object(
                "The user it runs as and its Landlock sandbox.",
                [
                    "uid": .integer(minimum: 0), "gid": .integer(minimum: 0),
                    "sandbox": .string(oneOf: ["enforced", "partly", "not"]),
                    "not_enforced": .array(.string(), "What of the sandbox the kernel cannot enforce, in words."),
                ])
        }
        public static var example: Self { Tenant(uid: 61_001, gid: 61_001, sandbox: "partly", notEnforced: ["signal scoping (Landlock ABI < 6)"]) }
    }

    /// Its limits from the roster and what its cgroup counts now.
    public struct Resources: APIModel, Equatable {
        public var memoryLimitBytes: UInt64?
        public var cpusLimit: Double?
        public var pidsLimit: Int?
        public var cpuset: String?
        public var memoryBytes: UInt64?
        public var memoryPeakBytes: UInt64?
        public var cpuSeconds: Double?
        public var pids: Int?

        public init() {}

        enum CodingKeys: String, CodingKey {
            case cpuset, pids
            case memoryLimitBytes = "memory_limit_bytes"
            case cpusLimit = "cpus_limit"
            case pidsLimit = "pids_limit"
            case memoryBytes = "memory_bytes"
            case memoryPeakBytes = "memory_peak_bytes"
            case cpuSeconds = "cpu_seconds"
        }

        public var isEmpty: Bool { self == Resources() }

        public static var schemaName: String { "Resources" }
        public static var schema: JSONSchema {
            .object(
                "Limits (from the roster) and usage (from its cgroup; absent while it has no process).",
                [
                    "memory_limit_bytes": .integer(minimum: 0), "cpus_limit": .number(), "pids_limit": .integer(minimum: 0),
                    "cpuset": .string("CPUs it may run on, as in the roster (`0-1,3`)."),
                    "memory_bytes": .integer(minimum: 0), "memory_peak_bytes": .integer(minimum: 0),
                    "cpu_seconds": .number("CPU time used since its cgroup was made."), "pids": .integer(minimum: 0),
                ],
                optional: [
                    "memory_limit_bytes", "cpus_limit", "pids_limit", "cpuset", "memory_bytes", "memory_peak_bytes", "cpu_seconds",
                    "pids",
                ])
        }
        public static var example: Self {
            var resources = Resources()
            resources.memoryLimitBytes = 268_435_456
            resources.cpusLimit = 0.5
            resources.pidsLimit = 64
            resources.cpuset = "0-1"
            resources.memoryBytes = 41_943_040
            resources.memoryPeakBytes = 52_428_800
            resources.cpuSeconds = 1.25
            resources.pids = 3
            return resources
        }
    }

    enum CodingKeys: String, CodingKey {
        case name, kind, state, desired, ready, restarts, pid, tenant, resources, facets, inflight, schedule, replica
        case crashLoop = "crash_loop"
        case logLinesDropped = "log_lines_dropped"
        case notifyRejected = "notify_rejected"
        case notifyMalformed = "notify_malformed"
        case uptimeSeconds = "uptime_seconds"
        case lastExit = "last_exit"
        case oomKills = "oom_kills"
        case restartsByReason = "restarts_by_reason"
        case statusText = "status_text"
        case llmTokens = "llm_tokens"
        case llmBudgetRemaining = "llm_budget_remaining"
        case restartInSeconds = "restart_in_seconds"
    }

    public static let states = ["stopped", "waiting", "starting", "running", "stopping", "backoff", "crashloop", "exited", "failed"]

    public static var schema: JSONSchema {
        .object(
            "One character or job. `/health` leaves out the counters and `resources`.",
            [
                "name": .string(), "kind": .string(oneOf: ["character", "job"]), "state": .string(oneOf: states),
                "desired": .string("What the operator or the roster wants.", oneOf: ["up", "down"]),
                "ready": .boolean(), "restarts": .integer(minimum: 0),
                "crash_loop": .boolean("Restarted more often than its budget allows."),
                "log_lines_dropped": .integer("Lines its log writer dropped (the disk could not keep up).", minimum: 0),
                "notify_rejected": .integer("Notify datagrams from a process not its own.", minimum: 0),
                "notify_malformed": .integer(minimum: 0),
                "pid": .integer(minimum: 1), "uptime_seconds": .number(), "last_exit": .reference(LastExit.self),
                "oom_kills": .integer(minimum: 1), "schedule": .reference(Schedule.self), "replica": .reference(Replica.self), "tenant": .reference(Tenant.self), "resources": .reference(Resources.self),
                "restarts_by_reason": .map(of: .integer(minimum: 0), "Exit kind (`Error`, `OOMKilled` …) -> restarts."),
                "status_text": .string("Its last STATUS= notification."),
                "facets": .map(of: .string(), "Facet -> `level` or `level:detail` (ok, degraded, down)."),
                "inflight": .integer(minimum: 0), "llm_tokens": .integer(minimum: 0), "llm_budget_remaining": .integer(),
                "restart_in_seconds": .number("Until its next restart (backoff)."),
            ],
            optional: [
                "log_lines_dropped", "notify_rejected", "notify_malformed", "pid", "uptime_seconds", "last_exit", "oom_kills",
                "schedule", "replica", "tenant", "resources", "restarts_by_reason", "status_text", "facets", "inflight", "llm_tokens",
                "llm_budget_remaining", "restart_in_seconds",
            ])
    }

    public static var example: Self {
        var status = CharacterStatus(name: "elena", kind: "character", state: "running", desired: "up", ready: true, restarts: 2, crashLoop: false)
        status.logLinesDropped = 0
        status.notifyRejected = 0
        status.notifyMalformed = 0
        status.pid = 4242
        status.uptimeSeconds = 185.5
        status.lastExit = .example
        status.oomKills = 1
        status.schedule = .example
        status.replica = .example
        status.tenant = .example
        status.resources = .example
        status.restartsByReason = ["Error": 1, "OOMKilled": 1]
        status.statusText = "serving"
        status.facets = ["discord": "ok", "llm": "degraded:slow answers"]
        status.inflight = 1
        status.llmTokens = 12_000
        status.llmBudgetRemaining = 88_000
        status.restartInSeconds = 0.5
        return status
    }
}

/// `GET /v1/characters`.
public struct CharacterList: APIModel, Equatable {
    public var characters: [CharacterStatus]

    public init(characters: [CharacterStatus]) { self.characters = characters }

    public static var schema: JSONSchema {
        .object("Every character and job, in roster order.", ["characters": .array(.reference(CharacterStatus.self))])
    }
    public static var example: Self { CharacterList(characters: [.example]) }
}

/// `GET /health`: 200 when everything wanted up is ready, else 503 with the same body.
public struct HealthReport: APIModel, Equatable {
    /// `ok` or `degraded`.
    public var status: String
    public var supervisor: Supervisor
    public var characters: [CharacterStatus]
    /// Present (and the answer 503) while something wanted up is not ready.
    public var notReady: [String]?

    public init(status: String, supervisor: Supervisor, characters: [CharacterStatus], notReady: [String]?) {
        self.status = status
        self.supervisor = supervisor
        self.characters = characters
        self.notReady = notReady
    }

    enum CodingKeys: String, CodingKey {
        case status, supervisor, characters
        case notReady = "not_ready"
    }

    public struct Supervisor: APIModel, Equatable {
        public var version: String
        public var pid: Int
        public var uptimeSeconds: Double
        public var cgroupBackend: String
        public var cgroups: CgroupReport
        public var shuttingDown: Bool
        public var summary: String
        /// How often it re-executed itself in place (`whisperctl reexec`) since it started.
        public var reexecs: Int
        /// Why the last re-exec failed (it kept running), if it did.
        public var reexecError: String?

        public init(
            version: String, pid: Int, uptimeSeconds: Double, cgroupBackend: String, cgroups: CgroupReport, shuttingDown: Bool,
            summary: String, reexecs: Int
        ) {
            self.reexecs = reexecs
            self.version = version
            self.pid = pid
            self.uptimeSeconds = uptimeSeconds
            self.cgroupBackend = cgroupBackend
            self.cgroups = cgroups
            self.shuttingDown = shuttingDown
            self.summary = summary
        }

        enum CodingKeys: String, CodingKey {
            case version, pid, cgroups, summary, reexecs
            case reexecError = "reexec_error"
            case uptimeSeconds = "uptime_seconds"
            case cgroupBackend = "cgroup_backend"
            case shuttingDown = "shutting_down"
        }

        public static var schemaName: String { "Supervisor" }
        public static var schema: JSONSchema {
            .object(
                "whisperd itself.",
                [
                    "version": .string(), "pid": .integer(minimum: 1), "uptime_seconds": .number(),
                    "cgroup_backend": .string(oneOf: CgroupReport.backends), "cgroups": .reference(CgroupReport.self),
                    "shutting_down": .boolean(), "summary": .string("`3 running, 1 backoff` …"),
                    "reexecs": .integer("Re-executions in place since it started; one counts once the new process has started up (systemd has its READY=1).", minimum: 0),
                    "reexec_error": .string("Why the last re-exec failed (whisperd kept running)."),
                ], optional: ["reexec_error"])
        }
        public static var example: Self {
            var supervisor = Supervisor(
                version: "0.1.0", pid: 812, uptimeSeconds: 3600.5, cgroupBackend: "hybrid", cgroups: .example, shuttingDown: false,
                summary: "2 running", reexecs: 1)
            supervisor.reexecError = "exec /usr/bin/whisperd: No such file or directory"
            return supervisor
        }
    }

    public static let statuses = ["ok", "degraded"]

    public static var schema: JSONSchema {
        .object(
            "The fleet in brief; the answer is 503 while anything wanted up is not ready.",
            [
                "status": .string(oneOf: statuses), "supervisor": .reference(Supervisor.self),
                "characters": .array(.reference(CharacterStatus.self), "Each without counters or resources."),
                "not_ready": .array(.string(), "Names of what is wanted up but not ready."),
            ], optional: ["not_ready"])
    }
    public static var example: Self {
        HealthReport(status: "degraded", supervisor: .example, characters: [.example], notReady: ["sofia"])
    }
}

/// Which cgroup hierarchy serves what. Besides `backend` and `not_enforced`, one key per
/// function (`grouping`, `memory`, `cpus`, `pids`, `cpuset`, `cpu_accounting`) names the
/// hierarchy that provides it, or says it is not enforced.
public struct CgroupReport: APIModel, Equatable {
    public var backend: String
    public var notEnforced: [String]
    public var providers: [String: String]

    public static let backends = ["v2", "v1", "hybrid", "none"]

    public init(backend: String, notEnforced: [String], providers: [String: String]) {
        self.backend = backend
        self.notEnforced = notEnforced
        self.providers = providers
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
        static let backend = Key("backend")
        static let notEnforced = Key("not_enforced")
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        backend = try container.decode(String.self, forKey: .backend)
        notEnforced = try container.decode([String].self, forKey: .notEnforced)
        var providers: [String: String] = [:]
        for key in container.allKeys where key.stringValue != Key.backend.stringValue && key.stringValue != Key.notEnforced.stringValue {
            providers[key.stringValue] = try container.decode(String.self, forKey: key)
        }
        self.providers = providers
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(backend, forKey: .backend)
        try container.encode(notEnforced, forKey: .notEnforced)
        for (function, provider) in providers { try container.encode(provider, forKey: Key(function)) }
    }

    public static var schema: JSONSchema {
        var schema = JSONSchema.object(
            "Which hierarchy enforces what; other keys (grouping, memory, cpus, pids, cpuset, cpu_accounting) name the hierarchy serving that function.",
            ["backend": .string(oneOf: backends), "not_enforced": .array(.string(), "Roster limits this host cannot enforce.")])
        schema.additionalProperties = .allowed(.string())
        return schema
    }
    public static var example: Self {
        CgroupReport(
            backend: "hybrid", notEnforced: [],
            providers: ["grouping": "v2 /sys/fs/cgroup/unified/whisperd", "memory": "v1 /sys/fs/cgroup/memory/whisperd"])
    }
}
