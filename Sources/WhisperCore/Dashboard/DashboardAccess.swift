/// Who may do what on the dashboard (docs/dashboard.md, "Security model"): the decisions
/// only; the random values, the cookie header and the clock come from the daemon.
///
/// - Reading the fleet (what `/v1/characters` already shows) needs nothing.
/// - Reading what only the control socket shows (logs, environment, incidents, character
///   files) needs a session: the cookie a login with the token set.
/// - Changing anything needs a session, its CSRF token in `X-CSRF-Token`, and an `Origin`
///   that is this whisperd's own address.
/// - Every request must name whisperd's own address in `Host` (a rebound DNS name that points
///   at 127.0.0.1 does not).
public struct DashboardSessions: Sendable {
    public struct Session: Sendable, Equatable {
        public var id: String
        public var csrf: String
        /// A short name for logs ("session 3f2a9c1e"), never the id itself.
        public var label: String
        public var created: Instant

        public init(id: String, csrf: String, label: String, created: Instant) {
            self.id = id
            self.csrf = csrf
            self.label = label
            self.created = created
        }
    }

    /// Logins kept; the oldest is forgotten past this many.
    public static let capacity = 32
    /// A session lasts this long after its login, unless whisperd is told otherwise.
    public static let defaultLifetime = Duration.seconds(12 * 3600)
    /// A session lasts this long after its login (`--dashboard-session-lifetime`).
    public let lifetime: Duration

    private(set) public var sessions: [Session] = []

    public init(lifetime: Duration = Self.defaultLifetime) { self.lifetime = lifetime }

    /// A login with `token`; nil when it is not `expected`. `id`, `csrf` and `label` are fresh
    /// random values (the daemon's `getrandom`).
    public mutating func login(token: String, expected: String, id: String, csrf: String, label: String, now: Instant)
        -> Session?
    {
        guard !expected.isEmpty, Self.constantTimeEquals(token, expected) else { return nil }
        let session = Session(id: id, csrf: csrf, label: label, created: now)
        sessions.append(session)
        if sessions.count > Self.capacity { sessions.removeFirst(sessions.count - Self.capacity) }
        return session
    }

    /// The live session a cookie value names.
    public func session(_ id: String?, now: Instant) -> Session? {
        guard let id, !id.isEmpty else { return nil }
        guard let session = sessions.first(where: { Self.constantTimeEquals($0.id, id) }) else { return nil }
        return now.duration(since: session.created) < lifetime ? session : nil
    }

    public mutating func logout(_ id: String) {
        sessions.removeAll { $0.id == id }
    }

    /// Compares without stopping at the first difference (a token is not guessed byte by byte).
    public static func constantTimeEquals(_ left: String, _ right: String) -> Bool {
        let a = Array(left.utf8)
        let b = Array(right.utf8)
        var difference = UInt8(truncatingIfNeeded: a.count ^ b.count) | (a.count == b.count ? 0 : 1)
        for index in 0..<max(a.count, b.count) {
            difference |= (index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0)
        }
        return difference == 0
    }
}

public enum DashboardAccess {
    public enum Decision: Equatable, Sendable {
        case allowed
        case refused(status: Int, reason: String)
    }

    /// The `Host` header must be one of whisperd's own names for its port: the address it
    /// listens on, or `localhost` when that is a loopback address.
    public static func isOwnHost(_ host: String?, listenHost: String, port: Int) -> Bool {
        guard let host = host?.lowercased() else { return false }
        var names = [listenHost.contains(":") ? "[\(listenHost)]" : listenHost]
        if listenHost.hasPrefix("127.") || listenHost == "::1" { names.append("localhost") }
        return names.contains { host == "\($0):\(port)" }
    }

    /// A request that changes something: a session, its CSRF token, and an `Origin` that is
    /// whisperd's own (`http://` + the `Host` already checked).
    public static func mayChange(
        session: DashboardSessions.Session?, csrfHeader: String?, origin: String?, host: String
    ) -> Decision {
        guard let session else { return .refused(status: 401, reason: "log in first: whisperctl dashboard prints the login URL") }
        guard let origin, origin.lowercased() == "http://\(host.lowercased())" else {
            return .refused(status: 403, reason: "refused: the request's Origin is not this dashboard")
        }
        guard let csrfHeader, DashboardSessions.constantTimeEquals(csrfHeader, session.csrf) else {
            return .refused(status: 403, reason: "refused: missing or wrong X-CSRF-Token")
        }
        return .allowed
    }

    /// The value of cookie `name` in a `Cookie` header.
    public static func cookie(_ name: String, in header: String?) -> String? {
        guard let header else { return nil }
        for pair in header.split(separator: ";") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            if parts[0].trimmingSpaces() == name { return String(parts[1].trimmingSpaces()) }
        }
        return nil
    }
}

extension Substring {
    fileprivate func trimmingSpaces() -> Substring {
        var text = self
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return text
    }
}
