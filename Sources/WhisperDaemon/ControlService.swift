import Glibc
import WhisperAPI
import WhisperConfig
import WhisperCore
import WhisperSystem

/// A control-socket request, decoded: what the operator asks of the fleet.
enum ControlRequest: Equatable {
    /// `GET /v1/paths`: where things are, for `whisperctl backup` and `restore`.
    case paths
    case openAPI
    /// `GET /v1/dashboard`: the dashboard's login URL.
    case dashboardLogin
    case logs(ServiceName, lines: Int, follow: Bool)
    case incidents(ServiceName)
    case environment(ServiceName)
    /// Any other GET or HEAD: what the loopback status port serves.
    case status
    case reexec
    case reload(dryRun: Bool)
    /// `whisperctl scale NAME N`: the name as the roster writes it (not a service's).
    case scale(String, replicas: Int)
    case profile(String, on: Bool)
    case command(OperatorCommand, ServiceName)
}

/// A request refused before it reaches the fleet: its status and message (and, for 405, what is allowed).
struct ControlRefusal: Error, Equatable {
    var status: Int
    var message: String
    var allowed: [String]? = nil
}

extension ControlRequest {
    /// The route, its method and its parameters; `known` turns a path's name into a service of
    /// the fleet (nil: no such service). The checks come in the order the answers promise:
    /// method, route, name, operation.
    static func decode(_ request: HTTPServer.Request, known: (String) -> ServiceName?) -> Result<ControlRequest, ControlRefusal> {
        let parts = request.path.split(separator: "/").map(String.init)
        if let allowed = Route.allowedMethods(at: request.path, on: .control), !allowed.contains(request.method) {
            return .failure(
                ControlRefusal(
                    status: 405, message: "method \(request.method.prefix(20)) not allowed on \(request.path.prefix(200))", allowed: allowed))
        }
        if request.method == "GET" || request.method == "HEAD" {
            if parts == ["v1", "paths"] { return .success(.paths) }
            if parts == ["openapi.json"] { return .success(.openAPI) }
            if parts == ["v1", "dashboard"] { return .success(.dashboardLogin) }
            if parts.count == 4, parts[0] == "v1", parts[1] == "characters", let name = known(parts[2]) {
                switch parts[3] {
                case "logs":
                    let items = request.queryItems
                    guard let count = items["lines"].map({ Int($0) }) ?? 20, (0...10_000).contains(count) else {
                        return .failure(ControlRefusal(status: 400, message: "lines must be a number in 0...10000"))
                    }
                    guard let follow = flag(items["follow"]) else {
                        return .failure(ControlRefusal(status: 400, message: "follow must be 0, 1, true or false"))
                    }
                    return .success(.logs(name, lines: count, follow: follow))
                case "incidents": return .success(.incidents(name))
                case "env": return .success(.environment(name))
                default: break
                }
            }
            return .success(.status)
        }
        guard request.method == "POST" else {
            return .failure(
                ControlRefusal(status: 405, message: "method \(request.method.prefix(20)) not allowed", allowed: ["GET", "HEAD", "POST"]))
        }
        if parts == ["v1", "reexec"] { return .success(.reexec) }
        if parts == ["v1", "reload"] {
            guard let dryRun = flag(request.queryItems["dry_run"]) else {
                return .failure(ControlRefusal(status: 400, message: "dry_run must be 0, 1, true or false"))
            }
            return .success(.reload(dryRun: dryRun))
        }
        if parts.count == 4, parts[0] == "v1", parts[1] == "scale" {
            guard let count = Int(parts[3]), (0...RosterLoader.maxReplicas).contains(count) else {
                return .failure(ControlRefusal(status: 400, message: "replicas must be a number in 0...\(RosterLoader.maxReplicas)"))
            }
            return .success(.scale(parts[2], replicas: count))
        }
        if parts.count == 4, parts[0] == "v1", parts[1] == "profiles" {
            guard parts[3] == "start" || parts[3] == "stop" else {
                return .failure(ControlRefusal(status: 404, message: "unknown operation \(parts[3].prefix(40)) (start, stop)"))
            }
            return .success(.profile(parts[2], on: parts[3] == "start"))
        }
        guard parts.count == 4, parts[0] == "v1", parts[1] == "characters" else {
            return .failure(ControlRefusal(status: 404, message: "no such route: POST \(request.path.prefix(200))"))
        }
        guard let name = known(parts[2]) else {
            return .failure(ControlRefusal(status: 404, message: "no character named \(parts[2].prefix(64))"))
        }
        guard let command = OperatorCommand(rawValue: parts[3]) else {
            return .failure(
                ControlRefusal(status: 404, message: "unknown operation \(parts[3].prefix(40)) (start, stop, restart, rolling-restart, run)"))
        }
        return .success(.command(command, name))
    }

    /// A query flag: absent is false; `1`/`true` and `0`/`false`; anything else is nil (an error).
    static func flag(_ value: String?) -> Bool? {
        switch value {
        case nil, "0", "false": false
        case "1", "true": true
        default: nil
        }
    }
}

/// What the control service asks of the fleet: to carry out a decoded request, and whether a
/// peer is one of the characters' processes (never an operator).
protocol ControlledFleet: AnyObject {
    /// The service of that name, if the fleet has one.
    func knownService(_ text: String) -> ServiceName?
    /// `request` is the decoded `http` (a status request is answered from it).
    func perform(_ request: ControlRequest, of http: HTTPServer.Request) -> HTTPServer.Response
    func isCharacterProcess(_ pid: Int32) -> Bool
    /// The answer to a request refused before it reached the fleet.
    func refused(_ refusal: ControlRefusal) -> HTTPServer.Response
}

/// The control socket: `<runtime>/control.sock`, HTTP/1.1 + JSON, mode 0660, group
/// `whisperd`. Everything the loopback port serves, plus the routes that change things.
/// Peers are checked (SO_PEERCRED) before a byte of their request is read. It owns the server
/// and the `whisperctl logs -f` clients; it decodes requests (``ControlRequest``) and hands
/// them to the fleet, whose state it does not hold.
///
/// Not `Sendable`: runs on the loop thread.
final class ControlService {
    private let loop: EventLoop
    private let log: DaemonLog
    private let runtimeDirectory: String
    private let groupName: String
    private(set) var server: HTTPServer?
    /// `whisperctl logs -f` clients, per character.
    private var logFollowers: [ServiceName: [ObjectIdentifier: HTTPServer.HTTPStream]] = [:]

    init(loop: EventLoop, log: DaemonLog, runtimeDirectory: String, groupName: String) {
        self.loop = loop
        self.log = log
        self.runtimeDirectory = runtimeDirectory
        self.groupName = groupName
    }

    var socketPath: String { runtimeDirectory + "/control.sock" }

    /// Opens the socket (or takes the one handed over); returns the control group's gid, if any.
    /// - Parameter inheritedFD: the socket, still bound and listening, from the whisperd that
    ///   re-executed into this one.
    func start<Fleet: ControlledFleet>(inheritedFD: Int32? = nil, fleet: Fleet) throws -> UInt32? {
        let path = socketPath
        guard path.utf8.count < 108 else {
            throw SystemError("control socket path \(path) is longer than 107 bytes; use a shorter --runtime-dir", errno: ENAMETOOLONG)
        }
        let group = controlGroupID()
        let owner = geteuid()
        let authorize: HTTPServer.Authorizer = { [unowned fleet] peer in
            let isOperator = peer.uid == 0 || peer.uid == owner || (group.map { peer.isMember(ofGroup: $0) } ?? false)
            // A character is never an operator, whatever user it runs as (`user: root`, or a
            // whisperd that is not root and so cannot give characters users of their own).
            return isOperator && !fleet.isCharacterProcess(peer.pid)
        }
        let handler: HTTPServer.Handler = { [unowned fleet] request in Self.handle(request, fleet: fleet) }
        if let inheritedFD {
            server = try HTTPServer(loop: loop, listenFD: inheritedFD, authorize: authorize, handler: handler)
            return group
        }
        server = try HTTPServer(loop: loop, unixPath: path, mode: group == nil ? 0o600 : 0o660, authorize: authorize, handler: handler)
        if let group, chown(path, owner, group) != 0 {
            log.log(.warning, "whisperd", "cannot give \(path) to group \(groupName): \(SystemError("chown"))")
        }
        let access = group.map { _ in "mode 0660, group \(groupName)" } ?? "mode 0600, owner only"
        log.log(.info, "whisperd", "control socket \(path) (\(access))")
        return group
    }

    /// A request: decoded, then carried out by the fleet (or refused).
    static func handle<Fleet: ControlledFleet>(_ request: HTTPServer.Request, fleet: Fleet) -> HTTPServer.Response {
        switch ControlRequest.decode(request, known: fleet.knownService) {
        case .failure(let refusal):
            return fleet.refused(refusal)
        case .success(let decoded):
            return fleet.perform(decoded, of: request)
        }
    }

    /// The control group's gid; created (as a system group) when missing and we are root.
    private func controlGroupID() -> UInt32? {
        let name = groupName
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

    /// At exit: the server closes and the socket file goes.
    func close() {
        server?.close()
        unlink(socketPath)
    }

    // MARK: - Log followers

    /// A `whisperctl logs -f` client of the character: every new line goes to it until it hangs up.
    func follow(_ name: ServiceName, _ stream: HTTPServer.HTTPStream) {
        let id = ObjectIdentifier(stream)
        logFollowers[name, default: [:]][id] = stream
        stream.onClose = { [unowned self] in self.logFollowers[name]?[id] = nil }
    }

    /// New lines of the character's output, for its followers.
    func forward(_ name: ServiceName, _ bytes: [UInt8]) {
        if let followers = logFollowers[name] { for stream in followers.values { stream.write(bytes) } }
    }
}
