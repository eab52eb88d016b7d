import Foundation
import Glibc
import WhisperAPI
import WhisperChat
import WhisperConfig
import WhisperCore
import WhisperSystem
import WhisperJSON

/// What the dashboard keeps between requests; used on the loop thread only.
final class DashboardState {
    /// The login token; empty while there is no HTTP port.
    var token = ""
    /// `<runtime>/dashboard.token`; nil when it is not written (whisperd is not root).
    var tokenPath: String?
    var sessions = DashboardSessions()
    var sampler: FleetSampler?
    var samplingTimer: PeriodicTimer?
    /// Live log tails (Server-Sent Events), per character, with the session each is for (a
    /// logout ends that session's streams).
    var logStreams: [ServiceName: [ObjectIdentifier: (session: String, stream: HTTPServer.HTTPStream)]] = [:]
}

/// The web dashboard on the HTTP port (docs/dashboard.md): `GET /` and its two assets, the
/// read API under `/dashboard/api/`, a login that sets a session cookie, and the actions and
/// file edits a session may make (docs/security.md, "The dashboard").
extension Daemon {
    static let dashboardAPI = "/dashboard/api/"

    var sessionCookieName: String { "whisperd_session_\(configuration.httpAddress?.port ?? 0)" }

    /// After the control socket (its group owns the token file): the token and the sampler.
    func startDashboard() {
        guard configuration.httpAddress != nil else { return }
        dashboard.token = Self.randomHex(bytes: 32)
        dashboard.sessions = DashboardSessions(lifetime: configuration.dashboardSessionLifetime)
        // Not root, whisperd's characters run as its own user and could read a file it writes:
        // then the token is only ever given out by the control socket (which refuses characters).
        if geteuid() == 0 {
            let path = configuration.runtimeDirectory + "/dashboard.token"
            do {
                try writeTokenFile(path)
                dashboard.tokenPath = path
            } catch {
                log.log(.warning, "dashboard", "cannot write \(path): \(error) (whisperctl dashboard still prints the login URL)")
            }
        }
        let sampler = FleetSampler()
        dashboard.sampler = sampler
        do {
            dashboard.samplingTimer = try PeriodicTimer(loop: loop, periodNanoseconds: ResourceHistory.interval.nanoseconds) {
                [unowned self] in self.sampleFleet()
            }
        } catch {
            log.log(.warning, "dashboard", "no charts: \(error)")
        }
        sampleFleet()
    }

    /// Readable by root and the control group only (as the control socket): mode 0640
    /// root:whisperd, or 0600 when there is no such group.
    private func writeTokenFile(_ path: String) throws {
        let temporary = path + ".new"
        unlink(temporary)
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("open \(temporary)") }
        defer { close(fd) }
        let bytes = Array((dashboard.token + "\n").utf8)
        guard bytes.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == bytes.count else { throw SystemError("write") }
        if let group = tenants.controlGroupID {
            guard fchown(fd, geteuid(), group) == 0, fchmod(fd, 0o640) == 0 else { throw SystemError("fchown") }
        }
        guard rename(temporary, path) == 0 else { throw SystemError("rename") }
    }

    /// Swift's system generator is the kernel's getrandom(2) on Linux: fit for a credential.
    /// (Hex by hand: `String(format:)` maps megabytes of Foundation's formatting code.)
    static func randomHex(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = []
        text.reserveCapacity(count * 2)
        for _ in 0..<count {
            let byte = UInt8.random(in: 0...255, using: &generator)
            text += [digits[Int(byte >> 4)], digits[Int(byte & 15)]]
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// Every character's open cgroup files and restart count, handed to the sampler thread.
    private func sampleFleet() {
        guard let sampler = dashboard.sampler else { return }
        let statuses = fleet.statuses()
        let targets = statuses.map { status in
            FleetSampler.Target(
                name: status.name.rawValue, probe: cgroups.usageProbe(of: status.name), restarts: status.restarts)
        }
        let now = Instant(nanoseconds: Clock.monotonicNanoseconds())
        sampler.sample(targets, at: now)
        sampler.forget(keeping: Set(statuses.map(\.name.rawValue)))
        endExpiredLogStreams(now: now)
    }

    /// A log tail lives no longer than its session: a quiet character's stream is ended by the
    /// sampler's tick, a talkative one's at its next line (``forwardToDashboards(_:_:)``).
    private func endExpiredLogStreams(now: Instant) {
        for followers in dashboard.logStreams.values {
            for follower in followers.values where dashboard.sessions.session(follower.session, now: now) == nil {
                follower.stream.close()
            }
        }
    }

    /// `GET /v1/dashboard` on the control socket (`whisperctl dashboard`): the login URL.
    func dashboardLoginResponse() -> HTTPServer.Response {
        guard let address = configuration.httpAddress, !dashboard.token.isEmpty else {
            return errorResponse(404, "no dashboard: whisperd runs with --http off")
        }
        let host = address.host.contains(":") ? "[\(address.host)]" : address.host
        return jsonResponse(
            200,
            DashboardLogin(url: "http://\(host):\(address.port)/login?token=\(dashboard.token)", tokenFile: dashboard.tokenPath))
    }

    // MARK: - Routing

    /// The HTTP port: dashboard paths here, everything else as before.
    func handleHTTPRequest(_ request: HTTPServer.Request) -> HTTPServer.Response {
        let path = request.path
        guard path == "/" || path == "/login" || path == "/logout" || path.hasPrefix("/dashboard/") else {
            return handleStatusRequest(request)
        }
        guard let address = configuration.httpAddress,
            DashboardAccess.isOwnHost(request.header("Host"), listenHost: address.host, port: address.port)
        else {
            return page(421, "This dashboard answers only to its own address (Host header).")
        }
        if let allowed = Route.allowedMethods(at: path, on: .loopback), !allowed.contains(request.method) {
            return withSecurityHeaders(
                methodNotAllowed(request.method, allowed: allowed, "method \(request.method.prefix(16)) not allowed on \(path.prefix(200))"))
        }
        let now = Instant(nanoseconds: Clock.monotonicNanoseconds())
        let session = dashboard.sessions.session(DashboardAccess.cookie(sessionCookieName, in: request.header("Cookie")), now: now)
        switch (request.method, path) {
        case ("GET", "/"), ("HEAD", "/"):
            return asset(PackageResources.index_html, "text/html; charset=utf-8")
        case ("GET", "/dashboard/app.js"), ("HEAD", "/dashboard/app.js"):
            return asset(PackageResources.app_js, "text/javascript; charset=utf-8")
        case ("GET", "/dashboard/app.css"), ("HEAD", "/dashboard/app.css"):
            return asset(PackageResources.app_css, "text/css; charset=utf-8")
        case ("GET", "/login"), ("HEAD", "/login"):
            return login(request, now: now)
        case ("POST", "/logout"):
            guard let session, case .allowed = mayChange(request, session) else { return page(403, "Refused.") }
            dashboard.sessions.logout(session.id)
            for followers in dashboard.logStreams.values {
                for follower in followers.values where follower.session == session.id { follower.stream.close() }
            }
            log.log(.info, "dashboard", "\(session.label): logged out")
            var response = Self.jsonBody(200, DashboardSession(loggedIn: false))
            response.extraHeaders.append(("Set-Cookie", "\(sessionCookieName)=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"))
            return response
        default:
            break
        }
        guard path.hasPrefix(Self.dashboardAPI) else { return page(404, "Not found.") }
        let parts = path.dropFirst(Self.dashboardAPI.count).split(separator: "/").map(String.init)
        if request.method == "GET" || request.method == "HEAD", parts == ["session"] {
            return Self.jsonBody(200, DashboardSession(loggedIn: session != nil, csrf: session?.csrf, session: session?.label))
        }
        guard parts.count >= 3, parts[0] == "characters", let name = ServiceName(parts[1]), fleet.status(of: name) != nil else {
            return Self.jsonError(404, "not found: \(path.prefix(200))")
        }
        let operation = parts[2]
        if request.method == "GET" || request.method == "HEAD" {
            if operation == "samples", parts.count == 3 { return samples(name, now: now) }
            // What only the control socket shows: a session's, never anyone's on this port.
            guard session != nil else {
                return Self.jsonError(401, "log in first: whisperctl dashboard prints the login URL")
            }
            switch (operation, parts.count) {
            case ("logs", 3):
                // HEAD: the answer's head only, no stream left open for nobody to read.
                guard request.method == "GET" else {
                    return withSecurityHeaders(HTTPServer.Response(status: 200, contentType: "text/event-stream; charset=utf-8", body: ""))
                }
                return logStream(name, for: session?.id ?? "")
            case ("incidents", 3), ("env", 3):
                var inner = request
                inner.path = "/v1/characters/\(name.rawValue)/\(operation)"
                inner.query = ""
                return withSecurityHeaders(ControlService.handle(inner, fleet: self))
            case ("files", 3): return characterFiles(name)
            default: return Self.jsonError(404, "not found: \(path.prefix(200))")
            }
        }
        guard request.method == "POST" || request.method == "PUT" else {
            return Self.jsonError(405, "method \(request.method.prefix(16)) not allowed")
        }
        let decision = mayChange(request, session)
        guard case .allowed = decision, let session else {
            if case .refused(let status, let reason) = decision {
                log.log(.warning, "dashboard", "refused \(request.method) \(path.prefix(200)): \(reason)")
                return Self.jsonError(status, reason)
            }
            return Self.jsonError(401, "log in first")
        }
        if request.method == "PUT", operation == "files", parts.count == 4 {
            return saveCharacterFile(name, parts[3], request.body, by: session)
        }
        guard request.method == "POST", parts.count == 3, DashboardAction.commands.contains(operation),
            let command = OperatorCommand(rawValue: operation)
        else {
            return Self.jsonError(404, "unknown operation \(operation.prefix(40)) (\(DashboardAction.commands.joined(separator: ", ")))")
        }
        guard !fleet.isShuttingDown else { return Self.jsonError(409, "whisperd is shutting down") }
        log.log(.info, "dashboard", "\(session.label): \(command.rawValue) \(name)")
        fleet.post(.operatorRequested(command, name))
        return Self.jsonBody(202, DashboardAction(name: name.rawValue, command: command.rawValue))
    }

    private func mayChange(_ request: HTTPServer.Request, _ session: DashboardSessions.Session?) -> DashboardAccess.Decision {
        DashboardAccess.mayChange(
            session: session, csrfHeader: request.header("X-CSRF-Token"), origin: request.header("Origin"),
            host: request.header("Host") ?? "")
    }

    /// `/login?token=T`: a session cookie, then back to `/` (so the token leaves the address bar).
    private func login(_ request: HTTPServer.Request, now: Instant) -> HTTPServer.Response {
        let given = request.queryItems["token"] ?? ""
        let label = "session " + Self.randomHex(bytes: 4)
        guard
            let session = dashboard.sessions.login(
                token: given, expected: dashboard.token, id: Self.randomHex(bytes: 32), csrf: Self.randomHex(bytes: 32),
                label: label, now: now)
        else {
            log.log(.warning, "dashboard", "login refused: wrong token")
            return page(401, "Wrong or missing token. Run <code>whisperctl dashboard</code> for the login URL.")
        }
        log.log(.info, "dashboard", "\(session.label): logged in")
        var response = HTTPServer.Response(status: 303, contentType: "text/plain; charset=utf-8", body: "logged in\n")
        response.extraHeaders = [
            ("Location", "/"),
            ("Set-Cookie", "\(sessionCookieName)=\(session.id); Path=/; HttpOnly; SameSite=Strict"),
        ]
        return withSecurityHeaders(response)
    }

    // MARK: - Reads



    /// The last hour of one character (what /metrics shows now, kept): anyone may read it.
    private func samples(_ name: ServiceName, now: Instant) -> HTTPServer.Response {
        let points = (dashboard.sampler?.points(name.rawValue) ?? []).map { point in
            ResourceSamples.Point(
                ageSeconds: now.duration(since: point.at).seconds, memoryBytes: point.memoryBytes,
                cpuPercent: point.cpuPercent.map { ($0 * 10).rounded() / 10 }, restarts: point.restarts)
        }
        let limit = loaded.roster.services.first { $0.name == name }?.limits.memoryBytes
        return Self.jsonBody(
            200,
            ResourceSamples(name: name.rawValue, intervalSeconds: ResourceHistory.interval.seconds, memoryLimitBytes: limit, points: points))
    }

    /// The last 200 lines, then each new one as it is written (Server-Sent Events).
    private func logStream(_ name: ServiceName, for session: String) -> HTTPServer.Response {
        let tail = Self.tail(of: "\(configuration.logDirectory)/\(name.rawValue).log", lines: 200)
        var response = HTTPServer.Response(status: 200, contentType: "text/event-stream; charset=utf-8", body: "") {
            [unowned self] stream in
            let id = ObjectIdentifier(stream)
            self.dashboard.logStreams[name, default: [:]][id] = (session, stream)
            stream.onClose = { [unowned self] in self.dashboard.logStreams[name]?[id] = nil }
        }
        response.body = Self.serverSentEvents(Array(tail.utf8))
        response.extraHeaders = [("Cache-Control", "no-store")]
        return withSecurityHeaders(response)
    }

    /// Output a character just wrote (whole lines), to the dashboards following it.
    func forwardToDashboards(_ name: ServiceName, _ bytes: some Collection<UInt8>) {
        guard let streams = dashboard.logStreams[name], !streams.isEmpty else { return }
        let events = Self.serverSentEvents(Array(bytes))
        let now = Instant(nanoseconds: Clock.monotonicNanoseconds())
        for follower in streams.values {
            // An expired session gets nothing more: its stream ends instead.
            guard dashboard.sessions.session(follower.session, now: now) != nil else {
                follower.stream.close()
                continue
            }
            follower.stream.write(events)
        }
    }

    /// One `data:` event per line (a line holds no newline, so it cannot end its event early).
    static func serverSentEvents(_ bytes: [UInt8]) -> [UInt8] {
        var events: [UInt8] = []
        events.reserveCapacity(bytes.count + 16)
        for line in bytes.split(separator: 10) {
            events += Array("data: ".utf8)
            events += line.filter { $0 != 13 }
            events += [10, 10]
        }
        return events
    }



    /// The character's folder (a replica's is the character's own), if it has one.
    private func characterFolder(_ name: ServiceName) -> (folder: String, path: String)? {
        guard let spec = loaded.roster.services.first(where: { $0.name == name }), !spec.isJob else { return nil }
        let folder = spec.launch.environment["WHISPERD_CHARACTER"] ?? name.rawValue
        guard ServiceName(folder) != nil else { return nil }
        return (folder, "\(loaded.charactersDirectory)/\(folder)")
    }

    private func characterFiles(_ name: ServiceName) -> HTTPServer.Response {
        guard let (_, path) = characterFolder(name) else {
            return Self.jsonError(404, "\(name) has no character folder")
        }
        let files = CharacterFiles.editable.map { file in
            CharacterFiles.File(name: file, text: readSmallText("\(path)/\(file)"))
        }
        return Self.jsonBody(200, CharacterFiles(name: name.rawValue, folder: path, files: files.filter { $0.text != nil || $0.name == "character.md" }))
    }

    /// A character file, whole (they are small: the HTTP body limit bounds an edit anyway).
    private func readSmallText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while bytes.count <= HTTPServer.maxBodyBytes {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += buffer[0..<count]
        }
        return String(validating: bytes, as: UTF8.self)
    }

    // MARK: - Edits

    /// Validated as the worker will read it (the folder with this file replaced), written
    /// atomically, then applied by restarting every running instance of the character.
    private func saveCharacterFile(
        _ name: ServiceName, _ file: String, _ body: [UInt8], by session: DashboardSessions.Session
    ) -> HTTPServer.Response {
        let editable = CharacterFiles.editable
        guard editable.contains(file) else {
            return Self.jsonError(404, "not a character file: \(file.prefix(64)) (\(editable.joined(separator: ", ")))")
        }
        guard let (folder, path) = characterFolder(name) else {
            return Self.jsonError(404, "\(name) has no character folder")
        }
        guard let text = String(validating: body, as: UTF8.self) else {
            return Self.jsonError(422, "\(file) must be UTF-8 text")
        }
        var files: [String: String] = [:]
        for other in editable where other != file {
            if let current = readSmallText("\(path)/\(other)") { files[other] = current }
        }
        files[file] = text
        if case .failure(let problem) = CharacterProfile.parse(name: folder, files: files) {
            return Self.jsonError(422, "not saved: \(problem)")
        }
        do {
            try CharacterFileWriter.replace(directory: path, file: file, contents: body)
        } catch {
            log.log(.error, "dashboard", "\(session.label): cannot save \(path)/\(file): \(error)")
            return Self.jsonError(500, "not saved: \(error)")
        }
        // Every running instance of the character reads the folder at start.
        let instances = loaded.roster.services.filter { spec in
            !spec.isJob && (spec.launch.environment["WHISPERD_CHARACTER"] ?? spec.name.rawValue) == folder
                && fleet.status(of: spec.name)?.desired == .up
        }.map(\.name)
        log.log(
            .info, "dashboard",
            "\(session.label): saved \(path)/\(file) (\(body.count) bytes); restarting \(instances.map(\.rawValue).joined(separator: ", "))")
        for instance in instances { fleet.post(.operatorRequested(.restart, instance)) }
        return Self.jsonBody(200, SavedCharacterFile(saved: file, restarted: instances.map(\.rawValue)))
    }


    // MARK: - Responses

    /// No script but our own file, no inline anything, no framing, nothing sent elsewhere.
    static let contentSecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        + "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    func withSecurityHeaders(_ response: HTTPServer.Response) -> HTTPServer.Response {
        var response = response
        response.extraHeaders += [
            ("Content-Security-Policy", Self.contentSecurityPolicy), ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"), ("X-Frame-Options", "DENY"),
        ]
        if !response.extraHeaders.contains(where: { $0.0 == "Cache-Control" }) {
            response.extraHeaders.append(("Cache-Control", "no-store"))
        }
        return response
    }

    private func asset(_ bytes: [UInt8], _ contentType: String) -> HTTPServer.Response {
        withSecurityHeaders(HTTPServer.Response(status: 200, contentType: contentType, bytes: bytes))
    }

    private func page(_ status: Int, _ message: String) -> HTTPServer.Response {
        let html = "<!doctype html><meta charset=utf-8><title>whisperd</title><p>\(message)</p><p><a href=\"/\">whisperd dashboard</a></p>\n"
        return withSecurityHeaders(HTTPServer.Response(status: status, contentType: "text/html; charset=utf-8", body: html))
    }

    /// A type of the API contract, encoded as every JSON answer is (JSONText).
    static func jsonBody(_ status: Int, _ value: some APIModel) -> HTTPServer.Response {
        let bytes = (try? JSONText.encode(value)) ?? Array(#"{"error":"cannot encode"}"#.utf8)
        var response = HTTPServer.Response(status: status, contentType: "application/json", bytes: bytes)
        response.extraHeaders = [
            ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", contentSecurityPolicy),
        ]
        return response
    }

    static func jsonError(_ status: Int, _ message: String) -> HTTPServer.Response { jsonBody(status, APIError(message)) }
}
