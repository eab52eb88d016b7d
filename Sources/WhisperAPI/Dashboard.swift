/// The web dashboard's payloads (docs/dashboard.md): what whisperd encodes, what
/// `whisperctl dashboard` and the dashboard's own script (assets/app.js) read.

/// `GET /v1/dashboard` (control socket): the login URL, which holds the token.
public struct DashboardLogin: APIModel, Equatable {
    public var url: String
    /// `<runtime>/dashboard.token`, when whisperd (as root) wrote it.
    public var tokenFile: String?

    public init(url: String, tokenFile: String?) {
        self.url = url
        self.tokenFile = tokenFile
    }

    enum CodingKeys: String, CodingKey {
        case url
        case tokenFile = "token_file"
    }

    public static var schema: JSONSchema {
        .object(
            "The dashboard's login URL; it holds the token (a credential: treat it as a password).",
            [
                "url": .string("`http://HOST:PORT/login?token=…`."),
                "token_file": .string("The file that also holds the token (readable by root and group `whisperd`); absent when whisperd is not root."),
            ], optional: ["token_file"])
    }
    public static var example: Self {
        DashboardLogin(
            url: "http://127.0.0.1:9090/login?token=5f0c9d7e0a4b4c1e9a7d3b2f6e8c1a0d5f0c9d7e0a4b4c1e9a7d3b2f6e8c1a0d",
            tokenFile: "/run/whisperd/dashboard.token")
    }
}

/// `GET /dashboard/api/session` and `POST /logout` (HTTP port): whether the browser's
/// session cookie is a live session, and the CSRF token its changes must carry.
public struct DashboardSession: APIModel, Equatable {
    public var loggedIn: Bool
    /// The value of the `X-CSRF-Token` header of every change (only to the session itself).
    public var csrf: String?
    /// A name for the session in whisperd's log (`session 1a2b3c4d`).
    public var session: String?

    public init(loggedIn: Bool, csrf: String? = nil, session: String? = nil) {
        self.loggedIn = loggedIn
        self.csrf = csrf
        self.session = session
    }

    enum CodingKeys: String, CodingKey {
        case csrf, session
        case loggedIn = "logged_in"
    }

    public static var schema: JSONSchema {
        .object(
            "The browser's session; `csrf` and `session` only when logged in.",
            [
                "logged_in": .boolean(), "csrf": .string("The `X-CSRF-Token` header every change of this session carries."),
                "session": .string("The session's name in whisperd's log."),
            ], optional: ["csrf", "session"])
    }
    public static var example: Self {
        DashboardSession(
            loggedIn: true, csrf: "9b1e4f2a7c3d8e5f0a6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f", session: "session 1a2b3c4d")
    }
}

/// `GET /dashboard/api/characters/NAME/samples` (HTTP port): the last hour of one character,
/// sampled from its cgroup files, newest last.
public struct ResourceSamples: APIModel, Equatable {
    public struct Point: APIModel, Equatable {
        public var ageSeconds: Double
        /// Nil where the cgroup file could not be read (no cgroup, or not running).
        public var memoryBytes: UInt64?
        /// Since the sample before; nil for the first one of a process.
        public var cpuPercent: Double?
        public var restarts: Int

        public init(ageSeconds: Double, memoryBytes: UInt64?, cpuPercent: Double?, restarts: Int) {
            self.ageSeconds = ageSeconds
            self.memoryBytes = memoryBytes
            self.cpuPercent = cpuPercent
            self.restarts = restarts
        }

        enum CodingKeys: String, CodingKey {
            case restarts
            case ageSeconds = "age_seconds"
            case memoryBytes = "memory_bytes"
            case cpuPercent = "cpu_percent"
        }

        public static var schemaName: String { "ResourceSample" }
        public static var schema: JSONSchema {
            .object(
                "One sample.",
                [
                    "age_seconds": .number("How long ago it was taken."), "memory_bytes": .integer(minimum: 0),
                    "cpu_percent": .number("CPU since the sample before, in percent of one core."), "restarts": .integer(minimum: 0),
                ], optional: ["memory_bytes", "cpu_percent"])
        }
        public static var example: Self { Point(ageSeconds: 5.0, memoryBytes: 41_943_040, cpuPercent: 2.5, restarts: 1) }
    }

    public var name: String
    public var intervalSeconds: Double
    public var memoryLimitBytes: UInt64?
    public var points: [Point]

    public init(name: String, intervalSeconds: Double, memoryLimitBytes: UInt64?, points: [Point]) {
        self.name = name
        self.intervalSeconds = intervalSeconds
        self.memoryLimitBytes = memoryLimitBytes
        self.points = points
    }

    enum CodingKeys: String, CodingKey {
        case name, points
        case intervalSeconds = "interval_seconds"
        case memoryLimitBytes = "memory_limit_bytes"
    }

    public static var schema: JSONSchema {
        .object(
            "A character's memory, CPU and restarts over the last hour, oldest first.",
            [
                "name": .string(), "interval_seconds": .number("Time between samples."),
                "memory_limit_bytes": .integer("Its memory limit, if it has one.", minimum: 0),
                "points": .array(.reference(Point.self)),
            ], optional: ["memory_limit_bytes"])
    }
    public static var example: Self {
        ResourceSamples(name: "elena", intervalSeconds: 5, memoryLimitBytes: 268_435_456, points: [.example])
    }
}

/// `GET /dashboard/api/characters/NAME/files` (HTTP port, a session's): the character's
/// folder and its files the dashboard may edit.
public struct CharacterFiles: APIModel, Equatable {
    public struct File: APIModel, Equatable {
        public var name: String
        /// Nil when the file does not exist (or is not UTF-8 text).
        public var text: String?

        public init(name: String, text: String?) {
            self.name = name
            self.text = text
        }

        public static var schemaName: String { "CharacterFile" }
        public static var schema: JSONSchema {
            .object(
                "A character file; `text` absent when it does not exist yet.",
                ["name": .string(), "text": .string("Its contents (UTF-8).")], optional: ["text"])
        }
        public static var example: Self { File(name: "character.md", text: "# Elena\n\nA patient tutor.\n") }
    }

    /// The files the dashboard shows and edits (`CharacterProfile`'s; a test keeps them equal).
    public static let editable = ["character.md", "core.yaml", "goals.yaml", "evolution.yaml", "ux.yaml", "background.yaml"]

    public var name: String
    /// The folder's path on the host.
    public var folder: String
    public var files: [File]

    public init(name: String, folder: String, files: [File]) {
        self.name = name
        self.folder = folder
        self.files = files
    }

    public static var schema: JSONSchema {
        .object(
            "`character.md` (always) and each optional character file that exists.",
            ["name": .string(), "folder": .string("The character's folder."), "files": .array(.reference(File.self))])
    }
    public static var example: Self {
        CharacterFiles(name: "elena", folder: "/etc/whisperd/characters/elena", files: [.example])
    }
}

/// `PUT /dashboard/api/characters/NAME/files/FILE` (HTTP port, a session's): saved, and the
/// instances restarted to apply it.
public struct SavedCharacterFile: APIModel, Equatable {
    public var saved: String
    public var restarted: [String]

    public init(saved: String, restarted: [String]) {
        self.saved = saved
        self.restarted = restarted
    }

    public static var schema: JSONSchema {
        .object(
            "The file saved; the running instances of the character that restart to read it.",
            ["saved": .string("The file's name."), "restarted": .array(.string())])
    }
    public static var example: Self { SavedCharacterFile(saved: "character.md", restarted: ["elena-0", "elena-1"]) }
}

/// `POST /dashboard/api/characters/NAME/OPERATION` (HTTP port, a session's): accepted; the
/// character's status shows the result.
public struct DashboardAction: APIModel, Equatable {
    public var name: String
    public var command: String

    public init(name: String, command: String) {
        self.name = name
        self.command = command
    }

    public static let commands = ["start", "stop", "restart"]

    public static var schema: JSONSchema {
        .object("Accepted.", ["name": .string(), "command": .string(oneOf: commands)])
    }
    public static var example: Self { DashboardAction(name: "elena", command: "restart") }
}
