/// JSON text from the `[String: Any]` trees the status endpoints build, with keys in byte
/// order. Foundation's `JSONSerialization` with `.sortedKeys` compares keys through ICU
/// collation, which was most of `/health`'s time (`docs/bench/history.md`, "/health and
/// /metrics under load").
public enum JSONText {
    public static func serialize(_ value: Any) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(4096)
        write(value, into: &output)
        return output
    }

    private static func write(_ value: Any, into output: inout [UInt8]) {
        switch value {
        case let text as String: writeString(text, into: &output)
        case let flag as Bool: output += Array((flag ? "true" : "false").utf8)
        case let number as Int: output += Array(String(number).utf8)
        case let number as Int32: output += Array(String(number).utf8)
        case let number as Int64: output += Array(String(number).utf8)
        case let number as UInt64: output += Array(String(number).utf8)
        case let number as UInt32: output += Array(String(number).utf8)
        case let number as Double: output += Array((number.isFinite ? "\(number)" : "null").utf8)
        case let object as [String: Any]: writeObject(object, into: &output, write)
        case let array as [Any]: writeArray(array, into: &output, write)
        case Optional<Any>.none:
            output += Array("null".utf8)
        default:
            writeString("\(value)", into: &output)
        }
    }

    /// `{"key":value,…}` with the keys in byte order; `writeValue` writes each value.
    static func writeObject<Value>(
        _ members: [String: Value], into output: inout [UInt8], _ writeValue: (Value, inout [UInt8]) -> Void
    ) {
        output.append(UInt8(ascii: "{"))
        for (index, key) in members.keys.sorted().enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            writeString(key, into: &output)
            output.append(UInt8(ascii: ":"))
            writeValue(members[key]!, &output)
        }
        output.append(UInt8(ascii: "}"))
    }

    static func writeArray<Element>(_ elements: [Element], into output: inout [UInt8], _ writeElement: (Element, inout [UInt8]) -> Void) {
        output.append(UInt8(ascii: "["))
        for (index, element) in elements.enumerated() {
            if index > 0 { output.append(UInt8(ascii: ",")) }
            writeElement(element, &output)
        }
        output.append(UInt8(ascii: "]"))
    }

    /// `text` as a JSON string literal, for callers that write JSON by hand.
    public static func appendString(_ text: String, to output: inout [UInt8]) { writeString(text, into: &output) }

    /// Copies runs of plain bytes in bulk and escapes the rest (a chat prompt is kilobytes of
    /// text with a few newlines; byte-at-a-time appends were a visible part of a chat's CPU).
    static func writeString(_ text: String, into output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        var text = text
        text.withUTF8 { bytes in
            var runStart = 0
            for index in 0..<bytes.count {
                let byte = bytes[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                if runStart < index { output.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart..<index])) }
                runStart = index + 1
                output.append(UInt8(ascii: "\\"))
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): output.append(byte)
                case 0x0A: output.append(UInt8(ascii: "n"))
                case 0x0D: output.append(UInt8(ascii: "r"))
                case 0x09: output.append(UInt8(ascii: "t"))
                default:
                    let hex: StaticString = "0123456789abcdef"
                    output.append(UInt8(ascii: "u"))
                    output.append(UInt8(ascii: "0"))
                    output.append(UInt8(ascii: "0"))
                    output.append(hex.utf8Start[Int(byte >> 4)])
                    output.append(hex.utf8Start[Int(byte & 0xF)])
                }
            }
            if runStart < bytes.count { output.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[runStart...])) }
        }
        output.append(UInt8(ascii: "\""))
    }
}
