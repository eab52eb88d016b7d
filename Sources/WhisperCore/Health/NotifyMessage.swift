/// One sd_notify datagram, parsed. Unknown keys are ignored, as systemd does.
public struct NotifyMessage: Hashable, Sendable {
    public enum Watchdog: Hashable, Sendable {
        case ping
        case trigger
    }

    public var isReady = false
    public var isStopping = false
    public var isReloading = false
    public var status: String?
    public var watchdog: Watchdog?
    /// `WATCHDOG_USEC=`: the child sets (or, with 0, disables) its own watchdog interval.
    public var watchdogInterval: Duration?
    public var extendTimeout: Duration?
    public var errno: Int32?
    public var facets: [Facet] = []
    public var inflight: Int?
    /// `X_WHISPERD_LLM_TOKENS=`: LLM tokens the worker has spent since it started.
    public var llmTokens: Int?
    /// `X_WHISPERD_LLM_BUDGET_REMAINING=`: tokens left in its budget's window.
    public var llmBudgetRemaining: Int?
    public var mainPID: Int32?

    public init() {}

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case notUTF8
        case empty
        case malformedLine(String)

        public var description: String {
            switch self {
            case .notUTF8: "datagram is not UTF-8"
            case .empty: "datagram is empty"
            case .malformedLine(let line): "malformed line \(line.prefix(60).debugDescription)"
            }
        }
    }

    /// Parses `KEY=VALUE` lines. A line without `=` or a known key with an invalid value
    /// makes the whole datagram malformed (counted, never acted on).
    public static func parse(_ bytes: some Sequence<UInt8>) -> Result<NotifyMessage, ParseError> {
        let array = Array(bytes)
        guard !array.isEmpty else { return .failure(.empty) }
        guard !array.contains(0), let text = String(validating: array, as: UTF8.self) else {
            return .failure(.notUTF8)
        }
        var message = NotifyMessage()
        for rawLine in text.split(omittingEmptySubsequences: true, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            guard let equals = rawLine.firstIndex(of: "=") else { return .failure(.malformedLine(String(rawLine))) }
            let key = rawLine[..<equals]
            let value = String(rawLine[rawLine.index(after: equals)...])
            switch key {
            case "READY":
                guard value == "1" else { return .failure(.malformedLine(String(rawLine))) }
                message.isReady = true
            case "STOPPING":
                message.isStopping = value == "1"
            case "RELOADING":
                message.isReloading = value == "1"
            case "STATUS":
                message.status = value
            case "WATCHDOG":
                switch value {
                case "1": message.watchdog = .ping
                case "trigger": message.watchdog = .trigger
                default: return .failure(.malformedLine(String(rawLine)))
                }
            case "WATCHDOG_USEC":
                guard let usec = Int64(value), usec >= 0 else { return .failure(.malformedLine(String(rawLine))) }
                message.watchdogInterval = .microseconds(usec)
            case "EXTEND_TIMEOUT_USEC":
                guard let usec = Int64(value), usec >= 0 else { return .failure(.malformedLine(String(rawLine))) }
                message.extendTimeout = .microseconds(usec)
            case "ERRNO":
                guard let number = Int32(value) else { return .failure(.malformedLine(String(rawLine))) }
                message.errno = number
            case "MAINPID":
                message.mainPID = Int32(value)
            case "X_WHISPERD_FACET":
                guard let facet = Facet(parsing: value) else { return .failure(.malformedLine(String(rawLine))) }
                message.facets.append(facet)
            case "X_WHISPERD_INFLIGHT":
                guard let count = Int(value), count >= 0 else { return .failure(.malformedLine(String(rawLine))) }
                message.inflight = count
            case "X_WHISPERD_LLM_TOKENS", "X_WHISPERD_LLM_BUDGET_REMAINING":
                guard let count = Int(value), count >= 0 else { return .failure(.malformedLine(String(rawLine))) }
                if key == "X_WHISPERD_LLM_TOKENS" { message.llmTokens = count } else { message.llmBudgetRemaining = count }
            default:
                continue
            }
        }
        return .success(message)
    }
}

/// A worker's view of one of its dependencies (`api`, `llm`, `store`, `discord`).
public struct Facet: Hashable, Sendable {
    public enum Level: String, Hashable, Sendable, CaseIterable {
        case ok
        case degraded
        case down
    }

    public var name: String
    public var level: Level
    public var detail: String?

    public init(name: String, level: Level, detail: String? = nil) {
        self.name = name
        self.level = level
        self.detail = detail
    }

    /// The `X_WHISPERD_FACET=` line for a facet and its state (`ok`, `down:<detail>`, …): a
    /// detail is one line in a datagram of lines, so a multi-line error (libpq's are) is folded
    /// onto one line, and cut to 220 characters: the state word and its colon, then the 200
    /// characters of detail whisperd keeps.
    public static func notifyLine(_ facet: String, _ state: String) -> String {
        var folded = ""
        var pendingSpace = false
        for character in state {
            if character.isWhitespace || character.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) {
                pendingSpace = !folded.isEmpty
                continue
            }
            if pendingSpace { folded.append(" ") }
            pendingSpace = false
            folded.append(character)
        }
        return "X_WHISPERD_FACET=\(facet):\(folded.prefix(220))"
    }

    /// `<facet>:<ok|degraded|down>[:detail]`
    public init?(parsing text: String) {
        let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, !parts[0].isEmpty, parts[0].count <= 32,
            parts[0].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }),
            let level = Level(rawValue: String(parts[1]))
        else { return nil }
        self.name = String(parts[0])
        self.level = level
        self.detail = parts.count == 3 ? String(parts[2].prefix(200)) : nil
    }
}
