/// Any JSON value, as ``JSONValue/parse(_:)`` reads it (true/false stay booleans, 1 stays a
/// number), and as ``jsonText`` writes it back through ``JSONText``'s writer.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
}

extension JSONValue {
    /// A field of an object (`.null` for anything else), for reading payloads.
    public subscript(key: String) -> JSONValue {
        if case .object(let fields) = self { return fields[key] ?? .null }
        return .null
    }

    public var stringValue: String? {
        if case .string(let text) = self { return text }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    /// A number that is integral and fits an Int64 (the parser reads `5`, `5.0` and `5e0` so).
    public var intValue: Int64? {
        if case .int(let value) = self { return value }
        return nil
    }

    /// Any number.
    public var doubleValue: Double? {
        switch self {
        case .int(let value): Double(value)
        case .double(let value): value
        default: nil
        }
    }

    public var arrayValue: [JSONValue] {
        if case .array(let items) = self { return items }
        return []
    }

    /// Compact JSON, object keys in byte order (deterministic, so payloads can be compared).
    public var jsonBytes: [UInt8] {
        var output: [UInt8] = []
        write(into: &output)
        return output
    }

    public var jsonText: String { String(decoding: jsonBytes, as: UTF8.self) }

    private func write(into output: inout [UInt8]) {
        switch self {
        case .null: output += Array("null".utf8)
        case .bool(let value): output += Array((value ? "true" : "false").utf8)
        case .int(let value): output += Array(String(value).utf8)
        case .double(let value): output += Array((value.isFinite ? "\(value)" : "null").utf8)
        case .string(let text): JSONText.writeString(text, into: &output)
        case .array(let items): JSONText.writeArray(items, into: &output) { item, output in item.write(into: &output) }
        case .object(let fields): JSONText.writeObject(fields, into: &output) { value, output in value.write(into: &output) }
        }
    }
}
