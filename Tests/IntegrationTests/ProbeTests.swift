import Foundation
import Glibc
import Testing

/// Compose's health checks under a real whisperd: exec probes run as the service (its uid, its
/// cgroup, its environment), are killed whole at their timeout and leave nothing behind; tcp
/// and log readiness; liveness failures restart with the probe's output in the incident.
extension IntegrationTests {
    @Suite struct ProbeSection {
        /// Processes whose command line carries `marker` (only this test's probes do).
        static func processes(withMarker marker: String) -> [Int32] {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap(Int32.init).filter { pid in
                guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
                return String(decoding: data, as: UTF8.self).contains(marker)
            }
        }

        @Test func execReadiness_runsAsTheService_andGatesItsDependents() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      pg:
                        command: [sh, -c, 'sleep 0.3; touch "$STATE_DIRECTORY/up"; exec sleep 300']
                        health:
                          ready: exec
                          exec: {test: [CMD-SHELL, 'test -f "$STATE_DIRECTORY/up" && test "$(id -u)" -ne 0'], start_interval: 50ms, timeout: 2s}
                      app:
                        command: [sleep, '300']
                        after: {pg: service_healthy}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("app: stopped -> waiting", "waiting for pg") != nil)
            #expect(whisperd.waitFor("pg: starting -> running", "exec test -f") != nil)
            #expect(whisperd.waitFor("app: waiting -> starting") != nil)
            let order = whisperd.log
            let pgReady = order.firstIndex { $0.contains("pg: starting -> running") }!
            let appStart = order.firstIndex { $0.contains("app: waiting -> starting") }!
            #expect(appStart > pgReady)
            // The checks before the file existed failed as the service's own (non-root) user would.
            #expect(whisperd.count("pg: health check failed") >= 1)
        }

        @Test func aHangingProbe_isKilledAtItsTimeout_andAForkingProbeLeavesNothing() throws {
            let hang = "probehang\(getpid())"
            let fork = "probefork\(getpid())"
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      hung:
                        command: [sleep, '300']
                        health:
                          ready: exec
                          ready_timeout: 60s
                          exec: {test: [CMD, bash, -c, 'exec -a \(hang) sleep 100'], timeout: 300ms, start_interval: 50ms}
                      forker:
                        command: [sleep, '300']
                        health:
                          ready: exec
                          exec: {test: [CMD, bash, -c, '(exec -a \(fork) sleep 1000) & exit 0'], start_interval: 50ms}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("hung: health check failed (timed out") != nil)
            // One probe at a time, each gone at its timeout.
            var seen: Set<Int32> = []
            for _ in 0..<10 {
                let live = Self.processes(withMarker: hang)
                #expect(live.count <= 1, "more than one probe at a time: \(live)")
                seen.formUnion(live)
                usleep(40_000)
            }
            for pid in seen { #expect(eventually(timeout: 2) { !isAlive(pid) }, "probe \(pid) outlived its 300ms timeout") }
            // The forking probe passed, and what it forked went with it.
            #expect(whisperd.waitFor("forker: starting -> running", "exec") != nil)
            #expect(eventually(timeout: 2) { Self.processes(withMarker: fork).isEmpty })
            #expect(whisperd.character("hung")?["state"] as? String == "starting")
        }

        @Test func aFailingLivenessCheck_restartsIt_withTheChecksOutputInTheIncident() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      db:
                        command: [sh, -c, 'touch "$STATE_DIRECTORY/ok"; exec sleep 300']
                        health:
                          ready: exec
                          exec:
                            test: [CMD-SHELL, 'test -f "$STATE_DIRECTORY/ok" || { echo "db says no"; exit 3; }']
                            interval: 100ms
                            retries: 2
                            start_interval: 50ms
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let first = try #require(WhisperdProcess.pid(in: whisperd.waitFor("db: starting -> running")))
            #expect(unlink(scratch.path + "/state/db/ok") == 0)
            #expect(whisperd.waitFor("db:", "killing: HealthCheckFailed") != nil || whisperd.waitFor("db:", "health") != nil)
            let second = try #require(WhisperdProcess.pid(in: whisperd.waitFor("db: starting -> running", occurrence: 2)))
            #expect(second != first)
            let why = try whisperd.ctl("why", "db", "--json")
            #expect(why.stdout.contains("exit code 3: db says no"), "\(why.stdout)")
        }

        @Test func tcpAndLogReadiness() throws {
            let port = freePort()
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      web:
                        port: \(port)
                        command: [sh, -c, 'sleep 0.3; exec python3 -m http.server \(port) --bind 127.0.0.1']
                        health: {ready: tcp, ready_timeout: 20s}
                      lavalink:
                        command: [sh, -c, 'sleep 0.2; echo "booting"; echo "Lavalink is ready to accept connections"; exec sleep 300']
                        health: {ready: log, ready_log_line: 'ready to accept conn[a-z]+', ready_timeout: 20s}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("web: starting -> running", "TCP port \(port) passed", timeout: 20) != nil)
            #expect(whisperd.waitFor("lavalink: starting -> running", "ready_log_line matched") != nil)
        }
    }
}
