import Foundation
import Glibc
import Testing
import WhisperSystem
import WhisperFiles

/// Secret-looking variables (`*TOKEN*`, `*KEY*`, `*SECRET*`, `*PASSWORD*`) from the roster and
/// env files: their values appear nowhere whisperd writes or answers — its log, the state
/// and runtime dirs, the log files, status, incidents, env, /health, /metrics.
extension IntegrationTests {
    @Suite struct SecretsSection {
        @Test func secretValues_appearNowhereWhisperdWritesOrAnswers() throws {
            let secrets = [
                "DISCORD_TOKEN": "discord-tok-7f3a9", "LLM_API_KEY": "sk-llm-key-51c0", "DB_PASSWORD": "db-pass-e2d4",
                "SESSION_SECRET": "sess-secret-99ab", "MY_BOT_TOKEN": "bot-tok-1234",
            ]
            let scratch = Scratch()
            scratch.write("characters/elena/character.md", "You are Elena.\n")
            scratch.write(".env", "LLM_API_KEY=\(secrets["LLM_API_KEY"]!)\nexport DB_PASSWORD='\(secrets["DB_PASSWORD"]!)'\n")
            chmod(scratch.path + "/.env", 0o600)
            let port = freePort()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      elena:
                        port: \(port)
                        health: {ready: notify}
                        env:
                          DISCORD_TOKEN: \(secrets["DISCORD_TOKEN"]!)
                          DISCORD_GATEWAY_URL: ws://127.0.0.1:\(freePort())/gateway
                          LLM_BASE_URL: http://127.0.0.1:\(freePort())
                          LLM_MODEL_NAME: nothing-there
                      crashy:
                        command: [sh, -c, 'echo starting; sleep 0.2; exit 3']
                        restart: on-failure
                        env: {SESSION_SECRET: \(secrets["SESSION_SECRET"]!), MY_BOT_TOKEN: \(secrets["MY_BOT_TOKEN"]!)}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("elena: starting -> running") != nil)
            #expect(whisperd.waitFor("crashy:", "Error(3)") != nil)
            // The worker's failures are about the secrets' owners: the gateway and the LLM are unreachable.
            #expect(eventually { (whisperd.character("elena")?["facets"] as? [String: String])?["discord"]?.hasPrefix("down:") == true })
            _ = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "hello"])

            var seen: [String: String] = [:]
            seen["whisperd's log"] = whisperd.log.joined(separator: "\n")
            let socket = scratch.path + "/run/control.sock"
            for arguments in [["status", "--json"], ["status"], ["why", "crashy", "--json"], ["why", "crashy"], ["env", "elena", "--explain"], ["env", "crashy"]] {
                let result = try runCommand(whisperctlBinary(), ["--socket", socket] + arguments)
                seen["whisperctl " + arguments.joined(separator: " ")] = result.stdout + result.stderr
            }
            for path in ["/health", "/metrics", "/v1/characters", "/v1/characters/elena", "/v1/characters/crashy"] {
                seen["GET " + path] = whisperd.get(path)?.1 ?? ""
            }
            for directory in ["state", "run", "logs"] {
                let root = scratch.path + "/" + directory
                for file in FileManager.default.enumerator(atPath: root)?.compactMap({ $0 as? String }) ?? [] {
                    if let data = readFileContents(root + "/" + file) {
                        seen[directory + "/" + file] = String(decoding: data, as: UTF8.self)
                    }
                }
            }
            #expect(seen.keys.contains { $0.hasPrefix("logs/elena") } && seen.keys.contains { $0.hasPrefix("state/") })
            #expect(seen["logs/crashy.log"]?.contains("starting") == true, "the places read hold what was written")
            #expect(seen["whisperctl why crashy"]?.contains("Error(3)") == true)
            #expect(seen["whisperctl env elena --explain"]?.contains("DISCORD_TOKEN") == true, "the variable is listed, its value is not")
            for (name, value) in secrets {
                for (place, text) in seen where text.contains(value) {
                    Issue.record("\(name)'s value is in \(place)")
                }
            }
        }
    }
}
