/// A YAML value as written: mappings keep their order (an `Encodable`'s declaration order).
public indirect enum YAMLNode: Hashable, Sendable {
    case string(String)
    /// A number or boolean, written plain.
    case literal(String)
    case list([YAMLNode])
    case map([YAMLEntry])
}

public struct YAMLEntry: Hashable, Sendable {
    public var key: String
    public var value: YAMLNode
}

/// `Encodable` → YAML block style: keys in declaration order, `nil` left out, strings quoted
/// whenever a YAML 1.1 or 1.2 reader could take them for anything but a string, multi-line
/// strings as literal block scalars. Deterministic: same value, same bytes.
public enum YAMLEncoder {
    public static func encode(_ value: some Encodable) throws -> String {
        let node = try tree(value)
        return render(node)
    }

    public static func tree(_ value: some Encodable) throws -> YAMLNode {
        let root = NodeBox()
        try value.encode(to: TreeEncoder(box: root, codingPath: []))
        return root.node
    }

    // MARK: - Rendering

    public static func render(_ node: YAMLNode) -> String {
        switch node {
        case .map(let entries) where !entries.isEmpty: return renderMap(entries, indent: 0)
        case .list(let items) where !items.isEmpty: return renderList(items, indent: 0)
        default: return inline(node, indent: 0) + "\n"
        }
    }

    private static func pad(_ indent: Int) -> String { String(repeating: " ", count: indent) }

    private static func renderMap(_ entries: [YAMLEntry], indent: Int) -> String {
        var output = ""
        for entry in entries {
            output += pad(indent) + quoted(entry.key) + ":" + valueAfterKey(entry.value, indent: indent)
        }
        return output
    }

    private static func renderList(_ items: [YAMLNode], indent: Int) -> String {
        var output = ""
        for item in items {
            switch item {
            case .map(let entries) where !entries.isEmpty:
                // `- key: value` then the other keys aligned under the first.
                let inner = renderMap(entries, indent: indent + 2)
                output += pad(indent) + "- " + inner.dropFirst(indent + 2)
            case .list(let nested) where !nested.isEmpty:
                output += pad(indent) + "-\n" + renderList(nested, indent: indent + 2)
            default:
                output += pad(indent) + "- " + inline(item, indent: indent + 2) + "\n"
            }
        }
        return output
    }

    /// What follows `key:` (the space included).
    private static func valueAfterKey(_ value: YAMLNode, indent: Int) -> String {
        switch value {
        case .map(let entries) where !entries.isEmpty: return "\n" + renderMap(entries, indent: indent + 2)
        case .list(let items) where !items.isEmpty: return "\n" + renderList(items, indent: indent + 2)
        default: return " " + inline(value, indent: indent + 2) + "\n"
        }
    }

    /// A scalar, an empty collection, or a block scalar whose lines are indented by `indent`.
    private static func inline(_ node: YAMLNode, indent: Int) -> String {
        switch node {
        case .literal(let text): return text
        case .list: return "[]"
        case .map: return "{}"
        case .string(let text):
            if let block = blockScalar(text, indent: indent) { return block }
            return quoted(text)
        }
    }

    /// Multi-line text as `|` (chomping kept exact: `|-` without a final newline, `|+` with
    /// several); nil when a literal block cannot hold it (control characters, a carriage
    /// return, trailing spaces on a line, which some readers trim).
    static func blockScalar(_ text: String, indent: Int) -> String? {
        guard text.contains("\n") else { return nil }
        // YAML 1.1 also breaks lines at NEL, LS and PS: those, and controls, only in quotes.
        let printable = text.unicodeScalars.allSatisfy { scalar in
            scalar == "\n" || scalar == "\t" || (scalar.value >= 0x20 && !needsEscape(scalar))
        }
        guard printable else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        // Trailing blanks some readers trim; a leading tab libyaml takes for bad indentation.
        guard !lines.contains(where: { $0.last == " " || $0.last == "\t" || $0.first == "\t" }) else { return nil }
        // A body that starts with a space or is only newlines needs an explicit indentation.
        let body = text.drop { $0 == "\n" }
        // Only line breaks: a block scalar of empty lines reads as "" (quotes say it).
        guard !body.isEmpty else { return nil }
        let needsIndicator = body.first == " " || text.first == "\n"
        var header = "|" + (needsIndicator ? "2" : "")
        var trailing = 0
        for character in text.reversed() {
            if character == "\n" { trailing += 1 } else { break }
        }
        if trailing == 0 { header += "-" } else if trailing > 1 { header += "+" }
        var content = lines
        if trailing > 0 { content.removeLast() }  // the empty piece after the last newline
        let prefix = pad(indent)
        return header + "\n" + content.map { $0.isEmpty ? "" : prefix + $0 }.joined(separator: "\n")
    }

    /// Control characters, NEL and the C1 controls, LS, PS and the byte-order mark.
    static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || scalar.value == 0x7f || (0x80..<0xA0).contains(scalar.value) || scalar.value == 0xFEFF
            || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    static let ambiguousWords: Set<String> = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "nan", "inf",
    ]

    /// The text plain when it can only be read back as this string; double-quoted otherwise.
    public static func quoted(_ text: String) -> String {
        isPlainSafe(text) ? text : doubleQuoted(text)
    }

    /// A double-quoted YAML scalar: `"`, `\\`, line breaks, tabs and every control or
    /// invisible separator character escaped.
    static func doubleQuoted(_ text: String) -> String {
        var output = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\t": output += "\\t"
            case "\r": output += "\\r"
            default:
                if needsEscape(scalar) {
                    let hex = String(scalar.value, radix: 16)
                    output += "\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
                } else {
                    output.unicodeScalars.append(scalar)
                }
            }
        }
        return output + "\""
    }

    /// Starts with a letter or `/`, holds only letters, digits and `_ . / - +`, and is not a
    /// word some YAML reads as a boolean, null or number (`yes`, `off`, `.inf`…).
    static func isPlainSafe(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic || first == "/" else { return false }
        guard text.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "_./-+".unicodeScalars.contains($0)) })
        else { return false }
        return !ambiguousWords.contains(text.lowercased())
    }
}

// MARK: - The Encoder

/// The node a container writes into; a reference so nested containers fill their parent.
final class NodeBox {
    enum Content {
        case empty
        case scalar(YAMLNode)
        case list([NodeBox])
        case map([(String, NodeBox)])
    }

    var content: Content = .empty

    var node: YAMLNode {
        switch content {
        case .empty: return .map([])
        case .scalar(let node): return node
        case .list(let boxes): return .list(boxes.map(\.node))
        case .map(let pairs): return .map(pairs.map { YAMLEntry(key: $0.0, value: $0.1.node) })
        }
    }

    func child(forKey key: String) -> NodeBox {
        let box = NodeBox()
        if case .map(var pairs) = content {
            pairs.removeAll { $0.0 == key }
            pairs.append((key, box))
            content = .map(pairs)
        } else {
            content = .map([(key, box)])
        }
        return box
    }

    func appended() -> NodeBox {
        let box = NodeBox()
        if case .list(var boxes) = content {
            boxes.append(box)
            content = .list(boxes)
        } else {
            content = .list([box])
        }
        return box
    }
}

struct TreeEncoder: Encoder {
    let box: NodeBox
    var codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        if case .map = box.content {} else { box.content = .map([]) }
        return KeyedEncodingContainer(KeyedTreeContainer<Key>(box: box, codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
        if case .list = box.content {} else { box.content = .list([]) }
        return UnkeyedTreeContainer(box: box, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
        SingleTreeContainer(box: box, codingPath: codingPath)
    }
}

/// Scalars of every kind the protocols name; numbers and booleans plain, strings quoted as needed.
private func scalar(_ value: some Encodable) -> YAMLNode? {
    switch value {
    case let text as String: return .string(text)
    case let flag as Bool: return .literal(flag ? "true" : "false")
    case let number as Int: return .literal(String(number))
    case let number as Int64: return .literal(String(number))
    case let number as Int32: return .literal(String(number))
    case let number as UInt64: return .literal(String(number))
    case let number as UInt32: return .literal(String(number))
    case let number as UInt: return .literal(String(number))
    case let number as Double: return .literal(number.isFinite ? String(number) : "0")
    default: return nil
    }
}

private func encodeValue(_ value: some Encodable, into box: NodeBox, codingPath: [any CodingKey]) throws {
    if let node = scalar(value) {
        box.content = .scalar(node)
    } else {
        try value.encode(to: TreeEncoder(box: box, codingPath: codingPath))
    }
}

struct KeyedTreeContainer<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let box: NodeBox
    var codingPath: [any CodingKey]

    mutating func encodeNil(forKey key: Key) throws { box.child(forKey: key.stringValue).content = .scalar(.literal("null")) }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try encodeValue(value, into: box.child(forKey: key.stringValue), codingPath: codingPath + [key])
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        let child = box.child(forKey: key.stringValue)
        child.content = .map([])
        return KeyedEncodingContainer(KeyedTreeContainer<NestedKey>(box: child, codingPath: codingPath + [key]))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = box.child(forKey: key.stringValue)
        child.content = .list([])
        return UnkeyedTreeContainer(box: child, codingPath: codingPath + [key])
    }

    mutating func superEncoder() -> any Encoder { TreeEncoder(box: box.child(forKey: "super"), codingPath: codingPath) }
    mutating func superEncoder(forKey key: Key) -> any Encoder { TreeEncoder(box: box.child(forKey: key.stringValue), codingPath: codingPath + [key]) }
}

struct UnkeyedTreeContainer: UnkeyedEncodingContainer {
    let box: NodeBox
    var codingPath: [any CodingKey]
    var count: Int {
        if case .list(let boxes) = box.content { return boxes.count }
        return 0
    }

    mutating func encodeNil() throws { box.appended().content = .scalar(.literal("null")) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        try encodeValue(value, into: box.appended(), codingPath: codingPath)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        let child = box.appended()
        child.content = .map([])
        return KeyedEncodingContainer(KeyedTreeContainer<NestedKey>(box: child, codingPath: codingPath))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let child = box.appended()
        child.content = .list([])
        return UnkeyedTreeContainer(box: child, codingPath: codingPath)
    }

    mutating func superEncoder() -> any Encoder { TreeEncoder(box: box.appended(), codingPath: codingPath) }
}

struct SingleTreeContainer: SingleValueEncodingContainer {
    let box: NodeBox
    var codingPath: [any CodingKey]

    mutating func encodeNil() throws { box.content = .scalar(.literal("null")) }

    mutating func encode<T: Encodable>(_ value: T) throws {
        try encodeValue(value, into: box, codingPath: codingPath)
    }
}
