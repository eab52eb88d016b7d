/// Every error answer of both endpoints: `{"error": "…"}`.
public struct APIError: APIModel, Equatable, Error, CustomStringConvertible {
    public var error: String

    public init(_ error: String) { self.error = error }

    public var description: String { error }

    public static var schemaName: String { "Error" }
    public static var schema: JSONSchema { .object("What went wrong, in words.", ["error": .string()]) }
    public static var example: Self { APIError("no character named sofia") }
}

/// `GET /v1/paths` (control socket): where things are, for `whisperctl backup` and `restore`.
public struct Paths: APIModel, Equatable {
    public var stateDir: String
    public var runtimeDir: String
    public var logDir: String
    public var roster: String
    public var charactersDir: String
    /// The characters (not jobs) of the roster.
    public var characters: [String]
    public var storesOnPostgres: Bool

    public init(
        stateDir: String, runtimeDir: String, logDir: String, roster: String, charactersDir: String, characters: [String],
        storesOnPostgres: Bool
    ) {
        self.stateDir = stateDir
        self.runtimeDir = runtimeDir
        self.logDir = logDir
        self.roster = roster
        self.charactersDir = charactersDir
        self.characters = characters
        self.storesOnPostgres = storesOnPostgres
    }

    enum CodingKeys: String, CodingKey {
        case roster, characters
        case stateDir = "state_dir"
        case runtimeDir = "runtime_dir"
        case logDir = "log_dir"
        case charactersDir = "characters_dir"
        case storesOnPostgres = "stores_on_postgres"
    }

    public static var schema: JSONSchema {
        .object(
            "Directories and files of this whisperd.",
            [
                "state_dir": .string(), "runtime_dir": .string(), "log_dir": .string(), "roster": .string("The roster file."),
                "characters_dir": .string(), "characters": .array(.string(), "The roster's characters (not jobs)."),
                "stores_on_postgres": .boolean("Some character keeps its conversations in PostgreSQL (not archived by backup)."),
            ])
    }
    public static var example: Self {
        Paths(
            stateDir: "/var/lib/whisperd", runtimeDir: "/run/whisperd", logDir: "/var/log/whisperd", roster: "/etc/whisperd/roster.yaml",
            charactersDir: "/etc/whisperd/characters", characters: ["elena", "sofia"], storesOnPostgres: false)
    }
}

/// One abnormal exit, as recorded in `<state>/incidents/<name>.jsonl` (`whisperctl why`).
public struct Incident: APIModel, Equatable {
    public var reason: String
    /// The exit's kind, as in metrics: `Error`, `Signaled`, `OOMKilled`, `HealthCheckFailed` …
    public var kind: String
    /// ISO 8601, UTC.
    public var at: String
    public var uptimeSeconds: Double
    public var restarts: Int
    public var stateAfter: String
    public var peakMemoryBytes: UInt64?
    /// Why the health check failed (exec probes: its output).
    public var healthCheck: String?
    public var lastLogLines: [String]
    /// `status_text` and each facet (`level` or `level:detail`) when it ended.
    public var health: [String: String]?

    public init(
        reason: String, kind: String, at: String, uptimeSeconds: Double, restarts: Int, stateAfter: String, lastLogLines: [String]
    ) {
        self.reason = reason
        self.kind = kind
        self.at = at
        self.uptimeSeconds = uptimeSeconds
        self.restarts = restarts
        self.stateAfter = stateAfter
        self.lastLogLines = lastLogLines
    }

    enum CodingKeys: String, CodingKey {
        case reason, kind, at, restarts, health
        case uptimeSeconds = "uptime_seconds"
        case stateAfter = "state_after"
        case peakMemoryBytes = "peak_memory_bytes"
        case healthCheck = "health_check"
        case lastLogLines = "last_log_lines"
    }

    public static let kinds = [
        "Completed", "Error", "Signaled", "OOMKilled", "WatchdogTimeout", "HealthCheckFailed", "ReadyTimeout", "Stopped", "SpawnFailed",
    ]

    public static var schema: JSONSchema {
        .object(
            "An abnormal exit: why, after how long, its peak memory and last log lines.",
            [
                "reason": .string(), "kind": .string(oneOf: kinds), "at": .string(format: "date-time"), "uptime_seconds": .number(),
                "restarts": .integer(minimum: 0), "state_after": .string(oneOf: CharacterStatus.states),
                "peak_memory_bytes": .integer(minimum: 0), "health_check": .string("Why the health check failed."),
                "last_log_lines": .array(.string()),
                "health": .map(of: .string(), "`status_text` and each facet (`level` or `level:detail`) when it ended."),
            ], optional: ["peak_memory_bytes", "health_check", "health"])
    }
    public static var example: Self {
        var incident = Incident(
            reason: "OOM-killed", kind: "OOMKilled", at: "2026-12-06T11:02:03Z", uptimeSeconds: 42.5, restarts: 3, stateAfter: "backoff",
            lastLogLines: ["2026-12-06T11:02:02.981Z stderr allocating"])
        incident.peakMemoryBytes = 268_435_456
        incident.healthCheck = "exit 1: connection refused"
        incident.health = ["status_text": "busy", "llm": "ok"]
        return incident
    }
}

/// `GET /v1/characters/NAME/incidents` (control socket): the last ten, oldest first.
public struct IncidentList: APIModel, Equatable {
    public var name: String
    public var incidents: [Incident]

    public init(name: String, incidents: [Incident]) {
        self.name = name
        self.incidents = incidents
    }

    public static var schema: JSONSchema {
        .object("A character's recent incidents, oldest first.", ["name": .string(), "incidents": .array(.reference(Incident.self))])
    }
    public static var example: Self { IncidentList(name: "elena", incidents: [.example]) }
}

/// `GET /v1/characters/NAME/env` (control socket): the effective environment, secrets redacted.
public struct EnvironmentReport: APIModel, Equatable {
    public var name: String
    public var environment: [Variable]

    public init(name: String, environment: [Variable]) {
        self.name = name
        self.environment = environment
    }

    public struct Variable: APIModel, Equatable {
        public var name: String
        /// The value, or a redaction for a secret.
        public var value: String
        public var secret: Bool
        /// Which layer set it: `base`, an env file and line, `env:`, `whisperd`.
        public var origin: String

        public init(name: String, value: String, secret: Bool, origin: String) {
            self.name = name
            self.value = value
            self.secret = secret
            self.origin = origin
        }

        public static var schemaName: String { "EnvironmentVariable" }
        public static var schema: JSONSchema {
            .object(
                "One variable of its environment.",
                [
                    "name": .string(), "value": .string("The value; a secret's is redacted."), "secret": .boolean(),
                    "origin": .string("Which layer set it: `base`, an env file and line, `env:`, `whisperd`."),
                ])
        }
        public static var example: Self { Variable(name: "DISCORD_TOKEN", value: "<redacted>", secret: true, origin: "elena.env:2") }
    }

    public static var schemaName: String { "Environment" }
    public static var schema: JSONSchema {
        .object(
            "A character's effective environment, sorted by name.",
            ["name": .string(), "environment": .array(.reference(Variable.self))])
    }
    public static var example: Self { EnvironmentReport(name: "elena", environment: [.example]) }
}

/// `POST /v1/reload` (control socket), 200: the plan, applied unless `dry_run`.
public struct ReloadResult: APIModel, Equatable {
    public var applied: Bool
    public var dryRun: Bool
    public var plan: [String]

    public init(applied: Bool, dryRun: Bool, plan: [String]) {
        self.applied = applied
        self.dryRun = dryRun
        self.plan = plan
    }

    enum CodingKeys: String, CodingKey {
        case applied, plan
        case dryRun = "dry_run"
    }

    public static var schema: JSONSchema {
        .object(
            "What the roster's difference is (and, unless a dry run, what was done).",
            ["applied": .boolean(), "dry_run": .boolean(), "plan": .array(.string(), "One line per change: `start elena` …")])
    }
    public static var example: Self { ReloadResult(applied: true, dryRun: false, plan: ["start sofia", "restart elena (command changed)"]) }
}

/// 422 of reload, scale and profile switches: the roster that would result is invalid; nothing changed.
public struct RosterRejected: APIModel, Equatable {
    /// Always false.
    public var applied: Bool
    public var problems: [String]

    public init(problems: [String]) {
        applied = false
        self.problems = problems
    }

    public static var schema: JSONSchema {
        .object(
            "The roster is invalid (every problem listed); the running fleet is unchanged.",
            ["applied": .boolean(), "problems": .array(.string())])
    }
    public static var example: Self { RosterRejected(problems: ["characters.elena.memory: `12 parsecs` is not a size"]) }
}

/// `POST /v1/scale/NAME/N` (control socket), 200.
public struct ScaleResult: APIModel, Equatable {
    public var applied: Bool
    public var plan: [String]
    /// The instances now wanted: `NAME-0` … `NAME-(N-1)`.
    public var services: [String]

    public init(applied: Bool, plan: [String], services: [String]) {
        self.applied = applied
        self.plan = plan
        self.services = services
    }

    public static var schema: JSONSchema {
        .object(
            "The scale was applied like a reload.",
            ["applied": .boolean(), "plan": .array(.string()), "services": .array(.string(), "The instances now wanted.")])
    }
    public static var example: Self { ScaleResult(applied: true, plan: ["start elena-1"], services: ["elena-0", "elena-1"]) }
}

/// `POST /v1/profiles/PROFILE/start|stop` (control socket), 200.
public struct ProfileResult: APIModel, Equatable {
    public var applied: Bool
    public var plan: [String]
    /// The active profiles now.
    public var profiles: [String]
    /// The services of this profile.
    public var services: [String]

    public init(applied: Bool, plan: [String], profiles: [String], services: [String]) {
        self.applied = applied
        self.plan = plan
        self.profiles = profiles
        self.services = services
    }

    public static var schema: JSONSchema {
        .object(
            "The profile was switched and the roster applied like a reload.",
            [
                "applied": .boolean(), "plan": .array(.string()), "profiles": .array(.string(), "The active profiles now."),
                "services": .array(.string(), "The services of this profile."),
            ])
    }
    public static var example: Self { ProfileResult(applied: true, plan: ["start debug-bot"], profiles: ["debug"], services: ["debug-bot"]) }
}

/// `POST /v1/reexec` (control socket), 202: whisperd will exec its binary in place.
public struct ReexecScheduled: APIModel, Equatable {
    /// Always `scheduled`.
    public var reexec: String
    /// Re-executions so far (this one not counted yet).
    public var reexecs: Int
    /// The pid, which the new binary keeps.
    public var pid: Int

    public init(reexecs: Int, pid: Int) {
        reexec = "scheduled"
        self.reexecs = reexecs
        self.pid = pid
    }

    public static var schema: JSONSchema {
        .object(
            "The re-exec is under way; the pid stays the same and every character keeps running.",
            [
                "reexec": .string(oneOf: ["scheduled"]), "reexecs": .integer("Re-executions so far (one counts once the new process has started up).", minimum: 0),
                "pid": .integer("whisperd's pid, which the new binary keeps.", minimum: 1),
            ])
    }
    public static var example: Self { ReexecScheduled(reexecs: 0, pid: 812) }
}
