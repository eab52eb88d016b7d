import Foundation
import Synchronization
import WhisperCore

/// One stored message of a conversation between a user and a character.
public struct StoredMessage: Sendable, Equatable {
    public enum Role: String, Sendable {
        case user
        case assistant
    }

    public var id: Int64
    public var role: Role
    public var content: String
    /// Seconds since 1970.
    public var createdAt: Double

    public init(id: Int64, role: Role, content: String, createdAt: Double) {
        self.id = id
        self.role = role
        self.content = content
        self.createdAt = createdAt
    }
}

/// What the LLM is sent: the rules of the conversation, as pure functions.
public enum Conversation {
    /// Exchanges (a user message and the reply to it) kept as history.
    public static let historyExchanges = 10
    /// A conversation idle this long starts a new session: older messages are not history.
    public static let sessionIdleSeconds: Double = 30 * 60
    public static let trustRange = -100...100
    public static let maxMessageCharacters = 4000

    /// The history for the next message, oldest first: the messages of the current session
    /// (no gap over 30 minutes between them, nor between the last one and `now`), cut to the
    /// last 10 exchanges. `recent` is the newest messages in any order, at least 20 of them.
    public static func history(from recent: [StoredMessage], now: Double) -> [StoredMessage] {
        let newestFirst = recent.sorted { $0.id > $1.id }
        var session: [StoredMessage] = []
        var later = now
        for message in newestFirst {
            if later - message.createdAt > sessionIdleSeconds { break }
            session.append(message)
            later = message.createdAt
        }
        // From the 10th most recent user message on.
        var userMessages = 0
        var kept: [StoredMessage] = []
        for message in session {
            kept.append(message)
            if message.role == .user {
                userMessages += 1
                if userMessages == historyExchanges { break }
            }
        }
        return kept.reversed()
    }

    public static func clampTrust(_ score: Int) -> Int { min(trustRange.upperBound, max(trustRange.lowerBound, score)) }

    /// `Monday, January 05, 2026 at 14:03` in `timezone`.
    public static func formatDateTime(_ date: Date, timezone: TimeZone) -> String {
        // Making a DateFormatter costs more than a whole chat's database work: one per zone,
        // used under a lock (a formatter is not safe to share between threads unlocked).
        dateTimeFormatters.withLock { formatters in
            let formatter: DateFormatter
            if let cached = formatters[timezone.identifier] {
                formatter = cached
            } else {
                formatter = DateFormatter()
                formatter.locale = Locale(identifier: "en_US_POSIX")
                formatter.timeZone = timezone
                formatter.dateFormat = "EEEE, MMMM dd, yyyy 'at' HH:mm"
                formatters[timezone.identifier] = formatter
            }
            return formatter.string(from: date)
        }
    }

    private static let dateTimeFormatters = Locked<[String: DateFormatter]>([:])

    /// The system prompt for one request: `character.md` with `{user_name}`,
    /// `{current_datetime}` and every `{key}` whose value in `context` is a string filled in,
    /// then the character's core identity, goals and background as blocks.
    public static func systemPrompt(
        _ profile: CharacterProfile, userID: String, context: [String: String], now: Date, hostTimeZone: TimeZone = .current
    ) -> String {
        var values = context
        if values["user_name"]?.isEmpty ?? true { values["user_name"] = userID }
        if values["current_datetime"]?.isEmpty ?? true {
            values["current_datetime"] = formatDateTime(now, timezone: profile.core?.timezone ?? hostTimeZone)
        }
        var prompt = substitute(profile.prompt, values)
        if let core = profile.core {
            var block = "\n\nCORE IDENTITY\nPurpose: \(core.purpose)"
            if !core.drives.isEmpty {
                block += "\nDrives: " + core.drives.map { "\($0.name) \(String(format: "%.2f", $0.strength))" }.joined(separator: ", ")
            }
            if !core.constitution.isEmpty { block += "\nConstitution:\n" + core.constitution.map { "- \($0)" }.joined(separator: "\n") }
            prompt += block
        }
        if !profile.goals.isEmpty {
            prompt += "\n\nGOALS\n" + profile.goals.map { "- \($0.description.isEmpty ? $0.slug : $0.description)" }.joined(separator: "\n")
        }
        if !profile.background.isEmpty {
            prompt += "\n\nBACKGROUND\n" + profile.background.map { "- \($0.predicate): \($0.object)" }.joined(separator: "\n")
        }
        return prompt
    }

    /// `{key}` → value for the keys given; other braces are left as they are.
    static func substitute(_ template: String, _ values: [String: String]) -> String {
        var output = ""
        var rest = template[...]
        while let open = rest.firstIndex(of: "{") {
            output += rest[..<open]
            let afterOpen = rest.index(after: open)
            if let close = rest[afterOpen...].firstIndex(of: "}"), let value = values[String(rest[afterOpen..<close])] {
                output += value
                rest = rest[rest.index(after: close)...]
            } else {
                output += "{"
                rest = rest[afterOpen...]
            }
        }
        return output + rest
    }

    /// Facts a user states about themselves in plain words ("my name is Sam", "I live in
    /// Oslo", "I love jazz"), as `predicate: object` lines for `knowledge_facts`.
    public static func facts(in message: String) -> [String] {
        let patterns: [(prefix: String, predicate: String)] = [
            ("my name is ", "name"), ("call me ", "name"), ("i live in ", "lives in"), ("i'm from ", "from"),
            ("i am from ", "from"), ("i work as ", "works as"), ("i love ", "loves"), ("i like ", "likes"),
            ("my favorite ", "favorite"), ("my favourite ", "favorite"),
        ]
        var found: [String] = []
        for sentence in message.split(whereSeparator: { ".!?\n".contains($0) }) {
            let lowered = sentence.lowercased()
            for (prefix, predicate) in patterns {
                guard let range = lowered.range(of: prefix) else { continue }
                // Only at a word boundary: "family" must not match "i like".
                if range.lowerBound != lowered.startIndex, lowered[lowered.index(before: range.lowerBound)].isLetter { continue }
                let offset = lowered.distance(from: lowered.startIndex, to: range.upperBound)
                let object = sentence.dropFirst(offset).trimmingCharacters(in: .whitespacesAndNewlines.union(.punctuationCharacters))
                if !object.isEmpty, object.count <= 200 { found.append("\(predicate): \(object)") }
                break
            }
        }
        return found
    }
}
