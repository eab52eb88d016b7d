import Foundation
import Glibc
import WhisperAPI
import WhisperConfig
import Synchronization
import WhisperCore
import WhisperConcurrency
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

    init(pid: Int32, pidFD: Int32) {
        self.pid = pid
        self.pidFD = pidFD
        self.child = nil
    }

    init(_ child: ProcessSpawner.Child) {
        self.pid = child.pid
        self.pidFD = child.pidFD
        self.child = child
    }
}

struct OutputPipe {
    var assembler: LineAssembler
}

/// The imperative shell: turns OS events into ``SupervisorEvent``s, feeds the pure
/// ``Supervisor``, and carries out the actions it returns. Everything runs on one thread, in
/// one epoll loop; there is no polling anywhere (exits via pidfd, health via datagrams,
/// time via one timerfd set to the core's next deadline).
public final class Daemon {
    let configuration: DaemonConfiguration
    let log: DaemonLog
    let loop: EventLoop
    var loader: RosterLoader
    var loaded: LoadedRoster
    var core: Supervisor
    var spawner: ProcessSpawner
    let logWriter: LogWriter
    let stateStore: StateStore
    /// Who each service runs as and what it may reach.
    let tenants: Tenants
    let systemd = SystemdNotifier()
    var signals: SignalSource?
    var statusServer: HTTPServer?
    /// The control socket: its server, its requests decoded, `whisperctl logs -f` clients.
    let control: ControlService
    /// The web dashboard's sessions, samples and live log tails (Dashboard/).
    let dashboard = DashboardState()
    let incidents: IncidentStore

    /// Per service: its notify socket (kept across restarts) and the live run, if any.
    var notifySockets: [ServiceName: NotifySocket] = [:]
    /// Every read of a child's output lands here first (the loop is one thread): not a zeroed
    /// 64 KiB array per read, of which a child writing as fast as it can makes thousands a
    /// second (docs/reliability.md, "slow and silent children").
    var outputBuffer = [UInt8](repeating: 0, count: 65536)
    var runs: [ServiceName: LiveRun] = [:]
    /// Rolling restarts: the new process before it takes over, and the old one draining after.
    var sideRuns: [ServiceName: [Int32: LiveRun]] = [:]
    /// Scheduled jobs: when each runs next (wall clock).
    var timetable = JobTimetable()
    /// When each job's current or last run started (wall-clock seconds), for status.
    var jobRunStartedAt: [ServiceName: Int64] = [:]
    /// What the previous whisperd handed over (this one was started by a re-exec), until adopted.
    var handover: Handover?
    /// A re-exec was asked for: it happens on the loop's next turn, after the answer is sent.
    var pendingReexec: String?
    /// Re-execs this whisperd has been through; why the last one asked for failed, if it did.
    var reexecs = 0
    /// Re-execs as `/health` and `whisperctl reexec` count them: this process's own counts once
    /// it has announced its start-up (systemd has its READY=1, `systemctl` shows it active again).
    var completedReexecs: Int { reexecs > 0 && !core.isStartupAnnounced ? reexecs - 1 : reexecs }
    var lastReexecError: String?
    var probes: [ServiceName: any RunningProbe] = [:]
    /// What the last failed health check said (an exec probe's output tail), for the incident.
    var lastProbeFailure: [ServiceName: String] = [:]
    /// `ready: log`: the pattern each starting service's output is matched against, until it matches.
    var readyLogMatchers: [ServiceName: Regex<AnyRegexOutput>] = [:]
    /// Every cgroup of every character, OOM watches and drains (the fleet asks; it tells through events).
    let cgroups: CgroupKeeper
    /// `/health`, `/v1/characters`, `/metrics`: their renderings, caches and counters.
    let status: StatusPublisher

    private var queue: [SupervisorEvent] = []
    private var isDraining = false
    private var lastSystemdStatus = ""
    private var nextSystemdPing: Int64?
    let startedAt = Clock.monotonicNanoseconds()
    var exitCode: Int32 = 0

    public init(
        configuration: DaemonConfiguration, loaded: LoadedRoster, log: DaemonLog, nofileSoftLimit: Int64,
        cgroups: CgroupBackend = .none(), handover: Handover? = nil
    ) throws {
        self.handover = handover
        self.reexecs = handover?.reexecs ?? 0
        self.configuration = configuration
        self.loaded = loaded
        self.log = log
        self.loop = try EventLoop()
        self.cgroups = CgroupKeeper(backend: cgroups, loop: loop, log: log)
        self.status = StatusPublisher(loop: loop, log: log, cgroups: self.cgroups)
        self.control = ControlService(
            loop: loop, log: log, runtimeDirectory: configuration.runtimeDirectory, groupName: configuration.controlGroup)
        self.loader = RosterLoader(
            selfExecutable: configuration.selfExecutable, hostEnvironment: ProcessInfo.processInfo.environment,
            profiles: configuration.profiles)
        self.loader.replicaOverrides = configuration.replicaOverrides
        self.loader.oneService = configuration.oneService
        self.spawner = try ProcessSpawner(nofileSoftLimit: nofileSoftLimit)
        // The loop thread runs a little above the characters (when allowed), so a burst of
        // children starting on both cores does not keep it waiting for a CPU between spawns;
        // each child is set back to the nice value whisperd was started with.
        errno = 0
        let inherited = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        if errno == 0, setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, inherited - Self.loopPriorityBoost) == 0 {
            spawner.childNice = inherited
        }
        self.logWriter = try LogWriter(journal: configuration.journal, mirror: configuration.oneService == nil ? nil : STDOUT_FILENO)
        self.stateStore = try StateStore(directory: configuration.stateDirectory)
        self.tenants = Tenants(
            stateDirectory: configuration.stateDirectory, runtimeDirectory: configuration.runtimeDirectory,
            executable: configuration.selfExecutable, stateStore: stateStore)
        self.incidents = IncidentStore(stateDirectory: configuration.stateDirectory)
        let stopped = Set(stateStore.stoppedServices().compactMap(ServiceName.init))
        var jobs: [ServiceName: String] = [:]
        for (name, revision) in stateStore.completedJobs() { if let name = ServiceName(name) { jobs[name] = revision } }
        let seed = UInt64(truncatingIfNeeded: Clock.realtimeNanoseconds()) ^ UInt64(getpid())
        let inRoster = Set(loaded.roster.names)
        self.core = Supervisor(
            persistedDown: stopped, completedJobs: jobs, adopted: (handover?.adoptedRuns() ?? [:]).filter { inRoster.contains($0.key) },
            seed: seed)
        self.cgroups.events = CgroupKeeper.Events(
            oomKilled: { [unowned self] name, kills in for _ in 0..<min(kills, 1000) { self.post(.oomKilled(name)) } },
            drained: { [unowned self] name, run, termination in self.finishRun(name, run, termination) })
    }

    /// How many nice steps the loop thread runs above the characters (`setpriority` on that
    /// thread only; needs CAP_SYS_NICE, else nothing changes).
    static let loopPriorityBoost: Int32 = 5

    /// Runs until shutdown completes; returns the process exit code.
    public func run(signals: SignalSource) throws -> Int32 {
        self.signals = signals
        try loop.add(signals.fd, .readable) { [unowned self] _ in
            for signal in signals.drain() { self.received(signal: signal) }
        }
        if let fd = handover?.statusFD {
            statusServer = try HTTPServer(loop: loop, listenFD: fd) { [unowned self] request in self.handleHTTPRequest(request) }
        } else if let address = configuration.httpAddress {
            statusServer = try HTTPServer(loop: loop, host: address.host, port: address.port) { [unowned self] request in
                self.handleHTTPRequest(request)
            }
            log.log(.info, "whisperd", "status endpoint on http://\(address.host.contains(":") ? "[\(address.host)]" : address.host):\(address.port)/health")
        }
        tenants.controlGroupID = try control.start(inheritedFD: handover?.controlFD, fleet: self)
        adoptHandedOverRuns()
        startDashboard()
        let stopped = core.statuses().filter { $0.desired == .down }.map(\.name.rawValue)
        log.log(
            .info, "whisperd",
            "starting \(loaded.roster.services.count) services from \(loaded.path) (state \(configuration.stateDirectory), "
                + "runtime \(configuration.runtimeDirectory), logs \(configuration.logDirectory))")
        if !stopped.isEmpty { log.log(.info, "whisperd", "kept stopped by operator intent: \(stopped.joined(separator: ", "))") }
        warnAboutLimits(loaded.roster)
        if let interval = systemd.watchdogPingInterval { nextSystemdPing = Clock.monotonicNanoseconds() + interval }
        apply(loaded.roster)
        loop.run()
        cgroups.removeAll(offThread: core.isShuttingDown)
        for socket in notifySockets.values { socket.close() }
        statusServer?.close()
        control.close()
        logWriter.close()
        log.log(.info, "whisperd", "stopped")
        return exitCode
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
            for action in actions { execute(action) }
        }
        isDraining = false
        saveDynamicIDs()
        status.fleetChanged()
        armTimer()
        publishSystemdStatus()
    }

    /// The dynamic uids given since the last batch, written once per batch of events.
    func saveDynamicIDs() {
        do { try tenants.saveAllocations() } catch {
            log.log(.error, "whisperd", "cannot save the characters' dynamic uids: \(error)")
        }
    }

    /// Wakes the loop on its next turn (a re-exec runs after the request's answer is written).
    func armTimerSoon() { armTimer() }

    private func armTimer() {
        var deadline = core.nextDeadline?.nanoseconds
        for probe in probes.values where !probe.isDone { deadline = min(deadline ?? probe.deadline, probe.deadline) }
        if let drain = cgroups.nextDrainDeadline { deadline = min(deadline ?? drain, drain) }
        if let ping = nextSystemdPing { deadline = min(deadline ?? ping, ping) }
        if pendingReexec != nil { deadline = Clock.monotonicNanoseconds() }
        if let schedule = nextScheduleWakeUp(monotonicNow: Clock.monotonicNanoseconds()) { deadline = min(deadline ?? schedule, schedule) }
        loop.setDeadline(deadline) { [unowned self] in self.timerFired() }
    }

    private func timerFired() {
        let now = Clock.monotonicNanoseconds()
        // A probe leaves `probes` with its verdict (an exec probe's comes when it is reaped).
        for probe in probes.values where probe.deadline <= now && !probe.isDone { probe.expire() }
        cgroups.expireDrains(now: now)
        if let ping = nextSystemdPing, ping <= now, let interval = systemd.watchdogPingInterval {
            systemd.watchdog()
            nextSystemdPing = now + interval
        }
        if let requester = pendingReexec {
            pendingReexec = nil
            reexec(requestedBy: requester)
        }
        runDueSchedules()
        post(.timerFired)
    }

    private func received(signal: Int32) {
        switch signal {
        case SIGHUP:
            reload()
        case SIGUSR2:
            if let refusal = requestReexec(by: "SIGUSR2") { log.log(.warning, "whisperd", "re-exec refused: \(refusal)") }
        case SIGTERM, SIGINT, SIGQUIT:
            let again = core.isShuttingDown
            log.log(
                .info, "whisperd",
                again ? "second stop signal: killing everything now" : "signal \(Signal(rawValue: signal)): stopping every service")
            systemd.stopping()
            post(.shutdownRequested)
        default:
            break
        }
    }

    enum ReloadOutcome {
        case rejected([String])
        case planned([String])
    }

    /// SIGHUP or `whisperctl reload`: read the roster again; apply the difference, or change
    /// nothing at all. A dry run only reports what would happen.
    @discardableResult
    func reload(dryRun: Bool = false) -> ReloadOutcome {
        guard !core.isShuttingDown else { return .rejected(["whisperd is shutting down"]) }
        if !dryRun { systemd.reloading(monotonicMicroseconds: Clock.monotonicNanoseconds() / 1000) }
        defer { if !dryRun { systemd.send("READY=1") } }
        switch loader.load(path: configuration.rosterPath) {
        case .failure(let error):
            let problems = error.problems.map { "\($0)" }
            guard !dryRun else { return .rejected(problems) }
            for problem in problems { log.log(.error, "reload", "problem: \(problem)") }
            log.log(.error, "reload", "rejected (\(counted(problems.count, "problem"))): the running fleet is unchanged")
            return .rejected(problems)
        case .success(let newRoster):
            let diff = RosterDiff(old: loaded.roster, new: newRoster.roster)
            guard !dryRun else { return .planned(diff.plan) }
            loaded = newRoster
            if diff.isEmpty {
                log.log(.info, "reload", "roster unchanged")
            } else {
                for line in diff.plan { log.log(.info, "reload", line) }
            }
            warnAboutLimits(newRoster.roster)
            apply(newRoster.roster)
            return .planned(diff.plan)
        }
    }

    /// Names, per character, the limits it asks for that this host cannot enforce.
    private func warnAboutLimits(_ roster: Roster) {
        let missing = Set(cgroups.backend.notEnforced)
        let online = readSmallFile("/sys/devices/system/cpu/online").flatMap { try? CPUSet.parse(String($0.filter { $0 != "\n" })) }
        for spec in roster.services {
            var unenforced: [String] = []
            if spec.limits.memoryBytes != nil, missing.contains("memory") { unenforced.append("memory (RLIMIT_DATA only)") }
            if spec.limits.memoryHighBytes != nil, missing.contains("memory_high") { unenforced.append("memory_high") }
            if spec.limits.cpus != nil, missing.contains("cpus") { unenforced.append("cpus") }
            if spec.limits.pids != nil, missing.contains("pids") { unenforced.append("pids") }
            if spec.limits.cpuWeight != nil, missing.contains("cpus") { unenforced.append("cpu_weight") }
            if spec.limits.cpuset != nil, missing.contains("cpuset") { unenforced.append("cpuset") }
            // cgroup v1 has no protection from reclaim (memory.low is v2's).
            if spec.limits.memoryLowBytes != nil, cgroups.backend.memory?.version != .v2 { unenforced.append("memory_low") }
            if let cpuset = spec.limits.cpuset, let online, !cpuset.isSubset(of: online) {
                log.log(
                    .warning, character: spec.name,
                    "cpuset \(cpuset) names CPUs this host does not have online (\(online)): its cgroup will refuse it")
            }
            guard !unenforced.isEmpty else { continue }
            log.log(
                .warning, character: spec.name,
                "limits NOT enforced (\(cgroups.backend.name) backend): \(unenforced.joined(separator: ", "))")
        }
    }

    private func publishSystemdStatus() {
        guard systemd.isUnderSystemd else { return }
        let summary = core.summary
        guard summary != lastSystemdStatus else { return }
        lastSystemdStatus = summary
        if core.isStartupAnnounced { systemd.status(summary) }
    }
}
