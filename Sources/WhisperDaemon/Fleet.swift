import Foundation
import Glibc
import WhisperAPI
import WhisperConfig
import WhisperCore
import WhisperSystem

/// One running process of a service.
final class LiveRun {
    let pid: Int32
    /// -1 once reaped (the number may then belong to another descriptor).
    var pidFD: Int32
    var outputs: [Int32: OutputPipe] = [:]
    /// The spawn's, to learn whether a step before exec failed (nil: an adopted process).
    let child: ProcessSpawner.Child?
    /// A step before exec failed (learnt from the exec pipe, before the reap).
    var startFailure: ProcessSpawner.Failure?
    /// whisperd's copies of the output pipes' write ends, closed at the reap (see
    /// ``ProcessSpawner/Request/holdsOutputOpen``); a grandchild still holding the pipes keeps
    /// them open after that.
    var heldWriteFDs: [Int32] = []
    /// The service counts its processes (`pids:`, or a `nproc` ulimit): a zombie still counts
    /// until reaped, so it is reaped before the restart (else after: `Fleet.reap`).
    var countsProcesses = false

    init(pid: Int32, pidFD: Int32) {
        self.pid = pid
        self.pidFD = pidFD
        self.child = nil
    }

    init(_ child: ProcessSpawner.Child) {
        self.pid = child.pid
        self.pidFD = child.pidFD
        self.child = child
        self.heldWriteFDs = child.heldWriteFDs
    }

    func closeHeldWriteEnds() {
        for fd in heldWriteFDs { close(fd) }
        heldWriteFDs = []
    }
}

struct OutputPipe {
    var assembler: LineAssembler
}

/// A time zone from the system's zone database, for cron schedules.
struct SystemTimeZone: UTCOffsets {
    let zone: TimeZone

    func secondsEastOfUTC(at instant: UnixSeconds) -> Int {
        zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(instant)))
    }

    /// The roster's `timezone:` (checked when the roster was read), or the host's.
    static func named(_ identifier: String?) -> any UTCOffsets {
        SystemTimeZone(zone: identifier.flatMap(TimeZone.init(identifier:)) ?? .current)
    }
}

/// The fleet's lifecycle: turns the fleet's OS events (exits via pidfd, notify datagrams,
/// output lines, probe verdicts, OOM kills) into ``SupervisorEvent``s, feeds the pure
/// ``Supervisor``, and carries out the actions it returns — each one small OS operation.
/// It owns the core and its event queue, every live run (and a rolling restart's side runs),
/// the probes, the notify sockets, the output watching, the job timetable, the spawner and
/// the roster being run. It asks ``CgroupKeeper``, ``Tenants``, `LogWriter` and `StateStore`;
/// it knows nothing of ``Daemon``: what the rest must know goes out through ``Events``, which
/// ``Daemon`` sets once.
///
/// Not `Sendable`: runs on the loop thread.
final class Fleet {
    /// What the fleet tells the rest of whisperd.
    struct Events {
        /// A batch of events was handled (the queue is empty, the dynamic uids saved): what
        /// the fleet shows has changed, and its next deadline may have.
        var batchHandled: () -> Void = {}
        /// A character went from starting to running in `seconds`.
        var becameReady: (ServiceName, Double) -> Void = { _, _ in }
        /// A character left the roster: its notify socket, tenant and cgroups are gone.
        var forgotten: (ServiceName) -> Void = { _ in }
        /// A notify datagram from a process that is not the character's.
        var datagramRejected: (ServiceName) -> Void = { _ in }
        /// A notify datagram that is truncated or does not parse.
        var datagramMalformed: (ServiceName) -> Void = { _ in }
        /// Whole lines a character just wrote (already handed to its log file).
        var output: (ServiceName, [UInt8]) -> Void = { _, _ in }
        /// A run ended abnormally (the restart, if any, already under way): its status, and
        /// what the last failed health check said when that is why.
        var incident: (ServiceStatus, _ healthCheck: String?) -> Void = { _, _ in }
        /// Every service wanted up is ready, the first time.
        var startupCompleted: () -> Void = {}
        /// `whisperd run-one`: the one service is done for good (exited or failed).
        var oneServiceDone: (ServiceName, ServiceState) -> Void = { _, _ in }
        /// Every service stopped: the shutdown is over.
        var shutdownCompleted: () -> Void = {}
    }

    var events = Events()
    private let configuration: DaemonConfiguration
    private let log: DaemonLog
    private let loop: EventLoop
    private let cgroups: CgroupKeeper
    /// Who each service runs as and what it may reach.
    private let tenants: Tenants
    private let logWriter: LogWriter
    private let stateStore: StateStore
    /// The roster being run (the last one applied), with where each variable came from.
    private(set) var loaded: LoadedRoster
    private var core: Supervisor
    private let spawner: ProcessSpawner
    /// Per service: its notify socket (kept across restarts) and the live run, if any.
    private var notifySockets: [ServiceName: NotifySocket] = [:]
    /// Every read of a child's output lands here first (the loop is one thread): not a zeroed
    /// 64 KiB array per read, of which a child writing as fast as it can makes thousands a
    /// second (docs/reliability.md, "slow and silent children").
    private var outputBuffer = [UInt8](repeating: 0, count: 65536)
    private var runs: [ServiceName: LiveRun] = [:]
    /// Rolling restarts: the new process before it takes over, and the old one draining after.
    private var sideRuns: [ServiceName: [Int32: LiveRun]] = [:]
    /// Scheduled jobs: when each runs next (wall clock).
    private var timetable = JobTimetable()
    /// When each job's current or last run started (wall-clock seconds), for status.
    private var jobRunStartedAt: [ServiceName: Int64] = [:]
    private var probes: [ServiceName: any RunningProbe] = [:]
    /// What the last failed health check said (an exec probe's output tail), for the incident.
    private var lastProbeFailure: [ServiceName: String] = [:]
    /// `ready: log`: the pattern each starting service's output is matched against, until it matches.
    private var readyLogMatchers: [ServiceName: Regex<AnyRegexOutput>] = [:]
    private var queue: [SupervisorEvent] = []
    private var isDraining = false
    /// Each service's launch as its last start made it, which its restarts reuse. Everything in
    /// one comes from the roster, so applying a roster drops them all (and forgetting a
    /// service, its own).
    private var launches: [ServiceName: Launch] = [:]
    /// The batch of actions being carried out starts one process, no more.
    private var lonelySpawn = false
    /// The loop thread's wake-ups; off from a lone spawn to the end of its batch.
    private let wakeUps = WakeUpPreemption()
    private var wakeUpsDeferToTheChild = false

    /// What a start of a service needs beyond its cgroup: its command (program found, argv and
    /// environment laid out) and its tenant's ids and sandbox.
    private struct Launch {
        var command: ProcessSpawner.Command
        var tenant: Tenants.Prepared
    }
    /// `whisperd run-one NAME`: whisperd ends when that service is done.
    private let runsOneService: Bool

    /// `handover` is what a previous whisperd handed over (its runs are adopted by ``adopt(_:)``).
    init(
        configuration: DaemonConfiguration, loaded: LoadedRoster, log: DaemonLog, loop: EventLoop, spawner: ProcessSpawner,
        cgroups: CgroupKeeper, tenants: Tenants, logWriter: LogWriter, stateStore: StateStore, handover: Handover?
    ) {
        self.configuration = configuration
        self.loaded = loaded
        self.log = log
        self.loop = loop
        self.spawner = spawner
        self.cgroups = cgroups
        self.tenants = tenants
        self.logWriter = logWriter
        self.stateStore = stateStore
        self.runsOneService = configuration.oneService != nil
        let stopped = Set(stateStore.stoppedServices().compactMap(ServiceName.init))
        var jobs: [ServiceName: String] = [:]
        for (name, revision) in stateStore.completedJobs() { if let name = ServiceName(name) { jobs[name] = revision } }
        let seed = UInt64(truncatingIfNeeded: Clock.realtimeNanoseconds()) ^ UInt64(getpid())
        let inRoster = Set(loaded.roster.names)
        self.core = Supervisor(
            persistedDown: stopped, completedJobs: jobs, adopted: (handover?.adoptedRuns() ?? [:]).filter { inRoster.contains($0.key) },
            seed: seed)
        cgroups.events = CgroupKeeper.Events(
            oomKilled: { [unowned self] name, kills in for _ in 0..<min(kills, 1000) { self.post(.oomKilled(name)) } },
            drained: { [unowned self] name, run, termination in self.finishRun(name, run, termination) })
    }

    // MARK: - What the rest may read

    func statuses() -> [ServiceStatus] { core.statuses() }
    func status(of name: ServiceName) -> ServiceStatus? { core.status(of: name) }
    var isShuttingDown: Bool { core.isShuttingDown }
    var isStartupAnnounced: Bool { core.isStartupAnnounced }
    /// The fleet in a line (`3 running, 1 starting`…).
    var summary: String { core.summary }
    /// A character in a rolling restart, if any is.
    var anyRollingRestart: ServiceName? { sideRuns.keys.first }

    /// The core's next deadline and every probe's still waiting (monotonic nanoseconds).
    var nextDeadline: Int64? {
        var deadline = core.nextDeadline?.nanoseconds
        for probe in probes.values where !probe.isDone { deadline = min(deadline ?? probe.deadline, probe.deadline) }
        return deadline
    }

    /// From the timer: a probe past its deadline fails (it leaves `probes` with its verdict;
    /// an exec probe's comes when it is reaped).
    func expireProbes(now: Int64) {
        for probe in probes.values where probe.deadline <= now && !probe.isDone { probe.expire() }
    }

    // MARK: - Events into the core

    /// Queues an event; events raised while actions run are handled after them, in order.
    func post(_ event: SupervisorEvent) {
        queue.append(event)
        guard !isDraining else { return }
        isDraining = true
        while !queue.isEmpty {
            let next = queue.removeFirst()
            let actions = core.handle(next, now: Instant(nanoseconds: Clock.monotonicNanoseconds()))
            // A (re)start's line "… -> starting" is written after its spawn: the child need not
            // wait for the formatting and the log writer's wake-up (the line says the same).
            var startLines: [SupervisorAction] = []
            // Only a batch's one spawn waits for its exec: a burst would wait for each.
            lonelySpawn = actions.reduce(0) { count, action in if case .spawn = action { count + 1 } else { count } } == 1
            for action in actions {
                if case .transitioned(_, _, .starting, _) = action { startLines.append(action) } else { execute(action) }
            }
            for line in startLines { execute(line) }
        }
        isDraining = false
        saveDynamicIDs()
        events.batchHandled()
        wakeUpsPreemptAgain()
    }

    /// The dynamic uids given since the last batch, written once per batch of events.
    func saveDynamicIDs() {
        do { try tenants.saveAllocations() } catch {
            log.log(.error, "whisperd", "cannot save the characters' dynamic uids: \(error)")
        }
    }

    // MARK: - Carrying out what the core decided

    private func execute(_ action: SupervisorAction) {
        switch action {
        case .spawn(let spec):
            spawn(spec)
        case .spawnSuccessor(let spec):
            enableListenerMigration()
            spawn(spec, asSuccessor: true)
        case .killProcessGroup(let name, let pid):
            guard let run = sideRuns[name]?[pid] ?? runs[name].flatMap({ $0.pid == pid ? $0 : nil }), run.pidFD >= 0 else { break }
            if kill(-pid, SIGKILL) != 0 { _ = ChildReaper.signal(pidFD: run.pidFD, SIGKILL) }
        case .signal(let name, let pid, let signal):
            // The whole process group: shell wrappers do not forward signals.
            guard let run = runs[name].flatMap({ $0.pid == pid ? $0 : nil }) ?? sideRuns[name]?[pid], run.pidFD >= 0 else { break }
            if kill(-pid, signal.rawValue) != 0 { _ = ChildReaper.signal(pidFD: run.pidFD, signal.rawValue) }
        case .killAll(let name, let pid):
            killAll(name, pid: pid)
        case .probe(let name, let check, let port, let timeout):
            startProbe(name, check, port: port, timeout: timeout)
        case .applyLimits(let name, let limits):
            cgroups.applyLive(name, limits)
        case .persistIntent(let name, let intent):
            do { try stateStore.setIntent(name.rawValue, down: intent == .down) } catch {
                log.log(.error, character: name, "could not persist intent \(intent.rawValue): \(error)")
            }
        case .recordJobCompleted(let name, let revision):
            do { try stateStore.recordJobCompleted(name.rawValue, revision: revision) } catch {
                log.log(.error, character: name, "could not record job success: \(error)")
            }
        case .forget(let name):
            notifySockets.removeValue(forKey: name).map {
                loop.remove($0.fd)
                $0.close()
            }
            tenants.forget(name)
            launches[name] = nil
            removeCgroup(of: name)
            events.forgotten(name)
            log.log(.info, character: name, "removed")
        case .transitioned(let name, let from, let to, let detail):
            let pid = core.pid(of: name).map { " pid=\($0)" } ?? ""
            log.log(.info, character: name, "\(from.rawValue) -> \(to.rawValue)\(pid): \(detail)")
            if from == .starting, to == .running, let started = core.status(of: name)?.startedAt {
                let seconds = Double(Clock.monotonicNanoseconds() - started.nanoseconds) / 1e9
                events.becameReady(name, seconds)
            }
            // Down for good (until someone starts it): its empty cgroups go away.
            // At shutdown too, one by one as characters finish, rather than all at the end.
            let isDownForGood =
                to == .exited || to == .failed
                || (to == .stopped && (core.isShuttingDown || core.status(of: name)?.desired == .down))
            if isDownForGood, runs[name] == nil, !cgroups.isDraining(name) { removeCgroup(of: name) }
            // `whisperd run-one NAME` (a pod's entrypoint) exits once that service is done for good.
            if runsOneService, !core.isShuttingDown, to == .exited || to == .failed { events.oneServiceDone(name, to) }
        case .alert(let name, let message):
            log.log(.error, character: name, message)
        case .startupCompleted:
            log.log(.info, "whisperd", "startup complete: \(core.summary)")
            events.startupCompleted()
        case .shutdownCompleted:
            log.log(.info, "whisperd", "every service stopped")
            events.shutdownCompleted()
        }
    }

    /// One check of `name`; its verdict comes back as `probeFinished`.
    private func startProbe(_ name: ServiceName, _ check: ProbeCheck, port: Int?, timeout: Duration) {
        let deadline = Clock.monotonicNanoseconds() + timeout.nanoseconds
        let finished: (Bool) -> Void = { [unowned self] succeeded in
            self.probes[name] = nil
            self.post(.probeFinished(name, succeeded: succeeded))
        }
        let probe: any RunningProbe
        switch check {
        case .http(let path):
            guard let port else { return finished(false) }
            probe = LoopbackProbe(loop: loop, host: "127.0.0.1", port: port, path: path, deadline: deadline, completion: finished)
        case .tcp(let port):
            probe = LoopbackProbe(loop: loop, host: "127.0.0.1", port: port, path: nil, deadline: deadline, completion: finished)
        case .exec(let arguments):
            guard let spec = loaded.roster[name], let child = spawnProbe(spec, arguments) else { return finished(false) }
            probe = ExecProbe(loop: loop, spawner: spawner, child: child, deadline: deadline) { [unowned self] succeeded, detail in
                if succeeded {
                    self.lastProbeFailure[name] = nil
                } else {
                    self.lastProbeFailure[name] = detail
                    // The probe's output is the character's: no control character (a forged log line) gets through.
                    let printable = String(detail.prefix(300).unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? " " : Character($0) })
                    self.log.log(.info, character: name, "health check failed (\(printable))")
                }
                finished(succeeded)
            }
        }
        // A refused connect completes inside the initialiser: nothing left to track then.
        if !probe.isDone { probes[name] = probe }
    }

    /// Before any clone (a child inherits the policy) and at the end of the batch.
    private func wakeUpsPreemptAgain() {
        guard wakeUpsDeferToTheChild else { return }
        wakeUps.preemptAgain()
        wakeUpsDeferToTheChild = false
    }

    /// The exec probe's process: as the service runs (user, cgroup, environment, sandbox), but
    /// without its notify socket (a probe does not speak for the service).
    private func spawnProbe(_ spec: ServiceSpec, _ arguments: [String]) -> ProcessSpawner.Child? {
        let name = spec.name
        wakeUpsPreemptAgain()
        do {
            let placement = try cgroups.prepare(for: spec)
            let tenant = try tenants.prepare(
                spec, charactersDirectory: loaded.charactersDirectory,
                homeIsInherited: loaded.environmentOrigins[name]?["HOME"] == "base", notifySocket: nil)
            var environment = childEnvironment(spec, notifySocket: "")
            environment["NOTIFY_SOCKET"] = nil
            environment.merge(tenant.environment) { _, own in own }
            let request = ProcessSpawner.Request(
                arguments: arguments, environment: environment, workingDirectory: spec.launch.workingDirectory,
                placement: placement, dataLimitBytes: cgroups.backend.memory == nil ? spec.limits.memoryBytes : nil,
                identity: tenant.identity, dropsCapabilities: tenant.identity != nil, noNewPrivileges: true,
                landlockRulesetFD: tenant.rulesetFD, oomScoreAdjust: nil,
                resourceLimits: spec.launch.tenant.resourceLimits.map(ResourceLimitSetting.init))
            switch spawner.spawn(request) {
            case .success(let child): return child
            case .failure(let failure):
                lastProbeFailure[name] = "cannot start \(arguments.first ?? ""): \(failure)"
                log.log(.warning, character: name, "health check: cannot start \(arguments.first ?? ""): \(failure)")
                return nil
            }
        } catch {
            lastProbeFailure[name] = "\(error)"
            log.log(.warning, character: name, "health check: \(error)")
            return nil
        }
    }

    private func spawn(_ spec: ServiceSpec, asSuccessor: Bool = false) {
        let name = spec.name
        wakeUpsPreemptAgain()
        func failed(_ errno: Int32) { post(asSuccessor ? .successorSpawnFailed(name, errno: errno) : .spawnFailed(name, errno: errno)) }
        if spec.isJob { jobRunStartedAt[name] = Self.wallClockSeconds() }
        let socket: NotifySocket
        do {
            socket = try notifySocket(for: name)
        } catch {
            log.log(.error, character: name, "cannot create its notify socket: \(error)")
            failed((error as? SystemError)?.errno ?? EIO)
            return
        }
        let placement: CgroupPlacement
        do {
            placement = try cgroups.prepare(for: spec)
        } catch {
            log.log(.error, character: name, "cannot prepare its cgroup: \(error)")
            failed(error.errno)
            return
        }
        let launch: Launch
        if !asSuccessor, let last = launches[name] {
            launch = last
        } else {
            do {
                launch = try prepareLaunch(spec, notifySocket: socket.path, asSuccessor: asSuccessor)
            } catch {
                log.log(.error, character: name, "refused to start: \(error)")
                failed((error as? SystemError)?.errno ?? EPERM)
                return
            }
            // A program not found is looked for again at the next start.
            if !asSuccessor, launch.command.path != nil { launches[name] = launch }
        }
        let tenant = launch.tenant
        let settings = spec.launch.tenant
        var request = ProcessSpawner.Request(
            command: launch.command, workingDirectory: spec.launch.workingDirectory,
            placement: placement, dataLimitBytes: cgroups.backend.memory == nil ? spec.limits.memoryBytes : nil,
            identity: tenant.identity, dropsCapabilities: tenant.identity != nil, noNewPrivileges: true,
            landlockRulesetFD: tenant.rulesetFD, oomScoreAdjust: settings.oomScoreAdjust.map { Int32($0) },
            resourceLimits: settings.resourceLimits.map(ResourceLimitSetting.init))
        request.reportsExec = true
        request.holdsOutputOpen = true
        switch spawner.spawn(request) {
        case .failure(let failure):
            log.log(.error, character: name, "cannot start \(spec.launch.arguments.first ?? ""): \(failure)")
            // The next start makes its launch anew (the program may have moved on PATH).
            if !asSuccessor { launches[name] = nil }
            failed(failure.errno)
            if !asSuccessor { recordIncident(name) }
        case .success(let child):
            // The child usually shares the loop's CPU: the loop steps aside until its exec (as
            // a supervisor asleep in waitpid would), unless other events wait or 2 ms pass; and,
            // woken by the exec, it leaves the new program its CPU (no preemption) until the
            // batch ends.
            if lonelySpawn {
                wakeUpsDeferToTheChild = wakeUps.stopPreempting()
                if !loop.waitBriefly(for: child.execFD, milliseconds: 2) { wakeUpsPreemptAgain() }
            }
            let run = LiveRun(child)
            run.countsProcesses = spec.limits.pids != nil || settings.resourceLimits.contains { $0.resource == .nproc }
            if asSuccessor { sideRuns[name, default: [:]][child.pid] = run } else { runs[name] = run }
            let policy = logPolicy(for: spec)
            readyLogMatchers[name] = spec.health.ready == .log ? spec.health.readyLogPattern.flatMap { try? Regex($0) } : nil
            watchOutput(child.stdoutFD, stream: "stdout", of: name, run: run, policy: policy)
            watchOutput(child.stderrFD, stream: "stderr", of: name, run: run, policy: policy)
            do {
                try loop.add(child.pidFD, .readable) { [unowned self] _ in self.reap(name, run) }
            } catch {
                log.log(.error, character: name, "cannot watch pid \(child.pid): \(error)")
            }
            post(asSuccessor ? .successorSpawned(name, pid: child.pid) : .spawnSucceeded(name, pid: child.pid))
            do {
                try loop.add(child.execFD, .readable) { [unowned self] _ in
                    self.programStartedOrNot(name, run, spec: spec, asSuccessor: asSuccessor)
                }
            } catch {
                close(child.execFD)
                log.log(.error, character: name, "cannot watch pid \(child.pid)'s exec: \(error)")
            }
        }
    }

    private func prepareLaunch(_ spec: ServiceSpec, notifySocket: String, asSuccessor: Bool) throws -> Launch {
        let tenant = try tenants.prepare(
            spec, charactersDirectory: loaded.charactersDirectory,
            homeIsInherited: loaded.environmentOrigins[spec.name]?["HOME"] == "base", notifySocket: notifySocket)
        var environment = childEnvironment(spec, notifySocket: notifySocket)
        environment.merge(tenant.environment) { _, own in own }
        // The new process of a rolling restart (the worker then waits for its Discord session).
        if asSuccessor { environment["WHISPERD_SUCCESSOR"] = "1" }
        let command = ProcessSpawner.Command(
            arguments: spec.launch.arguments, environment: environment, workingDirectory: spec.launch.workingDirectory)
        return Launch(command: command, tenant: tenant)
    }

    /// The child's exec pipe hung up: its program runs, or a step before it failed (the spawn
    /// does not wait for the child's exec).
    private func programStartedOrNot(_ name: ServiceName, _ run: LiveRun, spec: ServiceSpec, asSuccessor: Bool) {
        guard let child = run.child else { return }
        loop.remove(child.execFD)
        close(child.execFD)
        // Reaped already: the reap said what happened.
        guard run.pidFD >= 0 else { return }
        if let failure = spawner.startFailure(of: child) {
            run.startFailure = failure
            if !asSuccessor { launches[name] = nil }
            log.log(.error, character: name, "cannot start \(child.program): \(failure)")
            return  // the reap that follows reports it
        }
        if asSuccessor {
            // `ready: started`: up is ready (a rolling restart is offered for notify and started only).
            if spec.health.ready == .started { markSuccessorReady(name) }
        } else {
            post(.programStarted(name, pid: child.pid))
        }
    }

    /// Rolling restart: when the old process closes its listener, connections the kernel queued
    /// on it move to the new one's (same port, `SO_REUSEPORT`) instead of being reset — only with
    /// `net.ipv4.tcp_migrate_req` (Linux 5.14+), which whisperd turns on (root, once) and says so.
    private func enableListenerMigration() {
        let path = "/proc/sys/net/ipv4/tcp_migrate_req"
        guard readSmallFile(path)?.first == "0" else { return }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        let written = fd >= 0 && write(fd, "1", 1) == 1
        if fd >= 0 { close(fd) }
        log.log(
            written ? .info : .warning, "whisperd",
            written
                ? "set net.ipv4.tcp_migrate_req=1: a rolling restart hands the old listener's queued connections to the new one"
                : "cannot set net.ipv4.tcp_migrate_req=1 (\(String(cString: strerror(errno)))): connections queued on a draining listener may be reset")
    }

    /// Rolling restart: the new process is ready; once the core made it the service's process,
    /// the old one becomes a side run, draining.
    private func markSuccessorReady(_ name: ServiceName) {
        post(.successorReady(name))
        guard let pid = core.pid(of: name), runs[name]?.pid != pid, let next = sideRuns[name]?.removeValue(forKey: pid) else { return }
        if let old = runs[name] { sideRuns[name, default: [:]][old.pid] = old }
        runs[name] = next
    }

    private func logPolicy(for spec: ServiceSpec) -> LogWriter.FilePolicy {
        LogWriter.FilePolicy(
            path: "\(configuration.logDirectory)/\(spec.name.rawValue).log", maxSizeBytes: spec.logs.maxSizeBytes,
            maxFiles: spec.logs.maxFiles)
    }

    // MARK: - The end of a run

    private func reap(_ name: ServiceName, _ run: LiveRun) {
        let pidFD = run.pidFD
        // The zombie is released after the restart this reap may start (the kernel's release
        // takes about as long as the spawn), unless its process still counts against a limit
        // the next run shares.
        guard let result = run.countsProcesses ? ChildReaper.reap(pidFD: pidFD) : ChildReaper.exitStatus(pidFD: pidFD) else { return }
        loop.remove(pidFD)
        run.pidFD = -1
        // The pipes hang up once what is left is read.
        defer {
            if !run.countsProcesses { _ = ChildReaper.reap(pidFD: pidFD) }
            close(pidFD)
            run.closeHeldWriteEnds()
        }
        let termination: ProcessTermination =
            if let signal = result.signal { .signaled(Signal(rawValue: signal)) } else {
                .exited(code: result.code ?? -1)
            }
        // The spawn does not wait for exec: a step that failed in the child is known by now
        // (through the exec pipe, or here if the exit came first).
        var startFailure = run.startFailure
        if startFailure == nil, let child = run.child, let failure = spawner.startFailure(of: child) {
            startFailure = failure
            launches[name] = nil
            log.log(.error, character: name, "cannot start \(child.program): \(failure)")
        }
        // Looked up before it is changed: a change through the optional chain costs a copy.
        if sideRuns[name]?[run.pid] != nil, sideRuns[name]?.removeValue(forKey: run.pid) != nil {
            // A side process of a rolling restart: the other one still runs in the cgroup.
            if sideRuns[name]?.isEmpty == true { sideRuns[name] = nil }
            post(.childExited(name, pid: run.pid, termination))
            return
        }
        if let startFailure {
            finishRun(name, run, termination, startErrno: startFailure.errno)
        } else if cgroups.drainIfPopulated(name, run, termination) {
            // Like a container whose first process ended: the rest of the character goes too,
            // and the run is over only when its cgroup is empty (the keeper's `drained`).
        } else {
            finishRun(name, run, termination)
        }
    }

    /// The end of a run: OOM kills counted first (so the reason is right even when the exit was
    /// seen before the OOM event), then the exit with the run's peak memory.
    private func finishRun(_ name: ServiceName, _ run: LiveRun, _ termination: ProcessTermination, startErrno: Int32? = nil) {
        if runs[name] === run { runs[name] = nil }
        // A check of this run must not judge the next one: dropped (an exec probe is killed).
        probes[name] = nil
        let peak = cgroups.endRun(name, removalOffThread: core.isShuttingDown)
        if let startErrno {
            post(.startFailed(name, pid: run.pid, errno: startErrno))
        } else {
            post(.childExited(name, pid: run.pid, termination, peakMemoryBytes: peak))
        }
        recordIncident(name)
    }

    /// After an abnormal exit (the restart, if any, is already under way): the incident goes
    /// out with the last health check's report when that is why.
    private func recordIncident(_ name: ServiceName) {
        guard let status = core.status(of: name), let exit = status.lastExit, !exit.reason.isSuccess,
            exit.reason != .stopped
        else { return }
        events.incident(status, exit.reason == .healthCheckFailed ? lastProbeFailure[name] : nil)
    }

    /// SIGKILL for everything of the character: its cgroup, and its process group (which is all
    /// there is without a cgroup backend).
    private func killAll(_ name: ServiceName, pid: Int32) {
        let run = runs[name]
        let isCurrent = run?.pid == pid
        // The run already ended and its cgroup was emptied: the pid (and its group) is not ours.
        guard cgroups.killAll(name, isCurrentRun: isCurrent) else { return }
        _ = kill(-pid, SIGKILL)
        if isCurrent, let run, run.pidFD >= 0 { _ = ChildReaper.signal(pidFD: run.pidFD, SIGKILL) }
    }

    /// The character's cgroups go; off the loop thread while the fleet stops.
    private func removeCgroup(of name: ServiceName) { cgroups.remove(name, offThread: core.isShuttingDown) }

    // MARK: - Output

    /// Reads a child's stdout or stderr into its log file. Outlives the main process while a
    /// grandchild still holds the pipe.
    private func watchOutput(
        _ fd: Int32, stream: String, of name: ServiceName, run: LiveRun, policy: LogWriter.FilePolicy, unfinishedLine: [UInt8] = []
    ) {
        run.outputs[fd] = OutputPipe(assembler: LineAssembler(stream: stream, partial: unfinishedLine))
        do {
            try loop.add(fd, .readable) { [unowned self] _ in self.drainOutput(fd, name, run, policy) }
        } catch {
            close(fd)
            run.outputs[fd] = nil
        }
    }

    /// `ready: log`: the first line (text after the time and stream) that matches makes it ready.
    private func matchReadyLine(_ name: ServiceName, in formatted: [UInt8]) {
        guard let pattern = readyLogMatchers[name] else { return }
        for line in formatted.split(separator: 0x0A) {
            let fields = line.split(separator: 0x20, maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if String(decoding: fields[2], as: UTF8.self).contains(pattern) {
                readyLogMatchers[name] = nil
                post(.readyLineSeen(name))
                return
            }
        }
    }

    private func drainOutput(_ fd: Int32, _ name: ServiceName, _ run: LiveRun, _ policy: LogWriter.FilePolicy) {
        guard var pipe = run.outputs[fd] else { return }
        // One read per wake-up: a child writing as fast as it can (`yes`) gets 64 KiB a turn of
        // the loop, so /health and the other children wait for one chunk, not four.
        for _ in 0..<1 {
            let count = outputBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            let now = Clock.realtimeNanoseconds()
            if count > 0 {
                let (bytes, lines) = pipe.assembler.feed(outputBuffer[0..<count], now: now)
                if lines > 0 {
                    if readyLogMatchers[name] != nil { matchReadyLine(name, in: bytes) }
                    logWriter.append(name.rawValue, policy: policy, bytes: bytes, lines: lines, stream: pipe.assembler.stream, pid: run.pid)
                    events.output(name, bytes)
                }
                continue
            }
            if count < 0, errno == EAGAIN || errno == EINTR { break }
            let (bytes, lines) = pipe.assembler.flush(now: now)
            if lines > 0 {
                logWriter.append(name.rawValue, policy: policy, bytes: bytes, lines: lines, stream: pipe.assembler.stream, pid: run.pid)
            }
            loop.remove(fd)
            close(fd)
            run.outputs[fd] = nil
            return
        }
        run.outputs[fd] = pipe
    }

    /// The roster's layered environment plus what only the running whisperd knows.
    func childEnvironment(_ spec: ServiceSpec, notifySocket path: String) -> [String: String] {
        var environment = spec.launch.environment
        environment["NOTIFY_SOCKET"] = path
        environment["WHISPERD_STATE_DIR"] = configuration.stateDirectory
        if spec.isJob {
            // For jobs that act on the fleet's files, such as `whisperd backup --all` run by a schedule.
            environment["WHISPERD_ROSTER"] = configuration.rosterPath
            environment["WHISPERD_CHARACTERS_DIR"] = loaded.charactersDirectory
        }
        // How long the child has after its stop signal: the worker drains within it.
        environment["WHISPERD_STOP_GRACE_MS"] = String(spec.stopGrace.nanoseconds / 1_000_000)
        if ProcessSpawner.isSanitizerBuild {
            // A sanitizer build's children (its own workers, instrumented too) report where it does.
            for key in ["TSAN_OPTIONS", "ASAN_OPTIONS", "LSAN_OPTIONS"] {
                if let value = getenv(key) { environment[key] = String(cString: value) }
            }
        }
        return environment
    }

    // MARK: - Notify sockets

    func notifySocketPath(_ name: ServiceName) -> String {
        "\(configuration.runtimeDirectory)/notify/\(name.rawValue).sock"
    }

    private func notifySocket(for name: ServiceName) throws -> NotifySocket {
        if let existing = notifySockets[name] { return existing }
        let path = notifySocketPath(name)
        guard path.utf8.count < 108 else {
            throw SystemError("notify socket path \(path) is longer than 107 bytes; use a shorter --runtime-dir", errno: ENAMETOOLONG)
        }
        let socket = try NotifySocket(path: path)
        try listenForNotifications(name, socket)
        return socket
    }

    private func listenForNotifications(_ name: ServiceName, _ socket: NotifySocket) throws {
        notifySockets[name] = socket
        try loop.add(socket.fd, .readable) { [unowned self] _ in self.receiveNotifications(name, socket) }
    }

    /// At exit: every notify socket is closed (the loop has stopped).
    func closeNotifySockets() {
        for socket in notifySockets.values { socket.close() }
    }

    private func receiveNotifications(_ name: ServiceName, _ socket: NotifySocket) {
        socket.drain { datagram in handleNotification(name, datagram) }
    }

    private func handleNotification(_ name: ServiceName, _ datagram: NotifySocket.Datagram) {
        // During a rolling restart, a datagram from the new process's session is about the new
        // process (its READY=1 hands over); one from the draining old process is not news.
        if let side = sideRuns[name], !side.isEmpty {
            let session = getsid(datagram.senderPID)
            if let run = side[datagram.senderPID] ?? side[session], isMember(datagram.senderPID, uid: datagram.senderUID, of: name, run: run) {
                if case .success(let message) = NotifyMessage.parse(datagram.bytes), message.isReady, !message.isStopping,
                    core.pid(of: name) != run.pid
                {
                    markSuccessorReady(name)
                }
                return
            }
        }
        guard let run = runs[name], isMember(datagram.senderPID, uid: datagram.senderUID, of: name, run: run) else {
            events.datagramRejected(name)
            log.log(.debug, character: name, "notify datagram from pid \(datagram.senderPID) rejected: not one of its processes")
            return
        }
        if datagram.isTruncated {
            events.datagramMalformed(name)
            return
        }
        switch NotifyMessage.parse(datagram.bytes) {
        case .failure(let error):
            events.datagramMalformed(name)
            log.log(.debug, character: name, "malformed notify datagram: \(error)")
        case .success(let message):
            post(.notified(name, message))
        }
    }

    // MARK: - Whose process is it

    /// Whether a notify datagram's sender belongs to the character: its main process or anything
    /// in its cgroup; with no cgroup backend, a process of its own uid when it has one. Never
    /// its process group: any process can join a group of its session, so that proves nothing.
    private func isMember(_ pid: Int32, uid: UInt32, of name: ServiceName, run: LiveRun) -> Bool {
        if pid == run.pid { return true }
        if let contained = cgroups.contains(pid, in: name) { return contained }
        if let own = tenants.uid(of: name), own != geteuid() { return uid == own }
        return Self.isInSession(of: run, pid: pid, uid: uid)
    }

    /// Without cgroups and without a user of its own (`--cgroup-backend none`, whisperd not
    /// root: run-one in a container), a process of the character is one in the session its main
    /// process leads (each character starts in a session of its own): `whisperd notify` from a
    /// shell script, say. A process can leave a session but never join another, so no other
    /// character's process can be counted in.
    private static func isInSession(of run: LiveRun, pid: Int32, uid: UInt32) -> Bool {
        guard pid > 0, uid == geteuid() else { return false }
        let session = getsid(pid)
        return session > 0 && session == run.pid
    }

    /// Whether a process belongs to any character (its cgroup, or its process being a main
    /// process): such a peer never gets the control socket.
    func isCharacterProcess(_ pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        // A peer gone before it is checked (connect, send, exit) cannot show its cgroup: refused.
        if cgroups.groupsProcesses, readSmallFile("/proc/\(pid)/cgroup") == nil { return true }
        for (name, run) in runs {
            if run.pid == pid { return true }
            if cgroups.contains(pid, in: name) == true { return true }
        }
        return false
    }

    // MARK: - Rosters and schedules

    static func wallClockSeconds() -> UnixSeconds { Clock.realtimeNanoseconds() / 1_000_000_000 }

    /// Runs `loaded`'s roster: hands it to the core, with its schedules planned; runs, once each,
    /// the jobs with `catch_up: true` whose scheduled run was missed while whisperd was down.
    ///
    /// Scheduled jobs (`schedule:` / `every:`): the pure ``JobTimetable`` says which are due on
    /// the wall clock; each due run goes to the core as `scheduledRunDue`, which runs it unless
    /// its last run is still going. The loop's timer is never set more than a minute ahead for a
    /// schedule, so a step of the wall clock (NTP, a suspended VM) delays a run by a minute at most.
    func apply(_ loaded: LoadedRoster) {
        self.loaded = loaded
        launches.removeAll()
        let roster = loaded.roster
        let schedules = roster.services.compactMap { spec in spec.schedule.map { (spec.name, $0) } }
        var stored: [ServiceName: UnixSeconds] = [:]
        for (name, at) in stateStore.lastScheduledRuns() { if let name = ServiceName(name) { stored[name] = at } }
        let missed = timetable.load(schedules, lastScheduled: stored, now: Self.wallClockSeconds(), offsets: SystemTimeZone.named)
        saveLastScheduledRuns()
        post(.rosterLoaded(roster))
        for name in missed {
            log.log(.info, character: name, "a scheduled run was missed while whisperd was down: running it now (catch_up)")
            post(.scheduledRunDue(name))
        }
    }

    /// From the timer: the jobs whose time has come.
    func runDueSchedules() {
        let due = timetable.takeDue(now: Self.wallClockSeconds())
        guard !due.isEmpty else { return }
        saveLastScheduledRuns()
        for name in due { post(.scheduledRunDue(name)) }
    }

    /// When the loop must wake for the next scheduled run (monotonic nanoseconds).
    func nextScheduleWakeUp(monotonicNow: Int64) -> Int64? {
        guard let due = timetable.nextDue else { return nil }
        let wait = min(max(due - Self.wallClockSeconds(), 0), 60)
        return monotonicNow + wait * 1_000_000_000
    }

    private func saveLastScheduledRuns() {
        var runs: [String: Int64] = [:]
        for (name, entry) in timetable.entries { if let at = entry.lastScheduled { runs[name.rawValue] = at } }
        guard runs != stateStore.lastScheduledRuns() else { return }
        do { try stateStore.setLastScheduledRuns(runs) } catch {
            log.log(.error, "whisperd", "cannot save the scheduled jobs' last runs: \(error)")
        }
    }

    /// A scheduled job's rule, next run, last run and its result, for status and `/metrics`.
    func scheduleDescription(_ status: ServiceStatus) -> CharacterStatus.Schedule? {
        guard let entry = timetable.entry(status.name) else { return nil }
        var schedule = CharacterStatus.Schedule(rule: entry.schedule.description, skippedRuns: status.skippedScheduledRuns)
        if let next = entry.nextDue {
            schedule.nextRun = Clock.iso8601(realtimeNanoseconds: next * 1_000_000_000)
            schedule.nextRunUnix = Int(next)
        }
        if let started = jobRunStartedAt[status.name] {
            schedule.lastRun = Clock.iso8601(realtimeNanoseconds: started * 1_000_000_000)
            schedule.lastRunUnix = Int(started)
            schedule.lastResult =
                status.pid != nil ? "running" : (status.lastExit.map { $0.reason.isSuccess ? "ok" : "failed: \($0.reason)" } ?? "running")
        }
        return schedule
    }

    /// A scheduled job's next run and last run start (Unix seconds); nil: not scheduled.
    func jobTimes(of name: ServiceName) -> (next: Int64?, lastRun: Int64?)? {
        timetable.entry(name).map { entry in (entry.nextDue, jobRunStartedAt[name]) }
    }

    // MARK: - Re-exec

    /// For a re-exec: every running service's process, descriptors and counts, to hand over.
    /// A probe in flight gives no verdict across the exec (it is abandoned); the next one is
    /// scheduled as usual.
    func handOverRuns() -> [Handover.Service] {
        for probe in probes.values { (probe as? ExecProbe)?.abandon() }
        probes.removeAll()
        var services: [Handover.Service] = []
        for status in core.statuses() {
            guard let pid = status.pid, let run = runs[status.name], run.pidFD >= 0, let socket = notifySockets[status.name] else { continue }
            services.append(
                Handover.Service(
                    name: status.name.rawValue, pid: pid, pidFD: run.pidFD, notifyFD: socket.fd,
                    outputs: run.outputs.map { fd, pipe in
                        Handover.Output(fd: fd, stream: pipe.assembler.stream, unfinishedLine: pipe.assembler.unfinishedLine)
                    },
                    startedAtNanoseconds: status.startedAt?.nanoseconds ?? Clock.monotonicNanoseconds(), isReady: status.isReady,
                    restarts: status.restarts, restartsByReason: status.restartsByReason, oomKills: status.oomKills,
                    statusText: status.statusText,
                    facets: status.facets.map { Handover.FacetValue(name: $0.name, level: $0.level.rawValue, detail: $0.detail) },
                    jobRunStartedAt: jobRunStartedAt[status.name]))
        }
        return services
    }

    /// After a re-exec: takes the processes the previous whisperd handed over as this one's
    /// runs (their pidfds, notify sockets and output pipes), before the roster is applied. A
    /// process whose service is no longer in the roster is stopped.
    func adopt(_ handover: Handover) {
        let roster = loaded.roster
        for service in handover.services {
            guard let name = ServiceName(service.name), let spec = roster[name] else {
                log.log(.warning, service.name, "no longer in the roster: stopping pid \(service.pid) (handed over by the re-exec)")
                kill(-service.pid, SIGKILL)
                var info = siginfo_t()
                _ = waitid(P_PIDFD, id_t(service.pidFD), &info, WEXITED)
                for fd in [service.pidFD, service.notifyFD] + service.outputs.map(\.fd) { close(fd) }
                continue
            }
            setCloseOnExec([service.pidFD, service.notifyFD] + service.outputs.map(\.fd), true)
            let socket = NotifySocket(path: notifySocketPath(name), inheritedFD: service.notifyFD)
            do { try listenForNotifications(name, socket) } catch {
                log.log(.error, character: name, "cannot watch its handed-over notify socket: \(error)")
            }
            do { _ = try cgroups.prepare(for: spec) } catch {
                log.log(.warning, character: name, "cannot reopen its cgroup after the re-exec: \(error)")
            }
            _ = try? tenants.prepare(
                spec, charactersDirectory: loaded.charactersDirectory,
                homeIsInherited: loaded.environmentOrigins[name]?["HOME"] == "base", notifySocket: socket.path)
            let run = LiveRun(pid: service.pid, pidFD: service.pidFD)
            runs[name] = run
            let policy = logPolicy(for: spec)
            for output in service.outputs {
                watchOutput(output.fd, stream: output.stream, of: name, run: run, policy: policy, unfinishedLine: output.unfinishedLine)
            }
            do {
                try loop.add(service.pidFD, .readable) { [unowned self] _ in self.reap(name, run) }
            } catch {
                log.log(.error, character: name, "cannot watch pid \(service.pid): \(error)")
            }
            if let started = service.jobRunStartedAt { jobRunStartedAt[name] = started }
        }
        log.log(
            .info, "whisperd",
            "re-exec #\(handover.reexecs) done: adopted \(counted(handover.services.count, "running service")), pid \(getpid())")
    }
}
