import Foundation
import Glibc
import Testing

/// `whisperctl` next to the built `whisperd`.
func whisperctlBinary() -> String {
    (whisperdBinary() as NSString).deletingLastPathComponent + "/whisperctl"
}

struct CommandResult {
    var code: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion (bounded) and captures its output.
func runCommand(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, timeout: TimeInterval = 30)
    throws -> CommandResult
{
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = childEnvironment(environment ?? ProcessInfo.processInfo.environment)
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // Read both pipes to the end (the child exits, the pipes close) on their own threads.
    let outputs = ThreadSafeBox([Data(), Data()])
    let group = DispatchGroup()
    for (index, pipe) in [out, err].enumerated() {
        group.enter()
        Thread {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            outputs.update { $0[index] = data }
            group.leave()
        }.start()
    }
    if group.wait(timeout: .now() + timeout) == .timedOut {
        process.terminate()
        Issue.record("\(executable) \(arguments) did not finish within \(timeout)s")
    }
    process.waitUntilExit()
    let data = outputs.value
    return CommandResult(
        code: process.terminationStatus, stdout: String(decoding: data[0], as: UTF8.self), stderr: String(decoding: data[1], as: UTF8.self))
}

/// A value shared between threads under a lock.
final class ThreadSafeBox<Value>: @unchecked Sendable {
    // @unchecked: `stored` is only read or written with `lock` held.
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value { lock.withLock { stored } }
    func update(_ body: (inout Value) -> Void) { lock.withLock { body(&stored) } }
}

extension WhisperdProcess {
    var controlSocket: String { scratch.path + "/run/control.sock" }

    func ctl(_ arguments: String..., timeout: TimeInterval = 30) throws -> CommandResult {
        try runCommand(whisperctlBinary(), ["--socket", controlSocket] + arguments, timeout: timeout)
    }
}

extension IntegrationTests {
    @Suite struct ControlSection {
        static let roster =
            fastDefaults + """
            characters:
              elena:
                command: [sh, -c, 'echo elena starts; exec sleep 300']
                env: {API_TOKEN: hunter2-secret, MOOD: calm}
              aria: {command: [sleep, '300']}
            """

        /// The roster above, running, after aria was SIGKILLed once and came back.
        static func fleetWithOneCrash(_ scratch: Scratch) throws -> WhisperdProcess {
            scratch.write("roster.yaml", roster)
            let whisperd = try WhisperdProcess(scratch: scratch)
            let aria = try #require(WhisperdProcess.pid(in: whisperd.waitFor("aria: starting -> running")))
            kill(aria, SIGKILL)
            _ = whisperd.waitFor("aria: starting -> running", occurrence: 2)
            return whisperd
        }

        @Test func status_restart_stop_andStopSurvivesAWhisperdRestart() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", Self.roster)
            var whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let elena = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            _ = whisperd.waitFor("aria: starting -> running")

            let status = try whisperd.ctl("status", "--json")
            #expect(status.code == 0)
            let list = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [[String: Any]])
            #expect(list.first { $0["name"] as? String == "elena" }?["pid"] as? Int == Int(elena))
            let table = try whisperd.ctl("status")
            #expect(table.stdout.hasPrefix("whisperd 0.1.0"))
            #expect(table.stdout.contains("; cgroups hybrid") || table.stdout.contains("; cgroups v"))
            #expect(table.stdout.split(separator: "\n").dropFirst().first?.hasPrefix("NAME") == true)
            #expect(table.stdout.contains("MEM/LIMIT") && table.stdout.contains("LAST-EXIT"))

            let restart = try whisperd.ctl("restart", "elena")
            #expect(restart.code == 0, "\(restart.stderr)")
            let after = try #require(whisperd.character("elena"))
            #expect(after["pid"] as? Int != Int(elena), "restart returns only once the new process is ready")
            #expect(after["ready"] as? Bool == true)
            #expect(!isAlive(elena))
            #expect(whisperd.waitFor("control: uid=0 pid=", "restart elena") != nil)

            let stop = try whisperd.ctl("stop", "aria")
            #expect(stop.code == 0)
            #expect(whisperd.character("aria")?["state"] as? String == "stopped")

            whisperd.terminate()
            whisperd = try WhisperdProcess(scratch: scratch)
            _ = whisperd.waitFor("elena: starting -> running")
            #expect(whisperd.character("aria")?["state"] as? String == "stopped", "an operator's stop is kept")
            let start = try whisperd.ctl("start", "aria")
            #expect(start.code == 0)
            #expect(whisperd.character("aria")?["ready"] as? Bool == true)
        }

        @Test func logsFollow_streamsALineWrittenAfterTheCall() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      talker: {command: [sh, -c, 'echo first; read line < \(scratch.path)/go; echo "after the call: $line"; exec sleep 300']}
                    """)
            mkfifo(scratch.path + "/go", 0o644)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            _ = whisperd.waitFor("talker: starting -> running")
            // The line reaches the file through the log writer's thread, a moment after it is read.
            #expect(eventually { (scratch.read("logs/talker.log") ?? "").contains("stdout first") })
            let tail = try whisperd.ctl("logs", "-n", "5", "talker")
            #expect(tail.code == 0)
            #expect(tail.stdout.contains("stdout first"))

            let follower = Process()
            follower.executableURL = URL(fileURLWithPath: whisperctlBinary())
            follower.arguments = ["--socket", whisperd.controlSocket, "logs", "-f", "-n", "1", "talker"]
            let output = Pipe()
            follower.standardOutput = output
            try follower.run()
            defer { if follower.isRunning { follower.terminate() } }
            let received = ThreadSafeBox(Data())
            Thread {
                while true {
                    let chunk = output.fileHandleForReading.availableData
                    if chunk.isEmpty { return }
                    received.update { $0.append(chunk) }
                }
            }.start()
            // whisperd sends the tail in the same step that registers the follower: once the
            // tail is here, every later line will be too. Then let the child print.
            #expect(eventually { String(decoding: received.value, as: UTF8.self).contains("stdout first") })
            let go = open(scratch.path + "/go", O_WRONLY)
            _ = "now\n".withCString { write(go, $0, 4) }
            close(go)
            #expect(eventually { String(decoding: received.value, as: UTF8.self).contains("stdout after the call: now") })
        }

        @Test func why_showsTheIncident_reloadDryRunChangesNothing_envRedactsSecrets() throws {
            let scratch = Scratch()
            let whisperd = try Self.fleetWithOneCrash(scratch)
            defer { whisperd.terminate() }
            let why = try whisperd.ctl("why", "aria")
            #expect(why.code == 0)
            #expect(why.stdout.contains("Signaled(SIGKILL)"))

            scratch.write("roster.yaml", Self.roster + "\n  ryan: {command: [sleep, '300']}\n")
            let plan = try whisperd.ctl("reload", "--dry-run")
            #expect(plan.code == 0)
            #expect(plan.stdout.contains("would start ryan (added)"))
            #expect(whisperd.character("ryan") == nil, "a dry run changes nothing")
            scratch.write("roster.yaml", Self.roster + "\n  ryan: {comand: x}\n")
            let rejected = try whisperd.ctl("reload")
            #expect(rejected.code == 1)
            #expect(rejected.stderr.contains("comand"))

            let env = try whisperd.ctl("env", "elena", "--explain")
            #expect(env.code == 0)
            #expect(env.stdout.contains("MOOD") && env.stdout.contains("calm"))
            #expect(env.stdout.contains("API_TOKEN") && env.stdout.contains("<redacted>"))
            #expect(!env.stdout.contains("hunter2-secret"))
        }

        @Test func anIncidentsLastLines_areTheEndedRunsOnly_thoughItIsWrittenAfterTheRestart() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      flaky:
                        command: [sh, -c, 'echo "run $$ begins"; sleep 0.3; echo "run $$ ends"; exit 3']
                        restart_delay: 0s

                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            // The next run starts at once and says so before the incident is written.
            _ = whisperd.waitFor("flaky: starting -> running", occurrence: 3)
            let why = try whisperd.ctl("why", "flaky", "--json")
            #expect(why.code == 0, "\(why.stderr)")
            let incidents = try #require(try JSONSerialization.jsonObject(with: Data(why.stdout.utf8)) as? [[String: Any]])
            #expect(incidents.count >= 2)
            for incident in incidents {
                let lines = try #require(incident["last_log_lines"] as? [String] ?? incident["lastLogLines"] as? [String])
                let last = try #require(lines.last)
                #expect(last.contains(" ends"), "the incident's tail ends with the ended run's last line: \(lines)")
                let run = last.split(separator: " ").drop { $0 != "run" }.dropFirst().first
                #expect(lines.filter { $0.contains("run ") }.suffix(2).allSatisfy { $0.contains("run \(run ?? "")") })
            }
        }

        @Test func anIncident_isWrittenWithoutBeingAskedFor_evenWhenNothingFollowsTheExit() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      once: {command: [sh, -c, 'echo bye; exit 4'], restart: "no"}

                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            _ = whisperd.waitFor("-> failed")
            // No restart, no other event: the incident's own deadline writes it.
            #expect(eventually(timeout: 5) { scratch.read("state/incidents/once.jsonl")?.contains("bye") == true })
        }

        @Test func metrics_passPromtool_andMatchStatus() throws {
            let scratch = Scratch()
            let whisperd = try Self.fleetWithOneCrash(scratch)
            defer { whisperd.terminate() }
            let (code, body) = try #require(whisperd.get("/metrics"))
            #expect(code == 200)
            #expect(body.contains(#"whisperd_character_restarts_total{character="aria",reason="Signaled"} 1"#))
            #expect(body.contains(#"whisperd_character_up{character="elena"} 1"#))
            #expect(body.contains(#"whisperd_build_info{version="#))
            #expect(body.contains("process_resident_memory_bytes"))
            scratch.write("metrics.txt", body)
            let check = try runCommand("/bin/sh", ["-c", "promtool check metrics < \(scratch.path)/metrics.txt"])
            #expect(check.code == 0, "promtool: \(check.stdout)\(check.stderr)")
            #expect((whisperd.character("aria")?["restarts"] as? Int) == 1)

            // What Prometheus asks for: the same exposition, gzip-encoded.
            let compressed = try runCommand(
                "/usr/bin/curl", ["-s", "-D", scratch.path + "/headers", "--compressed", "http://127.0.0.1:\(whisperd.httpPort)/metrics"])
            #expect(compressed.code == 0)
            #expect(scratch.read("headers")?.lowercased().contains("content-encoding: gzip") == true)
            #expect(compressed.stdout.contains(#"whisperd_character_restarts_total{character="aria",reason="Signaled"} 1"#))
        }

        /// A fleet big enough that `/metrics` goes out by sendfile from a memory file: the body
        /// arrives whole (curl checks Content-Length), passes promtool, names every character, and
        /// the first gzip scrape after it (compressed from that file) says the same.
        @Test func aLargeMetricsBody_sentFromAMemoryFile_isWhole_andItsGzipMatches() throws {
            let scratch = Scratch()
            let names = (1...60).map { "c\($0)" }
            scratch.write("roster.yaml", fastDefaults + "characters:\n" + names.map { "  \($0): {command: [sleep, '300']}\n" }.joined())
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(eventually { whisperd.get("/health")?.0 == 200 })
            let url = "http://127.0.0.1:\(whisperd.httpPort)/metrics"
            let plain = try runCommand("/usr/bin/curl", ["-sf", "-o", scratch.path + "/metrics.txt", "-w", "%{size_download}", url])
            #expect(plain.code == 0)
            let size = Int(plain.stdout) ?? 0
            #expect(size > 64 << 10, "the body must be large enough for the memory-file path: \(size) bytes")
            let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(whisperd.pid)/fd")) ?? []
            let targets = descriptors.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(whisperd.pid)/fd/\($0)") }
            #expect(targets.contains { $0.hasPrefix("/memfd:whisperd-metrics") }, "no metrics memory file among \(targets.count) descriptors")
            let body = try #require(scratch.read("metrics.txt"))
            #expect(body.utf8.count == size)
            for name in names { #expect(body.contains(#"whisperd_character_up{character="\#(name)"} 1"#)) }
            let check = try runCommand("/bin/sh", ["-c", "promtool check metrics < \(scratch.path)/metrics.txt"])
            #expect(check.code == 0, "promtool: \(check.stdout)\(check.stderr)")
            let compressed = try runCommand("/usr/bin/curl", ["-sf", "-D", scratch.path + "/headers", "--compressed", url])
            #expect(compressed.code == 0)
            #expect(scratch.read("headers")?.lowercased().contains("content-encoding: gzip") == true)
            for name in names { #expect(compressed.stdout.contains(#"whisperd_character_up{character="\#(name)"} 1"#)) }
        }

        @Test func statusPortKeepsConnectionsAlive_answersPipelinedRequestsInOrder_andHEADWithoutABody() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", Self.roster)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            // Both characters running: /health answers 200 only then (aria may start after elena).
            #expect(eventually { whisperd.get("/health")?.0 == 200 })
            let text = try #require(
                rawHTTP(
                    port: whisperd.httpPort,
                    "GET /health HTTP/1.1\r\nHost: a\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\n"
                        + "GET /nowhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"))
            // Walk the responses by their Content-Length: the framing must come out exact.
            var rest = Substring(text)
            var answers: [(status: String, connection: String, body: Substring)] = []
            while let headEnd = rest.range(of: "\r\n\r\n") {
                let head = rest[..<headEnd.lowerBound].split(separator: "\r\n")
                func header(_ name: String) -> String {
                    head.first { $0.lowercased().hasPrefix(name + ":") }.map { String($0.split(separator: ":")[1]).trimmingCharacters(in: .whitespaces) } ?? ""
                }
                let length = answers.count == 1 ? 0 : Int(header("content-length")) ?? -1
                let bodyEnd = rest.index(headEnd.upperBound, offsetBy: length, limitedBy: rest.endIndex) ?? rest.endIndex
                answers.append((String(head[0]), header("connection"), rest[headEnd.upperBound..<bodyEnd]))
                rest = rest[bodyEnd...]
            }
            #expect(answers.map(\.status) == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"])
            #expect(answers.map(\.connection) == ["keep-alive", "keep-alive", "close"])
            #expect(answers.first?.body.contains("\"status\"") == true)
            #expect(rest.isEmpty, "bytes after the last response: \(rest.prefix(80))")

            // A real client reuses the connection.
            let url = "http://127.0.0.1:\(whisperd.httpPort)"
            let curl = try runCommand("/usr/bin/curl", ["-sv", "-o", "/dev/null", "-o", "/dev/null", url + "/health", url + "/metrics"])
            #expect(curl.code == 0)
            #expect(curl.stderr.contains("Re-using existing connection"), "\(curl.stderr)")
        }

        @Test func curlF_failsWhileACharacterIsDown_passesWhenAllAreUp_andTCPRefusesPOST() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      elena: {command: [sleep, '300']}
                      broken: {command: [sh, -c, 'exit 1'], restart_delay: 30s, restart_delay_max: 30s}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            _ = whisperd.waitFor("broken:", "-> backoff")
            let url = "http://127.0.0.1:\(whisperd.httpPort)/health"
            let down = try runCommand("/usr/bin/curl", ["-sf", "-o", "/dev/null", url])
            #expect(down.code == 22, "curl -f must fail while a character that should be up is not ready")
            // An operator's stop means "down on purpose": health is fine again.
            #expect(try whisperd.ctl("stop", "broken").code == 0)
            let up = try runCommand("/usr/bin/curl", ["-sf", "-o", "/dev/null", url])
            #expect(up.code == 0)
            let post = try runCommand(
                "/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "http://127.0.0.1:\(whisperd.httpPort)/v1/characters/elena/restart"])
            #expect(post.stdout == "405")
            #expect(whisperd.count("elena: starting -> running") == 1)
        }

        @Test func outsidersCannotConnect_andAMissingWhisperdIsExit3() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", Self.roster)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            _ = whisperd.waitFor("elena: starting -> running")
            chmod(scratch.path, 0o755)
            chmod(scratch.path + "/run", 0o755)
            /// `whisperctl status` as uid/gid 65534 with the given supplementary groups.
            func statusAsNobody(groups: String) throws -> CommandResult {
                try runCommand(
                    "/usr/bin/setpriv",
                    ["--reuid=65534", "--regid=65534", groups, "--", whisperctlBinary(), "--socket", whisperd.controlSocket, "status"])
            }
            let nobody = try statusAsNobody(groups: "--clear-groups")
            #expect(nobody.code == 3)
            #expect(nobody.stderr.contains("Permission denied"))
            #expect(whisperd.count("control:") == 0)

            // A member of the control group by a supplementary group only (SO_PEERGROUPS) is let in…
            let gid = try #require(getgrnam("whisperd")).pointee.gr_gid
            let member = try statusAsNobody(groups: "--groups=\(gid)")
            #expect(member.code == 0, "\(member.stderr)")
            #expect(member.stdout.contains("elena"))
            // …and an outsider is refused by the peer check even when the file mode would let it connect.
            chmod(whisperd.controlSocket, 0o666)
            let outsider = try statusAsNobody(groups: "--clear-groups")
            #expect(outsider.code == 1)
            #expect(outsider.stderr.contains("permission denied"))
            #expect(whisperd.count("control:") == 0)

            let missing = try runCommand(whisperctlBinary(), ["--socket", scratch.path + "/nowhere.sock", "status"])
            #expect(missing.code == 3)
            #expect(missing.stderr.contains(scratch.path + "/nowhere.sock"))
            let usage = try runCommand(whisperctlBinary(), ["restart"])
            #expect(usage.code == 2)
        }
    }
}
