import Foundation
import WhisperJSON

/// A character's Discord settings, from its environment (WhisperEngine's variable names).
public struct DiscordSettings: Sendable, Equatable {
    public var token: String
    /// REST base, `https://discord.com/api/v10` unless `DISCORD_API_BASE` says otherwise.
    public var apiBase: String
    /// `DISCORD_GATEWAY_URL`: skip `GET /gateway/bot` and connect here.
    public var gatewayURL: String?
    public var intents: Int
    /// `ENABLE_DM_BLOCK` (default true): DMs only from `DM_ALLOWED_USER_IDS`.
    public var blockDirectMessages: Bool
    public var directMessageAllowed: Set<String>
    /// `BLOCKED_USER_IDS`: never answered.
    public var blockedUsers: Set<String>
    /// One gateway shard of several (`REPLICA_INDEX` / `REPLICA_COUNT`, set by whisperd for
    /// `replicas:`): identify says so, and only its guilds are answered.
    public var shard: GatewayShard?

    public init(
        token: String, apiBase: String, gatewayURL: String?, intents: Int, blockDirectMessages: Bool,
        directMessageAllowed: Set<String>, blockedUsers: Set<String>
    ) {
        self.token = token
        self.apiBase = apiBase
        self.gatewayURL = gatewayURL
        self.intents = intents
        self.blockDirectMessages = blockDirectMessages
        self.directMessageAllowed = directMessageAllowed
        self.blockedUsers = blockedUsers
    }

    /// nil when no token is set (the worker serves HTTP only); a failure lists every bad variable.
    public static func from(_ environment: [String: String]) -> Result<DiscordSettings, DiscordSettingsError>? {
        func value(_ key: String) -> String? {
            environment[key].map { $0.trimmingCharacters(in: .whitespaces) }.flatMap { $0.isEmpty ? nil : $0 }
        }
        guard let token = value("DISCORD_TOKEN") ?? value("DISCORD_BOT_TOKEN") else { return nil }
        var problems: [String] = []
        if token.contains(where: { $0.isWhitespace || $0.isNewline }) {
            problems.append("DISCORD_TOKEN contains white space")
        }
        var intents = GatewayIntents.chatBot
        if let text = value("DISCORD_INTENTS") {
            switch GatewayIntents.parse(text) {
            case .success(let parsed): intents = parsed
            case .failure(let problem): problems.append("DISCORD_INTENTS: \(problem.description)")
            }
        }
        var blockDMs = true
        if let text = value("ENABLE_DM_BLOCK") {
            switch text.lowercased() {
            case "1", "true", "yes", "on": blockDMs = true
            case "0", "false", "no", "off": blockDMs = false
            default: problems.append("ENABLE_DM_BLOCK=\(text) is not true or false")
            }
        }
        func ids(_ key: String) -> Set<String> {
            guard let text = value(key) else { return [] }
            let items = text.split(whereSeparator: { $0 == "," || $0 == " " }).map(String.init)
            let bad = items.filter { !$0.allSatisfy(\.isNumber) }
            if !bad.isEmpty { problems.append("\(key): \(bad.joined(separator: ", ")) not a Discord id (digits)") }
            return Set(items)
        }
        let allowed = ids("DM_ALLOWED_USER_IDS")
        let blocked = ids("BLOCKED_USER_IDS")
        var apiBase = value("DISCORD_API_BASE") ?? "https://discord.com/api/v10"
        while apiBase.hasSuffix("/") { apiBase.removeLast() }
        for (key, url) in [("DISCORD_API_BASE", Optional(apiBase)), ("DISCORD_GATEWAY_URL", value("DISCORD_GATEWAY_URL"))] {
            guard let url else { continue }
            let scheme = url.split(separator: ":").first.map { $0.lowercased() } ?? ""
            let allowedSchemes = key == "DISCORD_API_BASE" ? ["http", "https"] : ["ws", "wss"]
            if !allowedSchemes.contains(scheme) { problems.append("\(key)=\(url) is not a \(allowedSchemes.joined(separator: "/")) URL") }
        }
        var shard: GatewayShard?
        if let index = value("REPLICA_INDEX"), let count = value("REPLICA_COUNT") {
            if let index = Int(index), let count = Int(count), count >= 1, (0..<count).contains(index) {
                shard = count > 1 ? GatewayShard(index: index, count: count) : nil
            } else {
                problems.append("REPLICA_INDEX=\(index) REPLICA_COUNT=\(count) is not a shard (0 <= index < count)")
            }
        }
        if !problems.isEmpty { return .failure(DiscordSettingsError(problems: problems)) }
        var settings = DiscordSettings(
            token: token, apiBase: apiBase, gatewayURL: value("DISCORD_GATEWAY_URL"), intents: intents,
            blockDirectMessages: blockDMs, directMessageAllowed: allowed, blockedUsers: blocked)
        settings.shard = shard
        return .success(settings)
    }
}

/// Discord's sharding: a guild belongs to shard `(guild_id >> 22) % count`; direct messages
/// come to shard 0 only.
public struct GatewayShard: Sendable, Equatable {
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    public func owns(guildID: String?) -> Bool {
        guard let guildID else { return index == 0 }
        guard let id = UInt64(guildID) else { return false }
        return Int((id >> 22) % UInt64(count)) == index
    }
}

public struct DiscordSettingsError: Error, Sendable, Equatable, CustomStringConvertible {
    public var problems: [String]
    public var description: String { problems.joined(separator: "; ") }
}

/// A message the bot answers, out of a `MESSAGE_CREATE`.
public struct IncomingDiscordMessage: Sendable, Equatable {
    public var messageID: String
    public var channelID: String
    public var guildID: String?
    public var userID: String
    public var userName: String
    /// The text with the bot's mention taken out.
    public var text: String
    public var isDirect: Bool
}

/// Which messages a character answers, as WhisperEngine's bots do.
public enum DiscordMessagePolicy {
    public enum Decision: Sendable, Equatable {
        case answer(IncomingDiscordMessage)
        case ignore(String)
    }

    public static func decide(_ message: JSONValue, botUserID: String, settings: DiscordSettings) -> Decision {
        let author = message["author"]
        guard let authorID = author["id"].stringValue, let messageID = message["id"].stringValue,
            let channelID = message["channel_id"].stringValue
        else { return .ignore("malformed message") }
        if authorID == botUserID { return .ignore("own message") }
        if author["bot"].boolValue == true { return .ignore("from a bot") }
        if message["webhook_id"] != .null { return .ignore("from a webhook") }
        if settings.blockedUsers.contains(authorID) { return .ignore("blocked user") }
        let content = message["content"].stringValue ?? ""
        let guildID = message["guild_id"].stringValue
        if let shard = settings.shard, !shard.owns(guildID: guildID) { return .ignore("another shard's") }
        let isDirect = guildID == nil
        if isDirect {
            if settings.blockDirectMessages, !settings.directMessageAllowed.contains(authorID) {
                return .ignore("direct messages are blocked for this user")
            }
        } else {
            let mentioned =
                message["mentions"].arrayValue.contains { $0["id"].stringValue == botUserID }
                || content.contains("<@\(botUserID)>") || content.contains("<@!\(botUserID)>")
            let repliesToBot = message["referenced_message"]["author"]["id"].stringValue == botUserID
            if !mentioned, !repliesToBot { return .ignore("not addressed to the bot") }
        }
        let text = stripMention(content, botUserID: botUserID)
        if text.isEmpty { return .ignore("nothing but the mention") }
        let name =
            message["member"]["nick"].stringValue ?? author["global_name"].stringValue ?? author["username"].stringValue ?? authorID
        return .answer(
            IncomingDiscordMessage(
                messageID: messageID, channelID: channelID, guildID: guildID, userID: authorID, userName: name, text: text,
                isDirect: isDirect))
    }

    static func stripMention(_ content: String, botUserID: String) -> String {
        var text = content
        for mention in ["<@\(botUserID)>", "<@!\(botUserID)>"] { text = text.replacingOccurrences(of: mention, with: " ") }
        let collapsed = text.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        return collapsed.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

/// Channel names learnt from `GUILD_CREATE` / `CHANNEL_CREATE` / `CHANNEL_UPDATE`, for the
/// prompt's `{channel_name}`.
public struct DiscordChannelDirectory: Sendable {
    public private(set) var names: [String: String] = [:]
    public init() {}

    public mutating func learn(event: String, data: JSONValue) {
        switch event {
        case "GUILD_CREATE":
            for channel in data["channels"].arrayValue + data["threads"].arrayValue { remember(channel) }
        case "CHANNEL_CREATE", "CHANNEL_UPDATE", "THREAD_CREATE", "THREAD_UPDATE":
            remember(data)
        case "CHANNEL_DELETE", "THREAD_DELETE":
            if let id = data["id"].stringValue { names[id] = nil }
        default: break
        }
    }

    private mutating func remember(_ channel: JSONValue) {
        if let id = channel["id"].stringValue, let name = channel["name"].stringValue { names[id] = name }
    }
}

/// Discord takes at most 2,000 characters a message: longer replies are cut on a line break,
/// else a sentence end, else a space, else anywhere — in order.
public enum DiscordReplySplitter {
    public static let limit = 2000

    public static func split(_ text: String, limit: Int = limit) -> [String] {
        var parts: [String] = []
        var rest = Substring(text.trimmingCharacters(in: .whitespacesAndNewlines))
        while rest.count > limit {
            let window = rest.prefix(limit)
            let cut = lastBreak(in: window) ?? window.endIndex
            let part = rest[..<cut].trimmingCharacters(in: .whitespacesAndNewlines)
            if !part.isEmpty { parts.append(part) }
            rest = rest[cut...].drop(while: { $0.isWhitespace || $0.isNewline })
        }
        if !rest.isEmpty { parts.append(String(rest)) }
        return parts
    }

    /// Where to cut `window` (the index after the break), preferring a line, then a sentence,
    /// then a word; never in the first half (a tiny first part helps nobody).
    private static func lastBreak(in window: Substring) -> Substring.Index? {
        let half = window.index(window.startIndex, offsetBy: window.count / 2)
        var sentence: Substring.Index?
        var word: Substring.Index?
        var index = window.endIndex
        while index > half {
            let previous = window.index(before: index)
            let character = window[previous]
            if character.isNewline { return index }
            if sentence == nil, character == " ", previous > window.startIndex {
                let before = window[window.index(before: previous)]
                if before == "." || before == "!" || before == "?" || before == "…" { sentence = index }
            }
            if word == nil, character == " " { word = index }
            index = previous
        }
        return sentence ?? word
    }
}
