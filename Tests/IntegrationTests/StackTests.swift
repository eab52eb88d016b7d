import Foundation
import Glibc
import Testing

/// The sample stack (`etc/stack.yaml`) for real: PostgreSQL under whisperd as user postgres,
/// ready by `pg_isready`; the database and schema jobs after it; two characters whose store it
/// is. Then PostgreSQL is SIGKILLed: the characters' `store` facet goes down and they are not
/// restarted, PostgreSQL comes back by its restart policy, the facets recover, and every turn
/// answered 200 is in the database.
extension IntegrationTests {
    @Suite struct StackSection {
        static func character(_ whisperd: WhisperdProcess, _ name: String) -> (pid: Int?, store: String?) {
            let status = whisperd.character(name)
            let facets = status?["facets"] as? [String: Any]
            return (status?["pid"] as? Int, facets?["store"] as? String)
        }

        @Test func theSampleStack_survivesItsDatabaseBeingKilled() throws {
            let llm = try TestLLM()
            let scratch = Scratch()
            // PostgreSQL is killed while the characters keep connecting: a port they cannot take by
            // a TCP self-connect (see freePortBelowEphemeralRange).
            let (pgPort, elenaPort, ariaPort) = (freePortBelowEphemeralRange(), freePort(), freePort())
            var roster = try String(contentsOfFile: repositoryRoot() + "/etc/stack.yaml", encoding: .utf8)
            for (from, to) in [("5433", pgPort), ("8010", elenaPort), ("8011", ariaPort)] {
                #expect(roster.contains(from))
                roster = roster.replacingOccurrences(of: from, with: String(to))
            }
            scratch.write("etc/stack.yaml", roster)
            scratch.write("etc/.env", "LLM_BASE_URL=\(llm.baseURL)\nLLM_MODEL_NAME=test-model\n")
            scratch.write("characters/elena/character.md", "You are Elena.\n")
            scratch.write("characters/aria/character.md", "You are Aria.\n")
            let whisperd = try WhisperdProcess(scratch: scratch, extraArguments: ["--roster", scratch.path + "/etc/stack.yaml"])
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("postgres: starting -> running", "pg_isready", timeout: 60) != nil)
            #expect(whisperd.waitFor("startup complete: 3/3 characters ready", timeout: 60) != nil)

            var acknowledged: [String] = []
            func chat(_ port: Int, _ text: String) -> Int {
                let answer = postJSON(port: port, path: "/api/chat", ["user_id": "stack-user", "message": text], timeout: 10)
                if answer.status == 200 { acknowledged.append(text) }
                return answer.status
            }
            for index in 0..<3 {
                #expect(chat(elenaPort, "before \(index)") == 200)
                #expect(chat(ariaPort, "aria before \(index)") == 200)
            }
            let elena = try #require(Self.character(whisperd, "elena").pid)
            let aria = try #require(Self.character(whisperd, "aria").pid)
            let postgres = try #require(whisperd.character("postgres")?["pid"] as? Int)

            #expect(kill(Int32(postgres), SIGKILL) == 0)
            // A chat while it is down is refused (nothing acknowledged), and the facet says why.
            #expect(eventually(timeout: 20) {
                _ = chat(elenaPort, "during")
                return Self.character(whisperd, "elena").store?.hasPrefix("down") == true
            })
            #expect(whisperd.waitFor("postgres: starting -> running", "pg_isready", occurrence: 2, timeout: 60) != nil)
            #expect(eventually(timeout: 30) { chat(elenaPort, "after") == 200 })
            #expect(
                eventually(timeout: 30) { Self.character(whisperd, "elena").store?.hasPrefix("down") != true },
                "elena's store facet: \(Self.character(whisperd, "elena").store ?? "none")")
            #expect(Self.character(whisperd, "elena").pid == elena, "elena was not restarted")
            #expect(Self.character(whisperd, "aria").pid == aria, "aria was not restarted")

            let stored = try runCommand(
                "/usr/bin/psql", ["postgresql://whisper@127.0.0.1:\(pgPort)/whisper", "-At", "-c", "SELECT content FROM messages"])
            #expect(stored.code == 0, "\(stored.stderr)")
            let rows = Set(stored.stdout.split(separator: "\n").map(String.init))
            let lost = acknowledged.filter { !rows.contains($0) }
            #expect(lost.isEmpty, "answered 200 but not in PostgreSQL: \(lost)")
            #expect(acknowledged.count >= 7)
        }
    }
}
