import Foundation
import WhisperJSON

/// One problem with a request, in FastAPI's 422 shape (`{"detail": [issue, …]}`), so an
/// existing WhisperEngine client reads it as before.
public struct ValidationIssue: Sendable, Equatable {
    public enum Location: Sendable, Equatable {
        case key(String)
        case index(Int)
    }

    public var type: String
    public var location: [Location]
    public var message: String
    public var input: JSONValue
    public var context: [String: JSONValue]?

    static func at(_ path: [Location], _ type: String, _ message: String, _ input: JSONValue, _ context: [String: JSONValue]? = nil)
        -> ValidationIssue
    {
        ValidationIssue(type: type, location: [.key("body")] + path, message: message, input: input, context: context)
    }
}

/// Every problem found in one request body.
public struct ValidationFailure: Error, Sendable, Equatable {
    public var issues: [ValidationIssue]
}

public struct ChatRequest: Sendable, Equatable {
    public var userID: String
    public var message: String
    /// The context's string values (`user_name`, `channel_name`, …): prompt placeholders.
    public var context: [String: String]
    public var forceMode: String?
}

public struct UserStateRequest: Sendable, Equatable {
    public var userID: String
}

public struct ConversationRequest: Sendable, Equatable {
    public var userID: String
    public var messages: [String]
    public var context: [String: String]
    public var delayBetweenMilliseconds: Int
}

public struct ClearUserDataRequest: Sendable, Equatable {
    public var userID: String
    public var clearMemories: Bool
    public var clearTrust: Bool
}

/// Decoding and validation of the API's request bodies: every problem at once, unknown keys
/// ignored, as pydantic does for WhisperEngine.
public enum ChatRequests {
    public static func chat(_ body: [UInt8]) -> Result<ChatRequest, ValidationFailure> {
        decode(body) { fields, issues in
            let userID = requiredString(fields, "user_id", &issues)
            let message = requiredString(fields, "message", &issues, maxLength: Conversation.maxMessageCharacters)
            let context = contextStrings(fields, &issues)
            var forceMode: String?
            if let mode = fields["force_mode"], mode != .null {
                if case .string(let text) = mode, ["fast", "reflective"].contains(text) {
                    forceMode = text
                } else {
                    issues.append(
                        .at([.key("force_mode")], "literal_error", "Input should be 'fast' or 'reflective'", mode,
                            ["expected": .string("'fast' or 'reflective'")]))
                }
            }
            guard let userID, let message else { return nil }
            return ChatRequest(userID: userID, message: message, context: context, forceMode: forceMode)
        }
    }

    public static func userState(_ body: [UInt8]) -> Result<UserStateRequest, ValidationFailure> {
        decode(body) { fields, issues in
            requiredString(fields, "user_id", &issues).map { UserStateRequest(userID: $0) }
        }
    }

    /// `maxTurns` bounds the messages (pydantic's `too_long` past it): each is an LLM call.
    public static func conversation(_ body: [UInt8], maxTurns: Int = 20) -> Result<ConversationRequest, ValidationFailure> {
        decode(body) { fields, issues in
            let userID = requiredString(fields, "user_id", &issues)
            var messages: [String]?
            switch fields["messages"] {
            case nil:
                issues.append(.at([.key("messages")], "missing", "Field required", .object(fields)))
            case .array(let items)?:
                var texts: [String] = []
                for (index, item) in items.enumerated() {
                    let path: [ValidationIssue.Location] = [.key("messages"), .index(index)]
                    guard case .string(let text) = item else {
                        issues.append(.at(path, "string_type", "Input should be a valid string", item))
                        continue
                    }
                    if text.isEmpty {
                        issues.append(tooShort(path, item))
                    } else if text.count > Conversation.maxMessageCharacters {
                        issues.append(tooLong(path, item))
                    } else {
                        texts.append(text)
                    }
                }
                if items.count > maxTurns {
                    issues.append(
                        .at([.key("messages")], "too_long", "List should have at most \(maxTurns) items after validation, not \(items.count)",
                            .array(items), ["field_type": .string("List"), "max_length": .int(Int64(maxTurns)), "actual_length": .int(Int64(items.count))]))
                }
                if items.isEmpty {
                    issues.append(
                        .at([.key("messages")], "too_short", "List should have at least 1 item after validation, not 0", .array([]),
                            ["field_type": .string("List"), "min_length": .int(1), "actual_length": .int(0)]))
                }
                messages = texts.count == items.count && !items.isEmpty && items.count <= maxTurns ? texts : nil
            case let other?:
                issues.append(.at([.key("messages")], "list_type", "Input should be a valid list", other))
            }
            let context = contextStrings(fields, &issues)
            var delay = 0
            switch fields["delay_between_ms"] {
            case nil, .null?: break
            case .int(let value)?:
                if value < 0 || value > 60_000 {
                    issues.append(
                        .at([.key("delay_between_ms")], value < 0 ? "greater_than_equal" : "less_than_equal",
                            value < 0 ? "Input should be greater than or equal to 0" : "Input should be less than or equal to 60000",
                            .int(value), [value < 0 ? "ge" : "le": .int(value < 0 ? 0 : 60_000)]))
                } else {
                    delay = Int(value)
                }
            case let other?:
                issues.append(.at([.key("delay_between_ms")], "int_type", "Input should be a valid integer", other))
            }
            guard let userID, let messages else { return nil }
            return ConversationRequest(userID: userID, messages: messages, context: context, delayBetweenMilliseconds: delay)
        }
    }

    public static func clearUserData(_ body: [UInt8]) -> Result<ClearUserDataRequest, ValidationFailure> {
        decode(body) { fields, issues in
            let userID = requiredString(fields, "user_id", &issues)
            func flag(_ key: String) -> Bool {
                switch fields[key] {
                case nil, .null?: return true
                case .bool(let value)?: return value
                case let other?:
                    issues.append(.at([.key(key)], "bool_type", "Input should be a valid boolean", other))
                    return true
                }
            }
            let memories = flag("clear_memories")
            let trust = flag("clear_trust")
            return userID.map { ClearUserDataRequest(userID: $0, clearMemories: memories, clearTrust: trust) }
        }
    }

    // MARK: - Shared rules

    private static func decode<Request>(
        _ body: [UInt8], _ build: ([String: JSONValue], inout [ValidationIssue]) -> Request?
    ) -> Result<Request, ValidationFailure> {
        let value: JSONValue
        do {
            value = try JSONValue.parse(body)
        } catch {
            return .failure(
                ValidationFailure(issues: [
                    ValidationIssue(
                        type: "json_invalid", location: [.key("body"), .index(0)], message: "JSON decode error", input: .object([:]),
                        context: ["error": .string(body.isEmpty ? "Expecting value" : "Invalid JSON or not UTF-8")])
                ]))
        }
        guard case .object(let fields) = value else {
            return .failure(
                ValidationFailure(issues: [
                    ValidationIssue(
                        type: "model_attributes_type", location: [.key("body")],
                        message: "Input should be a valid dictionary or object to extract fields from", input: value)
                ]))
        }
        var issues: [ValidationIssue] = []
        let request = build(fields, &issues)
        if let request, issues.isEmpty { return .success(request) }
        return .failure(ValidationFailure(issues: issues))
    }

    private static func requiredString(
        _ fields: [String: JSONValue], _ key: String, _ issues: inout [ValidationIssue], maxLength: Int? = nil
    ) -> String? {
        guard let value = fields[key] else {
            issues.append(.at([.key(key)], "missing", "Field required", .object(fields)))
            return nil
        }
        guard case .string(let text) = value else {
            issues.append(.at([.key(key)], "string_type", "Input should be a valid string", value))
            return nil
        }
        if text.isEmpty {
            issues.append(tooShort([.key(key)], value))
            return nil
        }
        if let maxLength, text.count > maxLength {
            issues.append(tooLong([.key(key)], value))
            return nil
        }
        return text
    }

    private static func tooShort(_ path: [ValidationIssue.Location], _ input: JSONValue) -> ValidationIssue {
        .at(path, "string_too_short", "String should have at least 1 character", input, ["min_length": .int(1)])
    }

    private static func tooLong(_ path: [ValidationIssue.Location], _ input: JSONValue) -> ValidationIssue {
        .at(
            path, "string_too_long", "String should have at most \(Conversation.maxMessageCharacters) characters", input,
            ["max_length": .int(Int64(Conversation.maxMessageCharacters))])
    }

    private static func contextStrings(_ fields: [String: JSONValue], _ issues: inout [ValidationIssue]) -> [String: String] {
        switch fields["context"] {
        case nil, .null?:
            return [:]
        case .object(let context)?:
            var strings: [String: String] = [:]
            for (key, value) in context { if case .string(let text) = value { strings[key] = text } }
            return strings
        case let other?:
            issues.append(.at([.key("context")], "dict_type", "Input should be a valid dictionary", other))
            return [:]
        }
    }
}
