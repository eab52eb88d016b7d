/// JSON text from the `[String: Any]` trees the status endpoints build, with keys in byte
/// order. Foundation's `JSONSerialization` with `.sortedKeys` compares keys through ICU
/// collation, which made `/health` for 300 characters take 80 ms.
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
        case let object as [String: Any]:
            output.append(UInt8(ascii: "{"))
            for (index, key) in object.keys.sorted().enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                writeString(key, into: &output)
                output.append(UInt8(ascii: ":"))
                write(object[key]!, into: &output)
            }
            output.append(UInt8(ascii: "}"))
        case let array as [Any]:
            output.append(UInt8(ascii: "["))
            for (index, element) in array.enumerated() {
                if index > 0 { output.append(UInt8(ascii: ",")) }
                write(element, into: &output)
            }
            output.append(UInt8(ascii: "]"))
        case Optional<Any>.none:
            output += Array("null".utf8)
        default:
            writeString("\(value)", into: &output)
        }
    }

    private static func writeString(_ text: String, into output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): output += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): output += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x0A: output += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: output += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: output += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                output += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: output.append(byte)
            }
        }
        output.append(UInt8(ascii: "\""))
    }
}
