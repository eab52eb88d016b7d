import Foundation
import Glibc
import Testing

/// What a character takes on, on the real worker: the per-user chat rate, concurrent LLM work,
/// the token budget (counted from the LLM's usage, persisted, 429 when spent, reset at the
/// window), and conversations bounded in turns and time without stalling other routes.
extension IntegrationTests {
    @Suite struct AdmissionSection {
        typealias Worker = WorkerAPISection

        /// The raw answer to a chat POST (head and body), for the status and headers.
        static func chat(_ port: Int, user: String, _ message: String = "hello", path: String = "/api/chat") -> String {
            let body = path == "/api/chat"
                ? #"{"user_id":"\#(user)","message":"\#(message)"}"# : #"{"user_id":"\#(user)","messages":[\#(message)]}"#
            return rawHTTP(
                port: port,
                "POST \(path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)",
                timeout: 20) ?? ""
        }

        static func status(_ answer: String) -> Int { Int(answer.split(separator: " ").dropFirst().first ?? "") ?? 0 }

        static func json(_ answer: String) -> [String: Any] {
            guard let start = answer.range(of: "\r\n\r\n") else { return [:] }
            return (try? JSONSerialization.jsonObject(with: Data(answer[start.upperBound...].utf8))) as? [String: Any] ?? [:]
        }

        @Test func chatRateLimit_perUser_429WithRetryAfter_inWhisperEnginesShape() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Worker.startWorker(scratch, llm: llm, environment: ["CHAT_RATE_LIMIT": "2/1m"])
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(Self.status(Self.chat(port, user: "u1")) == 200)
            #expect(Self.status(Self.chat(port, user: "u1")) == 200)
            let refused = Self.chat(port, user: "u1")
            #expect(Self.status(refused) == 429, "\(refused)")
            #expect(refused.contains("\r\nRetry-After: 30\r\n"), "\(refused)")
            let object = Self.json(refused)
            #expect(object["success"] as? Bool == false)
            #expect(object["bot_name"] as? String == "elena")
            #expect((object["error"] as? String)?.contains("CHAT_RATE_LIMIT=2/1m") == true, "\(object)")
            #expect(Self.status(Self.chat(port, user: "u2")) == 200, "another user is not held back")
            // A conversation counts its messages (at most the rate's count: it may take a full burst).
            #expect(Self.status(Self.chat(port, user: "u3")) == 200)
            #expect(Self.status(Self.chat(port, user: "u3", #""a","b""#, path: "/api/conversation")) == 429)
            #expect(Self.status(Self.chat(port, user: "u4", #""a","b","c""#, path: "/api/conversation")) == 200)
            #expect(llm.requests().count == 7, "a refused chat never reaches the LLM")
        }

        @Test func llmMaxConcurrent_refusesWorkBeyondTheBound_andFreesTheSlot() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            llm.script([["delay": 1.0]])
            let (worker, port) = try Worker.startWorker(scratch, llm: llm, environment: ["LLM_MAX_CONCURRENT": "1"])
            defer { withExtendedLifetime((worker, scratch)) {} }
            let slow = StatusList()
            let started = DispatchSemaphore(value: 0)
            let done = DispatchSemaphore(value: 0)
            Thread {
                started.signal()
                slow.add(Self.status(Self.chat(port, user: "slow")))
                done.signal()
            }.start()
            started.wait()
            // The slow chat holds the one slot until the LLM answers (1 s).
            #expect(eventually(timeout: 5) { llm.requests().count == 1 })
            let refused = Self.chat(port, user: "other")
            #expect(Self.status(refused) == 429 && refused.contains("Retry-After: 1"), "\(refused)")
            #expect((Self.json(refused)["error"] as? String)?.contains("LLM_MAX_CONCURRENT=1") == true)
            #expect(done.wait(timeout: .now() + 10) == .success)
            #expect(slow.values == [200])
            #expect(Self.status(Self.chat(port, user: "other")) == 200, "the slot is free again")
        }

        @Test func tokenBudget_countedFromUsage_persisted_429WhenSpent_resetAtTheWindow() throws {
            let scratch = Scratch()
            let llm = try TestLLM()  // Reports 18 tokens a chat.
            let listener = try DatagramListener(path: scratch.path + "/notify.sock")
            let environment = [
                "LLM_TOKEN_BUDGET": "30/1d", "WHISPERD_STATE_DIR": scratch.path + "/state", "NOTIFY_SOCKET": listener.path,
            ]
            var (worker, port) = try Worker.startWorker(scratch, llm: llm, environment: environment)
            #expect(Self.status(Self.chat(port, user: "u1")) == 200)
            #expect(scratch.read("state/budget/elena")?.hasSuffix(" 18\n") == true, "\(scratch.read("state/budget/elena") ?? "none")")
            #expect(Self.status(Self.chat(port, user: "u2")) == 200, "12 tokens were left: the chat may start")
            let spent = Self.chat(port, user: "u3")
            #expect(Self.status(spent) == 429, "\(spent)")
            #expect((Self.json(spent)["error"] as? String)?.contains("LLM token budget is spent (LLM_TOKEN_BUDGET=30/1d)") == true)
            #expect(spent.contains("Retry-After: "))
            #expect(listener.receive(containing: "X_WHISPERD_FACET=llm:degraded:budget") != nil)
            let metrics = rawHTTP(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") ?? ""
            #expect(metrics.contains("whisperd_worker_llm_budget_remaining_tokens{character=\"elena\"} 0"), "\(metrics.suffix(400))")
            #expect(llm.requests().count == 2)

            // Restarted, it remembers what was spent.
            worker.kill()
            _ = worker.waitForExit()
            (worker, port) = try Worker.startWorker(scratch, llm: llm, environment: environment)
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(Self.status(Self.chat(port, user: "u4")) == 429)
            #expect(llm.requests().count == 2)
        }

        /// A provider that reports no usage: the tokens are estimated from the texts (about four
        /// characters each), not counted as nothing.
        @Test func tokenBudget_estimatesWhenTheProviderReportsNoUsage() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            llm.script([["reply": String(repeating: "r", count: 400), "no_usage": true]])
            let (worker, port) = try Worker.startWorker(
                scratch, llm: llm, environment: ["LLM_TOKEN_BUDGET": "100000/1d", "WHISPERD_STATE_DIR": scratch.path + "/state"])
            defer { withExtendedLifetime((worker, scratch)) {} }
            #expect(Self.status(Self.chat(port, user: "u", String(repeating: "m", count: 800))) == 200)
            let spent = scratch.read("state/budget/elena")?.split(separator: " ").last.flatMap { Int($0.dropLast()) } ?? 0
            // The reply's 100 and the message's 200, with the system prompt on top.
            #expect(spent > 300 && spent < 5000, "\(spent)")
        }

        @Test func tokenBudget_resetsAtTheNextWindow() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Worker.startWorker(
                scratch, llm: llm, environment: ["LLM_TOKEN_BUDGET": "10/2s", "WHISPERD_STATE_DIR": scratch.path + "/state"])
            defer { withExtendedLifetime((worker, scratch)) {} }
            // Spent within a window of 2 s (the first chat may fall just before its end: then again).
            var refusedOnce = false
            for _ in 0..<3 where !refusedOnce {
                #expect(Self.status(Self.chat(port, user: "u")) == 200)
                refusedOnce = Self.status(Self.chat(port, user: "u")) == 429
            }
            #expect(refusedOnce)
            #expect(eventually(timeout: 5) { Self.status(Self.chat(port, user: "u")) == 200 }, "a new window, a new budget")
        }

        @Test func aGiantConversation_is422_andALongOne_stopsAtItsTimeLimit() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Worker.startWorker(
                scratch, llm: llm, environment: ["CONVERSATION_MAX_TURNS": "5", "CONVERSATION_MAX_SECONDS": "1"])
            defer { withExtendedLifetime((worker, scratch)) {} }
            let giant = Array(repeating: #""m""#, count: 6).joined(separator: ",")
            let refused = Self.chat(port, user: "u", giant, path: "/api/conversation")
            #expect(Self.status(refused) == 422)
            let detail = (Self.json(refused)["detail"] as? [[String: Any]])?.first
            #expect(detail?["type"] as? String == "too_long")
            #expect(llm.requests().isEmpty)

            let body = #"{"user_id":"u","messages":["a","b","c"],"delay_between_ms":600}"#
            let answer = rawHTTP(
                port: port,
                "POST /api/conversation HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)", timeout: 10) ?? ""
            #expect(Self.status(answer) == 504, "\(answer)")
            let object = Self.json(answer)
            #expect((object["turns"] as? [Any])?.count == 2, "\(object)")
            #expect((object["error"] as? String)?.contains("CONVERSATION_MAX_SECONDS") == true)
            #expect(llm.requests().count == 2)
        }

        /// Conversations that wait between turns hold no thread: with more of them in progress
        /// than the pool has threads, user state and health are still answered at once.
        @Test func conversationsInProgress_doNotStallOtherRoutes() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Worker.startWorker(scratch, llm: llm, environment: ["WORKER_THREADS": "4"])
            defer { withExtendedLifetime((worker, scratch)) {} }
            let group = DispatchGroup()
            let statuses = StatusList()
            for index in 0..<12 {
                group.enter()
                DispatchQueue.global().async {
                    let body = #"{"user_id":"c\#(index)","messages":["a","b"],"delay_between_ms":3000}"#
                    let answer = rawHTTP(
                        port: port,
                        "POST /api/conversation HTTP/1.1\r\nHost: x\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)",
                        timeout: 20) ?? ""
                    statuses.add(Self.status(answer))
                    group.leave()
                }
            }
            // Every conversation has had its first turn: all twelve are now waiting.
            #expect(eventually(timeout: 10) { llm.requests().count >= 12 })
            let started = Date()
            let state = postJSON(port: port, path: "/api/user-state", ["user_id": "c0"], timeout: 5)
            #expect(state.status == 200)
            #expect(Date().timeIntervalSince(started) < 1, "user state waited \(Date().timeIntervalSince(started)) s")
            #expect(group.wait(timeout: .now() + 30) == .success)
            #expect(statuses.values == Array(repeating: 200, count: 12))
        }
    
        /// whisperd hears the worker's spending: status and `/metrics` show the tokens spent and
        /// what is left of the budget, and the `llm` facet says when it is spent.
        @Test func whisperd_showsTheTokensSpent_andTheBudgetLeft() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            scratch.write("characters/elena/character.md", "You are Elena.\n")
            let port = freePort()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      elena:
                        port: \(port)
                        health: {ready: notify}
                        env: {LLM_BASE_URL: "\(llm.baseURL)", LLM_MODEL_NAME: test-model, LLM_TOKEN_BUDGET: 30/1d}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("elena: starting -> running") != nil)
            #expect(Self.status(Self.chat(port, user: "u1")) == 200)
            #expect(Self.status(Self.chat(port, user: "u2")) == 200)
            #expect(Self.status(Self.chat(port, user: "u3")) == 429)
            #expect(eventually { whisperd.character("elena")?["llm_tokens"] as? Int == 36 }, "\(whisperd.character("elena") ?? [:])")
            #expect(whisperd.character("elena")?["llm_budget_remaining"] as? Int == 0)
            #expect((whisperd.character("elena")?["facets"] as? [String: String])?["llm"] == "degraded:budget")
            let metrics = whisperd.get("/metrics")?.1 ?? ""
            #expect(metrics.contains("whisperd_llm_tokens_total{character=\"elena\"} 36"), "\(metrics.suffix(600))")
            #expect(metrics.contains("whisperd_llm_budget_remaining_tokens{character=\"elena\"} 0"))
        }
}
}
