import Foundation
import Glibc
import WhisperAPI
import WhisperConfig
import WhisperCore
import WhisperSystem
import WhisperJSON

/// What each control request (decoded by ``ControlService``) does; the ``Fleet`` carries out what changes the fleet.
extension Daemon: ControlledFleet {
    func refused(_ refusal: ControlRefusal) -> HTTPServer.Response {
        guard let allowed = refusal.allowed else { return errorResponse(refusal.status, refusal.message) }
        return methodNotAllowed("", allowed: allowed, refusal.message)
    }

    /// Carries out a decoded control request (``ControlService`` decoded it).
    func perform(_ request: ControlRequest, of http: HTTPServer.Request) -> HTTPServer.Response {
        let peer = http.peer.map { "uid=\($0.uid) pid=\($0.pid)" } ?? "peer unknown"
        switch request {
        case .paths:
            // For `whisperctl backup` and `restore`: where things are, and which characters.
            let characters = loaded.roster.services.filter { !$0.isJob }
            let onPostgres = characters.contains { $0.launch.storesInPostgres }
            return jsonResponse(
                200,
                Paths(
                    stateDir: configuration.stateDirectory, runtimeDir: configuration.runtimeDirectory,
                    logDir: configuration.logDirectory, roster: configuration.rosterPath,
                    charactersDir: loaded.charactersDirectory, characters: characters.map(\.name.rawValue),
                    storesOnPostgres: onPostgres))
        case .openAPI:
            return openAPIResponse(for: .control)
        case .dashboardLogin:
            return dashboardLoginResponse()
        case .logs(let name, let lines, let follow):
            return logs(name, lines: lines, follow: follow)
        case .incidents(let name):
            writePendingIncidents()
            return jsonResponse(200, IncidentList(name: name.rawValue, incidents: incidents.load(name.rawValue)))
        case .environment(let name):
            return environment(name)
        case .status:
            return handleStatusRequest(http)
        case .reexec:
            log.log(.info, "control", "\(peer): reexec")
            if let refusal = requestReexec(by: peer) { return errorResponse(409, refusal) }
            return jsonResponse(202, ReexecScheduled(reexecs: completedReexecs, pid: Int(getpid())))
        case .reload(let dryRun):
            log.log(.info, "control", "\(peer): reload\(dryRun ? " --dry-run" : "")")
            return reloadResponse(dryRun: dryRun)
        case .scale(let name, let count):
            log.log(.info, "control", "\(peer): scale \(name) \(count)")
            return scale(name, to: count)
        case .profile(let profile, let on):
            log.log(.info, "control", "\(peer): \(on ? "start" : "stop") --profile \(profile)")
            return switchProfile(profile, on: on)
        case .command(let command, let name):
            return perform(command, on: name, peer: peer)
        }
    }

    private func perform(_ command: OperatorCommand, on name: ServiceName, peer: String) -> HTTPServer.Response {
        guard !fleet.isShuttingDown else { return errorResponse(409, "whisperd is shutting down") }
        if command == .run, let status = fleet.status(of: name) {
            guard status.isJob else { return errorResponse(409, "\(name) is a character, not a job: use restart") }
            if let pid = status.pid { return errorResponse(409, "\(name) is already running (pid \(pid))") }
        }
        log.log(.info, "control", "\(peer): \(command.rawValue) \(name)")
        fleet.post(.operatorRequested(command, name))
        guard let status = fleet.status(of: name) else { return errorResponse(404, "no character named \(name)") }
        return jsonResponse(202, describe(status, now: Clock.monotonicNanoseconds(), limits: [:]))
    }

    func knownService(_ text: String) -> ServiceName? {
        guard let name = ServiceName(text), fleet.status(of: name) != nil else { return nil }
        return name
    }

    func isCharacterProcess(_ pid: Int32) -> Bool { fleet.isCharacterProcess(pid) }

    /// Every JSON answer of both endpoints: a type of the API contract (WhisperAPI).
    func jsonResponse(_ status: Int, _ value: some APIModel) -> HTTPServer.Response { self.status.jsonResponse(status, value) }

    func errorResponse(_ status: Int, _ message: String) -> HTTPServer.Response { self.status.errorResponse(status, message) }

    /// 405, with the `Allow` header HTTP asks for.
    func methodNotAllowed(_ method: String, allowed: [String], _ message: String) -> HTTPServer.Response {
        status.methodNotAllowed(method, allowed: allowed, message)
    }

    /// The OpenAPI document of an endpoint, made once.
    func openAPIResponse(for endpoint: Endpoint) -> HTTPServer.Response { status.openAPIResponse(for: endpoint) }

    // MARK: - Profiles

    /// `whisperctl start|stop --profile P`: the roster again with P switched, applied like a
    /// reload (services that gain or lose their profile start or stop) and remembered in the
    /// state directory. A roster the switch makes invalid changes nothing.
    private func switchProfile(_ profile: String, on: Bool) -> HTTPServer.Response {
        guard RosterLoader.isValidProfile(profile) else {
            return errorResponse(400, "`\(profile.prefix(40))` is not a profile name")
        }
        guard !fleet.isShuttingDown else { return errorResponse(409, "whisperd is shutting down") }
        let previous = loader.profiles
        if on { loader.profiles.insert(profile) } else { loader.profiles.remove(profile) }
        switch reload(dryRun: false) {
        case .rejected(let problems):
            loader.profiles = previous
            return jsonResponse(422, RosterRejected(problems: problems))
        case .planned(let plan):
            do { try stateStore.setProfile(profile, active: on) } catch {
                log.log(.error, "whisperd", "cannot remember profile \(profile): \(error)")
            }
            return jsonResponse(
                200,
                ProfileResult(applied: true, plan: plan, profiles: loader.profiles.sorted(), services: loaded.profileMembers[profile] ?? []))
        }
    }

    /// `whisperctl scale NAME N`: the roster again with NAME at N replicas (`NAME-0` …), applied
    /// like a reload and remembered in the state directory.
    private func scale(_ name: String, to count: Int) -> HTTPServer.Response {
        guard loaded.characterEntries.contains(name) else {
            return errorResponse(404, "no character named \(name.prefix(64)) in the roster (scale takes the name as written)")
        }
        guard !fleet.isShuttingDown else { return errorResponse(409, "whisperd is shutting down") }
        let previous = loader.replicaOverrides[name]
        loader.replicaOverrides[name] = count
        switch reload(dryRun: false) {
        case .rejected(let problems):
            loader.replicaOverrides[name] = previous
            return jsonResponse(422, RosterRejected(problems: problems))
        case .planned(let plan):
            do { try stateStore.setReplicas(name, count) } catch {
                log.log(.error, "whisperd", "cannot remember the scale of \(name): \(error)")
            }
            return jsonResponse(200, ScaleResult(applied: true, plan: plan, services: (0..<count).map { "\(name)-\($0)" }))
        }
    }

    // MARK: - Reload

    private func reloadResponse(dryRun: Bool) -> HTTPServer.Response {
        switch reload(dryRun: dryRun) {
        case .rejected(let problems):
            return jsonResponse(422, RosterRejected(problems: problems))
        case .planned(let plan):
            return jsonResponse(200, ReloadResult(applied: !dryRun, dryRun: dryRun, plan: plan))
        }
    }

    // MARK: - Logs

    /// The last `lines` lines of the character's log file; with `follow=1`, then every new
    /// line as it is written, until the client hangs up.
    private func logs(_ name: ServiceName, lines count: Int, follow: Bool) -> HTTPServer.Response {
        let tail = Self.tail(of: "\(configuration.logDirectory)/\(name.rawValue).log", lines: count)
        guard follow else { return HTTPServer.Response(status: 200, contentType: "text/plain; charset=utf-8", body: tail) }
        return HTTPServer.Response(status: 200, contentType: "text/plain; charset=utf-8", body: tail) {
            [unowned self] stream in self.control.follow(name, stream)
        }
    }

    /// Up to `lines` whole lines from the end of a file (reads about 1 KiB per line wanted, at
    /// most 1 MiB: an incident must not read a whole log file).
    static func tail(of path: String, lines: Int, endingAt end: off_t? = nil) -> String {
        guard lines > 0 else { return "" }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        let size = min(lseek(fd, 0, SEEK_END), end ?? .max)
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
    /// with the run's peak memory, its last log lines and its last health report. Noted now
    /// (with a mark in the character's log, so the tail is the ended run's), written a moment
    /// later (``pendingIncidentDeadline``): the restarted program is then past its start
    /// instead of waiting for the loop's CPU while the file is written. Asking for incidents
    /// writes the pending ones first; so do a stop and a re-exec.
    func recordIncident(_ status: ServiceStatus, healthCheck: String?) {
        guard let exit = status.lastExit else { return }
        let now = Clock.monotonicNanoseconds()
        // The log's lines are written on the log writer's thread: its mark says where the ended
        // run's lines end, once they are on disk.
        let logMark = logWriter.mark(path: "\(configuration.logDirectory)/\(status.name.rawValue).log")
        pendingIncidents.append(
            PendingIncident(
                status: status, healthCheck: healthCheck, realtime: Clock.realtimeNanoseconds() - (now - exit.at.nanoseconds),
                logMark: logMark))
        guard pendingIncidentDeadline == nil else { return }
        pendingIncidentDeadline = now + Self.incidentWriteDelayNanoseconds
        // A reap notes its incident after its batch of events set the timer: set it again.
        armTimerSoon()
    }

    /// An incident noted at the exit, written by ``writePendingIncidents()``.
    struct PendingIncident {
        let status: ServiceStatus
        let healthCheck: String?
        /// When the run ended, on the wall clock.
        let realtime: Int64
        /// The log writer's mark at the exit (``LogWriter/mark(path:)``): the tail is the ended run's.
        let logMark: Int
    }

    /// How long an incident waits to be written (see ``recordIncident(_:healthCheck:)``).
    static let incidentWriteDelayNanoseconds: Int64 = 20_000_000

    /// Writes the incidents noted since the last call.
    func writePendingIncidents() {
        pendingIncidentDeadline = nil
        let pending = pendingIncidents
        pendingIncidents = []
        for noted in pending {
            let status = noted.status
            guard let exit = status.lastExit else { continue }
            let name = status.name
            // A writer more than 20 ms behind (a stalled disk) has not reached the mark: the tail
            // is then the file's end.
            let end = logWriter.takeMarkedLength(noted.logMark).map { off_t($0) }
            let lines = Self.tail(of: "\(configuration.logDirectory)/\(name.rawValue).log", lines: 10, endingAt: end)
            var incident = Incident(
                reason: exit.reason.description, kind: exit.reason.kind, at: Clock.iso8601(realtimeNanoseconds: noted.realtime),
                uptimeSeconds: exit.uptime.seconds, restarts: status.restarts, stateAfter: status.state.rawValue,
                lastLogLines: lines.split(separator: "\n").map(String.init))
            incident.peakMemoryBytes = exit.peakMemoryBytes
            incident.healthCheck = noted.healthCheck
            var health = StatusPublisher.facetLevels(status.facets)
            if let text = status.statusText { health["status_text"] = text }
            if !health.isEmpty { incident.health = health }
            do { try incidents.append(name.rawValue, incident) } catch {
                log.log(.warning, character: name, "cannot record incident: \(error)")
            }
        }
    }

    // MARK: - Environment

    /// The effective environment, where each variable came from, secrets redacted.
    private func environment(_ name: ServiceName) -> HTTPServer.Response {
        guard let spec = loaded.roster.services.first(where: { $0.name == name }) else {
            return errorResponse(404, "no character named \(name)")
        }
        let origins = loaded.environmentOrigins[name] ?? [:]
        let variables = fleet.childEnvironment(spec, notifySocket: fleet.notifySocketPath(name))
        let entries = variables.keys.sorted().map { key in
            let shown = Secrets.displayed(key, variables[key] ?? "")
            return EnvironmentReport.Variable(name: key, value: shown.value, secret: shown.isSecret, origin: origins[key] ?? "whisperd")
        }
        return jsonResponse(200, EnvironmentReport(name: name.rawValue, environment: entries))
    }
}
