import WhisperRandom
import WhisperJSON

/// One bot's gateway session as a state machine: it is told what happened (connected, a
/// payload, time passed, the connection closed) with the current monotonic time in seconds,
/// and answers with what to do. No I/O, no clock, no global randomness (a seeded generator),
/// so heartbeat cadence, zombie detection, resume and backoff are tested with a fake clock.
public struct GatewaySession: Sendable {
    public enum Phase: Sendable, Equatable {
        case idle
        /// A connection is being opened (or waited for, after a backoff).
        case connecting
        /// Open; Hello not yet received.
        case awaitingHello
        /// Identify or Resume sent; Ready/Resumed not yet received.
        case handshaking(resuming: Bool)
        case ready
        /// A close this side asked for is under way.
        case closing
        /// A fatal close code: no more connections.
        case stopped(reason: String)
    }

    public enum Facet: Sendable, Equatable {
        case ok(String)
        case degraded(String)
        case down(String)

        /// `ok[:detail]`, `degraded:detail`, `down:detail`, as in `X_WHISPERD_FACET=discord:…`.
        public var notifyValue: String {
            switch self {
            case .ok(let detail): detail.isEmpty ? "ok" : "ok:" + detail
            case .degraded(let detail): "degraded:" + detail
            case .down(let detail): "down:" + detail
            }
        }
    }

    public enum Action: Sendable, Equatable {
        /// Open a connection to `url` after `delay` seconds.
        case connect(url: String, delay: Double)
        case send(GatewayCommand)
        /// Close the open connection with this code (4000s keep the session resumable).
        case close(code: Int, reason: String)
        /// An event for the bot (`READY`, `MESSAGE_CREATE`, …).
        case dispatch(name: String, data: JSONValue)
        case facet(Facet)
        /// Fatal: the connector ends; the facet says why.
        case stop(reason: String)
    }

    /// Close codes after which reconnecting cannot help (Discord's documentation).
    public static let fatalCloseCodes: [Int: String] = [
        4004: "authentication failed (DISCORD_TOKEN is wrong or was reset)",
        4010: "invalid shard", 4011: "sharding required", 4012: "invalid API version",
        4013: "invalid intents", 4014: "disallowed intents (enable the privileged intents in the developer portal)",
    ]
    /// Close codes after which the session is gone: identify afresh.
    public static let sessionEndingCloseCodes: Set<Int> = [4007, 4009]
    /// What this side closes with when it means to resume (not 1000/1001, which end the session).
    public static let resumableCloseCode = 4900

    public private(set) var phase: Phase = .idle
    public private(set) var sessionID: String?
    public private(set) var resumeURL: String?
    public private(set) var sequence: Int?
    public private(set) var botUserID: String?
    public private(set) var heartbeatInterval: Double?
    public private(set) var nextHeartbeat: Double?
    public private(set) var awaitingAck = false
    /// When a fresh Identify is due after an Invalid Session.
    public private(set) var identifyDue: Double?
    /// Connections in a row that ended before Ready/Resumed: the backoff's exponent.
    public private(set) var failures = 0

    let token: String
    let intents: Int
    let shard: GatewayShard?
    var gatewayURL: String
    var random: SplitMix64
    /// Set when this side closed to resume at once (op 7, a zombie connection).
    var reconnectAtOnce = false
    public let backoffBase: Double
    public let backoffCap: Double

    public init(
        token: String, intents: Int, shard: GatewayShard? = nil, seed: UInt64, backoffBase: Double = 1, backoffCap: Double = 60
    ) {
        self.shard = shard
        self.token = token
        self.intents = intents
        self.gatewayURL = ""
        self.random = SplitMix64(seed: seed)
        self.backoffBase = backoffBase
        self.backoffCap = backoffCap
    }

    /// The earliest time `tick` has something to do.
    public var nextWake: Double? {
        [nextHeartbeat, identifyDue].compactMap { $0 }.min()
    }

    /// `wss://host` → `wss://host/?v=10&encoding=json` (a URL that has a query is kept).
    public static func connectionURL(_ base: String) -> String {
        if base.contains("?") { return base }
        return (base.hasSuffix("/") ? base : base + "/") + "?v=10&encoding=json"
    }

    public mutating func start(gatewayURL: String) -> [Action] {
        self.gatewayURL = gatewayURL
        phase = .connecting
        // A session handed over by the process this one replaces resumes where it was.
        let url = sessionID != nil ? (resumeURL ?? gatewayURL) : gatewayURL
        return [.facet(.degraded(sessionID != nil ? "resuming" : "connecting")), .connect(url: Self.connectionURL(url), delay: 0)]
    }

    /// What one process gives the next (a rolling restart): enough to RESUME the same session,
    /// so Discord replays what came after `sequence` to the new process and nothing twice.
    public struct HandOff: Equatable, Sendable {
        public var sessionID: String
        public var sequence: Int
        public var resumeURL: String?
        /// The bot's own id (from READY, which a resume does not repeat): its messages are ignored.
        public var botUserID: String?
        /// Seconds on the monotonic clock (one for the whole system): a hand-over older than the
        /// process that reads it is not for it.
        public var writtenAt: Double

        public init(sessionID: String, sequence: Int, resumeURL: String?, botUserID: String?, writtenAt: Double) {
            self.sessionID = sessionID
            self.sequence = sequence
            self.resumeURL = resumeURL
            self.botUserID = botUserID
            self.writtenAt = writtenAt
        }

        /// As the file between the two processes holds it (the keys `JSONEncoder` gave it, so
        /// processes of either build read each other's).
        public var json: JSONValue {
            var fields: [String: JSONValue] = ["sessionID": .string(sessionID), "sequence": .int(Int64(sequence)), "writtenAt": .double(writtenAt)]
            if let resumeURL { fields["resumeURL"] = .string(resumeURL) }
            if let botUserID { fields["botUserID"] = .string(botUserID) }
            return .object(fields)
        }

        public init?(json: JSONValue) {
            guard let sessionID = json["sessionID"].stringValue, let sequence = json["sequence"].intValue.flatMap({ Int(exactly: $0) }),
                let writtenAt = json["writtenAt"].doubleValue
            else { return nil }
            self.init(
                sessionID: sessionID, sequence: sequence, resumeURL: json["resumeURL"].stringValue, botUserID: json["botUserID"].stringValue,
                writtenAt: writtenAt)
        }
    }

    /// Gives the session away: the events handled so far are this process's, the rest go to
    /// the one that resumes it. The connection closes without ending the session and nothing
    /// reconnects. Nil when there is no ready session to give.
    public mutating func handOff(now: Double) -> (HandOff?, [Action]) {
        guard phase == .ready, let sessionID, let sequence else { return (nil, []) }
        let handOff = HandOff(sessionID: sessionID, sequence: sequence, resumeURL: resumeURL, botUserID: botUserID, writtenAt: now)
        phase = .stopped(reason: "session handed over")
        nextHeartbeat = nil
        return (handOff, [.facet(.degraded("session handed over")), .close(code: Self.resumableCloseCode, reason: "handed over")])
    }

    /// Takes over a session handed over by the previous process, before ``start(gatewayURL:)``.
    public mutating func adopt(_ handOff: HandOff) {
        sessionID = handOff.sessionID
        sequence = handOff.sequence
        resumeURL = handOff.resumeURL
        botUserID = handOff.botUserID
    }

    public mutating func connectionOpened(now: Double) -> [Action] {
        guard phase == .connecting else { return [] }
        phase = .awaitingHello
        return []
    }

    public mutating func received(_ event: GatewayEvent, now: Double) -> [Action] {
        switch phase {
        case .awaitingHello, .handshaking, .ready: break
        default: return []
        }
        switch event {
        case .hello(let milliseconds):
            let interval = Double(milliseconds) / 1000
            heartbeatInterval = interval
            // The first beat at a random point of the first interval, so a fleet that reconnects
            // together does not beat together.
            nextHeartbeat = now + interval * random.nextUnit()
            awaitingAck = false
            if let sessionID, let sequence {
                phase = .handshaking(resuming: true)
                return [.send(.resume(token: token, sessionID: sessionID, sequence: sequence)), .facet(.degraded("resuming"))]
            }
            phase = .handshaking(resuming: false)
            return [.send(.identify(token: token, intents: intents, shard: shard))]
        case .heartbeatAck:
            awaitingAck = false
            return []
        case .heartbeatRequest:
            return [.send(.heartbeat(sequence: sequence))]
        case .reconnect:
            return closeToResume(reason: "Discord asked to reconnect")
        case .invalidSession(let resumable):
            if resumable, sessionID != nil, sequence != nil {
                return closeToResume(reason: "invalid session (resumable)")
            }
            sessionID = nil
            sequence = nil
            resumeURL = nil
            // Discord asks for a wait of 1 to 5 seconds before identifying again.
            identifyDue = now + 1 + 4 * random.nextUnit()
            phase = .handshaking(resuming: false)
            return [.facet(.degraded("invalid session: identifying again"))]
        case .dispatch(let eventSequence, let name, let data):
            if let eventSequence { sequence = eventSequence }
            var actions: [Action] = []
            if name == "READY" {
                sessionID = data["session_id"].stringValue
                resumeURL = data["resume_gateway_url"].stringValue
                botUserID = data["user"]["id"].stringValue
                phase = .ready
                failures = 0
                actions.append(.facet(.ok("")))
            } else if name == "RESUMED" {
                phase = .ready
                failures = 0
                actions.append(.facet(.ok("")))
            }
            actions.append(.dispatch(name: name, data: data))
            return actions
        }
    }

    public mutating func tick(now: Double) -> [Action] {
        var actions: [Action] = []
        if let due = identifyDue, now >= due {
            identifyDue = nil
            if case .handshaking = phase { actions.append(.send(.identify(token: token, intents: intents, shard: shard))) }
        }
        if let due = nextHeartbeat, now >= due, let interval = heartbeatInterval {
            if awaitingAck {
                // No ACK for the last beat: the connection is a zombie. Drop it and resume.
                nextHeartbeat = nil
                return actions + closeToResume(reason: "heartbeat not acknowledged")
            }
            actions.append(.send(.heartbeat(sequence: sequence)))
            awaitingAck = true
            nextHeartbeat = max(due + interval, now)
        }
        return actions
    }

    /// The connection ended (closed by either side, or never opened): `code` is the close
    /// code the server sent, if any; `reason` what happened, for the facet.
    public mutating func connectionClosed(code: Int?, reason: String, now: Double) -> [Action] {
        if case .stopped = phase { return [] }
        if phase == .idle { return [] }
        nextHeartbeat = nil
        heartbeatInterval = nil
        identifyDue = nil
        awaitingAck = false
        if let code, let fatal = Self.fatalCloseCodes[code] {
            let message = "gateway closed \(code): \(fatal)"
            phase = .stopped(reason: message)
            return [.facet(.down(message)), .stop(reason: message)]
        }
        if let code, Self.sessionEndingCloseCodes.contains(code) {
            sessionID = nil
            sequence = nil
            resumeURL = nil
        }
        let canResume = sessionID != nil && sequence != nil
        let url = Self.connectionURL(canResume ? (resumeURL ?? gatewayURL) : gatewayURL)
        phase = .connecting
        if reconnectAtOnce {
            reconnectAtOnce = false
            return [.connect(url: url, delay: 0)]
        }
        failures += 1
        let delay = backoffDelay()
        let detail = code.map { "closed \($0)" } ?? reason
        let facet: Facet =
            canResume
            ? .degraded("resuming after \(detail)") : .down("\(detail); retrying in \(Int(delay.rounded(.up))) s")
        return [.facet(facet), .connect(url: url, delay: delay)]
    }

    /// Doubling from `backoffBase` to `backoffCap`, ±10 %.
    mutating func backoffDelay() -> Double {
        let base = min(backoffCap, backoffBase * Double(1 << min(failures - 1, 30)))
        return base * (0.9 + 0.2 * random.nextUnit())
    }

    private mutating func closeToResume(reason: String) -> [Action] {
        phase = .closing
        reconnectAtOnce = true
        nextHeartbeat = nil
        identifyDue = nil
        return [.facet(.degraded("resuming: \(reason)")), .close(code: Self.resumableCloseCode, reason: reason)]
    }
}

extension SplitMix64 {
    /// In [0, 1).
    mutating func nextUnit() -> Double { Double.random(in: 0..<1, using: &self) }
}
