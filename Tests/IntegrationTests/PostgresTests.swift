import Foundation
import Glibc
import Testing

/// The same store cases on a real PostgreSQL cluster started by the test, plus `migrate` and
/// `migrate-store`.
extension IntegrationTests {
    @Suite struct PostgresSection {
        @Test func theWorkerOnPostgres_history_trust_concurrency_clear() throws {
            let postgres = try TestPostgres()
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try WorkerAPISection.startWorker(scratch, llm: llm, environment: ["POSTGRES_URL": postgres.url])
            defer { withExtendedLifetime(worker) {} }
            #expect(postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "I live in Oslo"]).status == 200)
            let second = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "again"])
            #expect(second.json["response"] as? String == "echo: again [messages=4]")
            var state = postJSON(port: port, path: "/api/user-state", ["user_id": "u1"])
            #expect(state.json["memory_count"] as? Int == 4)
            #expect(state.json["trust_score"] as? Int == 2)
            #expect((state.json["knowledge_facts"] as? [[String: String]])?.map { $0["fact"] } == ["lives in: Oslo"])

            // Several facts in one reply's statement (a text[] parameter): quotes, a backslash,
            // commas and braces arrive as given; a repeated fact is kept once.
            let tricky = #"My name is "Ada" \ Lovelace. I like tea, {milk}, "sugar". I like tea, {milk}, "sugar"."#
            #expect(postJSON(port: port, path: "/api/chat", ["user_id": "u2", "message": tricky]).status == 200)
            let trickyState = postJSON(port: port, path: "/api/user-state", ["user_id": "u2"])
            #expect((trickyState.json["knowledge_facts"] as? [[String: String]])?.map { $0["fact"] }
                == [#"likes: tea, {milk}, "sugar"#, #"name: Ada" \ Lovelace"#])
            #expect(trickyState.json["trust_score"] as? Int == 1)

            let statuses = StatusList()
            DispatchQueue.concurrentPerform(iterations: 50) { index in
                statuses.add(postJSON(port: port, path: "/api/chat", ["user_id": "crowd", "message": "m\(index)"]).status)
            }
            #expect(statuses.values.count == 50 && statuses.values.allSatisfy { $0 == 200 })
            #expect(try postgres.query("SELECT count(*) FROM messages WHERE character = 'elena' AND user_id = 'crowd'") == ["100"])
            #expect(try postgres.query("SELECT count(DISTINCT id) FROM messages") == ["106"])

            // A statement that fails fails alone, whether its chat came alone or in a batch (see
            // PostgresBatchTests for a batch made on purpose).
            try postgres.refuseMessagesStartingRefuse()
            let refused = StatusList()
            let kept = StatusList()
            DispatchQueue.concurrentPerform(iterations: 30) { index in
                let refuse = index % 3 == 0
                let status = postJSON(port: port, path: "/api/chat", ["user_id": "mixed", "message": (refuse ? "refuse-" : "keep-") + "\(index)"]).status
                (refuse ? refused : kept).add(status)
            }
            #expect(refused.values.count == 10 && refused.values.allSatisfy { $0 == 503 })
            #expect(kept.values.count == 20 && kept.values.allSatisfy { $0 == 200 })
            #expect(try postgres.query("SELECT count(*) FROM messages WHERE user_id = 'mixed' AND content LIKE 'keep-%'") == ["20"])
            #expect(try postgres.query("SELECT count(*) FROM messages WHERE user_id = 'mixed'") == ["40"])
            try postgres.allowAllMessages()

            let cleared = postJSON(port: port, path: "/api/clear-user-data", ["user_id": "u1"])
            #expect(cleared.json["memories_cleared"] as? Int == 4)
            #expect(cleared.json["knowledge_cleared"] as? Int == 1)
            state = postJSON(port: port, path: "/api/user-state", ["user_id": "u1"])
            #expect(state.json["memory_count"] as? Int == 0)
            let diagnostics = getJSON(port: port, path: "/api/diagnostics")
            #expect((diagnostics.json["database_status"] as? [String: Bool]) == ["postgres": true, "sqlite": false])
        }

        @Test func migrate_isIdempotent_andSafeConcurrently_onBothStores() throws {
            let postgres = try TestPostgres()
            let environment = ["PATH": "/usr/bin:/bin", "POSTGRES_URL": postgres.url]
            let runs = try (0..<4).map { _ in try ChildProcess(whisperdBinary(), ["migrate"], environment: environment) }
            for run in runs { #expect(run.waitForExit(timeout: 30) == 0, "\(run.output)") }
            let again = try runCommand(whisperdBinary(), ["migrate"], environment: environment)
            #expect(again.code == 0)
            #expect(again.stdout.contains("migrated postgresql://whisperd@127.0.0.1"))
            #expect(try postgres.query("SELECT version FROM schema_migrations") == ["1"])
            #expect(try postgres.query("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('messages','trust','facts')") == ["3"])

            let scratch = Scratch()
            let sqlite = scratch.path + "/memory/elena.sqlite3"
            try FileManager.default.createDirectory(atPath: scratch.path + "/memory", withIntermediateDirectories: true)
            let local = ["PATH": "/usr/bin:/bin", "WHISPERD_STATE_DIR": scratch.path]
            let empty = try runCommand(whisperdBinary(), ["migrate"], environment: local)
            #expect(empty.code == 0 && empty.stdout.contains("nothing to migrate"))
            let sqliteRuns = try (0..<4).map { _ in try ChildProcess(whisperdBinary(), ["migrate", "--sqlite", sqlite], environment: local) }
            for run in sqliteRuns { #expect(run.waitForExit(timeout: 30) == 0, "\(run.output)") }
            let found = try runCommand(whisperdBinary(), ["migrate"], environment: local)
            #expect(found.stdout.contains("migrated \(sqlite)"))
            let broken = try runCommand(
                whisperdBinary(), ["migrate"], environment: ["PATH": "/usr/bin:/bin", "POSTGRES_URL": "postgresql://whisperd:hunter2@127.0.0.1:\(freePort())/x"])
            #expect(broken.code == 1)
            #expect(broken.stderr.contains("postgresql://whisperd:***@127.0.0.1"))
            #expect(!broken.stderr.contains("hunter2"))
        }

        @Test func migrateStore_copiesEverything_once() throws {
            let postgres = try TestPostgres()
            let scratch = Scratch()
            let llm = try TestLLM()
            let stages = "evolution_stages:\n  - {name: Stranger, trust_range: [-100, 1]}\n  - {name: Friend, trust_range: [2, 100]}\n"
            var (worker, port) = try WorkerAPISection.startWorker(scratch, llm: llm, files: ["evolution.yaml": stages])
            for message in ["My name is Ada", "second", "third"] {
                #expect(postJSON(port: port, path: "/api/chat", ["user_id": "ada", "message": message]).status == 200)
            }
            #expect(postJSON(port: port, path: "/api/chat", ["user_id": "bob", "message": "hello"]).status == 200)
            let before = postJSON(port: port, path: "/api/user-state", ["user_id": "ada"]).json
            worker.kill(SIGTERM)
            #expect(worker.waitForExit() == 0)

            let sqlite = scratch.path + "/memory/elena.sqlite3"
            let copy = try runCommand(whisperdBinary(), ["migrate-store", "--from", "sqlite:" + sqlite, "--to", postgres.url])
            #expect(copy.code == 0, "\(copy.stderr)")
            #expect(copy.stdout.contains("copied 8 messages, 2 trust scores and 1 facts of elena"))
            let twice = try runCommand(whisperdBinary(), ["migrate-store", "--from", "sqlite:" + sqlite, "--to", postgres.url])
            #expect(twice.code == 1)
            #expect(twice.stderr.contains("already holds 8 messages of elena"))
            #expect(try postgres.query("SELECT count(*) FROM messages") == ["8"])

            (worker, port) = try WorkerAPISection.startWorker(scratch, llm: llm, environment: ["POSTGRES_URL": postgres.url])
            let after = postJSON(port: port, path: "/api/user-state", ["user_id": "ada"]).json
            for key in ["memory_count", "trust_score"] { #expect(after[key] as? Int == before[key] as? Int) }
            #expect(after["trust_level"] as? String == "Friend")
            #expect((after["knowledge_facts"] as? [[String: String]])?.map { $0["fact"] } == ["name: Ada"])
            #expect(
                (after["recent_memories"] as? [[String: Any]])?.compactMap { $0["content"] as? String } == ["third", "second", "My name is Ada"])
            // History continues from the copied conversation.
            let next = postJSON(port: port, path: "/api/chat", ["user_id": "ada", "message": "fourth"])
            #expect(next.json["response"] as? String == "echo: fourth [messages=8]")
        }

        @Test func postgresDownAtStart_storeDown_chat503_thenRecovers() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let postgres = try TestPostgres()
            postgres.stop()
            let listener = try DatagramListener(path: scratch.path + "/notify.sock")
            let (worker, port) = try WorkerAPISection.startWorker(
                scratch, llm: llm, environment: ["POSTGRES_URL": postgres.url, "NOTIFY_SOCKET": listener.path])
            defer { withExtendedLifetime(worker) {} }
            #expect(listener.receive(containing: "READY=1")?.contains("X_WHISPERD_FACET=store:down:postgres") == true)
            let down = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "anyone?"])
            #expect(down.status == 503)
            #expect((down.json["error"] as? String)?.contains("conversation store unavailable") == true)
            #expect(llm.requests().isEmpty)
            #expect(getJSON(port: port, path: "/health").status == 200)

            // The database comes back: no restart, the schema is made, chat works, the facet says so.
            try postgres.restart()
            let back = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "back?"])
            #expect(back.status == 200, "\(back.json)")
            #expect(listener.receive(containing: "X_WHISPERD_FACET=store:ok") != nil)
            #expect(try postgres.query("SELECT count(*) FROM messages") == ["2"])
        }
    }
}
