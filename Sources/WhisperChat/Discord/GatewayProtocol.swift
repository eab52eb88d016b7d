import Foundation
import WhisperJSON

/// What Discord's gateway (API v10, JSON encoding) sends a bot.
public enum GatewayEvent: Sendable, Equatable {
    /// op 10: the connection's heartbeat interval.
    case hello(heartbeatMilliseconds: Int)
    /// op 11
    case heartbeatAck
    /// op 1 from the server: beat now.
    case heartbeatRequest
    /// op 7: reconnect and resume.
    case reconnect
    /// op 9: the session cannot be resumed (or, with `true`, may be).
    case invalidSession(resumable: Bool)
    /// op 0: an event (`READY`, `MESSAGE_CREATE`, …) with its sequence number.
    case dispatch(sequence: Int?, name: String, data: JSONValue)

    public struct DecodeError: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
    }

    public static func decode(_ text: String) -> Result<GatewayEvent, DecodeError> {
        guard let payload = try? JSONValue.parse(Array(text.utf8)), case .object(let fields) = payload else {
            return .failure(DecodeError(description: "not a JSON object: \(text.prefix(80))"))
        }
        guard case .int(let op)? = fields["op"] else { return .failure(DecodeError(description: "no integer `op`")) }
        let data = fields["d"] ?? .null
        switch op {
        case 0:
            guard case .string(let name)? = fields["t"] else { return .failure(DecodeError(description: "dispatch without `t`")) }
            var sequence: Int?
            if case .int(let value)? = fields["s"] { sequence = Int(value) }
            return .success(.dispatch(sequence: sequence, name: name, data: data))
        case 1: return .success(.heartbeatRequest)
        case 7: return .success(.reconnect)
        case 9: return .success(.invalidSession(resumable: data == .bool(true)))
        case 10:
            guard case .int(let interval) = data["heartbeat_interval"], interval > 0 else {
                return .failure(DecodeError(description: "hello without a positive heartbeat_interval"))
            }
            return .success(.hello(heartbeatMilliseconds: Int(interval)))
        case 11: return .success(.heartbeatAck)
        default: return .failure(DecodeError(description: "opcode \(op) is not one a bot receives"))
        }
    }
}

/// What the bot sends. Its description never shows the token.
public enum GatewayCommand: Sendable, Equatable, CustomStringConvertible {
    /// op 2
    case identify(token: String, intents: Int, shard: GatewayShard? = nil)
    /// op 6
    case resume(token: String, sessionID: String, sequence: Int)
    /// op 1, with the last sequence number seen (null before any).
    case heartbeat(sequence: Int?)

    public var jsonText: String {
        switch self {
        case .identify(let token, let intents, let shard):
            let properties: JSONValue = .object(["os": .string("linux"), "browser": .string("whisperd"), "device": .string("whisperd")])
            var payload: [String: JSONValue] = ["token": .string(token), "intents": .int(Int64(intents)), "properties": properties]
            if let shard { payload["shard"] = .array([.int(Int64(shard.index)), .int(Int64(shard.count))]) }
            return JSONValue.object(["op": .int(2), "d": .object(payload)]).jsonText
        case .resume(let token, let sessionID, let sequence):
            return JSONValue.object([
                "op": .int(6),
                "d": .object(["token": .string(token), "session_id": .string(sessionID), "seq": .int(Int64(sequence))]),
            ]).jsonText
        case .heartbeat(let sequence):
            return JSONValue.object(["op": .int(1), "d": sequence.map { .int(Int64($0)) } ?? .null]).jsonText
        }
    }

    public var description: String {
        switch self {
        case .identify(_, let intents, let shard):
            "identify(intents: \(intents)\(shard.map { ", shard: [\($0.index), \($0.count)]" } ?? ""))"
        case .resume(_, let sessionID, let sequence): "resume(session: \(sessionID), seq: \(sequence))"
        case .heartbeat(let sequence): "heartbeat(\(sequence.map(String.init) ?? "null"))"
        }
    }
}

/// Gateway intents by the names Discord's documentation uses.
public enum GatewayIntents {
    public static let byName: [String: Int] = [
        "guilds": 1 << 0, "guild_members": 1 << 1, "guild_moderation": 1 << 2, "guild_expressions": 1 << 3,
        "guild_integrations": 1 << 4, "guild_webhooks": 1 << 5, "guild_invites": 1 << 6, "guild_voice_states": 1 << 7,
        "guild_presences": 1 << 8, "guild_messages": 1 << 9, "guild_message_reactions": 1 << 10,
        "guild_message_typing": 1 << 11, "direct_messages": 1 << 12, "direct_message_reactions": 1 << 13,
        "direct_message_typing": 1 << 14, "message_content": 1 << 15, "guild_scheduled_events": 1 << 16,
    ]
    /// What a chat bot needs: guilds, guild messages, direct messages and (privileged) message content.
    public static let chatBot = byName["guilds"]! | byName["guild_messages"]! | byName["direct_messages"]! | byName["message_content"]!

    /// `37377`, or names separated by commas or `|` (`guilds,guild_messages`).
    public static func parse(_ text: String) -> Result<Int, DiscordSettingsError> {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let number = Int(trimmed) {
            return number >= 0 && number < 1 << 26 ? .success(number) : .failure(.init(problems: ["\(number) is not a valid intents bit set"]))
        }
        var value = 0
        var unknown: [String] = []
        for name in trimmed.split(whereSeparator: { $0 == "," || $0 == "|" }) {
            let key = name.trimmingCharacters(in: .whitespaces).lowercased()
            if let bit = byName[key] { value |= bit } else { unknown.append(String(name)) }
        }
        if !unknown.isEmpty {
            return .failure(
                .init(problems: ["unknown intent(s) \(unknown.joined(separator: ", ")); known: \(byName.keys.sorted().joined(separator: ", "))"]))
        }
        return value == 0 ? .failure(.init(problems: ["no intents given"])) : .success(value)
    }
}

