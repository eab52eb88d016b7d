import Foundation
import Testing
import WhisperJSON

/// The hand-written JSON parser every request body and LLM answer goes through.
@Suite struct JSONParserTests {
    private func parse(_ text: String) throws -> JSONValue { try JSONValue.parse(Array(text.utf8)) }

    @Test func values_numbers_andEscapes() throws {
        let value = try parse(
            #" {"a":[1,-2,3.5,1e2,2.5E-1,-0,12345678901234567890,null,true,false],"s":"x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00y","o":{},"e":[], "a":"last"} "#)
        #expect(value["s"].stringValue == "x\"\\/\u{8}\u{c}\n\r\té😀y")
        #expect(value["a"].stringValue == "last")  // a repeated key keeps its last value
        #expect(value["o"] == .object([:]) && value["e"] == .array([]))
        let numbers = try parse("[1,-2,3.5,1e2,2.5E-1,-0,12345678901234567890,5.0]")
        #expect(numbers == .array([.int(1), .int(-2), .double(3.5), .int(100), .double(0.25), .int(0), .double(12_345_678_901_234_567_168), .int(5)]))  // past Int64: the nearest Double
        #expect(try parse(#""plain""#) == .string("plain"))
        #expect(try parse("\"caf\u{e9} \u{1F600}\"") == .string("café 😀"))
    }

    @Test func everyMalformedInput_isAnError() {
        let malformed: [[UInt8]] = [
            [], Array("   ".utf8), Array("{".utf8), Array("[1,]".utf8), Array(#"{"a":1,}"#.utf8), Array(#"{"a" 1}"#.utf8),
            Array("01".utf8), Array("1.".utf8), Array("-".utf8), Array(".5".utf8), Array("1e".utf8), Array("tru".utf8),
            Array("nul".utf8), Array(#""open"#.utf8), Array(#""bad \x escape""#.utf8), Array(#""\u12""#.utf8),
            Array(#""\ud800""#.utf8), Array(#""\udc00x""#.utf8), Array(#""\ud800\u0041""#.utf8), Array("\"tab\there\"".utf8),
            Array("1 2".utf8), Array("{} x".utf8), Array("1e999".utf8), Array("'single'".utf8),
            [0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22],  // invalid UTF-8, incl. an encoded surrogate
            [0x22, 0x5C, 0x6E, 0xFF, 0x22],  // invalid UTF-8 after an escape
            Array(String(repeating: "[", count: 600).utf8) + Array(String(repeating: "]", count: 600).utf8),
        ]
        for input in malformed {
            #expect(throws: JSONValue.ParseError.self, "\(input.prefix(20))") { try JSONValue.parse(input) }
        }
        // As deep as allowed is fine.
        let deep = String(repeating: "[", count: JSONValue.maximumDepth) + String(repeating: "]", count: JSONValue.maximumDepth)
        #expect(throws: Never.self) { try JSONValue.parse(Array(deep.utf8)) }
    }

    /// The same documents through Foundation's parser give the same strings and numbers.
    @Test func agreesWithFoundation() throws {
        let documents = [
            #"{"user_id":"u1","message":"Hello \"there\"\n\u2028 ok","context":{"user_name":"Sam","n":3}}"#,
            #"{"choices":[{"message":{"role":"assistant","content":"Hi! \ud83d\udc4b"}}],"model":"m","usage":{"prompt_tokens":12}}"#,
        ]
        for document in documents {
            let ours = try parse(document)
            let theirs = try JSONSerialization.jsonObject(with: Data(document.utf8))
            #expect(Self.same(ours, theirs), "\(document)")
        }
    }

    private static func same(_ ours: JSONValue, _ theirs: Any) -> Bool {
        switch ours {
        case .string(let text): return (theirs as? String) == text
        case .int(let number): return (theirs as? NSNumber)?.int64Value == number
        case .double(let number): return (theirs as? NSNumber)?.doubleValue == number
        case .bool(let flag): return (theirs as? Bool) == flag
        case .null: return theirs is NSNull
        case .array(let items):
            guard let other = theirs as? [Any], other.count == items.count else { return false }
            return zip(items, other).allSatisfy { same($0, $1) }
        case .object(let fields):
            guard let other = theirs as? [String: Any], other.count == fields.count else { return false }
            return fields.allSatisfy { key, value in other[key].map { same(value, $0) } ?? false }
        }
    }
}
