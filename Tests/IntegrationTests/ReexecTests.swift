import Foundation
import Glibc
import Testing

/// `whisperctl reexec` / SIGUSR2: whisperd execs its binary and adopts its running characters.
@Suite struct ReexecTests {
    func ctl(_ scratch: Scratch, _ arguments: [String]) throws -> CommandResult {
        try runCommand(whisperctlBinary(), ["--socket", scratch.path + "/run/control.sock"] + arguments)
    }

    func statuses(_ scratch: Scratch) throws -> [String: [String: Any]] {
        let result = try ctl(scratch, ["status", "--json"])
        let list = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]] ?? []
        return Dictionary(uniqueKeysWithValues: list.map { ($0["name"] as? String ?? "?", $0) })
    }

    static let roster =
        fastDefaults + """
            characters:
              ticker:
                command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo "line $i"; printf "half "; sleep 0.005; echo "of $i"; done']
              notifier:
                command: [sh, -c, 'whisperd notify READY=1 STATUS=serving; exec sleep 300']
                health: {ready: notify}
              sleeper: {command: [sleep, '300']}
            """

    @Test func reexec_keepsEveryCharacter_samePids_noRestart_noLostLine() throws {
        let scratch = Scratch()
        scratch.write("roster.yaml", Self.roster)
        // Its own copy of the binary: the failing case below makes it unexecutable for a moment.
        let binary = scratch.path + "/bin/whisperd"
        mkdir(scratch.path + "/bin", 0o755)
        #expect(copyfile(whisperdBinary(), binary))
        let whisperd = try WhisperdProcess(scratch: scratch, binary: binary)
        defer { whisperd.terminate() }
        #expect(whisperd.waitFor("notifier: starting -> running", "READY=1") != nil)
        let before = try statuses(scratch)
        let pids = before.mapValues { $0["pid"] as? Int }
        #expect(pids.values.allSatisfy { $0 != nil })

        // A failed exec (the binary cannot be executed) leaves the old process running.
        chmod(binary, 0o644)
        let failed = try ctl(scratch, ["reexec", "--timeout", "10"])
        chmod(binary, 0o755)
        #expect(failed.code != 0 && failed.stderr.contains("Permission denied"), "\(failed.stderr)")
        #expect(try statuses(scratch).mapValues { $0["pid"] as? Int } == pids)

        let result = try ctl(scratch, ["reexec"])
        #expect(result.code == 0, "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("whisperd re-executed"))
        #expect(whisperd.waitFor("re-exec #1 done: adopted 3 running services, pid \(whisperd.pid)") != nil)
        let after = try statuses(scratch)
        #expect(after.mapValues { $0["pid"] as? Int } == pids)
        for (name, status) in after {
            #expect(status["restarts"] as? Int == 0, "\(name)")
            #expect(status["ready"] as? Bool == true, "\(name)")
        }
        #expect(after["notifier"]?["status_text"] as? String == "serving")
        let health = httpGet(port: whisperd.httpPort, path: "/health")
        #expect(health?.0 == 200 && health?.1.contains("\"reexecs\":1") == true, "\(String(describing: health))")

        // The new process supervises them: a killed one is restarted, notify still works.
        kill(Int32(pids["sleeper"]!!), SIGKILL)
        #expect(whisperd.waitFor("sleeper: stopped -> starting", "(restart 1)") != nil)
        let restart = try ctl(scratch, ["restart", "notifier"])
        #expect(restart.code == 0, "\(restart.stderr)")

        // Every line the ticker wrote is in its log, once, whole, in order, across the exec.
        let stop = try ctl(scratch, ["stop", "ticker"])
        #expect(stop.code == 0, "\(stop.stderr)")
        let lines = (scratch.read("logs/ticker.log") ?? "").split(separator: "\n").map { $0.split(separator: " ", maxSplits: 2) }
        let texts = lines.compactMap { $0.count == 3 ? String($0[2]) : nil }
        var expected = 1
        var problems: [String] = []
        for (index, text) in texts.enumerated() where text.hasPrefix("line ") {
            if text != "line \(expected)" { problems.append("line \(index): \(text), expected line \(expected)") }
            // The last line may be cut by the stop (its unfinished part is written as it ends).
            if index + 2 < texts.count, texts[index + 1] != "half of \(expected)" {
                problems.append("after line \(expected): \(texts[index + 1])")
            }
            expected += 1
        }
        #expect(expected > 20, "only \(expected - 1) lines")
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    @Test func sigusr2_reexecs_andAReexecUnderWayIsNotDoubled() throws {
        let scratch = Scratch()
        scratch.write("roster.yaml", Self.roster)
        let whisperd = try WhisperdProcess(scratch: scratch)
        defer { whisperd.terminate() }
        #expect(whisperd.waitFor("notifier: starting -> running") != nil)
        let pid = try statuses(scratch)["sleeper"]?["pid"] as? Int
        whisperd.signal(SIGUSR2)
        #expect(whisperd.waitFor("re-exec (SIGUSR2)") != nil)
        #expect(whisperd.waitFor("re-exec #1 done") != nil)
        #expect(try statuses(scratch)["sleeper"]?["pid"] as? Int == pid)
        let again = try ctl(scratch, ["reexec"])
        #expect(again.code == 0, "\(again.stderr)")
        #expect(whisperd.waitFor("re-exec #2 done") != nil)
        // The cgroup base the first process made is removed by the last one at exit.
        let base = try #require(whisperd.cgroupBase)
        #expect(FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory" + base))
        whisperd.signal(SIGTERM)
        #expect(whisperd.waitForExit() == 0)
        for hierarchy in ["memory", "pids", "unified"] {
            #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/\(hierarchy)" + base), "\(hierarchy)\(base) left behind")
        }
    }
}

/// Copies a file with its mode.
func copyfile(_ source: String, _ destination: String) -> Bool { copyExecutable(source, to: destination) }
