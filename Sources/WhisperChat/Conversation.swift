import Foundation
import Synchronization
import WhisperConcurrency

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
        // ICU formatting costs more than a chat's database work, and the text changes once a
        // minute: the last one per zone is kept, with the formatter (made once per zone, used
        // under the lock, as a formatter is not safe to share between threads unlocked).
        let minute = Int((date.timeIntervalSince1970 / 60).rounded(.down))
        return dateTimeFormatters.withLock { formatters in
            if let cached = formatters[timezone.identifier], cached.minute == minute { return cached.text }
            let formatter: DateFormatter
            if let cached = formatters[timezone.identifier] {
                formatter = cached.formatter
            } else {
                formatter = DateFormatter()
                formatter.locale = Locale(identifier: "en_US_POSIX")
                formatter.timeZone = timezone
                formatter.dateFormat = "EEEE, MMMM dd, yyyy 'at' HH:mm"
            }
            let text = formatter.string(from: date)
            formatters[timezone.identifier] = (formatter, minute, text)
            return text
        }
    }

    private static let dateTimeFormatters = Locked<[String: (formatter: DateFormatter, minute: Int, text: String)]>([:])

    /// The system prompt for one request: `character.md` with `{user_name}`,
    /// `{current_datetime}` and every `{key}` whose value in `context` is a string filled in,
    /// then the character's core identity, goals and background as blocks
    /// (`identityBlocks(profile)`, which a caller may pass made once).
    public static func systemPrompt(
        _ profile: CharacterProfile, userID: String, context: [String: String], now: Date, hostTimeZone: TimeZone = .current,
        identity: String? = nil
    ) -> String {
        var values = context
        if values["user_name"]?.isEmpty ?? true { values["user_name"] = userID }
        if values["current_datetime"]?.isEmpty ?? true {
            values["current_datetime"] = formatDateTime(now, timezone: profile.core?.timezone ?? hostTimeZone)
        }
        return substitute(profile.prompt, values) + (identity ?? identityBlocks(profile))
    }

    /// The part of the system prompt that depends on the character alone: core identity,
    /// goals, background.
    public static func identityBlocks(_ profile: CharacterProfile) -> String {
        var blocks = ""
        if let core = profile.core {
            blocks += "\n\nCORE IDENTITY\nPurpose: \(core.purpose)"
            if !core.drives.isEmpty {
                blocks += "\nDrives: " + core.drives.map { "\($0.name) \(String(format: "%.2f", $0.strength))" }.joined(separator: ", ")
            }
            if !core.constitution.isEmpty { blocks += "\nConstitution:\n" + core.constitution.map { "- \($0)" }.joined(separator: "\n") }
        }
        if !profile.goals.isEmpty {
            blocks += "\n\nGOALS\n" + profile.goals.map { "- \($0.description.isEmpty ? $0.slug : $0.description)" }.joined(separator: "\n")
        }
        if !profile.background.isEmpty {
            blocks += "\n\nBACKGROUND\n" + profile.background.map { "- \($0.predicate): \($0.object)" }.joined(separator: "\n")
        }
        return blocks
    }

    /// `{key}` → value for the keys given; other braces are left as they are. Scans UTF-8
    /// bytes (braces are ASCII, so never part of a longer character): walking `Character`s
    /// made this a tenth of a chat's CPU for a few-KB `character.md`.
    static func substitute(_ template: String, _ values: [String: String]) -> String {
        var template = template
        return template.withUTF8 { bytes -> String in
            var output: [UInt8] = []
            output.reserveCapacity(bytes.count + 128)
            var index = 0
            while index < bytes.count {
                guard let open = bytes[index...].firstIndex(of: UInt8(ascii: "{")) else { break }
                output.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[index..<open]))
                if let close = bytes[(open + 1)...].firstIndex(of: UInt8(ascii: "}")),
                    let value = values[String(decoding: UnsafeBufferPointer(rebasing: bytes[(open + 1)..<close]), as: UTF8.self)]
                {
                    output.append(contentsOf: value.utf8)
                    index = close + 1
                } else {
                    output.append(UInt8(ascii: "{"))
                    index = open + 1
                }
            }
            if index < bytes.count { output.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[index...])) }
            return String(decoding: output, as: UTF8.self)
        }
    }

    /// Facts a user states about themselves in plain words ("my name is Sam", "I live in
    /// Oslo", "I love jazz"), as `predicate: object` lines for `knowledge_facts`.
    public static func facts(in message: String) -> [String] {
        // Every pattern starts "my ", "call me " or "i…": most messages have none of these and
        // need no sentence splitting.
        guard mayHoldFacts(message) else { return [] }
        let patterns: [(prefix: String, predicate: String)] = [
            ("my name is ", "name"), ("call me ", "name"), ("i live in ", "lives in"), ("i'm from ", "from"),
            ("i am from ", "from"), ("i work as ", "works as"), ("i love ", "loves"), ("i like ", "likes"),
            ("my favorite ", "favorite"), ("my favourite ", "favorite"),
        ]
        var found: [String] = []
        for sentence in message.split(whereSeparator: { ".!?\n".contains($0) }) {
            let lowered = sentence.lowercased()
            for (prefix, predicate) in patterns {
                guard let range = asciiRange(of: prefix, in: lowered) else { continue }
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

    /// Whether `message` has "my ", "call me", "i " or "i'" anywhere, ASCII case ignored.
    static func mayHoldFacts(_ message: String) -> Bool {
        var previous: UInt8 = 0
        var beforePrevious: UInt8 = 0
        for byte in message.utf8 {
            let lower = byte >= 0x41 && byte <= 0x5A ? byte + 0x20 : byte
            switch (beforePrevious, previous, lower) {
            case (UInt8(ascii: "m"), UInt8(ascii: "y"), UInt8(ascii: " ")), (UInt8(ascii: "l"), UInt8(ascii: "l"), UInt8(ascii: " ")),
                (_, UInt8(ascii: "i"), UInt8(ascii: " ")), (_, UInt8(ascii: "i"), UInt8(ascii: "'")):
                return true
            default:
                beforePrevious = previous
                previous = lower
            }
        }
        return false
    }

    /// The first occurrence of an ASCII `needle` in `text`, compared byte for byte (Foundation's
    /// `range(of:)` was most of the cost of reading facts, for patterns that are plain ASCII).
    static func asciiRange(of needle: String, in text: String) -> Range<String.Index>? {
        let pattern = Array(needle.utf8)
        let bytes = text.utf8
        guard let first = pattern.first, bytes.count >= pattern.count else { return nil }
        var start = bytes.startIndex
        while let candidate = bytes[start...].firstIndex(of: first) {
            var end = candidate
            var matched = 0
            while matched < pattern.count, end < bytes.endIndex, bytes[end] == pattern[matched] {
                bytes.formIndex(after: &end)
                matched += 1
            }
            if matched == pattern.count { return candidate..<end }
            start = bytes.index(after: candidate)
        }
        return nil
    }
}
