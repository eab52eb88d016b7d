/// `Encodable` values as JSON text the way ``JSONText`` writes it (keys in byte order, the same
/// number forms), for the typed API (WhisperAPI). Foundation's `JSONEncoder` with
/// `.sortedKeys` sorts through ICU collation and maps its large JSON machinery into whisperd;
/// this builds a small tree and writes it in one pass.
extension JSONText {
    public static func encode(_ value: some Encodable) throws -> [UInt8] {
        let node = try TreeEncoder.node(for: value)
        var output: [UInt8] = []
        output.reserveCapacity(4096)
        write(node, into: &output)
        return output
    }

    fileprivate static func write(_ node: Node, into output: inout [UInt8]) {
        switch node {
        case .string(let text): writeString(text, into: &output)
        case .literal(let text): output += Array(text.utf8)
        case .array(let array): writeArray(array.items, into: &output, write)
        case .object(let object): writeObject(object.members, into: &output, write)
        }
    }
}

/// A value being encoded: containers are references so nested containers fill them in place.
private enum Node {
    case string(String)
    /// A number, `true`, `false` or `null`, already as JSON text.
    case literal(String)
    case array(ArrayBox)
    case object(ObjectBox)
}

private final class ArrayBox {
    var items: [Node] = []
}

private final class ObjectBox {
    var members: [String: Node] = [:]
}

/// `codingPath` stays empty: nothing here throws, and a path per field would cost an
/// allocation each.
private final class TreeEncoder: Encoder {
    var codingPath: [any CodingKey] { [] }
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    var root: Node?

    init(root: Node? = nil) { self.root = root }

    static func node(for value: some Encodable) throws -> Node {
        switch value {
        case let text as String: return .string(text)
        case let flag as Bool: return .literal(flag ? "true" : "false")
        case let number as Int: return .literal(String(number))
        case let number as UInt64: return .literal(String(number))
        case let number as Double: return .literal(number.isFinite ? "\(number)" : "null")
        default:
            let encoder = TreeEncoder()
            try value.encode(to: encoder)
            return encoder.root ?? .object(ObjectBox())
        }
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        let object: ObjectBox
        if case .object(let existing) = root { object = existing } else {
            object = ObjectBox()
            root = .object(object)
        }
        return KeyedEncodingContainer(KeyedContainer<Key>(object: object))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        let array: ArrayBox
        if case .array(let existing) = root { array = existing } else {
            array = ArrayBox()
            root = .array(array)
        }
        return UnkeyedContainer(array: array)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer { SingleValueContainer(encoder: self) }

    private struct KeyedContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let object: ObjectBox
        var codingPath: [any CodingKey] { [] }

        mutating func encodeNil(forKey key: Key) throws { object.members[key.stringValue] = .literal("null") }

        mutating func encode(_ value: some Encodable, forKey key: Key) throws {
            object.members[key.stringValue] = try TreeEncoder.node(for: value)
        }
        // The common field types directly, without a cast through `Encodable`.
        mutating func encode(_ value: String, forKey key: Key) throws { object.members[key.stringValue] = .string(value) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { object.members[key.stringValue] = .literal(value ? "true" : "false") }
        mutating func encode(_ value: Int, forKey key: Key) throws { object.members[key.stringValue] = .literal(String(value)) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { object.members[key.stringValue] = .literal(String(value)) }
        mutating func encode(_ value: Double, forKey key: Key) throws {
            object.members[key.stringValue] = .literal(value.isFinite ? "\(value)" : "null")
        }

        mutating func nestedContainer<NestedKey: CodingKey>(
            keyedBy keyType: NestedKey.Type, forKey key: Key
        ) -> KeyedEncodingContainer<NestedKey> {
            let nested = ObjectBox()
            object.members[key.stringValue] = .object(nested)
            return KeyedEncodingContainer(KeyedContainer<NestedKey>(object: nested))
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            let nested = ArrayBox()
            object.members[key.stringValue] = .array(nested)
            return UnkeyedContainer(array: nested)
        }

        mutating func superEncoder() -> any Encoder { superEncoder(forKey: Key(stringValue: "super")!) }

        /// A superclass's fields go into an object of their own (`super`), as JSONEncoder does.
        mutating func superEncoder(forKey key: Key) -> any Encoder {
            let nested = ObjectBox()
            object.members[key.stringValue] = .object(nested)
            return TreeEncoder(root: .object(nested))
        }
    }

    private struct UnkeyedContainer: UnkeyedEncodingContainer {
        let array: ArrayBox
        var codingPath: [any CodingKey] { [] }
        var count: Int { array.items.count }

        mutating func encodeNil() throws { array.items.append(.literal("null")) }

        mutating func encode(_ value: some Encodable) throws {
            array.items.append(try TreeEncoder.node(for: value))
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let nested = ObjectBox()
            array.items.append(.object(nested))
            return KeyedEncodingContainer(KeyedContainer<NestedKey>(object: nested))
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            let nested = ArrayBox()
            array.items.append(.array(nested))
            return UnkeyedContainer(array: nested)
        }

        mutating func superEncoder() -> any Encoder {
            let nested = ObjectBox()
            array.items.append(.object(nested))
            return TreeEncoder(root: .object(nested))
        }
    }

    private struct SingleValueContainer: SingleValueEncodingContainer {
        let encoder: TreeEncoder
        var codingPath: [any CodingKey] { [] }

        mutating func encodeNil() throws { encoder.root = .literal("null") }
        mutating func encode(_ value: some Encodable) throws {
            encoder.root = try TreeEncoder.node(for: value)
        }
        // The integer and floating-point widths the protocol names one by one all end here.
        mutating func encode(_ value: Bool) throws { encoder.root = .literal(value ? "true" : "false") }
        mutating func encode(_ value: String) throws { encoder.root = .string(value) }
        mutating func encode(_ value: Double) throws { encoder.root = .literal(value.isFinite ? "\(value)" : "null") }
        mutating func encode(_ value: Float) throws { try encode(Double(value)) }
        mutating func encode(_ value: Int) throws { encoder.root = .literal(String(value)) }
        mutating func encode(_ value: Int8) throws { encoder.root = .literal(String(value)) }
        mutating func encode(_ value: Int16) throws { encoder.root = .literal(String(value)) }
        mutating func encode(_ value: Int32) throws { encoder.root = .literal(String(value)) }
        mutating func encode(_ value: Int64) throws { encoder.root = .literal(String(value)) }
        mutating func encode(_ value: UInt) throws { encoder.root = .literal(String(value)) }
        mutating func encode(_ value: UInt8) throws { encoder.root = .literal(String(value)) }
        mutating func encode(_ value: UInt16) throws { encoder.root = .literal(String(value)) }
        mutating func encode(_ value: UInt32) throws { encoder.root = .literal(String(value)) }
        mutating func encode(_ value: UInt64) throws { encoder.root = .literal(String(value)) }
    }
}
