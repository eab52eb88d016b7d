/// Every route whisperd serves, on which endpoint, with its parameters and answers: the
/// source of the OpenAPI documents (`GET /openapi.json`) and of the route list in docs/api.md.
public enum Endpoint: String, Sendable, CaseIterable {
    /// The read-only HTTP port (`--http 127.0.0.1:PORT`).
    case loopback
    /// `<runtime>/control.sock`: everything the loopback port serves, plus the routes that change things.
    case control
}

public struct Route: Sendable {
    public enum Method: String, Sendable { case get, post, put }

    public struct Parameter: Sendable {
        public enum Location: String, Sendable { case path, query }
        public var name: String
        public var location: Location
        public var schema: JSONSchema
        public var description: String
        public var example: String?
    }

    public enum Body: Sendable {
        case json(any APIModel.Type)
        /// The OpenAPI document itself (an object; its own schema is OpenAPI's).
        case openAPI
        case text(String)
    }

    public struct Answer: Sendable {
        public var status: Int
        public var description: String
        public var body: Body
    }

    public var method: Method
    public var path: String
    public var operationID: String
    public var summary: String
    public var parameters: [Parameter]
    public var answers: [Answer]
    public var endpoints: Set<Endpoint>
    /// The media type of the request's body, when it takes one.
    public var requestBody: String? = nil
}

extension Route.Parameter {
    /// What `ServiceName` and `RosterLoader.isValidProfile` accept (a test keeps them equal).
    public static let namePattern = "^[a-z0-9][a-z0-9_-]{0,62}$"
    public static let profilePattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

    static let name = Route.Parameter(
        name: "name", location: .path,
        schema: .string("A character or job: lowercase letters, digits, `_` and `-`, at most 63, starting with a letter or digit.", pattern: namePattern),
        description: "The character or job.", example: "elena")
}

extension Route.Answer {
    static func json(_ status: Int, _ type: any APIModel.Type, _ description: String) -> Self {
        Self(status: status, description: description, body: .json(type))
    }

    static func error(_ status: Int, _ description: String) -> Self { json(status, APIError.self, description) }

    static let notFoundCharacter = error(404, "No character or job of that name.")
    static let shuttingDown = error(409, "whisperd is shutting down.")
    static let rosterRejected = json(422, RosterRejected.self, "The roster that would result is invalid: nothing changed.")

    static func page(_ status: Int, _ description: String) -> Self {
        Self(status: status, description: description, body: .text("text/html"))
    }

    /// Every dashboard route checks the `Host` header first (against DNS rebinding).
    static let misdirected = page(421, "The `Host` header is not the dashboard's own address.")
    static let loginFirst = error(401, "No session: log in first (`whisperctl dashboard` prints the login URL).")
    static let refusedChange = error(
        403, "The request's `Origin` is not the dashboard's, or its `X-CSRF-Token` header is not the session's.")
}

extension Route {
    static let bothEndpoints: Set<Endpoint> = [.loopback, .control]
    /// The roster's limit (`RosterLoader.maxReplicas`; a test keeps them equal).
    public static let maxReplicas = 64

    /// The answers every route may give before its handler runs (the HTTP layer's limits).
    static func transportAnswers(_ endpoint: Endpoint) -> [Answer] {
        var answers: [Answer] = [
            .error(400, "The request is not valid HTTP/1.1, or a header breaks a limit."),
            .error(408, "The request did not arrive in time."),
            .error(413, "The request is larger than 1 MiB."),
            .error(503, "Too many requests in progress; try again."),
        ]
        if endpoint == .control { answers.append(.error(403, "The peer is not an operator (root, whisperd's owner or group `whisperd`) or is a character.")) }
        return answers
    }

    public static let all: [Route] = [
        Route(
            method: .get, path: "/health", operationID: "health", summary: "The fleet in brief, for health checks.",
            parameters: [],
            answers: [
                .json(200, HealthReport.self, "Everything wanted up is ready."),
                .json(503, HealthReport.self, "Something wanted up is not ready (`not_ready` names it), or whisperd is overloaded."),
            ], endpoints: bothEndpoints),
        Route(
            method: .get, path: "/metrics", operationID: "metrics", summary: "Prometheus metrics (text format 0.0.4; gzip on request).",
            parameters: [], answers: [Answer(status: 200, description: "The metrics.", body: .text("text/plain"))],
            endpoints: bothEndpoints),
        Route(
            method: .get, path: "/v1/characters", operationID: "listCharacters", summary: "Every character and job.",
            parameters: [], answers: [.json(200, CharacterList.self, "Every character and job, in roster order.")],
            endpoints: bothEndpoints),
        Route(
            method: .get, path: "/v1/characters/{name}", operationID: "getCharacter",
            summary: "One character, with its cgroup figures read now.", parameters: [.name],
            answers: [.json(200, CharacterStatus.self, "The character."), .notFoundCharacter], endpoints: bothEndpoints),
        Route(
            method: .get, path: "/openapi.json", operationID: "openAPI", summary: "This document (OpenAPI 3.1) for the endpoint asked.",
            parameters: [], answers: [Answer(status: 200, description: "The OpenAPI document.", body: .openAPI)],
            endpoints: bothEndpoints),
        Route(
            method: .get, path: "/v1/paths", operationID: "paths", summary: "Where things are (for backup and restore).",
            parameters: [], answers: [.json(200, Paths.self, "Directories, files and the roster's characters.")],
            endpoints: [.control]),
        Route(
            method: .get, path: "/v1/characters/{name}/logs", operationID: "logs",
            summary: "The end of a character's log; with `follow`, then every new line until the client hangs up.",
            parameters: [
                .name,
                Parameter(
                    name: "lines", location: .query, schema: .integer("Default 20.", minimum: 0, maximum: 10_000),
                    description: "How many lines from the end.", example: "20"),
                Parameter(
                    name: "follow", location: .query, schema: .string(oneOf: ["0", "1", "true", "false"]),
                    description: "`1` or `true`: keep the connection open and send new lines as they are written.", example: "0"),
            ],
            answers: [
                Answer(status: 200, description: "Log lines: `TIME STREAM TEXT`.", body: .text("text/plain")),
                .error(400, "`lines` is not a number in 0...10000, or `follow` is not 0, 1, true or false."), .notFoundCharacter,
            ], endpoints: [.control]),
        Route(
            method: .get, path: "/v1/characters/{name}/incidents", operationID: "incidents",
            summary: "Its last abnormal exits (`whisperctl why`).", parameters: [.name],
            answers: [.json(200, IncidentList.self, "Up to ten, oldest first."), .notFoundCharacter], endpoints: [.control]),
        Route(
            method: .get, path: "/v1/characters/{name}/env", operationID: "environment",
            summary: "Its effective environment and where each variable came from; secrets redacted.", parameters: [.name],
            answers: [.json(200, EnvironmentReport.self, "Sorted by name."), .notFoundCharacter], endpoints: [.control]),
        Route(
            method: .post, path: "/v1/characters/{name}/{operation}", operationID: "operate",
            summary: "Start, stop, restart (or restart rolling: the new process beside the old) a character, or run a job once now; answers at once (poll its status for the result).",
            parameters: [
                .name,
                Parameter(
                    name: "operation", location: .path, schema: .string(oneOf: ["start", "stop", "restart", "rolling-restart", "run"]),
                    description: "What to do.", example: "restart"),
            ],
            answers: [
                .json(202, CharacterStatus.self, "Accepted; its status as of now (without resources)."),
                .error(404, "No character of that name, or no such operation."),
                .error(409, "whisperd is shutting down; or `run` of a character (not a job) or of a job already running."),
            ], endpoints: [.control]),
        Route(
            method: .post, path: "/v1/reexec", operationID: "reexec",
            summary: "Upgrade in place: whisperd execs its binary (the new one after an upgrade); every character keeps running.",
            parameters: [],
            answers: [
                .json(202, ReexecScheduled.self, "Scheduled."),
                .error(409, "Not now, and why: shutting down, a re-exec already under way, a character stopping, draining or in a rolling restart."),
            ], endpoints: [.control]),
        Route(
            method: .post, path: "/v1/reload", operationID: "reload",
            summary: "Read the roster again and apply the difference (or, with `dry_run`, only say it).",
            parameters: [
                Parameter(
                    name: "dry_run", location: .query, schema: .string(oneOf: ["0", "1", "true", "false"]),
                    description: "`1` or `true`: change nothing, answer the plan.", example: "1")
            ],
            answers: [
                .json(200, ReloadResult.self, "The plan (applied unless a dry run)."),
                .error(400, "`dry_run` is not 0, 1, true or false."), .rosterRejected,
            ], endpoints: [.control]),
        Route(
            method: .post, path: "/v1/scale/{name}/{replicas}", operationID: "scale",
            summary: "Run N instances of a character (`NAME-0` …), live; remembered across restarts of whisperd.",
            parameters: [
                Parameter(
                    name: "name", location: .path, schema: .string(pattern: Parameter.namePattern),
                    description: "The character as the roster names it.",
                    example: "elena"),
                Parameter(
                    name: "replicas", location: .path, schema: .integer(minimum: 0, maximum: Route.maxReplicas),
                    description: "How many instances (0 stops them all).", example: "2"),
            ],
            answers: [
                .json(200, ScaleResult.self, "Applied like a reload."), .error(400, "`replicas` is not a number in 0...64."),
                .error(404, "The roster has no character of that name."), .shuttingDown, .rosterRejected,
            ], endpoints: [.control]),
        Route(
            method: .post, path: "/v1/profiles/{profile}/{operation}", operationID: "switchProfile",
            summary: "Switch a profile on or off: its services start or stop; remembered across restarts of whisperd.",
            parameters: [
                Parameter(
                    name: "profile", location: .path, schema: .string(pattern: Parameter.profilePattern), description: "The profile.",
                    example: "debug"),
                Parameter(
                    name: "operation", location: .path, schema: .string(oneOf: ["start", "stop"]), description: "On or off.",
                    example: "start"),
            ],
            answers: [
                .json(200, ProfileResult.self, "Applied like a reload."), .error(400, "Not a profile name."),
                .error(404, "No such operation."), .shuttingDown, .rosterRejected,
            ], endpoints: [.control]),
    ] + dashboard

    /// The web dashboard (docs/dashboard.md): its page and assets, login, and its API under
    /// `/dashboard/api/` on the HTTP port; the login URL on the control socket. Reads of what
    /// only the control socket shows, and every change, need a session (the cookie `/login`
    /// sets); changes also need the session's `X-CSRF-Token` header and the dashboard's `Origin`.
    static let dashboard: [Route] = [
        Route(
            method: .get, path: "/v1/dashboard", operationID: "dashboardLogin",
            summary: "The web dashboard's login URL, with its token (`whisperctl dashboard`).", parameters: [],
            answers: [.json(200, DashboardLogin.self, "The login URL."), .error(404, "No dashboard: whisperd runs without `--http`.")],
            endpoints: [.control]),
        Route(
            method: .get, path: "/", operationID: "dashboardPage", summary: "The dashboard's page.", parameters: [],
            answers: [Answer(status: 200, description: "The page.", body: .text("text/html")), .misdirected], endpoints: [.loopback]),
        Route(
            method: .get, path: "/dashboard/app.js", operationID: "dashboardScript", summary: "The dashboard's script.", parameters: [],
            answers: [Answer(status: 200, description: "The script.", body: .text("text/javascript")), .misdirected],
            endpoints: [.loopback]),
        Route(
            method: .get, path: "/dashboard/app.css", operationID: "dashboardStyle", summary: "The dashboard's style sheet.",
            parameters: [], answers: [Answer(status: 200, description: "The style sheet.", body: .text("text/css")), .misdirected],
            endpoints: [.loopback]),
        Route(
            method: .get, path: "/login", operationID: "dashboardLoginWithToken",
            summary: "Log in with the token: a session cookie, then back to `/` (so the token leaves the address bar).",
            parameters: [
                Parameter(
                    name: "token", location: .query, schema: .string("The token `whisperctl dashboard` prints."),
                    description: "The login token.", example: "0123456789abcdef")
            ],
            answers: [
                Answer(status: 303, description: "Logged in: the session cookie is set; on to `/`.", body: .text("text/plain")),
                .page(401, "Wrong or missing token."), .misdirected,
            ], endpoints: [.loopback]),
        Route(
            method: .post, path: "/logout", operationID: "dashboardLogout",
            summary: "End the session (and its live log tails); the cookie is cleared.", parameters: [],
            answers: [
                .json(200, DashboardSession.self, "Logged out."),
                .page(403, "No session, or the request's `Origin` or `X-CSRF-Token` is not the session's."), .misdirected,
            ], endpoints: [.loopback]),
        Route(
            method: .get, path: "/dashboard/api/session", operationID: "dashboardSession",
            summary: "Whether this browser is logged in, and the CSRF token of its changes.", parameters: [],
            answers: [.json(200, DashboardSession.self, "The session, or `logged_in: false`."), .misdirected], endpoints: [.loopback]),
        Route(
            method: .get, path: "/dashboard/api/characters/{name}/samples", operationID: "dashboardSamples",
            summary: "A character's memory, CPU and restarts over the last hour (anyone may read them, as /metrics).",
            parameters: [.name],
            answers: [.json(200, ResourceSamples.self, "The samples."), .notFoundCharacter, .misdirected], endpoints: [.loopback]),
        Route(
            method: .get, path: "/dashboard/api/characters/{name}/logs", operationID: "dashboardLogs",
            summary: "A session's: the character's last 200 log lines, then each new one (Server-Sent Events, one `data:` per line).",
            parameters: [.name],
            answers: [
                Answer(status: 200, description: "The stream, until the client hangs up or the session logs out.", body: .text("text/event-stream")),
                .loginFirst, .notFoundCharacter, .misdirected,
            ], endpoints: [.loopback]),
        Route(
            method: .get, path: "/dashboard/api/characters/{name}/incidents", operationID: "dashboardIncidents",
            summary: "A session's: the character's last abnormal exits (as the control socket's).", parameters: [.name],
            answers: [.json(200, IncidentList.self, "Up to ten, oldest first."), .loginFirst, .notFoundCharacter, .misdirected],
            endpoints: [.loopback]),
        Route(
            method: .get, path: "/dashboard/api/characters/{name}/env", operationID: "dashboardEnvironment",
            summary: "A session's: the character's effective environment, secrets redacted (as the control socket's).",
            parameters: [.name],
            answers: [.json(200, EnvironmentReport.self, "Sorted by name."), .loginFirst, .notFoundCharacter, .misdirected],
            endpoints: [.loopback]),
        Route(
            method: .get, path: "/dashboard/api/characters/{name}/files", operationID: "dashboardFiles",
            summary: "A session's: the character's files the dashboard may edit.", parameters: [.name],
            answers: [
                .json(200, CharacterFiles.self, "`character.md` and the optional files that exist."), .loginFirst,
                .error(404, "No character of that name, or it has no character folder (a job)."), .misdirected,
            ], endpoints: [.loopback]),
        Route(
            method: .post, path: "/dashboard/api/characters/{name}/{operation}", operationID: "dashboardOperate",
            summary: "A session's: start, stop or restart a character; answers at once (its status shows the result).",
            parameters: [
                .name,
                Parameter(
                    name: "operation", location: .path, schema: .string(oneOf: DashboardAction.commands), description: "What to do.",
                    example: "restart"),
            ],
            answers: [
                .json(202, DashboardAction.self, "Accepted."), .loginFirst, .refusedChange,
                .error(404, "No character of that name, or no such operation."), .shuttingDown, .misdirected,
            ], endpoints: [.loopback]),
        Route(
            method: .put, path: "/dashboard/api/characters/{name}/files/{file}", operationID: "dashboardSaveFile",
            summary: "A session's: replace a character file (validated as the worker reads it, written atomically), then restart the character's running instances to apply it.",
            parameters: [
                .name,
                Parameter(
                    name: "file", location: .path, schema: .string(oneOf: CharacterFiles.editable),
                    description: "`character.md` or an optional character file.", example: "character.md"),
            ],
            answers: [
                .json(200, SavedCharacterFile.self, "Saved; the instances restart."), .loginFirst, .refusedChange,
                .error(404, "No character of that name, no character folder, or not a character file."),
                .error(422, "Not UTF-8, or the character would not load with it: nothing saved."),
                .error(500, "The file could not be written: nothing changed."), .misdirected,
            ], endpoints: [.loopback], requestBody: "text/plain"),
    ]
}

extension Route {
    var literalSegments: Int { path.split(separator: "/").filter { !$0.hasPrefix("{") }.count }

    /// Whether `path` (no query) fits this route's template: `{placeholder}` takes one segment.
    public func matches(_ path: String) -> Bool {
        let template = self.path.split(separator: "/", omittingEmptySubsequences: false)
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        guard template.count == segments.count else { return false }
        return zip(template, segments).allSatisfy { pattern, segment in
            pattern.hasPrefix("{") ? !segment.isEmpty : pattern == segment
        }
    }

    /// The methods an endpoint serves at `path` (`HEAD` with `GET`), for 405's `Allow`; nil
    /// when no route of the endpoint has that path.
    /// Of templates that fit, the most literal wins (`/v1/characters/x/env` is the env route's,
    /// not `/v1/characters/{name}/{operation}`'s).
    public static func allowedMethods(at path: String, on endpoint: Endpoint) -> [String]? {
        let fitting = all.filter { $0.endpoints.contains(endpoint) && $0.matches(path) }
        guard let literal = fitting.map(\.literalSegments).max() else { return nil }
        let methods = Set(fitting.filter { $0.literalSegments == literal }.map(\.method))
        return (methods.contains(.get) ? ["GET", "HEAD"] : []) + (methods.contains(.post) ? ["POST"] : [])
            + (methods.contains(.put) ? ["PUT"] : [])
    }
}
