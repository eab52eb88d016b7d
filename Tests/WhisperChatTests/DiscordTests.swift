import Foundation
import Testing
import WhisperChat
import WhisperJSON

/// The gateway session on a fake clock: every time is a number we choose.
@Suite struct GatewaySessionTests {
    static let token = "bot-token-secret"

    private func session(seed: UInt64 = 7) -> GatewaySession {
        GatewaySession(token: Self.token, intents: GatewayIntents.chatBot, seed: seed)
    }

    private func ready(_ session: inout GatewaySession, at now: Double = 0) {
        _ = session.start(gatewayURL: "wss://gateway.test")
        _ = session.connectionOpened(now: now)
        _ = session.received(.hello(heartbeatMilliseconds: 40_000), now: now)
        _ = session.received(
            .dispatch(
                sequence: 1, name: "READY",
                data: .object([
                    "session_id": .string("s-1"), "resume_gateway_url": .string("wss://resume.test"),
                    "user": .object(["id": .string("900")]),
                ])), now: now)
    }

    private func sent(_ actions: [GatewaySession.Action]) -> [GatewayCommand] {
        actions.compactMap { if case .send(let command) = $0 { command } else { nil } }
    }

    @Test func startConnectsWithVersionAndEncoding_helloIdentifiesWithTheIntents() {
        var session = session()
        let start = session.start(gatewayURL: "wss://gateway.test")
        #expect(start.contains(.connect(url: "wss://gateway.test/?v=10&encoding=json", delay: 0)))
        #expect(start.contains(.facet(.degraded("connecting"))))
        #expect(session.connectionOpened(now: 0).isEmpty)
        let hello = session.received(.hello(heartbeatMilliseconds: 41_250), now: 100)
        #expect(sent(hello) == [.identify(token: Self.token, intents: 37377)])
        #expect(session.heartbeatInterval == 41.25)
    }

    /// The file between the two processes: what one writes the other reads, and a file written
    /// by a build that used `JSONEncoder` (the same keys) still reads.
    @Test func handOff_roundTripsThroughItsFile_andReadsTheEarlierBuildsFile() throws {
        let full = GatewaySession.HandOff(sessionID: "s-1", sequence: 7, resumeURL: "wss://resume.test", botUserID: "900", writtenAt: 12345.678)
        let bare = GatewaySession.HandOff(sessionID: "s-2", sequence: 0, resumeURL: nil, botUserID: nil, writtenAt: 3)
        for handOff in [full, bare] {
            #expect(GatewaySession.HandOff(json: try JSONValue.parse(handOff.json.jsonBytes)) == handOff)
        }
        struct Earlier: Encodable {
            var sessionID = "s-1", sequence = 7, resumeURL: String? = "wss://resume.test", botUserID: String? = "900", writtenAt = 12345.678
        }
        let earlier = Array(try JSONEncoder().encode(Earlier()))
        #expect(GatewaySession.HandOff(json: try JSONValue.parse(earlier)) == full)
        #expect(GatewaySession.HandOff(json: try JSONValue.parse(Array(#"{"sessionID":"s","writtenAt":1}"#.utf8))) == nil)
        #expect(GatewaySession.HandOff(json: try JSONValue.parse(Array(#"{"sessionID":"s","sequence":1.5,"writtenAt":1}"#.utf8))) == nil)
    }

    @Test func handOff_givesTheSessionToTheNextProcess_whichResumesItOnTheResumeURL() throws {
        var old = session()
        #expect(old.handOff(now: 1).0 == nil, "nothing to give before READY")
        ready(&old)
        _ = old.received(.dispatch(sequence: 7, name: "MESSAGE_CREATE", data: .object([:])), now: 2)
        let (given, actions) = old.handOff(now: 3)
        let handOff = try #require(given)
        #expect(handOff == GatewaySession.HandOff(sessionID: "s-1", sequence: 7, resumeURL: "wss://resume.test", botUserID: "900", writtenAt: 3))
        #expect(actions.contains(.close(code: GatewaySession.resumableCloseCode, reason: "handed over")))
        // The old one does not reconnect.
        #expect(old.connectionClosed(code: nil, reason: "closed", now: 4).isEmpty)

        var next = session(seed: 8)
        next.adopt(handOff)
        #expect(next.start(gatewayURL: "wss://gateway.test").contains(.connect(url: "wss://resume.test/?v=10&encoding=json", delay: 0)))
        _ = next.connectionOpened(now: 5)
        let hello = next.received(.hello(heartbeatMilliseconds: 40_000), now: 5)
        #expect(sent(hello) == [.resume(token: Self.token, sessionID: "s-1", sequence: 7)])
        #expect(next.botUserID == "900")
    }

    @Test func heartbeat_firstJittered_thenEveryInterval_carryingTheLastSequence() throws {
        var session = session()
        _ = session.start(gatewayURL: "wss://g")
        _ = session.connectionOpened(now: 0)
        _ = session.received(.hello(heartbeatMilliseconds: 10_000), now: 0)
        let first = try #require(session.nextWake)
        #expect(first > 0 && first < 10, "the first beat is somewhere in the first interval")
        #expect(session.tick(now: first - 0.001).isEmpty)
        #expect(sent(session.tick(now: first)) == [.heartbeat(sequence: nil)])
        _ = session.received(.heartbeatAck, now: first + 0.05)
        _ = session.received(.dispatch(sequence: 5, name: "MESSAGE_CREATE", data: .null), now: first + 1)
        #expect(session.nextWake == first + 10)
        #expect(sent(session.tick(now: first + 10)) == [.heartbeat(sequence: 5)])
        _ = session.received(.heartbeatAck, now: first + 10.1)
        #expect(sent(session.tick(now: first + 20)) == [.heartbeat(sequence: 5)])

        // Different seeds, different first beats: a fleet does not beat in step.
        var other = self.session(seed: 8)
        _ = other.start(gatewayURL: "wss://g")
        _ = other.connectionOpened(now: 0)
        _ = other.received(.hello(heartbeatMilliseconds: 10_000), now: 0)
        #expect(other.nextWake != first)
    }

    @Test func aServerHeartbeatRequest_isAnsweredAtOnce() {
        var session = session()
        ready(&session)
        #expect(sent(session.received(.heartbeatRequest, now: 3)) == [.heartbeat(sequence: 1)])
    }

    @Test func aMissedAck_isAZombie_closedResumably_thenResumedAtOnce() throws {
        var session = session()
        ready(&session)
        let beat = try #require(session.nextWake)
        _ = session.tick(now: beat)
        let interval = try #require(session.heartbeatInterval)
        let zombie = session.tick(now: beat + interval)
        #expect(zombie.contains(.close(code: GatewaySession.resumableCloseCode, reason: "heartbeat not acknowledged")))
        #expect(sent(zombie).isEmpty)
        let closed = session.connectionClosed(code: nil, reason: "closed by us", now: beat + interval + 1)
        #expect(closed == [.connect(url: "wss://resume.test/?v=10&encoding=json", delay: 0)])
        _ = session.connectionOpened(now: 0)
        let hello = session.received(.hello(heartbeatMilliseconds: 40_000), now: 0)
        #expect(sent(hello) == [.resume(token: Self.token, sessionID: "s-1", sequence: 1)])
        #expect(hello.contains(.facet(.degraded("resuming"))))
        let resumed = session.received(.dispatch(sequence: 2, name: "RESUMED", data: .null), now: 1)
        #expect(resumed.contains(.facet(.ok(""))))
        #expect(session.phase == .ready)
    }

    @Test func reconnectOpcode_closesAndResumesOnTheResumeURL() {
        var session = session()
        ready(&session)
        let actions = session.received(.reconnect, now: 5)
        #expect(actions.contains(.close(code: 4900, reason: "Discord asked to reconnect")))
        #expect(session.connectionClosed(code: 4900, reason: "", now: 5) == [.connect(url: "wss://resume.test/?v=10&encoding=json", delay: 0)])
    }

    @Test func invalidSession_waitsOneToFiveSeconds_thenIdentifiesAfresh() throws {
        var session = session()
        ready(&session, at: 0)
        let actions = session.received(.invalidSession(resumable: false), now: 10)
        #expect(sent(actions).isEmpty)
        #expect(session.sessionID == nil && session.sequence == nil)
        let due = try #require(session.identifyDue)
        #expect(due >= 11 && due <= 15)
        #expect(!sent(session.tick(now: due - 0.01)).contains(.identify(token: Self.token, intents: 37377)))
        #expect(sent(session.tick(now: due)).contains(.identify(token: Self.token, intents: 37377)))
    }

    @Test func fatalCloseCodes_stopForGood_withTheReason() {
        for code in [4004, 4010, 4011, 4012, 4013, 4014] {
            var session = session()
            ready(&session)
            let actions = session.connectionClosed(code: code, reason: "", now: 1)
            #expect(actions.contains { if case .stop = $0 { true } else { false } }, "code \(code)")
            #expect(!actions.contains { if case .connect = $0 { true } else { false } }, "code \(code) must not reconnect")
            #expect(session.connectionClosed(code: nil, reason: "again", now: 2).isEmpty)
        }
        var session = session()
        ready(&session)
        #expect(session.connectionClosed(code: 4004, reason: "", now: 1).first == .facet(.down("gateway closed 4004: authentication failed (DISCORD_TOKEN is wrong or was reset)")))
    }

    @Test func otherDrops_reconnectWithDoublingJitteredBackoff_resetByReady() {
        var session = GatewaySession(token: "t", intents: 1, seed: 3, backoffBase: 1, backoffCap: 8)
        _ = session.start(gatewayURL: "wss://g")
        var delays: [Double] = []
        for attempt in 0..<6 {
            let actions = session.connectionClosed(code: nil, reason: "connection refused", now: Double(attempt))
            for case .connect(_, let delay) in actions { delays.append(delay) }
        }
        let expected: [Double] = [1, 2, 4, 8, 8, 8]
        #expect(delays.count == 6)
        for (delay, base) in zip(delays, expected) { #expect(delay >= base * 0.9 && delay <= base * 1.1) }
        // A session that reaches Ready starts the backoff over.
        _ = session.connectionOpened(now: 10)
        _ = session.received(.hello(heartbeatMilliseconds: 1000), now: 10)
        _ = session.received(.dispatch(sequence: 1, name: "READY", data: .object(["session_id": .string("x")])), now: 10)
        let again = session.connectionClosed(code: 1006, reason: "", now: 11)
        for case .connect(_, let delay) in again { #expect(delay <= 1.1) }
        #expect(again.first == .facet(.degraded("resuming after closed 1006")))
    }

    @Test func sessionEndingCodes_identifyAfresh() {
        var session = session()
        ready(&session)
        let actions = session.connectionClosed(code: 4009, reason: "", now: 1)
        #expect(actions.contains { if case .connect(let url, _) = $0 { url.hasPrefix("wss://gateway.test") } else { false } })
        _ = session.connectionOpened(now: 3)
        #expect(sent(session.received(.hello(heartbeatMilliseconds: 1000), now: 3)) == [.identify(token: Self.token, intents: 37377)])
    }

    @Test func commandsEncodeAsDiscordExpects_andNeverPrintTheToken() throws {
        let identify = GatewayCommand.identify(token: "abc", intents: 513)
        let json = try JSONValue.parse(Array(identify.jsonText.utf8))
        #expect(json["op"] == .int(2))
        #expect(json["d"]["token"] == .string("abc"))
        #expect(json["d"]["intents"] == .int(513))
        #expect(json["d"]["properties"]["os"] == .string("linux"))
        #expect(!"\(identify)".contains("abc"))
        #expect(!"\(GatewayCommand.resume(token: "abc", sessionID: "s", sequence: 3))".contains("abc"))
        #expect(GatewayCommand.heartbeat(sequence: nil).jsonText == #"{"d":null,"op":1}"#)
        #expect(GatewayCommand.resume(token: "t\"", sessionID: "s", sequence: 3).jsonText == #"{"d":{"seq":3,"session_id":"s","token":"t\""},"op":6}"#)
    }

    @Test func payloadsDecode_badOnesAreErrorsNotCrashes() {
        #expect(GatewayEvent.decode(#"{"op":10,"d":{"heartbeat_interval":41250}}"#) == .success(.hello(heartbeatMilliseconds: 41250)))
        #expect(GatewayEvent.decode(#"{"op":11}"#) == .success(.heartbeatAck))
        #expect(GatewayEvent.decode(#"{"op":9,"d":false}"#) == .success(.invalidSession(resumable: false)))
        #expect(GatewayEvent.decode(#"{"op":9,"d":true}"#) == .success(.invalidSession(resumable: true)))
        #expect(
            GatewayEvent.decode(#"{"op":0,"s":42,"t":"MESSAGE_CREATE","d":{"id":"1"}}"#)
                == .success(.dispatch(sequence: 42, name: "MESSAGE_CREATE", data: .object(["id": .string("1")]))))
        for bad in ["", "[]", "{}", #"{"op":"x"}"#, #"{"op":0,"d":{}}"#, #"{"op":10,"d":{}}"#, #"{"op":99}"#, "{\"op\":1"] {
            guard case .failure = GatewayEvent.decode(bad) else {
                Issue.record("\(bad) decoded")
                continue
            }
        }
    }
}

@Suite struct DiscordBehaviourTests {
    static let bot = "900"
    static let settings = DiscordSettings(
        token: "t", apiBase: "http://x", gatewayURL: nil, intents: 1, blockDirectMessages: true,
        directMessageAllowed: ["42"], blockedUsers: ["13"])

    private func message(
        author: String = "7", bot: Bool = false, content: String, guild: String? = "1", mentions: [String] = [],
        replyTo: String? = nil, nick: String? = nil
    ) -> JSONValue {
        var fields: [String: JSONValue] = [
            "id": .string("555"), "channel_id": .string("66"), "content": .string(content),
            "author": .object(["id": .string(author), "username": .string("sam_"), "global_name": .string("Sam"), "bot": .bool(bot)]),
            "mentions": .array(mentions.map { .object(["id": .string($0)]) }),
        ]
        if let guild { fields["guild_id"] = .string(guild) }
        if let replyTo { fields["referenced_message"] = .object(["author": .object(["id": .string(replyTo)])]) }
        if let nick { fields["member"] = .object(["nick": .string(nick)]) }
        return .object(fields)
    }

    @Test func aShard_answersOnlyItsGuilds_andDirectMessagesOnShardZero() {
        // Guild 1 << 22 is on shard 1 of 3; guild 5 << 22 on shard 2.
        var first = Self.settings
        first.shard = GatewayShard(index: 1, count: 3)
        var zero = Self.settings
        zero.shard = GatewayShard(index: 0, count: 3)
        let mine = message(content: "<@900> hi", guild: String(UInt64(1) << 22), mentions: ["900"])
        let other = message(content: "<@900> hi", guild: String(UInt64(5) << 22), mentions: ["900"])
        let direct = message(author: "42", content: "hi", guild: nil)
        #expect(DiscordMessagePolicy.decide(mine, botUserID: Self.bot, settings: first) != .ignore("another shard's"))
        #expect(DiscordMessagePolicy.decide(other, botUserID: Self.bot, settings: first) == .ignore("another shard's"))
        #expect(DiscordMessagePolicy.decide(direct, botUserID: Self.bot, settings: first) == .ignore("another shard's"))
        #expect(DiscordMessagePolicy.decide(direct, botUserID: Self.bot, settings: zero) != .ignore("another shard's"))
    }

    @Test func replicaVariables_makeAShard_andBadOnesAreNamed() throws {
        let base = ["DISCORD_TOKEN": "abc"]
        guard case .success(let sharded)? = DiscordSettings.from(base.merging(["REPLICA_INDEX": "2", "REPLICA_COUNT": "4"]) { $1 }) else {
            Issue.record("not accepted")
            return
        }
        #expect(sharded.shard == GatewayShard(index: 2, count: 4))
        guard case .success(let single)? = DiscordSettings.from(base.merging(["REPLICA_INDEX": "0", "REPLICA_COUNT": "1"]) { $1 }) else {
            Issue.record("not accepted")
            return
        }
        #expect(single.shard == nil, "one instance is no sharding")
        guard case .failure(let error)? = DiscordSettings.from(base.merging(["REPLICA_INDEX": "4", "REPLICA_COUNT": "4"]) { $1 }) else {
            Issue.record("accepted an index past the count")
            return
        }
        #expect(error.description.contains("is not a shard"))
        let identify = GatewayCommand.identify(token: "abc", intents: 513, shard: GatewayShard(index: 2, count: 4))
        let json = try JSONValue.parse(Array(identify.jsonText.utf8))
        #expect(json["d"]["shard"] == .array([.int(2), .int(4)]))
        #expect("\(identify)" == "identify(intents: 513, shard: [2, 4])")
    }

    private func decide(_ message: JSONValue) -> DiscordMessagePolicy.Decision {
        DiscordMessagePolicy.decide(message, botUserID: Self.bot, settings: Self.settings)
    }

    @Test func aMention_isAnswered_withoutTheMention_byDisplayName() {
        guard case .answer(let incoming) = decide(message(content: "<@900> how is the sea?", mentions: ["900"], nick: "Sammy")) else {
            Issue.record("not answered")
            return
        }
        #expect(incoming.text == "how is the sea?")
        #expect(incoming.userName == "Sammy")
        #expect(incoming.userID == "7" && incoming.channelID == "66" && incoming.messageID == "555" && !incoming.isDirect)
        guard case .answer(let legacy) = decide(message(content: "hey <@!900>  there")) else {
            Issue.record("the <@!id> form was not seen")
            return
        }
        #expect(legacy.text == "hey there" && legacy.userName == "Sam")
    }

    @Test func ignored_ownBotsBlockedUnaddressedAndBareMentions() {
        #expect(decide(message(author: "900", content: "<@900> hi", mentions: ["900"])) == .ignore("own message"))
        #expect(decide(message(bot: true, content: "<@900> hi", mentions: ["900"])) == .ignore("from a bot"))
        #expect(decide(message(author: "13", content: "<@900> hi", mentions: ["900"])) == .ignore("blocked user"))
        #expect(decide(message(content: "just chatting")) == .ignore("not addressed to the bot"))
        #expect(decide(message(content: "<@901> hi", mentions: ["901"])) == .ignore("not addressed to the bot"))
        #expect(decide(message(content: "<@900>", mentions: ["900"])) == .ignore("nothing but the mention"))
    }

    @Test func aReplyToTheBot_isAnswered() {
        if case .answer(let incoming) = decide(message(content: "and then?", replyTo: "900")) {
            #expect(incoming.text == "and then?")
        } else {
            Issue.record("a reply to the bot was not answered")
        }
        #expect(decide(message(content: "and then?", replyTo: "5")) == .ignore("not addressed to the bot"))
    }

    @Test func directMessages_blockedUnlessAllowed_orWhenTheBlockIsOff() {
        #expect(decide(message(content: "hello", guild: nil)) == .ignore("direct messages are blocked for this user"))
        guard case .answer(let allowed) = decide(message(author: "42", content: "hello", guild: nil)) else {
            Issue.record("an allowed user's DM was not answered")
            return
        }
        #expect(allowed.isDirect && allowed.guildID == nil)
        var open = Self.settings
        open.blockDirectMessages = false
        guard case .answer = DiscordMessagePolicy.decide(message(content: "hello", guild: nil), botUserID: Self.bot, settings: open) else {
            Issue.record("with ENABLE_DM_BLOCK=false a DM was not answered")
            return
        }
    }

    @Test func settingsFromTheEnvironment_everyProblemListed() throws {
        #expect(DiscordSettings.from(["PATH": "/bin"]) == nil)
        let settings = try #require(try DiscordSettings.from(["DISCORD_BOT_TOKEN": "abc", "DM_ALLOWED_USER_IDS": "1, 2"])?.get())
        #expect(settings.token == "abc" && settings.intents == 37377 && settings.blockDirectMessages)
        #expect(settings.directMessageAllowed == ["1", "2"] && settings.apiBase == "https://discord.com/api/v10")
        let named = try #require(try DiscordSettings.from(["DISCORD_TOKEN": "a", "DISCORD_INTENTS": "guilds, guild_messages"])?.get())
        #expect(named.intents == 513)
        guard case .failure(let error)? = DiscordSettings.from([
            "DISCORD_TOKEN": "a", "DISCORD_INTENTS": "guilds,bogus", "ENABLE_DM_BLOCK": "maybe", "BLOCKED_USER_IDS": "12,x1",
            "DISCORD_API_BASE": "ftp://x", "DISCORD_GATEWAY_URL": "http://y",
        ]) else {
            Issue.record("bad settings accepted")
            return
        }
        #expect(error.problems.count == 5)
        #expect(error.problems[0].hasPrefix("DISCORD_INTENTS: unknown intent(s) bogus"))
        #expect(!error.description.contains("DISCORD_TOKEN=a"))
    }

    @Test func channelNames_learntFromGuildAndChannelEvents() {
        var directory = DiscordChannelDirectory()
        directory.learn(
            event: "GUILD_CREATE",
            data: .object(["channels": .array([.object(["id": .string("66"), "name": .string("general")])])]))
        directory.learn(event: "CHANNEL_UPDATE", data: .object(["id": .string("67"), "name": .string("lobby")]))
        #expect(directory.names == ["66": "general", "67": "lobby"])
        directory.learn(event: "CHANNEL_DELETE", data: .object(["id": .string("66")]))
        #expect(directory.names == ["67": "lobby"])
    }
}

@Suite struct DiscordReplySplitterTests {
    @Test func shortRepliesStayWhole() {
        #expect(DiscordReplySplitter.split("  hello  ") == ["hello"])
        #expect(DiscordReplySplitter.split(String(repeating: "a", count: 2000)).count == 1)
    }

    @Test func fiveThousandCharacters_threeMessages_inOrder_onSentenceEnds() {
        let sentence = "The tide turns at dusk and the gulls know it. "  // 46 characters
        let text = String(repeating: sentence, count: 109)  // 5,014
        let parts = DiscordReplySplitter.split(text)
        #expect(parts.count == 3)
        #expect(parts.allSatisfy { $0.count <= 2000 })
        #expect(parts.dropLast().allSatisfy { $0.hasSuffix("it.") })
        #expect(parts.joined(separator: " ") == text.trimmingCharacters(in: .whitespaces))
    }

    @Test func linesArePreferred_thenWords_thenAnywhere() {
        let lines = String(repeating: "x", count: 1500) + "\n" + String(repeating: "y", count: 1000)
        #expect(DiscordReplySplitter.split(lines) == [String(repeating: "x", count: 1500), String(repeating: "y", count: 1000)])
        let words = String(repeating: "word ", count: 500)
        let wordParts = DiscordReplySplitter.split(words)
        #expect(wordParts.allSatisfy { $0.count <= 2000 && !$0.hasPrefix(" ") && $0.hasSuffix("word") })
        let solid = String(repeating: "z", count: 4500)
        #expect(DiscordReplySplitter.split(solid).map(\.count) == [2000, 2000, 500])
    }
}

@Suite struct DiscordRateLimitsTests {
    let messages = DiscordRateLimits.Route(method: "POST", path: "/channels/66/messages")

    @Test func routesKeepTheMajorParameter_andGeneraliseOtherIDs() {
        #expect(messages.template == "POST /channels/{major}/messages" && messages.major == "66")
        let reaction = DiscordRateLimits.Route(method: "put", path: "/channels/66/messages/123/reactions")
        #expect(reaction.template == "PUT /channels/{major}/messages/{id}/reactions")
    }

    @Test func anExhaustedBucket_waitsForItsReset_perChannel() {
        var limits = DiscordRateLimits()
        #expect(limits.delay(for: messages, now: 0) == 0)
        limits.willSend(messages, now: 0)
        limits.record(
            messages, status: 200, headers: ["x-ratelimit-bucket": "abc", "x-ratelimit-remaining": "0", "x-ratelimit-reset-after": "2.5"],
            retryAfter: nil, isGlobal: false, now: 0)
        #expect(limits.delay(for: messages, now: 1) == 1.5)
        #expect(limits.delay(for: messages, now: 2.5) == 0)
        let otherChannel = DiscordRateLimits.Route(method: "POST", path: "/channels/67/messages")
        #expect(limits.delay(for: otherChannel, now: 1) == 0)
    }

    @Test func remainingCountsDownBetweenAnswers() {
        var limits = DiscordRateLimits()
        limits.record(
            messages, status: 200, headers: ["x-ratelimit-remaining": "1", "x-ratelimit-reset-after": "5"], retryAfter: nil,
            isGlobal: false, now: 0)
        #expect(limits.delay(for: messages, now: 0.1) == 0)
        limits.willSend(messages, now: 0.1)
        #expect(limits.delay(for: messages, now: 0.2) > 4.7)
    }

    @Test func a429_waitsRetryAfter_forTheBucketOrForEverything() {
        var limits = DiscordRateLimits()
        limits.record(messages, status: 429, headers: [:], retryAfter: 0.75, isGlobal: false, now: 10)
        #expect(limits.delay(for: messages, now: 10) == 0.75)
        let typing = DiscordRateLimits.Route(method: "POST", path: "/channels/66/typing")
        #expect(limits.delay(for: typing, now: 10) == 0)
        limits.record(typing, status: 429, headers: ["x-ratelimit-scope": "global"], retryAfter: 3, isGlobal: false, now: 10)
        let elsewhere = DiscordRateLimits.Route(method: "POST", path: "/channels/99/messages")
        #expect(limits.delay(for: elsewhere, now: 11) == 2)
    }

    @Test func theGlobalCap_fiftyASecond() {
        var limits = DiscordRateLimits()
        for index in 0..<50 {
            let route = DiscordRateLimits.Route(method: "POST", path: "/channels/\(index)/messages")
            #expect(limits.delay(for: route, now: 0.01 * Double(index)) == 0)
            limits.willSend(route, now: 0.01 * Double(index))
        }
        let late = DiscordRateLimits.Route(method: "POST", path: "/channels/1000/messages")
        #expect(abs(limits.delay(for: late, now: 0.5) - 0.5) < 1e-9)
        #expect(limits.delay(for: late, now: 1.0) == 0)
    }
}
