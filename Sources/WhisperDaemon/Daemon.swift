import Foundation
import Glibc
import WhisperAPI
import WhisperConfig
import Synchronization
import WhisperCore
import WhisperConcurrency
import WhisperSystem

/// The imperative shell's wiring: the configuration, signals, the status HTTP server, reload
/// (the roster read again, its difference applied by the ``Fleet``), re-exec, and the loop's
/// one timer. The fleet's lifecycle is ``Fleet``'s; the cgroups ``CgroupKeeper``'s, the
/// control socket ``ControlService``'s, the status endpoints ``StatusPublisher``'s. Everything
/// runs on one thread, in one epoll loop; there is no polling anywhere (exits via pidfd,
/// health via datagrams, time via one timerfd set to the earliest deadline any component has).
public final class Daemon {
    let configuration: DaemonConfiguration
    let log: DaemonLog
    let loop: EventLoop
    var loader: RosterLoader
    /// The roster being run (the fleet's).
    var loaded: LoadedRoster { fleet.loaded }
    /// The fleet's lifecycle: the core, its runs, probes, notify sockets, output and schedules.
    let fleet: Fleet
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
    /// Incidents noted and not yet written, and when they will be (see `recordIncident`).
    var pendingIncidents: [PendingIncident] = []
    var pendingIncidentDeadline: Int64?

    /// What the previous whisperd handed over (this one was started by a re-exec), until adopted.
    var handover: Handover?
    /// A re-exec was asked for: it happens on the loop's next turn, after the answer is sent.
    var pendingReexec: String?
    /// Re-execs this whisperd has been through; why the last one asked for failed, if it did.
    var reexecs = 0
    /// Re-execs as `/health` and `whisperctl reexec` count them: this process's own counts once
    /// it has announced its start-up (systemd has its READY=1, `systemctl` shows it active again).
    var completedReexecs: Int { reexecs > 0 && !fleet.isStartupAnnounced ? reexecs - 1 : reexecs }
    var lastReexecError: String?
    /// Every cgroup of every character, OOM watches and drains (the fleet asks; it tells through events).
    let cgroups: CgroupKeeper
    /// `/health`, `/v1/characters`, `/metrics`: their renderings, caches and counters.
    let status: StatusPublisher

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
        let spawner = try ProcessSpawner(nofileSoftLimit: nofileSoftLimit)
        // Re-executed by an older whisperd, whose loop ran 5 nice steps above the characters:
        // back to theirs, which a child now inherits.
        errno = 0
        let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        if errno == 0, let restored = handover?.loopNiceToRestore(current: nice, hasCapSysNice: hasEffectiveCapability(23)) {
            _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, restored)
        }
        self.logWriter = try LogWriter(journal: configuration.journal, mirror: configuration.oneService == nil ? nil : STDOUT_FILENO)
        self.stateStore = try StateStore(directory: configuration.stateDirectory)
        self.tenants = Tenants(
            stateDirectory: configuration.stateDirectory, runtimeDirectory: configuration.runtimeDirectory,
            executable: configuration.selfExecutable, stateStore: stateStore)
        self.incidents = IncidentStore(stateDirectory: configuration.stateDirectory)
        self.fleet = Fleet(
            configuration: configuration, loaded: loaded, log: log, loop: loop, spawner: spawner, cgroups: self.cgroups,
            tenants: tenants, logWriter: logWriter, stateStore: stateStore, handover: handover)
        fleet.events = Fleet.Events(
            batchHandled: { [unowned self] in
                self.status.fleetChanged()
                self.armTimer()
                self.publishSystemdStatus()
            },
            becameReady: { [unowned self] name, seconds in self.status.recordTimeToReady(name, seconds: seconds) },
            forgotten: { [unowned self] name in self.status.forget(name) },
            datagramRejected: { [unowned self] name in self.status.countRejectedDatagram(name) },
            datagramMalformed: { [unowned self] name in self.status.countMalformedDatagram(name) },
            output: { [unowned self] name, bytes in
                self.control.forward(name, bytes)
                self.forwardToDashboards(name, bytes)
            },
            incident: { [unowned self] status, healthCheck in self.recordIncident(status, healthCheck: healthCheck) },
            startupCompleted: { [unowned self] in self.startupCompleted() },
            oneServiceDone: { [unowned self] name, state in self.endWithTheOneService(name, state) },
            shutdownCompleted: { [unowned self] in self.loop.stop() })
    }

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
        if let handover {
            self.handover = nil
            fleet.adopt(handover)
        }
        startDashboard()
        let stopped = fleet.statuses().filter { $0.desired == .down }.map(\.name.rawValue)
        log.log(
            .info, "whisperd",
            "starting \(loaded.roster.services.count) services from \(loaded.path) (state \(configuration.stateDirectory), "
                + "runtime \(configuration.runtimeDirectory), logs \(configuration.logDirectory))")
        if !stopped.isEmpty { log.log(.info, "whisperd", "kept stopped by operator intent: \(stopped.joined(separator: ", "))") }
        warnAboutLimits(loaded.roster)
        if let interval = systemd.watchdogPingInterval { nextSystemdPing = Clock.monotonicNanoseconds() + interval }
        fleet.apply(loaded)
        loop.run()
        writePendingIncidents()
        cgroups.removeAll(offThread: fleet.isShuttingDown)
        fleet.closeNotifySockets()
        statusServer?.close()
        control.close()
        logWriter.close()
        log.log(.info, "whisperd", "stopped")
        return exitCode
    }

    // MARK: - What the fleet tells

    /// Every service wanted up is ready: systemd hears READY=1.
    private func startupCompleted() {
        systemd.ready(status: fleet.summary)
        // Parsing the roster and the start-up burst leave freed heap and code pages that
        // are not needed again behind: give them back, since whisperd then lives for
        // months at its idle size.
        // The start-up burst's uids are saved first: encoding them after the release would
        // bring back the pages just released (docs/performance.md, the PSS row).
        fleet.saveDynamicIDs()
        cgroups.openPeakFiles()
        releaseFreedMemory()
        releaseStartupCodePages()
    }

    /// `whisperd run-one NAME` (a pod's entrypoint): whisperd supervises one service as it would
    /// on one host — restarts, backoff, readiness, watchdog — and exits once that service is done
    /// for good, so the container engine sees the end (0: completed; 1: failed).
    private func endWithTheOneService(_ name: ServiceName, _ state: ServiceState) {
        exitCode = state == .exited ? 0 : 1
        log.log(.info, character: name, "\(state.rawValue) and not restarted by its policy: whisperd run-one exits (\(exitCode))")
        fleet.post(.shutdownRequested)
    }

    // MARK: - The timer

    /// Wakes the loop on its next turn (a re-exec runs after the request's answer is written).
    func armTimerSoon() { armTimer() }

    /// The loop's one timer, set to the earliest deadline any component has.
    private func armTimer() {
        var deadline = fleet.nextDeadline
        if let drain = cgroups.nextDrainDeadline { deadline = min(deadline ?? drain, drain) }
        if let ping = nextSystemdPing { deadline = min(deadline ?? ping, ping) }
        if let incidents = pendingIncidentDeadline { deadline = min(deadline ?? incidents, incidents) }
        if pendingReexec != nil { deadline = Clock.monotonicNanoseconds() }
        if let schedule = fleet.nextScheduleWakeUp(monotonicNow: Clock.monotonicNanoseconds()) { deadline = min(deadline ?? schedule, schedule) }
        loop.setDeadline(deadline) { [unowned self] in self.timerFired() }
    }

    private func timerFired() {
        let now = Clock.monotonicNanoseconds()
        fleet.expireProbes(now: now)
        cgroups.expireDrains(now: now)
        if let ping = nextSystemdPing, ping <= now, let interval = systemd.watchdogPingInterval {
            systemd.watchdog()
            nextSystemdPing = now + interval
        }
        if let incidents = pendingIncidentDeadline, incidents <= now { writePendingIncidents() }
        if let requester = pendingReexec {
            pendingReexec = nil
            reexec(requestedBy: requester)
        }
        fleet.runDueSchedules()
        fleet.post(.timerFired)
    }

    private func received(signal: Int32) {
        switch signal {
        case SIGHUP:
            reload()
        case SIGUSR2:
            if let refusal = requestReexec(by: "SIGUSR2") { log.log(.warning, "whisperd", "re-exec refused: \(refusal)") }
        case SIGTERM, SIGINT, SIGQUIT:
            let again = fleet.isShuttingDown
            log.log(
                .info, "whisperd",
                again ? "second stop signal: killing everything now" : "signal \(Signal(rawValue: signal)): stopping every service")
            systemd.stopping()
            fleet.post(.shutdownRequested)
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
        guard !fleet.isShuttingDown else { return .rejected(["whisperd is shutting down"]) }
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
            if diff.isEmpty {
                log.log(.info, "reload", "roster unchanged")
            } else {
                for line in diff.plan { log.log(.info, "reload", line) }
            }
            warnAboutLimits(newRoster.roster)
            fleet.apply(newRoster)
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
        let summary = fleet.summary
        guard summary != lastSystemdStatus else { return }
        lastSystemdStatus = summary
        if fleet.isStartupAnnounced { systemd.status(summary) }
    }
}
