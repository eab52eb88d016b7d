import WhisperConfig
import WhisperCore
import WhisperSystem

/// Where whisperd reads and writes, after flags and defaults.
public struct DaemonConfiguration: Sendable {
    public var rosterPath: String
    public var stateDirectory: String
    public var runtimeDirectory: String
    public var logDirectory: String
    /// Loopback status endpoint (`/health`); `nil` is `--http off`.
    public var httpAddress: (host: String, port: Int)?
    public var selfExecutable: String
    /// `--cgroup-backend` and `--cgroup` (base path inside each hierarchy; `nil`: own cgroup).
    public var cgroupMode: CgroupMode
    public var cgroupBase: String?
    /// The group allowed to use the control socket.
    public var controlGroup: String
    /// Characters' lines also go to the journal (`--journal`, or run by systemd).
    public var journal: Bool
    /// `--profile`: the active profiles (services with `profiles:` run only in one of them).
    public var profiles: Set<String> = []
    /// `--handover PATH`: this whisperd was started by a re-exec of the previous one.
    public var handoverPath: String?
    /// `whisperctl scale` decisions kept from an earlier run.
    public var replicaOverrides: [String: Int] = [:]
    /// How long a dashboard login lasts.
    public var dashboardSessionLifetime = DashboardSessions.defaultLifetime
    /// `whisperd run-one NAME`: the one service this whisperd runs (every read of the roster,
    /// reloads too, is narrowed to it); whisperd exits when it is done for good, and its
    /// output also goes to whisperd's stdout (`kubectl logs`).
    public var oneService: RosterLoader.OneService?

    public init(
        rosterPath: String, stateDirectory: String, runtimeDirectory: String, logDirectory: String,
        httpAddress: (host: String, port: Int)?, selfExecutable: String, cgroupMode: CgroupMode = .auto,
        cgroupBase: String? = nil, controlGroup: String = "whisperd", journal: Bool = false
    ) {
        self.journal = journal
        self.controlGroup = controlGroup
        self.cgroupMode = cgroupMode
        self.cgroupBase = cgroupBase
        self.rosterPath = rosterPath
        self.stateDirectory = stateDirectory
        self.runtimeDirectory = runtimeDirectory
        self.logDirectory = logDirectory
        self.httpAddress = httpAddress
        self.selfExecutable = selfExecutable
    }

    /// `127.0.0.1:9464`, `[::1]:9464`, `off`. Non-loopback hosts need `allowNonLoopback`.
    public static func parseHTTPAddress(_ text: String, allowNonLoopback: Bool) -> Result<(host: String, port: Int)?, AddressError> {
        if text == "off" { return .success(nil) }
        var host: Substring
        var portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { return .failure(AddressError("expected [ADDR]:PORT, got \(text)")) }
            portText = rest.dropFirst()
        } else {
            guard let colon = text.lastIndex(of: ":") else { return .failure(AddressError("expected ADDR:PORT or off, got \(text)")) }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        if host == "localhost" { host = "127.0.0.1" }
        guard let port = Int(portText), (1...65535).contains(port) else { return .failure(AddressError("invalid port in \(text)")) }
        let isLoopback = host.hasPrefix("127.") || host == "::1"
        let looksLikeAddress = host.allSatisfy { $0.isHexDigit || $0 == "." || $0 == ":" }
        guard looksLikeAddress, !host.isEmpty else { return .failure(AddressError("\(host) is not an IP address")) }
        if !isLoopback, !allowNonLoopback {
            return .failure(AddressError("\(host) is not a loopback address; pass --http-allow-remote to expose status on it"))
        }
        return .success((String(host), port))
    }
}

public struct AddressError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
