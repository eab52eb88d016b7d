import Foundation
import Glibc
import WhisperConfig
import WhisperCore
import WhisperSystem

/// The control socket: `<runtime>/control.sock`, HTTP/1.1 + JSON, mode 0660, group
/// `whisperd`. Everything the loopback port serves, plus the routes that change things.
/// Peers are checked (SO_PEERCRED) before a byte of their request is read.
extension Daemon {
    var controlSocketPath: String { configuration.runtimeDirectory + "/control.sock" }

    /// - Parameter inheritedFD: the socket, still bound and listening, from the whisperd that
    ///   re-executed into this one.
    func startControlSocket(inheritedFD: Int32? = nil) throws {
        let path = controlSocketPath
        guard path.utf8.count < 108 else {
            throw SystemError("control socket path \(path) is longer than 107 bytes; use a shorter --runtime-dir", errno: ENAMETOOLONG)
        }
        let group = controlGroupID()
        tenants.controlGroupID = group
        let owner = geteuid()
        let authorize: HTTPServer.Authorizer = { [unowned self] peer in
            let isOperator = peer.uid == 0 || peer.uid == owner || (group.map { peer.isMember(ofGroup: $0) } ?? false)
            // A character is never an operator, whatever user it runs as (`user: root`, or a
            // whisperd that is not root and so cannot give characters users of their own).
            return isOperator && !self.isCharacterProcess(peer.pid)
        }
        let handler: HTTPServer.Handler = { [unowned self] request in self.handleControlRequest(request) }
        if let inheritedFD {
            controlServer = try HTTPServer(loop: loop, listenFD: inheritedFD, authorize: authorize, handler: handler)
            return
        }
        controlServer = try HTTPServer(
            loop: loop, unixPath: path, mode: group == nil ? 0o600 : 0o660, authorize: authorize, handler: handler)
        if let group, chown(path, owner, group) != 0 {
            log.log(.warning, "whisperd", "cannot give \(path) to group \(configuration.controlGroup): \(SystemError("chown"))")
        }
        let access = group.map { _ in "mode 0660, group \(configuration.controlGroup)" } ?? "mode 0600, owner only"
        log.log(.info, "whisperd", "control socket \(path) (\(access))")
    }

    /// The control group's gid; created (as a system group) when missing and we are root.
    private func controlGroupID() -> UInt32? {
        let name = configuration.controlGroup
        if let entry = getgrnam(name) { return entry.pointee.gr_gid }
        guard geteuid() == 0 else {
            log.log(.warning, "whisperd", "group \(name) does not exist: the control socket is for its owner only")
            return nil
        }
        let status = Glibc.system("groupadd --system '\(name)' >/dev/null 2>&1")
        if status == 0, let entry = getgrnam(name) {
            log.log(.info, "whisperd", "created system group \(name) for the control socket")
            return entry.pointee.gr_gid
        }
        log.log(.warning, "whisperd", "cannot create group \(name): the control socket is for root only")
        return nil
    }

    func handleControlRequest(_ request: HTTPServer.Request) -> HTTPServer.Response {
        let parts = request.path.split(separator: "/").map(String.init)
        if request.method == "GET" || request.method == "HEAD" {
            if parts == ["v1", "paths"] {
                // For `whisperctl backup` and `restore`: where things are, and which characters.
                let characters = loaded.roster.services.filter { !$0.isJob }
                let onPostgres = characters.contains { $0.launch.storesInPostgres }
                return jsonResponse(
                    200,
                    [
                        "state_dir": configuration.stateDirectory, "runtime_dir": configuration.runtimeDirectory,
                        "log_dir": configuration.logDirectory, "roster": configuration.rosterPath,
                        "characters_dir": loaded.charactersDirectory, "characters": characters.map(\.name.rawValue),
                        "stores_on_postgres": onPostgres,
                    ])
            }
            if parts == ["v1", "dashboard"] { return dashboardLoginResponse() }
            if parts.count == 4, parts[0] == "v1", parts[1] == "characters", let name = known(parts[2]) {
                switch parts[3] {
                case "logs": return logs(name, request)
                case "incidents": return jsonResponse(200, ["name": name.rawValue, "incidents": incidents.load(name.rawValue)])
                case "env": return environment(name)
                default: break
                }
            }
            return handleStatusRequest(request)
        }
        guard request.method == "POST" else { return jsonResponse(405, ["error": "method \(request.method) not allowed"]) }
        let peer = request.peer.map { "uid=\($0.uid) pid=\($0.pid)" } ?? "peer unknown"
        if parts == ["v1", "reexec"] {
            log.log(.info, "control", "\(peer): reexec")
            if let refusal = requestReexec(by: peer) { return jsonResponse(409, ["error": refusal]) }
            return jsonResponse(202, ["reexec": "scheduled", "reexecs": reexecs, "pid": Int(getpid())])
        }
        if parts == ["v1", "reload"] {
            let dryRun = request.queryItems["dry_run"].map { $0 == "1" || $0 == "true" } ?? false
            log.log(.info, "control", "\(peer): reload\(dryRun ? " --dry-run" : "")")
            return reloadResponse(dryRun: dryRun)
        }
        if parts.count == 4, parts[0] == "v1", parts[1] == "scale" {
            guard let count = Int(parts[3]), (0...RosterLoader.maxReplicas).contains(count) else {
                return jsonResponse(400, ["error": "replicas must be a number in 0...\(RosterLoader.maxReplicas)"])
            }
            log.log(.info, "control", "\(peer): scale \(parts[2]) \(count)")
            return scale(parts[2], to: count)
        }
        if parts.count == 4, parts[0] == "v1", parts[1] == "profiles" {
            guard parts[3] == "start" || parts[3] == "stop" else {
                return jsonResponse(404, ["error": "unknown operation \(parts[3]) (start, stop)"])
            }
            log.log(.info, "control", "\(peer): \(parts[3]) --profile \(parts[2])")
            return switchProfile(parts[2], on: parts[3] == "start")
        }
        guard parts.count == 4, parts[0] == "v1", parts[1] == "characters" else {
            return jsonResponse(404, ["error": "no such route: POST \(request.path)"])
        }
        guard let name = known(parts[2]) else { return jsonResponse(404, ["error": "no character named \(parts[2])"]) }
        guard let command = OperatorCommand(rawValue: parts[3]) else {
            return jsonResponse(404, ["error": "unknown operation \(parts[3]) (start, stop, restart, run)"])
        }
        guard !core.isShuttingDown else { return jsonResponse(409, ["error": "whisperd is shutting down"]) }
        if command == .run, let status = core.status(of: name) {
            guard status.isJob else { return jsonResponse(409, ["error": "\(name) is a character, not a job: use restart"]) }
            if let pid = status.pid { return jsonResponse(409, ["error": "\(name) is already running (pid \(pid))"]) }
        }
        log.log(.info, "control", "\(peer): \(command.rawValue) \(name)")
        post(.operatorRequested(command, name))
        guard let status = core.status(of: name) else { return jsonResponse(404, ["error": "no character named \(name)"]) }
        return jsonResponse(202, describe(status, now: Clock.monotonicNanoseconds(), limits: [:]))
    }

    private func known(_ text: String) -> ServiceName? {
        guard let name = ServiceName(text), core.status(of: name) != nil else { return nil }
        return name
    }

    /// Every JSON answer of both endpoints.
    func jsonResponse(_ status: Int, _ object: [String: Any]) -> HTTPServer.Response {
        HTTPServer.Response(status: status, contentType: "application/json", bytes: JSONText.serialize(object))
    }

    // MARK: - Profiles

    /// `whisperctl start|stop --profile P`: the roster again with P switched, applied like a
    /// reload (services that gain or lose their profile start or stop) and remembered in the
    /// state directory. A roster the switch makes invalid changes nothing.
    private func switchProfile(_ profile: String, on: Bool) -> HTTPServer.Response {
        guard RosterLoader.isValidProfile(profile) else {
            return jsonResponse(400, ["error": "`\(profile.prefix(40))` is not a profile name"])
        }
        guard !core.isShuttingDown else { return jsonResponse(409, ["error": "whisperd is shutting down"]) }
        let previous = loader.profiles
        if on { loader.profiles.insert(profile) } else { loader.profiles.remove(profile) }
        switch reload(dryRun: false) {
        case .rejected(let problems):
            loader.profiles = previous
            return jsonResponse(422, ["applied": false, "problems": problems])
        case .planned(let plan):
            do { try stateStore.setProfile(profile, active: on) } catch {
                log.log(.error, "whisperd", "cannot remember profile \(profile): \(error)")
            }
            return jsonResponse(
                200,
                [
                    "applied": true, "plan": plan, "profiles": loader.profiles.sorted(),
                    "services": loaded.profileMembers[profile] ?? [],
                ])
        }
    }

    /// `whisperctl scale NAME N`: the roster again with NAME at N replicas (`NAME-0` …), applied
    /// like a reload and remembered in the state directory.
    private func scale(_ name: String, to count: Int) -> HTTPServer.Response {
        guard loaded.characterEntries.contains(name) else {
            return jsonResponse(404, ["error": "no character named \(name.prefix(64)) in the roster (scale takes the name as written)"])
        }
        guard !core.isShuttingDown else { return jsonResponse(409, ["error": "whisperd is shutting down"]) }
        let previous = loader.replicaOverrides[name]
        loader.replicaOverrides[name] = count
        switch reload(dryRun: false) {
        case .rejected(let problems):
            loader.replicaOverrides[name] = previous
            return jsonResponse(422, ["applied": false, "problems": problems])
        case .planned(let plan):
            do { try stateStore.setReplicas(name, count) } catch {
                log.log(.error, "whisperd", "cannot remember the scale of \(name): \(error)")
            }
            return jsonResponse(
                200, ["applied": true, "plan": plan, "services": (0..<count).map { "\(name)-\($0)" }])
        }
    }

    // MARK: - Reload

    private func reloadResponse(dryRun: Bool) -> HTTPServer.Response {
        switch reload(dryRun: dryRun) {
        case .rejected(let problems):
            return jsonResponse(422, ["applied": false, "problems": problems])
        case .planned(let plan):
            return jsonResponse(200, ["applied": !dryRun, "dry_run": dryRun, "plan": plan])
        }
    }

    // MARK: - Logs

    /// The last `lines` lines of the character's log file; with `follow=1`, then every new
    /// line as it is written, until the client hangs up.
    private func logs(_ name: ServiceName, _ request: HTTPServer.Request) -> HTTPServer.Response {
        let items = request.queryItems
        let count = min(Int(items["lines"] ?? "") ?? 20, 10_000)
        let tail = Self.tail(of: "\(configuration.logDirectory)/\(name.rawValue).log", lines: count)
        let follow = items["follow"] == "1" || items["follow"] == "true"
        guard follow else { return HTTPServer.Response(status: 200, contentType: "text/plain; charset=utf-8", body: tail) }
        return HTTPServer.Response(status: 200, contentType: "text/plain; charset=utf-8", body: tail) {
            [unowned self] stream in
            let id = ObjectIdentifier(stream)
            self.logFollowers[name, default: [:]][id] = stream
            stream.onClose = { [unowned self] in self.logFollowers[name]?[id] = nil }
        }
    }

    /// Up to `lines` whole lines from the end of a file (reads about 1 KiB per line wanted, at
    /// most 1 MiB: an incident must not read a whole log file).
    static func tail(of path: String, lines: Int) -> String {
        guard lines > 0 else { return "" }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        let size = lseek(fd, 0, SEEK_END)
        let length = Int(min(size, off_t(min(1 << 20, max(4096, lines * 1024)))))
        guard length > 0 else { return "" }
        var buffer = [UInt8](repeating: 0, count: length)
        let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, size - off_t(length)) }
        guard count > 0 else { return "" }
        var text = buffer[0..<count]
        if length < size, let newline = text.firstIndex(of: 10) { text = text[(newline + 1)...] }
        var newlines = 0
        var start = text.startIndex
        for index in text.indices.reversed() where text[index] == 10 && index != text.index(before: text.endIndex) {
            newlines += 1
            if newlines == lines {
                start = index + 1
                break
            }
        }
        return String(decoding: text[start...], as: UTF8.self)
    }

    // MARK: - Incidents

    /// After an abnormal exit (the restart, if any, is already under way): what happened,
    /// with the run's peak memory, its last log lines and its last health report.
    func recordIncident(_ name: ServiceName) {
        guard let status = core.status(of: name), let exit = status.lastExit, !exit.reason.isSuccess,
            exit.reason != .stopped
        else { return }
        let now = Clock.monotonicNanoseconds()
        let realtime = Clock.realtimeNanoseconds() - (now - exit.at.nanoseconds)
        var incident: [String: Any] = [
            "reason": exit.reason.description, "kind": exit.reason.kind,
            "at": Clock.iso8601(realtimeNanoseconds: realtime), "uptime_seconds": exit.uptime.seconds,
            "restarts": status.restarts, "state_after": status.state.rawValue,
        ]
        if let peak = exit.peakMemoryBytes { incident["peak_memory_bytes"] = peak }
        if exit.reason == .healthCheckFailed, let probe = lastProbeFailure[name] { incident["health_check"] = probe }
        let lines = Self.tail(of: "\(configuration.logDirectory)/\(name.rawValue).log", lines: 10)
        incident["last_log_lines"] = lines.split(separator: "\n").map(String.init)
        var health: [String: Any] = [:]
        if let text = status.statusText { health["status_text"] = text }
        for facet in status.facets { health[facet.name] = facet.detail.map { "\(facet.level.rawValue):\($0)" } ?? facet.level.rawValue }
        if !health.isEmpty { incident["health"] = health }
        do { try incidents.append(name.rawValue, incident) } catch {
            log.log(.warning, character: name, "cannot record incident: \(error)")
        }
    }

    // MARK: - Environment

    /// The effective environment, where each variable came from, secrets redacted.
    private func environment(_ name: ServiceName) -> HTTPServer.Response {
        guard let spec = loaded.roster.services.first(where: { $0.name == name }) else {
            return jsonResponse(404, ["error": "no character named \(name)"])
        }
        let origins = loaded.environmentOrigins[name] ?? [:]
        let variables = childEnvironment(spec, notifySocket: notifySocketPath(name))
        let entries: [[String: Any]] = variables.keys.sorted().map { key in
            let shown = Secrets.displayed(key, variables[key] ?? "")
            return [
                "name": key, "value": shown.value, "secret": shown.isSecret,
                "origin": origins[key] ?? "whisperd",
            ]
        }
        return jsonResponse(200, ["name": name.rawValue, "environment": entries])
    }
}
