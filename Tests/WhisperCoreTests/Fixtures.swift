import WhisperCore

extension ServiceName {
    static func n(_ text: String) -> ServiceName { ServiceName(text)! }
}

extension ServiceSpec {
    static func character(
        _ name: String, ready: ReadinessMode = .started, restart: RestartPolicy = RestartPolicy(),
        after: [String] = [], port: Int? = nil, grace: Duration = .seconds(10), watchdog: Duration? = nil,
        onUnhealthy: UnhealthyAction = .restart, arguments: [String] = ["/bin/true"]
    ) -> ServiceSpec {
        ServiceSpec(
            name: .n(name), kind: .character, launch: LaunchSpec(arguments: arguments), port: port,
            after: after.map { Dependency(.n($0)) }, restart: restart, stopGrace: grace,
            health: HealthPolicy(
                ready: ready, readyTimeout: .seconds(5), watchdog: watchdog,
                probe: ready == .http
                    ? ProbePolicy(check: .http(path: "/health"), interval: .seconds(10), timeout: .seconds(1), retries: 3, startPeriod: .seconds(20))
                    : nil,
                onUnhealthy: onUnhealthy))
    }

    static func job(_ name: String, run: JobRunMode = .oncePerRevision, after: [String] = [], arguments: [String] = ["/bin/true"]) -> ServiceSpec {
        ServiceSpec(name: .n(name), kind: .job(run), launch: LaunchSpec(arguments: arguments), after: after.map { Dependency(.n($0)) })
    }
}

/// Drives a ``Supervisor`` with a hand-advanced clock, as the shell would, and plays the
/// shell's part for spawns (pids are handed out in order).
struct Harness {
    var supervisor: Supervisor
    var now = Instant(nanoseconds: 1_000_000_000)
    var nextPID: Int32 = 100
    var log: [SupervisorAction] = []

    init(_ specs: [ServiceSpec], persistedDown: Set<ServiceName> = [], completedJobs: [ServiceName: String] = [:]) {
        supervisor = Supervisor(persistedDown: persistedDown, completedJobs: completedJobs, seed: 42)
        send(.rosterLoaded(Roster(services: specs)))
    }

    /// Sends an event; every `spawn` is answered with `spawnSucceeded` and a fresh pid, then
    /// `programStarted` (its exec succeeded), as the shell does.
    @discardableResult
    mutating func send(_ event: SupervisorEvent) -> [SupervisorAction] {
        var all: [SupervisorAction] = []
        var pending = [event]
        while !pending.isEmpty {
            let next = pending.removeFirst()
            let actions = supervisor.handle(next, now: now)
            all += actions
            for case .spawn(let spec) in actions {
                nextPID += 1
                pending.append(.spawnSucceeded(spec.name, pid: nextPID))
                pending.append(.programStarted(spec.name, pid: nextPID))
            }
        }
        log += all
        return all
    }

    @discardableResult
    mutating func advance(_ duration: Duration) -> [SupervisorAction] {
        now = now.advanced(by: duration)
        return send(.timerFired)
    }

    /// Advances to the core's own next deadline and fires it.
    @discardableResult
    mutating func fireNextDeadline() -> [SupervisorAction] {
        guard let deadline = supervisor.nextDeadline else { return [] }
        now = max(now, deadline)
        return send(.timerFired)
    }

    func status(_ name: String) -> ServiceStatus { supervisor.status(of: .n(name))! }
    func pid(_ name: String) -> Int32? { status(name).pid }
    func state(_ name: String) -> ServiceState { status(name).state }

    @discardableResult
    mutating func exit(_ name: String, _ termination: ProcessTermination = .exited(code: 1)) -> [SupervisorAction] {
        send(.childExited(.n(name), pid: pid(name)!, termination))
    }
}

extension Array where Element == SupervisorAction {
    var spawned: [String] { compactMap { if case .spawn(let spec) = $0 { spec.name.rawValue } else { nil } } }
    var signals: [(String, Signal)] {
        compactMap { if case .signal(let name, _, let signal) = $0 { (name.rawValue, signal) } else { nil } }
    }
    var killed: [String] { compactMap { if case .killAll(let name, _) = $0 { name.rawValue } else { nil } } }
    var alerts: [String] { compactMap { if case .alert(_, let text) = $0 { text } else { nil } } }
    var containsStartupCompleted: Bool { contains(.startupCompleted) }
    var containsShutdownCompleted: Bool { contains(.shutdownCompleted) }
}
