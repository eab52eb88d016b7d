import Foundation
import Glibc
import Testing

/// DESIGN §10: a character is a tenant. A hostile character, run by the real whisperd as root on
/// this host's cgroups, tries to reach everything that is not its own; every attempt must fail
/// and its neighbour (a built-in worker) must not notice.
@Suite(.serialized) struct TenantSection {
    @Test func hostileCharacter_reachesNothingOfItsNeighbour_andTheNeighbourIsUnaffected() throws {
        try #require(geteuid() == 0, "tenants need whisperd to run as root")
        let scratch = Scratch()
        let llm = try TestLLM()
        let elenaPort = freePort()
        scratch.write("characters/elena/character.md", "You are Elena.\n")
        // Secrets for the neighbour only, readable by root alone (as install.sh leaves them).
        let envFile = scratch.write(".env.elena", "DISCORD_TOKEN=elena-secret-token\n")
        // In the scratch directory: the checkout may sit where other users cannot enter.
        let hostile = scratch.write(
            "hostile.py", try String(contentsOfFile: repositoryRoot() + "/Tests/IntegrationTests/Support/hostile_character.py", encoding: .utf8),
            executable: true)
        // A setuid-root program the hostile character may run: no_new_privs must keep it uid-less.
        let setuidID = scratch.path + "/bin/id"
        try FileManager.default.createDirectory(atPath: scratch.path + "/bin", withIntermediateDirectories: true)
        #expect(copyExecutable("/usr/bin/id", to: setuidID, mode: 0o4755))
        scratch.write(
            "roster.yaml",
            """
            defaults:
              restart: "no"
              health: {watchdog: 0}
              limits: {memory: 256M, pids: 64}
            characters:
              elena:
                port: \(elenaPort)
                env_file: [.env.elena]
                env: {LLM_BASE_URL: "\(llm.baseURL)/v1", LLM_MODEL_NAME: test}
              mallory:
                command: [/usr/bin/python3, \(hostile)]
                health: {ready: started}
                after: [elena]
                env:
                  NEIGHBOUR: elena
                  NEIGHBOUR_PORT: "\(elenaPort)"
                  WHISPERD_TEST_STATE: \(scratch.path)/state
                  WHISPERD_TEST_RUNTIME: \(scratch.path)/run
                  WHISPERD_TEST_LOGS: \(scratch.path)/logs
                  WHISPERD_TEST_ROSTER: \(scratch.path)/roster.yaml
                  WHISPERD_TEST_ENV_FILE: \(envFile)
                  WHISPERD_TEST_SETUID_ID: \(setuidID)
            """)
        let whisperd = try WhisperdProcess(scratch: scratch)
        defer { whisperd.terminate() }
        let elenaPID = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
        // A first chat, so the neighbour's store exists and holds something worth stealing.
        llm.script([["content": "Hello from Elena."]])
        #expect(postJSON(port: elenaPort, path: "/api/chat", ["user_id": "u1", "message": "hi"]).status == 200)
        #expect(whisperd.waitFor("mallory: starting -> running", timeout: 20) != nil)

        let report = scratch.path + "/state/mallory/attempts.json"
        #expect(eventually(timeout: 30) { FileManager.default.fileExists(atPath: report) })
        let data = try #require(FileManager.default.contents(atPath: report))
        let table = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let attempts = try #require(table["attempts"] as? [[String: Any]])
        let printed = attempts.map { row in
            "\((row["succeeded"] as? Bool) == false ? "refused  " : "SUCCEEDED") \(row["attempt"] ?? ""): \(row["detail"] ?? "")"
        }
        print("hostile character, \(attempts.count) attempts:\n" + printed.joined(separator: "\n"))
        #expect(attempts.count >= 24)
        for row in attempts where (row["succeeded"] as? Bool) != false {
            Issue.record("the hostile character succeeded: \(row["attempt"] ?? "") (\(row["detail"] ?? ""))")
        }

        // It is a tenant of its own: a dynamic uid, no groups, its own session, its own files.
        let own = try #require(table["own"] as? [String: Any])
        let uid = try #require(own["uid"] as? Int)
        #expect((61184...65519).contains(uid))
        #expect(own["gid"] as? Int == uid)
        #expect((own["groups"] as? [Int])?.isEmpty == true)
        #expect(own["sid_is_own"] as? Bool == true)
        #expect(own["tmpdir"] as? String == scratch.path + "/run/mallory")
        #expect(own["wrote_own_state"] as? Bool == true)
        // The uid is kept for the next start.
        let saved = try #require(scratch.read("state/dynamic-users.json"))
        #expect(saved.contains("\"mallory\" : \"\(uid)\"") || saved.contains("\"mallory\":\"\(uid)\""), "\(saved)")
        var info = stat()
        #expect(stat(scratch.path + "/state/mallory", &info) == 0 && info.st_uid == UInt32(uid) && info.st_mode & 0o777 == 0o700)
        #expect(stat(scratch.path + "/state/elena/memory.sqlite3", &info) == 0 && info.st_uid != UInt32(uid) && info.st_uid != 0)

        // The neighbour did not notice: same process, still ready, still answering.
        let elena = try #require(whisperd.character("elena"))
        #expect(elena["pid"] as? Int == Int(elenaPID))
        #expect(elena["state"] as? String == "running")
        #expect(elena["ready"] as? Bool == true)
        // Status says who each runs as and how much of its sandbox the kernel enforces.
        let elenaTenant = try #require(elena["tenant"] as? [String: Any])
        #expect((61184...65519).contains(elenaTenant["uid"] as? Int ?? 0) && elenaTenant["uid"] as? Int != uid)
        #expect(elenaTenant["sandbox"] as? String == "enforced")
        #expect((whisperd.character("mallory")?["tenant"] as? [String: Any])?["uid"] as? Int == uid)
        let status = try whisperd.ctl("status")
        let rows: [String] = status.stdout.split(separator: "\n").map(String.init)
        let malloryRow = rows.first { $0.hasPrefix("mallory ") } ?? ""
        #expect(status.stdout.contains("USER") && status.stdout.contains("SANDBOX"))
        #expect(malloryRow.contains(" \(uid) ") && malloryRow.contains(" enforced "), "\(status.stdout)")
        llm.script([["content": "Still here."]])
        let chat = postJSON(port: elenaPort, path: "/api/chat", ["user_id": "u1", "message": "still there?"])
        #expect(chat.status == 200)
        #expect(whisperd.count("elena", "WatchdogTimeout") == 0)
        #expect(whisperd.count("control", "stop elena") == 0)
    }

    @Test func characterKeptAsRoot_stillCannotDriveTheControlSocket() throws {
        try #require(geteuid() == 0, "needs root")
        let scratch = Scratch()
        // `user: root` opts out of the uid of its own, and so passes the socket's permissions
        // and the uid check: only the peer's cgroup tells whisperd it is a character.
        scratch.write(
            "roster.yaml",
            fastDefaults + """
                characters:
                  victim: {command: [sleep, '300']}
                  rooted:
                    command: [sh, -c, '\(whisperctlBinary()) --socket \(scratch.path)/run/control.sock stop victim > $STATE_DIRECTORY/out 2>&1; echo $? > $STATE_DIRECTORY/code; exec sleep 300']
                    user: root
                    restart: "no"
                    after: [victim]
                """)
        let whisperd = try WhisperdProcess(scratch: scratch)
        defer { whisperd.terminate() }
        let victim = try #require(WhisperdProcess.pid(in: whisperd.waitFor("victim: starting -> running")))
        #expect(eventually(timeout: 15) { scratch.read("state/rooted/code")?.hasSuffix("\n") == true })
        #expect(scratch.read("state/rooted/code")?.trimmingCharacters(in: .whitespacesAndNewlines) != "0", "\(scratch.read("state/rooted/out") ?? "")")
        #expect(whisperd.count("control", "stop victim") == 0)
        #expect(whisperd.character("victim")?["pid"] as? Int == Int(victim))
        // The operator, outside every character's cgroup, still can.
        #expect(try whisperd.ctl("stop", "victim").code == 0)
    }

    @Test func reloadChangingUser_restartsAsTheNewUser_whoGetsTheDirectoryAndItsFiles() throws {
        try #require(geteuid() == 0, "needs root")
        let scratch = Scratch()
        let roster = { (user: String) in
            fastDefaults + """
                characters:
                  keeper:
                    command: [sh, -c, 'echo kept >> $STATE_DIRECTORY/notes; id -u > $STATE_DIRECTORY/uid; exec sleep 300']
                    user: \(user)
                """
        }
        scratch.write("roster.yaml", roster("dynamic"))
        let whisperd = try WhisperdProcess(scratch: scratch)
        defer { whisperd.terminate() }
        #expect(whisperd.waitFor("keeper: starting -> running") != nil)
        // The shell opens (truncates) the file before it writes: wait for the whole line.
        #expect(eventually { scratch.read("state/keeper/uid")?.hasSuffix("\n") == true })
        let dynamic = Int(scratch.read("state/keeper/uid")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? -1
        #expect((61184...65519).contains(dynamic))

        scratch.write("roster.yaml", roster("\"65534\""))
        whisperd.signal(SIGHUP)
        #expect(whisperd.waitFor("keeper: starting -> running", occurrence: 2) != nil)
        #expect(eventually { scratch.read("state/keeper/uid") == "65534\n" })
        // Its earlier file came along: the directory and what is in it belong to the new user.
        #expect(scratch.read("state/keeper/notes") == "kept\nkept\n")
        var info = stat()
        #expect(stat(scratch.path + "/state/keeper", &info) == 0 && info.st_uid == 65534)
        #expect(stat(scratch.path + "/state/keeper/notes", &info) == 0 && info.st_uid == 65534)
    }
}
