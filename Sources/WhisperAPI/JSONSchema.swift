/// A JSON Schema (2020-12, the dialect of OpenAPI 3.1), as much of it as the API needs: each
/// payload type describes itself with one of these, and the OpenAPI document is made of them.
public struct JSONSchema: Encodable, Sendable, Equatable {
    public enum Kind: String, Encodable, Sendable {
        case string, integer, number, boolean, array, object
    }

    /// `additionalProperties`: `false`, or the schema every other property follows.
    public indirect enum Additional: Encodable, Sendable, Equatable {
        case forbidden
        case allowed(JSONSchema)

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .forbidden: try container.encode(false)
            case .allowed(let schema): try container.encode(schema)
            }
        }
    }

    public var type: Kind?
    public var description: String?
    public var reference: String?
    public var properties: [String: JSONSchema]?
    public var required: [String]?
    public var additionalProperties: Additional?
    public var items: Box?
    public var allowed: [String]?
    public var minimum: Int?
    public var maximum: Int?
    public var format: String?
    /// An ECMA-262 regular expression the whole string matches.
    public var pattern: String?
    /// Any one of these (an answer whose body may be of two types).
    public var anyOf: [JSONSchema]?

    /// `items` needs an indirection: a struct cannot hold itself.
    public final class Box: Encodable, Sendable, Equatable {
        public let schema: JSONSchema
        init(_ schema: JSONSchema) { self.schema = schema }
        public func encode(to encoder: any Encoder) throws { try schema.encode(to: encoder) }
        public static func == (left: Box, right: Box) -> Bool { left.schema == right.schema }
    }

    enum CodingKeys: String, CodingKey {
        case type, description, properties, required, additionalProperties, items, format, pattern, minimum, maximum, anyOf
        case reference = "$ref"
        case allowed = "enum"
    }

    init(_ type: Kind?, _ description: String?) {
        self.type = type
        self.description = description
    }

    public static func string(
        _ description: String? = nil, oneOf values: [String]? = nil, format: String? = nil, pattern: String? = nil
    ) -> JSONSchema {
        var schema = JSONSchema(.string, description)
        schema.allowed = values
        schema.format = format
        schema.pattern = pattern
        return schema
    }

    public static func integer(_ description: String? = nil, minimum: Int? = nil, maximum: Int? = nil) -> JSONSchema {
        var schema = JSONSchema(.integer, description)
        schema.minimum = minimum
        schema.maximum = maximum
        return schema
    }

    public static func number(_ description: String? = nil) -> JSONSchema { JSONSchema(.number, description) }
    public static func boolean(_ description: String? = nil) -> JSONSchema { JSONSchema(.boolean, description) }

    public static func array(_ items: JSONSchema, _ description: String? = nil) -> JSONSchema {
        var schema = JSONSchema(.array, description)
        schema.items = Box(items)
        return schema
    }

    /// An object with named properties, those in `optional` may be absent; no others allowed.
    public static func object(
        _ description: String? = nil, _ properties: KeyValuePairs<String, JSONSchema>, optional: Set<String> = []
    ) -> JSONSchema {
        var schema = JSONSchema(.object, description)
        schema.properties = Dictionary(properties.map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first })
        schema.required = properties.map(\.key).filter { !optional.contains($0) }.sorted()
        schema.additionalProperties = .forbidden
        return schema
    }

    /// An object whose keys are data (names of facets, of restart reasons).
    public static func map(of values: JSONSchema, _ description: String? = nil) -> JSONSchema {
        var schema = JSONSchema(.object, description)
        schema.additionalProperties = .allowed(values)
        return schema
    }

    public static func anyOf(_ schemas: [JSONSchema]) -> JSONSchema {
        var schema = JSONSchema(nil, nil)
        schema.anyOf = schemas
        return schema
    }

    /// A reference to a type of the contract: `#/components/schemas/<name>`.
    public static func reference(_ type: any APIModel.Type) -> JSONSchema {
        var schema = JSONSchema(nil, nil)
        schema.reference = "#/components/schemas/\(type.schemaName)"
        return schema
    }
}

/// A payload of the API: it knows its schema and has an example with every field set (the
/// test that keeps type and schema together encodes it and checks one against the other).
public protocol APIModel: Codable, Sendable {
    static var schemaName: String { get }
    static var schema: JSONSchema { get }
    static var example: Self { get }
}

extension APIModel {
    public static var schemaName: String { String(describing: Self.self) }
}
