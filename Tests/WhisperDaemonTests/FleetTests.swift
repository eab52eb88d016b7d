import Foundation
import Glibc
import Testing
@testable import WhisperConfig
import WhisperCore
@testable import WhisperDaemon
@testable import WhisperSystem

/// The fleet's lifecycle with real, short-lived processes (`/bin/sleep`, `/bin/sh`) and the
/// `none` cgroup backend: what it records of a run, what reaches the core, in which order,
/// and what it tells the rest of whisperd through its events. Each test runs the loop only
/// until what it waits for has happened (or a deadline of its own passes), and kills and
/// reaps whatever it started even when an expectation fails.
@Suite struct FleetTests {
    /// A fleet on its own loop in a scratch directory, with what it told through its events.
    final class Harness {
        let scratch = Scratch()
        let loop: EventLoop
        let logWriter: LogWriter
        let fleet: Fleet
        /// How many batches the fleet said it handled, and the order of what it told (`batch`,
        /// `forgotten NAME`).
        var batches = 0
        var trace: [String] = []
        var output: [ServiceName: String] = [:]
        var rejected: [ServiceName] = []
        var incidents: [ServiceName] = []
        /// The test gives up (the loop stops) at this monotonic time.
        private let testDeadline = Clock.monotonicNanoseconds() + 10_000_000_000
        private var timedOut = false

        init(_ services: [ServiceSpec]) throws {
            for directory in ["state", "runtime", "runtime/notify", "logs", "characters"] { mkdir(scratch.file(directory), 0o755) }
            let configuration = DaemonConfiguration(
                rosterPath: scratch.file("roster.yaml"), stateDirectory: scratch.file("state"), runtimeDirectory: scratch.file("runtime"),
                logDirectory: scratch.file("logs"), httpAddress: nil, selfExecutable: "/bin/false", cgroupMode: .none)
            let log = DaemonLog()
            loop = try EventLoop()
            logWriter = try LogWriter()
            let stateStore = try StateStore(directory: configuration.stateDirectory)
            fleet = Fleet(
                configuration: configuration, loaded: Self.loaded(services, charactersDirectory: scratch.file("characters")), log: log,
                loop: loop, spawner: try ProcessSpawner(nofileSoftLimit: 1024),
                cgroups: CgroupKeeper(backend: .none(), loop: loop, log: log),
                tenants: Tenants(
                    stateDirectory: configuration.stateDirectory, runtimeDirectory: configuration.runtimeDirectory, executable: "/bin/false",
                    stateStore: stateStore),
                logWriter: logWriter, stateStore: stateStore, handover: nil)
            fleet.events.batchHandled = { [unowned self] in
                self.batches += 1
                self.trace.append("batch")
                self.armTimer()
            }
            fleet.events.output = { [unowned self] name, bytes in self.output[name, default: ""] += String(decoding: bytes, as: UTF8.self) }
            fleet.events.datagramRejected = { [unowned self] name in self.rejected.append(name) }
            fleet.events.incident = { [unowned self] status, _ in self.incidents.append(status.name) }
            fleet.events.forgotten = { [unowned self] name in self.trace.append("forgotten \(name)") }
        }

        static func loaded(_ services: [ServiceSpec], charactersDirectory: String) -> LoadedRoster {
            LoadedRoster(roster: Roster(services: services), path: "roster.yaml", charactersDirectory: charactersDirectory, environmentOrigins: [:])
        }

        /// As ``Daemon`` does: the loop's timer at the fleet's next deadline, or the test's.
        private func armTimer() {
            let deadline = min(fleet.nextDeadline ?? testDeadline, testDeadline)
            loop.setDeadline(deadline) { [unowned self] in
                let now = Clock.monotonicNanoseconds()
                if now >= self.testDeadline {
                    self.timedOut = true
                    self.loop.stop()
                    return
                }
                self.fleet.expireProbes(now: now)
                self.fleet.post(.timerFired)
            }
        }

        /// Runs the loop (once per harness: a stopped loop stays stopped) until `step` says it
        /// is done; `step` is the test's turn, before the first wake-up and after each (never
        /// inside a handler of the fleet's), and may post events. False when the test's
        /// deadline passed first.
        func run(_ step: @escaping () -> Bool) -> Bool {
            if step() { return true }
            armTimer()
            let work = loop.addSliceWork { [unowned self] in
                if step() { self.loop.stop() }
                return false
            }
            defer { loop.removeSliceWork(work) }
            loop.run()
            return !timedOut
        }

        /// Whatever still runs is killed (its whole group) and reaped; the sockets and the log
        /// writer are closed. A pid the fleet still shows is not reaped yet, so it is still ours.
        deinit {
            for status in fleet.statuses() {
                guard let pid = status.pid else { continue }
                kill(-pid, SIGKILL)
                kill(pid, SIGKILL)
                var info = siginfo_t()
                _ = waitid(P_PID, id_t(pid), &info, WEXITED)
            }
            fleet.closeNotifySockets()
            logWriter.close()
        }
    }

    static func spec(
        _ name: String, _ arguments: [String], kind: ServiceKind = .character, ready: ReadinessMode = .started,
        restart: RestartMode = .no
    ) -> ServiceSpec {
        ServiceSpec(
            name: ServiceName(name)!, kind: kind, launch: LaunchSpec(arguments: arguments, tenant: TenantSpec(user: .root)),
            restart: RestartPolicy(mode: restart), stopGrace: .seconds(2), health: HealthPolicy(ready: ready, watchdog: nil))
    }

    @Test func aProcessStartedThroughTheFleet_isRecorded_andItsExitReachesTheCore() throws {
        let sleeper = ServiceName("sleeper")!
        let harness = try Harness([Self.spec("sleeper", ["/bin/sleep", "30"])])
        harness.fleet.apply(harness.fleet.loaded)
        let pid = try #require(harness.fleet.status(of: sleeper)?.pid, "spawned in the roster's batch")
        #expect(harness.fleet.isCharacterProcess(pid), "its run is recorded")
        #expect(!harness.fleet.isCharacterProcess(getpid()))
        // Once its exec reached the core (running), the operator stops it.
        var wasRunning = false
        let done = harness.run {
            guard let status = harness.fleet.status(of: sleeper) else { return false }
            if !wasRunning, status.state == .running {
                wasRunning = true
                harness.fleet.post(.operatorRequested(.stop, sleeper))
            }
            return wasRunning && status.state == .stopped
        }
        #expect(done && wasRunning)
        let status = try #require(harness.fleet.status(of: sleeper))
        #expect(status.pid == nil)
        #expect(status.lastExit?.reason == .stopped, "SIGTERM, reaped through its pidfd: \(String(describing: status.lastExit))")
        #expect(!harness.fleet.isCharacterProcess(pid), "its run is over")
        #expect(harness.incidents.isEmpty, "a stop is no incident")
    }

    @Test func aJobsOutput_reachesItsLogFileAndTheFollowers_andItsSuccessTheCore() throws {
        let job = ServiceName("hello")!
        let harness = try Harness([
            Self.spec("hello", ["/bin/sh", "-c", "echo hello from the job; echo and to stderr >&2"], kind: .job(.everyStart))
        ])
        harness.fleet.apply(harness.fleet.loaded)
        #expect(
            harness.run {
                harness.fleet.status(of: job)?.state == .exited && harness.output[job]?.contains("and to stderr") == true
                    && harness.output[job]?.contains("hello from the job") == true
            })
        #expect(harness.fleet.status(of: job)?.lastExit?.reason.isSuccess == true)
        let lines = try #require(harness.output[job]).split(separator: "\n")
        #expect(lines.contains { $0.hasSuffix(" stdout hello from the job") }, "timestamped, with its stream: \(lines)")
        #expect(harness.fleet.jobTimes(of: job) == nil, "not scheduled")
        #expect(harness.logWriter.flush())
        let file = try String(contentsOfFile: harness.scratch.file("logs/hello.log"), encoding: .utf8)
        #expect(file.contains("hello from the job") && file.contains("and to stderr"))
    }

    @Test func aFailedRun_isAnIncident() throws {
        let failing = ServiceName("failing")!
        let harness = try Harness([Self.spec("failing", ["/bin/sh", "-c", "exit 3"], kind: .job(.everyStart))])
        harness.fleet.apply(harness.fleet.loaded)
        #expect(harness.run { harness.fleet.status(of: failing)?.state == .failed })
        #expect(harness.incidents == [failing])
    }

    @Test func eventsPostedWhileActionsRun_areHandledAfterThem_inOrder_andABatchEndsOnce() throws {
        let leaving = ServiceName("leaving")!
        let staying = ServiceName("staying")!
        let harness = try Harness([Self.spec("leaving", ["/bin/sleep", "30"]), Self.spec("staying", ["/bin/sleep", "30"])])
        harness.fleet.apply(harness.fleet.loaded)
        #expect(harness.batches == 1, "the roster, both spawns and what they posted: one batch")
        #expect(harness.fleet.status(of: leaving)?.pid != nil && harness.fleet.status(of: staying)?.pid != nil)
        let stayingPID = harness.fleet.status(of: staying)?.pid

        // While `forget` (an action) runs, two events are posted: neither is handled before the
        // action returns, both are handled before the batch ends, and in the order posted
        // (stop, then start: wanted up; the other order would leave it wanted down).
        var seenInsideTheAction: [String] = []
        harness.fleet.events.forgotten = { [unowned harness] name in
            harness.trace.append("forgotten \(name)")
            harness.fleet.post(.operatorRequested(.stop, staying))
            harness.fleet.post(.operatorRequested(.start, staying))
            let status = harness.fleet.status(of: staying)
            seenInsideTheAction.append("\(status?.desired.rawValue ?? "-") \(status?.state.rawValue ?? "-")")
        }
        var desiredAtTheBatchsEnd: [Intent?] = []
        let batchHandled = harness.fleet.events.batchHandled
        harness.fleet.events.batchHandled = { [unowned harness] in
            desiredAtTheBatchsEnd.append(harness.fleet.status(of: staying)?.desired)
            batchHandled()
        }
        // Once both run, a roster without `leaving`: it is stopped, and forgotten when it is down.
        var applied = false
        let done = harness.run {
            if !applied {
                guard harness.fleet.statuses().allSatisfy({ $0.state == .running }) else { return false }
                applied = true
                harness.fleet.apply(
                    Harness.loaded([Self.spec("staying", ["/bin/sleep", "30"])], charactersDirectory: harness.scratch.file("characters")))
                return false
            }
            return harness.fleet.status(of: leaving) == nil
        }
        #expect(done)
        #expect(seenInsideTheAction == ["up running"], "not handled inside the action: still wanted up, still running")
        let forgotten = try #require(harness.trace.firstIndex(of: "forgotten leaving"))
        #expect(Array(harness.trace[(forgotten + 1)...]) == ["batch"], "the batch ended once, after what the action posted")
        #expect(desiredAtTheBatchsEnd.last == .up, "stop, then start: wanted up")
        #expect(harness.fleet.status(of: staying)?.state == .stopping, "the stop was carried out (SIGTERM sent)")
        #expect(harness.fleet.status(of: staying)?.pid == stayingPID)
    }

    @Test func aNotifyDatagramFromAnotherProcess_isRejected_andNotNews() throws {
        let waiter = ServiceName("waiter")!
        let harness = try Harness([Self.spec("waiter", ["/bin/sleep", "30"], ready: .notify)])
        harness.fleet.apply(harness.fleet.loaded)
        #expect(harness.fleet.status(of: waiter)?.pid != nil)
        #expect(Self.send("READY=1", to: harness.fleet.notifySocketPath(waiter)))
        #expect(harness.run { !harness.rejected.isEmpty })
        #expect(harness.rejected == [waiter], "the test runner is not one of its processes")
        #expect(harness.fleet.status(of: waiter)?.isReady == false, "and its READY=1 is not news")
    }

    /// One datagram to a unix socket (the kernel adds this process's credentials).
    static func send(_ message: String, to path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[index] = byte }
        }
        let sent = message.withCString { text in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, text, strlen(text), 0, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
        }
        return sent > 0
    }
}
