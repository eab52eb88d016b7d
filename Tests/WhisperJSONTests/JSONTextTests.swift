import Foundation
import Testing
import WhisperJSON

@Suite struct JSONTextTests {
    @Test func keysAreInByteOrder_andValuesKeepTheirTypes() {
        let text = String(decoding: JSONText.serialize(["b": 1, "a": true, "c": ["x", 2.5]] as [String: Any]), as: UTF8.self)
        #expect(text == #"{"a":true,"b":1,"c":["x",2.5]}"#)
    }

    @Test func stringsAreEscaped_andTheResultParses() throws {
        let tricky = "quote \" backslash \\ newline \n tab \t bell \u{07} é ✓"
        let bytes = JSONText.serialize(["text": tricky, "nested": ["list": [["k": UInt64.max]]]] as [String: Any])
        let parsed = try #require(try JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any])
        #expect(parsed["text"] as? String == tricky)
        #expect(String(decoding: bytes, as: UTF8.self).contains(#"\u0007"#))
        let nested = (parsed["nested"] as? [String: Any])?["list"] as? [[String: Any]]
        #expect((nested?.first?["k"] as? NSNumber)?.uint64Value == UInt64.max)
    }

    @Test func nonFiniteNumbersBecomeNull() {
        #expect(String(decoding: JSONText.serialize([Double.nan, Double.infinity, 1.5] as [Any]), as: UTF8.self) == "[null,null,1.5]")
    }
}
