import Foundation
import Glibc
import Testing

/// The worker as a Discord bot, against `FakeDiscord` (a real WebSocket gateway and REST API on
/// loopback) and the scripted LLM.
extension IntegrationTests {
    @Suite struct DiscordSection {
        static let token = "elena-token-NOT-FOR-LOGS-1"
        static let elena = FakeDiscord.Bot(id: "900", name: "Elena")

        static func startBot(
            _ scratch: Scratch, _ fake: FakeDiscord, llm: TestLLM?, environment extra: [String: String] = [:]
        ) throws -> ChildProcess {
            var environment = ["DISCORD_TOKEN": token, "DISCORD_API_BASE": fake.apiBase]
            environment.merge(extra) { $1 }
            return try WorkerAPISection.startWorker(scratch, llm: llm, environment: environment).0
        }

        static func mention(_ id: String, _ text: String, author: String = "7", bot: String = "900") -> [String: Any] {
            FakeDiscord.message(id: id, author: author, content: "<@\(bot)> \(text)", mentions: [bot])
        }

        @Test func identifiesWithItsIntents_answersAMention_typingThenAReply_withTheUsersHistory() throws {
            let fake = try FakeDiscord(bots: [Self.token: Self.elena])
            let llm = try TestLLM()
            let scratch = Scratch()
            let worker = try Self.startBot(scratch, fake, llm: llm, environment: ["BLOCKED_USER_IDS": "13", "DM_ALLOWED_USER_IDS": "42"])
            defer { withExtendedLifetime((worker, scratch)) {} }

            let identify = try #require(fake.payloads(0, op: 2)?.first?["d"] as? [String: Any])
            #expect(identify["token"] as? String == Self.token)
            #expect(identify["intents"] as? Int == 37377, "guilds, guild messages, direct messages, message content")
            #expect((identify["properties"] as? [String: Any])?["os"] as? String == "linux")
            #expect(fake.calls.first?.path == "/api/v10/gateway/bot", "the gateway URL comes from GET /gateway/bot")
            #expect(worker.waitFor("discord: connected as Elena (id 900") != nil)

            fake.dispatch(0, "GUILD_CREATE", ["id": "1", "channels": [["id": "66", "name": "tidepool"]]])
            // Not answered: another bot, a blocked user, a message not addressed to the bot, a stranger's DM.
            fake.dispatch(0, "MESSAGE_CREATE", FakeDiscord.message(id: "1", author: "77", bot: true, content: "<@900> hi", mentions: ["900"]))
            fake.dispatch(0, "MESSAGE_CREATE", Self.mention("2", "hi", author: "13"))
            fake.dispatch(0, "MESSAGE_CREATE", FakeDiscord.message(id: "3", author: "7", content: "just talking"))
            fake.dispatch(0, "MESSAGE_CREATE", FakeDiscord.message(id: "4", channel: "98", guild: nil, author: "8", content: "psst"))

            fake.dispatch(0, "MESSAGE_CREATE", Self.mention("5", "how is the sea?"))
            let first = try #require(fake.restCalls("POST", "/channels/66/messages")?.first)
            #expect(first.body["content"] as? String == "echo: how is the sea? [messages=2]")
            #expect((first.body["message_reference"] as? [String: Any])?["message_id"] as? String == "5")
            #expect(first.authorization == "Bot \(Self.token)")
            let typing = try #require(fake.restCalls("POST", "/channels/66/typing")?.first)
            #expect(typing.at <= first.at, "typing shows before the reply")
            let prompt = try #require(
                ((llm.requests().first?["body"] as? [String: Any])?["messages"] as? [[String: Any]])?.first?["content"] as? String)
            #expect(prompt.contains("talking with Sam in #tidepool"), "user name and channel name reach the prompt: \(prompt)")

            // The user's history is carried, as on the HTTP path.
            fake.dispatch(0, "MESSAGE_CREATE", FakeDiscord.message(id: "6", author: "7", content: "<@!900> and tomorrow?"))
            let second = try #require(fake.restCalls("POST", "/channels/66/messages", count: 2)?[1])
            #expect(second.body["content"] as? String == "echo: and tomorrow? [messages=4]")

            // An allowed user's DM is answered.
            fake.dispatch(0, "MESSAGE_CREATE", FakeDiscord.message(id: "7", channel: "99", guild: nil, author: "42", content: "hello"))
            let direct = try #require(fake.restCalls("POST", "/channels/99/messages")?.first)
            #expect(direct.body["content"] as? String == "echo: hello [messages=2]")

            // Memory and trust are shared with the HTTP API for the same user id.
            let state = postJSON(port: Int(worker.process.environment?["API_PORT"] ?? "") ?? 0, path: "/api/user-state", ["user_id": "7"])
            #expect(state.json["memory_count"] as? Int == 4)
            #expect(llm.requests().count == 3, "the ignored messages never reached the LLM")
            #expect(fake.calls.filter { $0.path.hasSuffix("/messages") }.count == 3)
            #expect(!worker.output.contains(Self.token))
        }

        @Test func aMissedHeartbeatAck_reconnects_andResumesWithTheSessionAndSequence() throws {
            let fake = try FakeDiscord(bots: [Self.token: Self.elena])
            fake.heartbeatMilliseconds = 300
            let scratch = Scratch()
            let worker = try Self.startBot(scratch, fake, llm: nil)
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(worker.waitFor("discord: connected as Elena") != nil)
            fake.dispatch(0, "TYPING_START", [:])
            fake.dispatch(0, "TYPING_START", [:])
            // Beats carry the last sequence number (READY was 1, then 2 and 3).
            let beat = fake.wait { connections, _ in
                connections.first?.payloads.first { $0["op"] as? Int == 1 && $0["d"] as? Int == 3 }
            }
            #expect(beat != nil)
            fake.setAcknowledgeHeartbeats(false)
            let resume = try #require(fake.payloads(1, op: 6)?.first?["d"] as? [String: Any])
            #expect(resume["session_id"] as? String == "session-1")
            #expect(resume["seq"] as? Int == 3)
            #expect(resume["token"] as? String == Self.token)
            #expect(fake.connections[0].closeCodeFromClient == 4900, "closed with a code that keeps the session")
            #expect(fake.connections.count == 2)
            #expect(worker.waitFor("discord: session resumed") != nil)
        }

        @Test func aDroppedConnection_isResumed() throws {
            let fake = try FakeDiscord(bots: [Self.token: Self.elena])
            let scratch = Scratch()
            let worker = try Self.startBot(scratch, fake, llm: nil)
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(worker.waitFor("discord: connected as Elena") != nil)
            fake.dispatch(0, "TYPING_START", [:])
            _ = fake.wait { connections, _ in connections[0].sequence == 2 ? true : nil }
            fake.drop(0)
            let resume = try #require(fake.payloads(1, op: 6)?.first?["d"] as? [String: Any])
            #expect(resume["session_id"] as? String == "session-1" && resume["seq"] as? Int == 2)
            #expect(fake.connections[1].payloads.filter { $0["op"] as? Int == 2 }.isEmpty, "resumed, not identified again")
        }

        @Test func spentSessionStarts_areWaitedFor_beforeIdentifying() throws {
            let fake = try FakeDiscord(bots: [Self.token: Self.elena])
            fake.spendSessionStarts(resetAfterMilliseconds: 1500)
            let scratch = Scratch()
            let worker = try Self.startBot(scratch, fake, llm: nil)
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(worker.waitFor("discord: down:the token's daily session starts are used up; waiting 2 s") != nil)
            let identify = try #require(fake.payloads(0, op: 2))
            #expect(identify.count == 1)
            let lookups = fake.calls.filter { $0.path.hasSuffix("/gateway/bot") }
            #expect(lookups.count == 2)
            #expect(lookups[1].at.timeIntervalSince(lookups[0].at) >= 1.5)
        }

        @Test func invalidSession_identifiesAfresh() throws {
            let fake = try FakeDiscord(bots: [Self.token: Self.elena])
            let scratch = Scratch()
            let worker = try Self.startBot(scratch, fake, llm: nil)
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(worker.waitFor("discord: connected as Elena") != nil)
            fake.send(0, ["op": 9, "d": false])
            // Discord asks for a 1–5 s pause before the new Identify.
            let identifies = try #require(fake.payloads(0, op: 2, count: 2, timeout: 10))
            #expect(identifies.count == 2)
            #expect(fake.connections.count == 1)
            #expect(fake.payloads(0, op: 6, timeout: 0) == nil, "no resume of an invalid session")
        }

        @Test func aReplyOverTwoThousandCharacters_isThreeMessagesInOrder_andA429IsWaitedOut() throws {
            let fake = try FakeDiscord(bots: [Self.token: Self.elena])
            let llm = try TestLLM()
            let long = String(repeating: "The tide turns at dusk and the gulls know it. ", count: 109)
            llm.script([["reply": long]])
            fake.scriptMessageAnswers([(429, #"{"message":"You are being rate limited.","retry_after":0.4,"global":false}"#)])
            let scratch = Scratch()
            let worker = try Self.startBot(scratch, fake, llm: llm)
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(worker.waitFor("discord: connected as Elena") != nil)
            fake.dispatch(0, "MESSAGE_CREATE", Self.mention("5", "tell me everything"))
            let calls = try #require(fake.restCalls("POST", "/channels/66/messages", count: 4), "\(fake.calls.map { "\($0.method) \($0.path) \($0.status)" }) \(worker.output)")
            #expect(calls.count == 4)
            #expect(calls[0].status == 429 && calls[1].status == 200)
            #expect(calls[1].at.timeIntervalSince(calls[0].at) >= 0.4, "retry_after was waited")
            #expect(calls[0].body["content"] as? String == calls[1].body["content"] as? String, "the same part, sent once it was allowed")
            let parts = calls.dropFirst().map { $0.body["content"] as? String ?? "" }
            #expect(parts.allSatisfy { $0.count <= 2000 })
            #expect(parts.joined(separator: " ") == long.trimmingCharacters(in: .whitespaces))
            #expect((calls[1].body["message_reference"] as? [String: Any])?["message_id"] as? String == "5")
            #expect(calls[2].body["message_reference"] == nil && calls[3].body["message_reference"] == nil)
        }

        @Test func anLLMFailure_isSaidInTheCharactersWords_notPassedOffAsAnAnswer() throws {
            let fake = try FakeDiscord(bots: [Self.token: Self.elena])
            let llm = try TestLLM()
            llm.script([["status": 400], ["status": 400]])
            let scratch = Scratch()
            scratch.write("characters/elena/ux.yaml", "error_messages: [\"The sea is too rough to talk right now.\"]\n")
            let worker = try Self.startBot(scratch, fake, llm: llm)
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(worker.waitFor("discord: connected as Elena") != nil)
            fake.dispatch(0, "MESSAGE_CREATE", Self.mention("5", "hello?"))
            let reply = try #require(fake.restCalls("POST", "/channels/66/messages")?.first)
            #expect(reply.body["content"] as? String == "The sea is too rough to talk right now.")
            #expect(worker.waitFor("could not answer message 5") != nil)
        }

        @Test func sigterm_finishesTheReplyBeingMade_andReportsTheFacetOverNotify() throws {
            let fake = try FakeDiscord(bots: [Self.token: Self.elena])
            let llm = try TestLLM()
            llm.script([["delay": 1.0]])
            let scratch = Scratch()
            let listener = try DatagramListener(path: scratch.path + "/notify.sock")
            let worker = try Self.startBot(
                scratch, fake, llm: llm, environment: ["NOTIFY_SOCKET": listener.path, "WHISPERD_STOP_GRACE_MS": "5000"])
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(listener.receive(containing: "X_WHISPERD_FACET=discord:degraded:connecting") != nil)
            #expect(listener.receive(containing: "X_WHISPERD_FACET=discord:ok") != nil)
            fake.dispatch(0, "MESSAGE_CREATE", Self.mention("5", "finish me"))
            #expect(eventually { llm.requests().count == 1 })
            worker.kill(SIGTERM)
            #expect(worker.waitFor("draining 0 request(s) and 1 Discord reply in flight") != nil)
            #expect(worker.waitForExit(timeout: 10) == 0)
            let reply = try #require(fake.restCalls("POST", "/channels/66/messages", timeout: 0)?.first)
            #expect(reply.body["content"] as? String == "echo: finish me [messages=2]")
        }

        @Test func twoCharacters_withTheirOwnTokens_underWhisperd_eachAnswersOnlyItsOwnMentions() throws {
            let ariaToken = "aria-token-NOT-FOR-LOGS-2"
            let fake = try FakeDiscord(bots: [Self.token: Self.elena, ariaToken: FakeDiscord.Bot(id: "901", name: "Aria")])
            let llm = try TestLLM()
            let scratch = Scratch()
            for name in ["elena", "aria"] { scratch.write("characters/\(name)/character.md", "You are \(name).\n") }
            scratch.write(
                "roster.yaml",
                """
                defaults:
                  env:
                    DISCORD_API_BASE: \(fake.apiBase)
                    LLM_BASE_URL: \(llm.baseURL)
                    LLM_MODEL_NAME: test-model
                characters:
                  elena:
                    port: \(freePort())
                    env: {DISCORD_TOKEN: \(Self.token)}
                  aria:
                    port: \(freePort())
                    env: {DISCORD_BOT_TOKEN: \(ariaToken)}
                """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("startup complete: 2/2 characters ready") != nil)
            let both = fake.wait { connections, _ in
                connections.filter { $0.sessionID != nil }.count == 2 ? connections : nil
            }
            let connections = try #require(both)
            let elenaIndex = try #require(connections.firstIndex { $0.token == Self.token })
            let ariaIndex = 1 - elenaIndex
            // Discord sends every message to every bot in the guild.
            for index in [elenaIndex, ariaIndex] {
                fake.dispatch(index, "MESSAGE_CREATE", Self.mention("11", "elena, hello", bot: "900"))
                fake.dispatch(index, "MESSAGE_CREATE", Self.mention("12", "aria, hello", bot: "901"))
            }
            let replies = try #require(
                fake.restCalls("POST", "/messages", count: 2), "\(fake.calls.map { "\($0.method) \($0.path) \($0.status)" }) \(whisperd.log.suffix(30))")
            #expect(eventually { whisperd.character("aria")?["facets"] as? [String: String] != nil })
            let byToken = Dictionary(grouping: replies) { $0.authorization }
            #expect(byToken["Bot \(Self.token)"]?.map { ($0.body["message_reference"] as? [String: Any])?["message_id"] as? String } == ["11"])
            #expect(byToken["Bot \(ariaToken)"]?.map { ($0.body["message_reference"] as? [String: Any])?["message_id"] as? String } == ["12"])
            #expect(eventually { (whisperd.character("elena")?["facets"] as? [String: String])?["discord"] == "ok" })
            #expect((whisperd.character("aria")?["facets"] as? [String: String])?["discord"] == "ok")
            #expect(fake.calls.filter { $0.path.hasSuffix("/messages") }.count == 2, "nobody answered the other's mention")
            for secret in [Self.token, ariaToken] {
                #expect(!whisperd.log.joined(separator: "\n").contains(secret))
                #expect(!(scratch.read("logs/elena.log") ?? "").contains(secret) && !(scratch.read("logs/aria.log") ?? "").contains(secret))
            }
        }

        @Test func rollingRestart_handsTheGatewaySessionOver_noMessageMissedOrAnsweredTwice() throws {
            let fake = try FakeDiscord(bots: [Self.token: Self.elena])
            let llm = try TestLLM()
            let scratch = Scratch()
            scratch.write("characters/elena/character.md", "You are elena.\n")
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      elena:
                        port: \(freePort())
                        health: {ready: notify, ready_timeout: 30s}
                        env: {DISCORD_TOKEN: \(Self.token), DISCORD_API_BASE: \(fake.apiBase), LLM_BASE_URL: \(llm.baseURL), LLM_MODEL_NAME: test-model}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("startup complete: 1/1 characters ready") != nil)
            let session = try #require(fake.wait { connections, _ in connections.first?.sessionID })
            #expect(eventually { (whisperd.character("elena")?["facets"] as? [String: String])?["discord"] == "ok" })
            fake.dispatch(session: session, "MESSAGE_CREATE", Self.mention("1", "before"))
            #expect(fake.restCalls("POST", "/messages", count: 1) != nil)

            // Messages keep coming while elena is rolled over to a new process.
            let socket = scratch.path + "/run/control.sock"
            let restart = Background { try? runCommand(whisperctlBinary(), ["--socket", socket, "restart", "--rolling", "elena"]) }
            for index in 2...30 {
                fake.dispatch(session: session, "MESSAGE_CREATE", Self.mention("\(index)", "message \(index)"))
                usleep(20_000)
            }
            let result = try #require(restart.value())
            #expect(result?.code == 0, "\(String(describing: result?.stderr))")
            #expect(whisperd.waitFor("rolled over to pid") != nil)
            for index in 31...33 { fake.dispatch(session: session, "MESSAGE_CREATE", Self.mention("\(index)", "after \(index)")) }

            let replies = try #require(
                fake.restCalls("POST", "/messages", count: 33, timeout: 30),
                "\(fake.calls.count) calls; ops \(fake.connections.map { $0.payloads.map { $0["op"] as? Int ?? -1 } }); \((try? runCommand("/bin/sh", ["-c", "ls -la \(scratch.path)/logs \(scratch.path)/state/elena; cat \(scratch.path)/logs/elena.log*"]))?.stdout ?? "")")
            let answered = replies.compactMap { ($0.body["message_reference"] as? [String: Any])?["message_id"] as? String }
            #expect(answered.count == 33 && Set(answered) == Set((1...33).map(String.init)), "\(answered.sorted())")
            #expect(fake.restCalls("POST", "/messages", count: 34, timeout: 1) == nil, "a message was answered twice")
            // One session throughout: identified once, resumed by the new process.
            let payloads = fake.connections.flatMap(\.payloads)
            #expect(payloads.filter { $0["op"] as? Int == 2 }.count == 1, "identified again instead of resuming")
            #expect(payloads.contains { $0["op"] as? Int == 6 && ($0["d"] as? [String: Any])?["session_id"] as? String == session })
            #expect((scratch.read("logs/elena.log") ?? "").contains("session handed over to the new process"))
        }

        @Test func aRefusedToken_reportsDiscordDown_withoutAReconnectStorm_orARestart() throws {
            let fake = try FakeDiscord(bots: [:])
            let scratch = Scratch()
            scratch.write("characters/elena/character.md", "You are Elena.\n")
            scratch.write(
                "roster.yaml",
                """
                characters:
                  elena:
                    port: \(freePort())
                    env: {DISCORD_TOKEN: revoked-token-value, DISCORD_GATEWAY_URL: \(fake.gatewayURL)}
                """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let facet = "down:gateway closed 4004: authentication failed (DISCORD_TOKEN is wrong or was reset)"
            #expect(eventually { (whisperd.character("elena")?["facets"] as? [String: String])?["discord"] == facet })
            #expect(eventually { whisperd.healthJSON().map { "\($0)".contains("gateway closed 4004") } == true })
            let status = try runCommand(whisperctlBinary(), ["--socket", scratch.path + "/run/control.sock", "status"])
            #expect(status.stdout.contains("elena  discord  down: gateway closed 4004"), "\(status.stdout)")
            Thread.sleep(forTimeInterval: 2.5)  // the thing under test is the absence of reconnects (backoff starts at 1 s)
            #expect(fake.connections.count == 1)
            #expect(whisperd.character("elena")?["restarts"] as? Int == 0)
            #expect(!whisperd.log.joined(separator: "\n").contains("revoked-token-value"))
        }
    }
}
