import Testing
import WhisperChat
import WhisperJSON

@Suite struct ChatRequestsTests {
    private func issues<T>(_ result: Result<T, ValidationFailure>) -> [ValidationIssue] {
        if case .failure(let failure) = result { return failure.issues }
        return []
    }

    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func aValidChat_unknownKeysIgnored_contextStringsKept() throws {
        let request = try ChatRequests.chat(
            bytes(#"{"user_id":"u1","message":"hi","context":{"user_name":"Sam","guild_id":123},"force_mode":"fast","extra":[1]}"#)
        ).get()
        #expect(request.userID == "u1" && request.message == "hi")
        #expect(request.context == ["user_name": "Sam"])
        #expect(request.forceMode == "fast")
    }

    @Test func everyProblemAtOnce_inFastAPIsShape() {
        let found = issues(ChatRequests.chat(bytes(#"{"message":"","force_mode":"slow"}"#)))
        #expect(found.map(\.type) == ["missing", "string_too_short", "literal_error"])
        #expect(found[0].location == [.key("body"), .key("user_id")])
        #expect(found[0].message == "Field required")
        #expect(found[1].input == .string(""))
        #expect(found[2].message == "Input should be 'fast' or 'reflective'")
    }

    @Test func wrongTypes_tooLong_notJSON_notAnObject() {
        #expect(issues(ChatRequests.chat(bytes(#"{"user_id":7,"message":"x"}"#))).map(\.type) == ["string_type"])
        let long = String(repeating: "a", count: 4001)
        let tooLong = issues(ChatRequests.chat(bytes(#"{"user_id":"u","message":"\#(long)"}"#)))
        #expect(tooLong.map(\.type) == ["string_too_long"])
        #expect(tooLong.first?.context == ["max_length": .int(4000)])
        #expect(issues(ChatRequests.chat(bytes(#"{"user_id":"u","message":"\#(String(repeating: "a", count: 4000))"}"#))).isEmpty)
        #expect(issues(ChatRequests.chat(bytes("not json"))).map(\.type) == ["json_invalid"])
        #expect(issues(ChatRequests.chat([0xFF, 0xFE])).map(\.type) == ["json_invalid"])
        #expect(issues(ChatRequests.chat(bytes("[1,2]"))).map(\.type) == ["model_attributes_type"])
        #expect(issues(ChatRequests.chat(bytes(#"{"user_id":"u","message":"m","context":"x"}"#))).map(\.type) == ["dict_type"])
    }

    @Test func conversationRules() throws {
        let request = try ChatRequests.conversation(bytes(#"{"user_id":"u","messages":["a","b"],"delay_between_ms":5}"#)).get()
        #expect(request.messages == ["a", "b"])
        #expect(request.delayBetweenMilliseconds == 5)
        #expect(issues(ChatRequests.conversation(bytes(#"{"user_id":"u","messages":[]}"#))).map(\.type) == ["too_short"])
        let bad = issues(ChatRequests.conversation(bytes(#"{"user_id":"u","messages":["a",3],"delay_between_ms":-1}"#)))
        #expect(bad.map(\.type) == ["string_type", "greater_than_equal"])
        #expect(bad[0].location == [.key("body"), .key("messages"), .index(1)])
        #expect(issues(ChatRequests.conversation(bytes(#"{"user_id":"u","messages":"a"}"#))).map(\.type) == ["list_type"])
    }

    /// Each message is an LLM call: a request may hold `maxTurns` of them, no more.
    @Test func aConversation_isBoundedInTurns() throws {
        let three = bytes(#"{"user_id":"u","messages":["a","b","c"]}"#)
        #expect(try ChatRequests.conversation(three, maxTurns: 3).get().messages.count == 3)
        let over = issues(ChatRequests.conversation(three, maxTurns: 2))
        #expect(over.map(\.type) == ["too_long"])
        #expect(over.first?.location == [.key("body"), .key("messages")])
        #expect(over.first?.message == "List should have at most 2 items after validation, not 3")
        #expect(over.first?.context?["max_length"] == .int(2))
        let giant = bytes(#"{"user_id":"u","messages":["# + Array(repeating: #""m""#, count: 10_000).joined(separator: ",") + "]}")
        #expect(issues(ChatRequests.conversation(giant)).map(\.type) == ["too_long"], "the default is bounded too")
    }

    @Test func clearUserDataDefaultsToClearingBoth() throws {
        let request = try ChatRequests.clearUserData(bytes(#"{"user_id":"u"}"#)).get()
        #expect(request.clearMemories && request.clearTrust)
        #expect(try ChatRequests.clearUserData(bytes(#"{"user_id":"u","clear_trust":false}"#)).get().clearTrust == false)
        #expect(issues(ChatRequests.clearUserData(bytes(#"{"user_id":"u","clear_trust":1}"#))).map(\.type) == ["bool_type"])
        #expect(issues(ChatRequests.userState(bytes(#"{}"#))).map(\.type) == ["missing"])
    }
}
