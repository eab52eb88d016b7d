import Foundation
import Glibc
import Testing

/// `whisperctl restart --rolling`: the new worker starts beside the old one on the same port
/// (SO_REUSEPORT), takes over when it says READY=1, and the old one drains; a client
/// hammering the API meanwhile sees no failed request (issue "operations").
extension IntegrationTests {
    @Suite struct RollingRestartSection {
        /// Chats in a loop on `threads` threads, a new connection each, until stopped.
        final class Hammer: @unchecked Sendable {
            // @unchecked: `counts` and `failures` are only touched with `lock` held.
            private let lock = NSLock()
            private var counts = 0
            private var failures: [String] = []
            private let stopping = ThreadSafeBox(false)
            private let group = DispatchGroup()

            init(port: Int, threads: Int) {
                for thread in 0..<threads {
                    group.enter()
                    Thread { [self] in
                        var index = 0
                        while !stopping.value {
                            let response = postJSON(
                                port: port, path: "/api/chat", ["user_id": "hammer-\(thread)", "message": "m\(index)"], timeout: 30)
                            lock.withLock {
                                counts += 1
                                if response.status != 200 { failures.append("status \(response.status): \(response.json)") }
                            }
                            index += 1
                        }
                        group.leave()
                    }.start()
                }
            }

            func stop() -> (requests: Int, failures: [String]) {
                stopping.update { $0 = true }
                _ = group.wait(timeout: .now() + 60)
                return lock.withLock { (counts, failures) }
            }

            var requests: Int { lock.withLock { counts } }
        }

        @Test func rollingRestart_underLoad_noFailedRequest_theChatInFlightIsAnswered() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (whisperd, port) = try DrainSection.fleet(scratch, llm: llm)
            defer { whisperd.terminate() }
            let oldPID = try DrainSection.workerPID(whisperd)
            // One chat held by the LLM across the hand-over: the old process must answer it.
            let held = DrainSection.chatHeldByTheLLM(port: port, llm: llm, message: "across the hand-over")
            let hammer = Hammer(port: port, threads: 4)
            #expect(eventually { hammer.requests >= 50 }, "the hammer did not get going")
            let restart = try runCommand(
                whisperctlBinary(), ["--socket", scratch.path + "/run/control.sock", "restart", "--rolling", "elena"])
            #expect(restart.code == 0, "\(restart.stdout) \(restart.stderr)")
            #expect(whisperd.waitFor("elena: running -> running", "rolled over to pid") != nil)
            let newPID = try DrainSection.workerPID(whisperd)
            #expect(newPID != oldPID)
            #expect(isAlive(oldPID), "the old worker must still be draining the held chat")
            let during = hammer.requests
            #expect(eventually { hammer.requests >= during + 50 }, "no chats answered after the hand-over")
            llm.release()
            DrainSection.expectAnswered(held, message: "across the hand-over")
            #expect(whisperd.waitFor("elena: running -> running", "the replaced process pid \(oldPID) ended") != nil)
            let (requests, failures) = hammer.stop()
            #expect(failures.isEmpty, "\(failures.count) of \(requests) failed: \(failures.prefix(5))")
            let status = try #require(whisperd.character("elena"))
            #expect(status["restarts"] as? Int == 1 && status["ready"] as? Bool == true, "\(status)")
            #expect(status["pid"] as? Int == Int(newPID))
        }

        @Test func aNewProcessThatNeverGetsReady_isAbandoned_andTheOldOneKeepsServing() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      flaky:
                        command: [sh, -c, 'if [ -e $STATE_DIRECTORY/started ]; then exec sleep 300; fi; touch $STATE_DIRECTORY/started; whisperd notify READY=1; exec sleep 300']
                        health: {ready: notify, ready_timeout: 1s}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("flaky: starting -> running", "READY=1") != nil)
            let before = whisperd.character("flaky")?["pid"] as? Int
            let restart = try runCommand(
                whisperctlBinary(), ["--socket", scratch.path + "/run/control.sock", "restart", "--rolling", "--timeout", "3", "flaky"])
            #expect(restart.code != 0)
            #expect(whisperd.waitFor("rolling restart of flaky abandoned: not ready within ready_timeout (1s)") != nil)
            #expect(whisperd.character("flaky")?["pid"] as? Int == before)
            #expect(whisperd.character("flaky")?["ready"] as? Bool == true)
            #expect(whisperd.character("flaky")?["restarts"] as? Int == 0)
        }
    }
}
