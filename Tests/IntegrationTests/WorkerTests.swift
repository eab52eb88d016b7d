import Foundation
import Glibc
import Testing

/// The character worker (`whisperd worker NAME`) over real HTTP, against the scripted LLM
/// server and a real SQLite file.
extension IntegrationTests {
    @Suite struct WorkerAPISection {
        static let persona = """
            You are Elena. You are talking with {user_name} in #{channel_name}. It is {current_datetime}.
            """

        /// A character folder under the scratch dir and a worker serving it.
        static func startWorker(
            _ scratch: Scratch, llm: TestLLM?, files: [String: String] = [:], environment extra: [String: String] = [:],
            port: Int = freePort()
        ) throws -> (ChildProcess, Int) {
            if scratch.read("characters/elena/character.md") == nil {
                scratch.write("characters/elena/character.md", persona)
                scratch.write("characters/elena/core.yaml", "purpose: Teach the sea\ntimezone: UTC\n")
            }
            for (file, text) in files { scratch.write("characters/elena/" + file, text) }
            var environment = [
                "PATH": "/usr/bin:/bin", "API_PORT": String(port), "WHISPERD_CHARACTERS_DIR": scratch.path + "/characters",
                "WHISPERD_SQLITE_PATH": scratch.path + "/memory/elena.sqlite3", "WORKER_THREADS": "16",
            ]
            if let llm {
                environment["LLM_BASE_URL"] = llm.baseURL
                environment["LLM_MODEL_NAME"] = "test-model"
                environment["LLM_API_KEY"] = "sk-test-secret-value"
            }
            environment.merge(extra) { $1 }
            let worker = try ChildProcess(whisperdBinary(), ["worker", "elena"], environment: environment)
            guard worker.waitFor("serving elena") != nil else { throw TestFailure("the worker did not start: \(worker.output)") }
            return (worker, port)
        }

        /// The worker raises its open-file soft limit to the hard one (its API's connection caps
        /// need more than a conventional 1024).
        @Test func theWorker_raisesItsOpenFileLimit() throws {
            let scratch = Scratch()
            scratch.write("characters/elena/character.md", Self.persona)
            let port = freePort()
            let worker = try ChildProcess(
                "/usr/bin/prlimit", ["--nofile=512:4096", whisperdBinary(), "worker", "elena"],
                environment: [
                    "PATH": "/usr/bin:/bin", "API_PORT": String(port), "WHISPERD_CHARACTERS_DIR": scratch.path + "/characters",
                    "WHISPERD_SQLITE_PATH": scratch.path + "/memory/elena.sqlite3",
                ])
            defer { withExtendedLifetime(worker) {} }
            #expect(worker.waitFor("serving elena") != nil, "\(worker.output)")
            let limits = try String(contentsOfFile: "/proc/\(worker.pid)/limits", encoding: .utf8)
            let line = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }.map(String.init) ?? ""
            #expect(line.split(separator: " ", omittingEmptySubsequences: true).suffix(3).prefix(2) == ["4096", "4096"], "\(line)")
        }

        @Test func chat_hasWhisperEnginesShape_carriesHistory_andFillsThePrompt() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Self.startWorker(scratch, llm: llm)
            defer { withExtendedLifetime(worker) {} }
            let first = postJSON(
                port: port, path: "/api/chat",
                ["user_id": "u1", "message": "hello", "context": ["user_name": "Sam", "channel_name": "general"], "extra": 1])
            #expect(first.status == 200)
            #expect(first.json["success"] as? Bool == true)
            #expect(first.json["response"] as? String == "echo: hello [messages=2]")
            #expect(first.json["bot_name"] as? String == "elena")
            #expect(first.json["model_used"] as? String == "test-model-1")
            #expect(first.json["mode"] as? String == "fast")
            #expect(first.json["complexity"] as? String == "SIMPLE")
            #expect(first.json["memory_stored"] as? Bool == true)
            #expect(first.json["processing_time_ms"] is Double)
            let stamp = first.json["timestamp"] as? String ?? ""
            #expect(stamp.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}/) != nil, "\(stamp)")

            let second = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "again"])
            #expect(second.json["response"] as? String == "echo: again [messages=4]")
            let asked = llm.requests().map { $0["body"] as? [String: Any] ?? [:] }
            try #require(asked.count == 2)
            let messages = (asked[1]["messages"] as? [[String: String]] ?? []).map { "\($0["role"]!): \($0["content"]!)" }
            #expect(messages.count == 4)
            #expect(messages.dropFirst().map { $0 } == ["user: hello", "assistant: echo: hello [messages=2]", "user: again"])
            let system = (asked[0]["messages"] as? [[String: String]])?.first?["content"] ?? ""
            #expect(system.contains("You are talking with Sam in #general. It is "))
            #expect(system.contains("CORE IDENTITY\nPurpose: Teach the sea"))
            #expect(!system.contains("{current_datetime}"))
            // The second request had no context: the user is named by id, the unknown key stays.
            let secondSystem = (asked[1]["messages"] as? [[String: String]])?.first?["content"] ?? ""
            #expect(secondSystem.contains("talking with u1 in #{channel_name}"))
            #expect(asked[0]["max_tokens"] as? Int == 512)
            #expect(asked[0]["model"] as? String == "test-model")
            #expect(llm.requests().allSatisfy { $0["bearer"] as? Bool == true })
            #expect(!worker.output.contains("sk-test-secret-value"))
        }

        @Test func badRequests_get422InFastAPIsShape_andUnknownRoutes404() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Self.startWorker(scratch, llm: llm)
            defer { withExtendedLifetime(worker) {} }
            let missing = postJSON(port: port, path: "/api/chat", ["message": "hi"])
            #expect(missing.status == 422)
            let detail = try #require((missing.json["detail"] as? [[String: Any]])?.first)
            #expect(detail["type"] as? String == "missing")
            #expect(detail["loc"] as? [String] == ["body", "user_id"])
            #expect(detail["msg"] as? String == "Field required")
            #expect((detail["input"] as? [String: Any])?["message"] as? String == "hi")
            let long = postJSON(port: port, path: "/api/chat", ["user_id": "u", "message": String(repeating: "x", count: 4001)])
            #expect(long.status == 422)
            #expect(((long.json["detail"] as? [[String: Any]])?.first?["type"] as? String) == "string_too_long")
            #expect(postJSON(port: port, path: "/api/chat", "{not json").status == 422)
            #expect(postJSON(port: port, path: "/api/chat", ["user_id": "", "message": "x"]).status == 422)
            #expect(postJSON(port: port, path: "/api/nothing", ["user_id": "u"]).status == 404)
            #expect(getJSON(port: port, path: "/api/chat").status == 405)
            #expect(llm.requests().isEmpty)
            let health = getJSON(port: port, path: "/health")
            #expect(health.status == 200)
            #expect(health.json["status"] as? String == "healthy")
        }

        @Test func llmFailuresAreNotMasked_theUserTurnStays_429sAreRetriedAfterRetryAfter() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Self.startWorker(scratch, llm: llm)
            defer { withExtendedLifetime(worker) {} }
            llm.script([["status": 500], ["status": 502], ["status": 503]])
            let failed = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "are you there?"])
            #expect(failed.status == 502)
            #expect(failed.json["success"] as? Bool == false)
            #expect((failed.json["error"] as? String)?.contains("HTTP 503") == true)
            #expect(failed.json["bot_name"] as? String == "elena")
            #expect(llm.requests().count == 3)  // the first try and two retries
            let state = postJSON(port: port, path: "/api/user-state", ["user_id": "u1"])
            #expect(state.json["memory_count"] as? Int == 1)
            #expect(((state.json["recent_memories"] as? [[String: Any]])?.first?["content"] as? String) == "are you there?")
            #expect(state.json["trust_score"] as? Int == 0)

            llm.script([["status": 429, "retry_after": 1]])
            let retried = postJSON(port: port, path: "/api/chat", ["user_id": "u2", "message": "patience"])
            #expect(retried.status == 200)
            let times = llm.requests().suffix(2).compactMap { $0["at"] as? Double }
            #expect(times.count == 2 && times[1] - times[0] >= 0.9)

            llm.script([["status": 400]])
            let refused = postJSON(port: port, path: "/api/chat", ["user_id": "u3", "message": "bad"])
            #expect(refused.status == 502)
            #expect(llm.requests().count == 6)  // a 400 is not retried
        }

        @Test func aSlowLLMTimesOut_asA502() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Self.startWorker(scratch, llm: llm, environment: ["LLM_TIMEOUT": "1", "LLM_RETRIES": "0"])
            defer { withExtendedLifetime(worker) {} }
            llm.script([["delay": 3]])
            let started = Date()
            let slow = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "slow?"])
            #expect(slow.status == 502)
            #expect((slow.json["error"] as? String)?.contains("timed out") == true)
            #expect(Date().timeIntervalSince(started) < 2.5)
        }

        @Test func withoutAnLLM_chatIs503_andTheFacetSaysDown() throws {
            let scratch = Scratch()
            let listener = try DatagramListener(path: scratch.path + "/notify.sock")
            let (worker, port) = try Self.startWorker(scratch, llm: nil, environment: ["NOTIFY_SOCKET": listener.path])
            defer { withExtendedLifetime(worker) {} }
            let ready = listener.receive(containing: "READY=1")
            #expect(ready?.contains("X_WHISPERD_FACET=llm:down:not configured: set LLM_BASE_URL") == true)
            #expect(ready?.contains("X_WHISPERD_FACET=store:ok") == true)
            let chat = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "hi"])
            #expect(chat.status == 503)
            #expect((chat.json["error"] as? String)?.hasPrefix("LLM not configured: set LLM_BASE_URL") == true)
            #expect(getJSON(port: port, path: "/health").status == 200)
            let diagnostics = getJSON(port: port, path: "/api/diagnostics")
            #expect((diagnostics.json["database_status"] as? [String: Bool])?["sqlite"] == true)
            #expect((diagnostics.json["llm_models"] as? [String: Any])?["main"] is NSNull)
        }

        @Test func sigterm_saysStopping_andFinishesWhatIsInFlight() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let listener = try DatagramListener(path: scratch.path + "/notify.sock")
            let (worker, port) = try Self.startWorker(
                scratch, llm: llm, environment: ["NOTIFY_SOCKET": listener.path, "WHISPERD_STOP_GRACE_MS": "5000"])
            llm.script([["delay": 1.0]])
            let answers = StatusList()
            Thread { answers.add(postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "finish me"]).status) }.start()
            #expect(eventually { llm.requests().count == 1 })
            #expect(listener.receive(containing: "X_WHISPERD_INFLIGHT=1") != nil)
            worker.kill(SIGTERM)
            #expect(listener.receive(containing: "STOPPING=1") != nil)
            #expect(worker.waitForExit(timeout: 10) == 0)
            #expect(eventually { answers.values == [200] })
            #expect(worker.output.contains("draining 1 request(s) in flight"))
        }

        /// Twice a request the in-flight count changes; whisperd hears of it at most once a
        /// second, the last report saying 0 once the API is idle. (A datagram per change made
        /// the worker wait on whisperd whenever its 10-datagram queue was full.)
        @Test func inflightReports_atMostOnceASecond_endingAtZero() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let listener = try DatagramListener(path: scratch.path + "/notify.sock")
            let (worker, port) = try Self.startWorker(scratch, llm: llm, environment: ["NOTIFY_SOCKET": listener.path])
            defer { withExtendedLifetime(worker) {} }
            #expect(listener.receive(containing: "READY=1") != nil)
            let started = Date()
            let done = StatusList()
            Thread {
                DispatchQueue.concurrentPerform(iterations: 8) { thread in
                    for index in 0..<20 {
                        done.add(postJSON(port: port, path: "/api/chat", ["user_id": "u\(thread)", "message": "m\(index)"]).status)
                    }
                }
            }.start()
            let datagrams = listener.receiveAll(grace: 1.5) { done.values.count == 160 }
            let seconds = Date().timeIntervalSince(started) - 1.5
            let reports = datagrams.filter { $0.contains("X_WHISPERD_INFLIGHT=") }
            #expect(done.values.allSatisfy { $0 == 200 })
            #expect(!reports.isEmpty && reports.count <= Int(seconds.rounded(.up)) + 2, "\(reports.count) reports in \(seconds) s")
            #expect(reports.last?.hasSuffix("X_WHISPERD_INFLIGHT=0") == true, "\(reports)")
            // The LLM's spending rides along: 18 tokens a chat as the test LLM reports them.
            #expect(reports.last?.contains("X_WHISPERD_LLM_TOKENS=\(160 * 18)\n") == true, "\(reports.last ?? "")")
        }

        /// A chat that starts and ends between two reports leaves the in-flight count where it
        /// was reported, but its LLM spending is new: the next report still goes out with it.
        /// (It did not: whisperd's token count stayed behind until the count next differed.)
        @Test func aChatBetweenTwoReports_itsSpendingIsStillReported() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let listener = try DatagramListener(path: scratch.path + "/notify.sock")
            let (worker, port) = try Self.startWorker(scratch, llm: llm, environment: ["NOTIFY_SOCKET": listener.path])
            defer { withExtendedLifetime(worker) {} }
            #expect(listener.receive(containing: "READY=1") != nil)
            #expect(postJSON(port: port, path: "/api/chat", ["user_id": "u", "message": "first"]).status == 200)
            // The report after the first chat: 0 in flight, its 18 tokens.
            #expect(listener.receive(containing: "X_WHISPERD_LLM_TOKENS=18\nX_WHISPERD_INFLIGHT=0") != nil)
            // Within the next second: 0 → 1 → 0, back to the count just reported.
            #expect(postJSON(port: port, path: "/api/chat", ["user_id": "u", "message": "second"]).status == 200)
            #expect(listener.receive(containing: "X_WHISPERD_LLM_TOKENS=36\n") != nil)
        }

        @Test func fiftyConcurrentChats_storeAHundredRows() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Self.startWorker(scratch, llm: llm)
            defer { withExtendedLifetime(worker) {} }
            let statuses = StatusList()
            DispatchQueue.concurrentPerform(iterations: 50) { index in
                statuses.add(postJSON(port: port, path: "/api/chat", ["user_id": "crowd", "message": "message \(index)"]).status)
            }
            #expect(statuses.values.count == 50 && statuses.values.allSatisfy { $0 == 200 })
            let state = postJSON(port: port, path: "/api/user-state", ["user_id": "crowd"])
            #expect(state.json["memory_count"] as? Int == 100)
            #expect(state.json["trust_score"] as? Int == 50)
        }

        @Test func trustStages_facts_conversation_andClearingAUser() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let stages = "evolution_stages:\n  - {name: Stranger, trust_range: [-100, 1]}\n  - {name: Friend, trust_range: [2, 100]}\n"
            let (worker, port) = try Self.startWorker(scratch, llm: llm, files: ["evolution.yaml": stages])
            defer { withExtendedLifetime(worker) {} }
            #expect(postJSON(port: port, path: "/api/chat", ["user_id": "sam", "message": "Hi. My name is Sam."]).status == 200)
            var state = postJSON(port: port, path: "/api/user-state", ["user_id": "sam"])
            #expect(state.json["trust_level"] as? String == "Stranger")
            let conversation = postJSON(
                port: port, path: "/api/conversation", ["user_id": "sam", "messages": ["one", "two"], "delay_between_ms": 10])
            #expect(conversation.status == 200)
            let turns = conversation.json["turns"] as? [[String: Any]] ?? []
            #expect(turns.map { $0["user_message"] as? String } == ["one", "two"])
            // Turns carry history: the second saw the first.
            #expect(turns.last?["bot_response"] as? String == "echo: two [messages=6]")
            #expect(conversation.json["total_time_ms"] is Double)
            state = postJSON(port: port, path: "/api/user-state", ["user_id": "sam"])
            #expect(state.json["trust_score"] as? Int == 3)
            #expect(state.json["trust_level"] as? String == "Friend")
            #expect(state.json["memory_count"] as? Int == 6)
            #expect((state.json["knowledge_facts"] as? [[String: String]])?.map { $0["fact"] } == ["name: Sam"])

            let cleared = postJSON(port: port, path: "/api/clear-user-data", ["user_id": "sam"])
            #expect(cleared.json["success"] as? Bool == true)
            #expect(cleared.json["memories_cleared"] as? Int == 6)
            #expect(cleared.json["trust_reset"] as? Bool == true)
            #expect(cleared.json["knowledge_cleared"] as? Int == 1)
            state = postJSON(port: port, path: "/api/user-state", ["user_id": "sam"])
            #expect(state.json["memory_count"] as? Int == 0)
            #expect(state.json["trust_score"] as? Int == 0)
        }

        @Test func killedMidRequest_theUserTurnIsThereAfterRestart() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Self.startWorker(scratch, llm: llm)
            defer { withExtendedLifetime(worker) {} }
            llm.script([["hang": true]])
            let pending = Thread { _ = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "remember me"], timeout: 5) }
            pending.start()
            #expect(eventually { llm.requests().count == 1 })
            worker.kill(SIGKILL)
            _ = worker.waitForExit()
            let (workerAgain, newPort) = try Self.startWorker(scratch, llm: llm)
            defer { withExtendedLifetime(workerAgain) {} }
            let state = postJSON(port: newPort, path: "/api/user-state", ["user_id": "u1"])
            #expect(((state.json["recent_memories"] as? [[String: Any]])?.first?["content"] as? String) == "remember me")
        }

        @Test func diagnostics_andMetricsThatPassPromtool() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try Self.startWorker(scratch, llm: llm)
            defer { withExtendedLifetime(worker) {} }
            #expect(postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "count me"]).status == 200)
            let diagnostics = getJSON(port: port, path: "/api/diagnostics")
            #expect(diagnostics.json["bot_name"] as? String == "elena")
            #expect((diagnostics.json["llm_models"] as? [String: String])?["main"] == "test-model")
            #expect((diagnostics.json["database_status"] as? [String: Bool]) == ["postgres": false, "sqlite": true])
            #expect(diagnostics.json["uptime_seconds"] is Double)
            #expect(diagnostics.json["feature_flags"] is [String: Any])
            let metrics = try #require(rawHTTP(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            let body = String(metrics[metrics.range(of: "\r\n\r\n")!.upperBound...])
            #expect(body.contains(#"whisperd_worker_chat_duration_seconds_count{character="elena"} 1"#))
            #expect(body.contains(#"whisperd_worker_llm_tokens_total{character="elena",kind="completion"} 7"#))
            #expect(body.contains(#"whisperd_worker_requests_total{character="elena",endpoint="chat",status="200"} 1"#))
            let file = scratch.write("metrics.txt", body)
            let check = try runCommand("/bin/sh", ["-c", "promtool check metrics < \(file)"])
            #expect(check.code == 0, "\(check.stdout)\(check.stderr)")
        }

        @Test func aBrokenCharacterFile_stopsTheWorker_namingFileAndLine() throws {
            let scratch = Scratch()
            scratch.write("characters/elena/character.md", Self.persona)
            scratch.write("characters/elena/core.yaml", "purpose: Teach\ntimezone: Mars/Olympus\n")
            let worker = try ChildProcess(
                whisperdBinary(), ["worker", "elena"],
                environment: [
                    "PATH": "/usr/bin:/bin", "API_PORT": String(freePort()), "WHISPERD_CHARACTERS_DIR": scratch.path + "/characters",
                    "WHISPERD_SQLITE_PATH": scratch.path + "/memory.sqlite3",
                ])
            #expect(worker.waitForExit() == 2)
            #expect(worker.output.contains("core.yaml:2: timezone: Mars/Olympus is not an IANA time zone"))
        }
    }
}

/// Statuses collected from concurrent requests.
final class StatusList: @unchecked Sendable {
    // @unchecked: `collected` is only touched with `lock` held.
    private let lock = NSLock()
    private var collected: [Int] = []

    func add(_ value: Int) { lock.withLock { collected.append(value) } }
    var values: [Int] { lock.withLock { collected } }
}
