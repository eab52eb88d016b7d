import Foundation
import Testing
import WhisperWorker

/// The Chat Completions body is written by hand; Foundation's parser is the judge.
@Suite struct LLMRequestBodyTests {
    private func configuration(temperature: Double?) throws -> LLMConfiguration {
        var environment = ["LLM_BASE_URL": "http://127.0.0.1:9/v1", "LLM_MODEL_NAME": "model \"x\"", "LLM_MAX_TOKENS": "77"]
        if let temperature { environment["LLM_TEMPERATURE"] = String(temperature) }
        return try LLMConfiguration.from(environment).get()
    }

    private func parse(_ body: [UInt8]) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
    }

    @Test func everyMessageArrivesAsWritten() throws {
        let tricky = "quote \" backslash \\ newline \n tab \t bell \u{07} nul \u{0} emoji 🌊 é {braces} </script>"
        let messages = [
            ChatMessage(role: "system", content: String(repeating: "You are Elena. ", count: 300)),
            ChatMessage(role: "user", content: tricky),
            ChatMessage(role: "assistant", content: ""),
            ChatMessage(role: "user", content: "last"),
        ]
        let object = try parse(try configuration(temperature: 0.7).requestBody(messages))
        #expect(object["model"] as? String == "model \"x\"")
        #expect(object["max_tokens"] as? Int == 77)
        #expect(object["stream"] as? Bool == false)
        #expect(object["temperature"] as? Double == 0.7)
        let sent = try #require(object["messages"] as? [[String: String]])
        #expect(sent.map { $0["role"] } == messages.map(\.role))
        #expect(sent.map { $0["content"] } == messages.map(\.content))
        #expect(Set(object.keys) == ["model", "max_tokens", "stream", "temperature", "messages"])
    }

    @Test func noTemperatureUnlessConfigured_andNoMessagesIsAnEmptyList() throws {
        let object = try parse(try configuration(temperature: nil).requestBody([]))
        #expect(object["temperature"] == nil)
        #expect((object["messages"] as? [Any])?.isEmpty == true)
    }
}
