/// `whisperd wait`: how often a dependency is tried and for how long. Quick at first (a
/// dependency that is nearly up is seen at once), doubling to `maxDelay`, never past the
/// deadline: the last attempt gets only the time that is left.
public struct WaitSchedule: Hashable, Sendable {
    public var timeout: Duration
    public var initialDelay: Duration
    public var maxDelay: Duration
    /// The longest one attempt (a connect, a request) may take.
    public var attemptTimeout: Duration

    public init(
        timeout: Duration, initialDelay: Duration = .milliseconds(100), maxDelay: Duration = .seconds(2),
        attemptTimeout: Duration = .seconds(5)
    ) {
        self.timeout = timeout
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.attemptTimeout = attemptTimeout
    }

    /// The pause after failed attempt `attempt` (0 for the first), given the time already
    /// spent; `nil` when no time is left for another attempt.
    public func delay(afterAttempt attempt: Int, elapsed: Duration) -> Duration? {
        let left = timeout - elapsed
        // Under a millisecond left: no room for a pause and another attempt.
        guard left > .milliseconds(1) else { return nil }
        var delay = initialDelay
        for _ in 0..<min(attempt, 30) where delay < maxDelay { delay = delay * 2 }
        // The last pause ends just before the deadline, so one more attempt still fits.
        return min(delay, maxDelay, left - .milliseconds(1))
    }

    /// How long the attempt starting at `elapsed` may take.
    public func attemptBudget(elapsed: Duration) -> Duration {
        max(.zero, min(attemptTimeout, timeout - elapsed))
    }
}

/// The time source and the pause `WaitRun` needs; the shell gives the monotonic clock and a
/// real sleep, tests a hand-advanced clock.
public protocol WaitClock {
    /// Time since some fixed start, monotonic.
    func now() -> Duration
    mutating func sleep(_ duration: Duration)
}

public enum WaitOutcome: Hashable, Sendable {
    /// The dependency answered on this attempt (1-based).
    case ready(attempts: Int, after: Duration)
    /// The deadline passed; the last attempt's failure.
    case timedOut(attempts: Int, after: Duration, lastFailure: String)
}

/// Tries until an attempt succeeds or the schedule's time is up. `attempt` gets its time
/// budget and returns `nil` on success or why it failed.
public enum WaitRun {
    public static func run<C: WaitClock>(
        _ schedule: WaitSchedule, clock: inout C, attempt: (_ budget: Duration) -> String?
    ) -> WaitOutcome {
        let start = clock.now()
        var attempts = 0
        var lastFailure = "not tried"
        while true {
            let elapsed = clock.now() - start
            let budget = schedule.attemptBudget(elapsed: elapsed)
            if budget <= .zero && attempts > 0 { return .timedOut(attempts: attempts, after: elapsed, lastFailure: lastFailure) }
            attempts += 1
            guard let failure = attempt(budget) else { return .ready(attempts: attempts, after: clock.now() - start) }
            lastFailure = failure
            let spent = clock.now() - start
            guard let pause = schedule.delay(afterAttempt: attempts - 1, elapsed: spent) else {
                return .timedOut(attempts: attempts, after: spent, lastFailure: lastFailure)
            }
            clock.sleep(pause)
        }
    }
}

/// What `whisperd wait` waits for: `--http http://HOST[:PORT][/PATH]` (a 2xx answer) or
/// `--tcp HOST:PORT` (an accepted connection).
public enum WaitTarget: Hashable, Sendable, CustomStringConvertible {
    case http(host: String, port: Int, path: String)
    case tcp(host: String, port: Int)

    public var host: String {
        switch self {
        case .http(let host, _, _), .tcp(let host, _): host
        }
    }

    public var port: Int {
        switch self {
        case .http(_, let port, _), .tcp(_, let port): port
        }
    }

    public var description: String {
        switch self {
        case .http(let host, let port, let path): "http://\(Self.bracketed(host)):\(port)\(path)"
        case .tcp(let host, let port): "tcp \(Self.bracketed(host)):\(port)"
        }
    }

    static func bracketed(_ host: String) -> String { host.contains(":") ? "[\(host)]" : host }

    /// `http://postgres:9464/health`; the port defaults to 80, the path to `/`.
    public static func parseHTTP(_ url: String) -> Result<WaitTarget, WaitTargetError> {
        guard url.hasPrefix("http://") else {
            if url.hasPrefix("https://") {
                return .failure(WaitTargetError("\(url.prefix(80)): https is not supported; wait for the port with --tcp HOST:PORT"))
            }
            return .failure(WaitTargetError("\(url.prefix(80)): expected http://HOST[:PORT][/PATH]"))
        }
        let rest = url.dropFirst("http://".count)
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        var path = String(rest.dropFirst(authority.count))
        if path.isEmpty { path = "/" } else if path.first == "?" { path = "/" + path }
        guard !path.contains(where: { $0 == " " || $0 == "\r" || $0 == "\n" || $0 == "#" }) else {
            return .failure(WaitTargetError("\(url.prefix(80)): the path must not hold spaces, line breaks or #"))
        }
        guard !authority.contains("@") else { return .failure(WaitTargetError("\(url.prefix(80)): credentials in the URL are not supported")) }
        return hostAndPort(String(authority), defaultPort: 80, what: url).map { .http(host: $0.host, port: $0.port, path: path) }
    }

    /// `postgres:5432`, `[::1]:5432`.
    public static func parseTCP(_ text: String) -> Result<WaitTarget, WaitTargetError> {
        hostAndPort(text, defaultPort: nil, what: text).map { .tcp(host: $0.host, port: $0.port) }
    }

    static func hostAndPort(_ text: String, defaultPort: Int?, what: String) -> Result<(host: String, port: Int), WaitTargetError> {
        var host: Substring
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return .failure(WaitTargetError("\(what.prefix(80)): unclosed [")) }
            host = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            if !after.isEmpty {
                guard after.first == ":" else { return .failure(WaitTargetError("\(what.prefix(80)): expected [ADDR]:PORT")) }
                portText = after.dropFirst()
            }
        } else if let colon = text.lastIndex(of: ":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            host = Substring(text)
        }
        let hostAllowed = host.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || ".-_:".unicodeScalars.contains($0)) }
        guard !host.isEmpty, host.utf8.count <= 253, hostAllowed else {
            return .failure(WaitTargetError("\(what.prefix(80)): `\(host.prefix(80))` is not a host name or address"))
        }
        let port: Int
        if let portText {
            guard let value = Int(portText), (1...65535).contains(value) else {
                return .failure(WaitTargetError("\(what.prefix(80)): `\(portText.prefix(20))` is not a port (1-65535)"))
            }
            port = value
        } else if let defaultPort {
            port = defaultPort
        } else {
            return .failure(WaitTargetError("\(what.prefix(80)): expected HOST:PORT"))
        }
        return .success((String(host), port))
    }
}

public struct WaitTargetError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
