/// The whole fleet as a pure state machine: events in, actions out.
///
/// The shell owns one timer, set to ``nextDeadline``; when it fires it sends
/// ``SupervisorEvent/timerFired``. Nothing here reads a clock, sleeps or touches a process.
///
/// ```swift
/// var supervisor = Supervisor(persistedDown: [], completedJobs: [:], seed: 1)
/// let actions = supervisor.handle(.rosterLoaded(roster), now: now)
/// ```
public struct Supervisor: Sendable {
    private var records: [ServiceName: ServiceRecord] = [:]
    private var order: [ServiceName] = []
    private var roster: Roster?
    private var completedJobs: [ServiceName: String]
    private var persistedDown: Set<ServiceName>
    private var rng: SplitMix64
    public private(set) var isShuttingDown = false
    public private(set) var isStartupAnnounced = false
    private var isShutdownAnnounced = false

    /// - Parameters:
    ///   - persistedDown: services an operator stopped, from the state dir; they stay down.
    ///   - completedJobs: `once-per-revision` jobs and the revision that last succeeded.
    ///   - seed: seeds the restart jitter.
    public init(persistedDown: Set<ServiceName> = [], completedJobs: [ServiceName: String] = [:], seed: UInt64) {
        self.persistedDown = persistedDown
        self.completedJobs = completedJobs
        self.rng = SplitMix64(seed: seed)
    }

    public var currentRoster: Roster? { roster }

    /// The one entry point.
    public mutating func handle(_ event: SupervisorEvent, now: Instant) -> [SupervisorAction] {
        var fx = Effects(now: now, rng: rng)
        switch event {
        case .rosterLoaded(let newRoster):
            load(newRoster, &fx)
        case .spawnSucceeded(let name, let pid):
            update(name) { $0.spawned(pid: pid, &fx) }
        case .spawnFailed(let name, let errno):
            if var record = records[name], record.state == .starting, record.pid == nil {
                let reason = record.recordExit(nil, spawnErrno: errno, &fx)
                afterExit(&record, reason, &fx)
                records[name] = record
            }
        case .childExited(let name, let pid, let termination):
            if var record = records[name], record.pid == pid {
                let reason = record.recordExit(termination, spawnErrno: nil, &fx)
                afterExit(&record, reason, &fx)
                records[name] = record
            }
            dropRemoved(&fx)
        case .notified(let name, let message):
            update(name) { $0.apply(message, &fx) }
        case .probeFinished(let name, let succeeded):
            update(name) { $0.probeFinished(succeeded: succeeded, &fx) }
        case .oomKilled(let name):
            update(name) { record in
                record.oomKills += 1
                record.sawOOMKill = true
                fx.actions.append(.alert(name, "the kernel OOM-killed a process of \(name)"))
            }
        case .timerFired:
            fireDeadlines(&fx)
        case .operatorRequested(let command, let name):
            operate(command, name, &fx)
        case .shutdownRequested:
            if isShuttingDown {
                for name in order { if let pid = records[name]?.pid { fx.actions.append(.killAll(name, pid: pid)) } }
            } else {
                isShuttingDown = true
            }
        }
        reconcile(&fx)
        rng = fx.rng
        return fx.actions
    }

    /// The earliest moment something must happen without an outside event.
    public var nextDeadline: Instant? {
        order.compactMap { records[$0]?.earliestDeadline }.min()
    }

    public func statuses() -> [ServiceStatus] { order.compactMap { records[$0]?.status() } }
    public func status(of name: ServiceName) -> ServiceStatus? { records[name]?.status() }

    /// `3/3 ready`, plus whatever needs attention: the `STATUS=` line whisperd gives systemd.
    public var summary: String {
        let characters = order.compactMap { records[$0] }.filter { !$0.spec.isJob && $0.desired == .up }
        let ready = characters.filter(\.isReady).count
        var text = "\(ready)/\(characters.count) characters ready"
        let looping = characters.filter(\.isCrashLooping).map(\.spec.name.rawValue)
        if !looping.isEmpty { text += "; crash loop: " + looping.joined(separator: ", ") }
        let failed = order.compactMap { records[$0] }.filter { $0.state == .failed }.map(\.spec.name.rawValue)
        if !failed.isEmpty { text += "; failed: " + failed.joined(separator: ", ") }
        if isShuttingDown { text = "stopping; " + text }
        return text
    }

    // MARK: - Events

    private mutating func update(_ name: ServiceName, _ body: (inout ServiceRecord) -> Void) {
        guard var record = records[name] else { return }
        body(&record)
        records[name] = record
    }

    private mutating func load(_ newRoster: Roster, _ fx: inout Effects) {
        guard !isShuttingDown else { return }
        guard let oldRoster = roster else {
            roster = newRoster
            for spec in newRoster.services {
                var record = ServiceRecord(spec: spec, desired: persistedDown.contains(spec.name) ? .down : .up)
                record.jobSucceeded = isAlreadyDone(spec)
                records[spec.name] = record
            }
            order = newRoster.names
            return
        }
        let diff = RosterDiff(old: oldRoster, new: newRoster)
        roster = newRoster
        for name in diff.removed {
            update(name) { record in
                record.afterExit = .remove
                if record.isAlive { record.beginStop(.stopped, &fx) }
            }
        }
        for name in diff.added {
            guard let spec = newRoster[name] else { continue }
            var record = ServiceRecord(spec: spec, desired: .up)
            record.jobSucceeded = isAlreadyDone(spec)
            records[name] = record
        }
        for name in diff.relaunched {
            guard let spec = newRoster[name] else { continue }
            let done = isAlreadyDone(spec)
            update(name) { record in
                record.spec = spec
                record.jobSucceeded = done
                record.forgetFailures()
                if record.isAlive {
                    record.afterExit = .restartNow
                    record.beginStop(.stopped, &fx)
                } else if record.desired == .up {
                    record.transition(to: .stopped, "definition changed", &fx)
                }
            }
        }
        for name in diff.limitsChanged + diff.updatedInPlace {
            guard let spec = newRoster[name] else { continue }
            update(name) { record in
                let limitsChanged = record.spec.limits != spec.limits
                record.spec = spec
                if limitsChanged, record.isAlive { fx.actions.append(.applyLimits(name, spec.limits)) }
            }
        }
        // Keep removed services (still stopping) at the end so status shows them going.
        let stillPresent = order.filter { records[$0]?.afterExit == .remove }
        order = newRoster.names + stillPresent.filter { !newRoster.names.contains($0) }
        dropRemoved(&fx)
    }

    private func isAlreadyDone(_ spec: ServiceSpec) -> Bool {
        guard case .job(.oncePerRevision) = spec.kind else { return false }
        return completedJobs[spec.name] == spec.revision
    }

    private mutating func afterExit(_ record: inout ServiceRecord, _ reason: ExitReason, _ fx: inout Effects) {
        let plan = record.afterExit
        record.afterExit = .followPolicy
        if isShuttingDown {
            record.transition(to: .stopped, "stopped (\(reason))", &fx)
            return
        }
        switch plan {
        case .remove:
            record.afterExit = .remove
            record.transition(to: .stopped, "removed from the roster", &fx)
            return
        case .restartNow:
            record.start(&fx)
            return
        case .stayDown:
            record.transition(to: .stopped, "stopped (\(reason))", &fx)
            return
        case .followPolicy:
            break
        }
        guard record.desired == .up else {
            record.transition(to: .stopped, "stopped (\(reason))", &fx)
            return
        }
        if record.spec.isJob, reason.isSuccess {
            record.jobSucceeded = true
            if case .job(.oncePerRevision) = record.spec.kind {
                completedJobs[record.spec.name] = record.spec.revision
                fx.actions.append(.recordJobCompleted(record.spec.name, revision: record.spec.revision))
            }
        }
        record.applyRestartPolicy(reason, &fx)
    }

    private mutating func dropRemoved(_ fx: inout Effects) {
        for name in order where records[name]?.afterExit == .remove && records[name]?.isAlive == false {
            records[name] = nil
            fx.actions.append(.forget(name))
        }
        order.removeAll { records[$0] == nil }
    }

    private mutating func fireDeadlines(_ fx: inout Effects) {
        let now = fx.now
        for name in order {
            update(name) { record in
                if let killDeadline = record.killDeadline, killDeadline <= now, let pid = record.pid {
                    record.killDeadline = nil
                    fx.actions.append(.killAll(name, pid: pid))
                }
                if let deadline = record.readyDeadline, deadline <= now, record.isAlive, !record.isReady {
                    record.readyDeadline = nil
                    record.beginStop(.readyTimeout, &fx)
                }
                if let deadline = record.watchdogDeadline, deadline <= now, record.isAlive {
                    record.watchdogDeadline = nil
                    record.beginStop(.watchdogTimeout, &fx)
                }
                if let probeAt = record.probeAt, probeAt <= now, !record.isProbeInFlight, record.isAlive,
                    let port = record.spec.port
                {
                    record.probeAt = nil
                    record.isProbeInFlight = true
                    let http = record.spec.health.http
                    fx.actions.append(.probe(name, port: port, path: http.path, timeout: http.timeout))
                }
                if let restartAt = record.restartAt, restartAt <= now {
                    // Leave it stopped-but-wanted; reconcile starts it once its dependencies allow.
                    record.restartAt = nil
                    record.transition(to: .stopped, "restart delay over", &fx)
                }
            }
        }
    }

    private mutating func operate(_ command: OperatorCommand, _ name: ServiceName, _ fx: inout Effects) {
        guard !isShuttingDown else { return }
        update(name) { record in
            let wasDown = record.desired == .down
            switch command {
            case .stop:
                record.desired = .down
                if !wasDown { fx.actions.append(.persistIntent(name, .down)) }
                record.forgetFailures()
                if record.isAlive {
                    record.afterExit = .stayDown
                    record.beginStop(.stopped, &fx)
                } else {
                    record.transition(to: .stopped, "stopped by operator", &fx)
                }
            case .start, .restart:
                record.desired = .up
                if wasDown { fx.actions.append(.persistIntent(name, .up)) }
                record.forgetFailures()
                if record.isAlive {
                    if command == .restart || record.state == .stopping {
                        record.afterExit = .restartNow
                        record.beginStop(.stopped, &fx)
                    }
                } else {
                    if record.spec.isJob, case .job(.everyStart) = record.spec.kind { record.jobSucceeded = false }
                    if command == .restart, record.spec.isJob { record.jobSucceeded = false }
                    record.transition(to: .stopped, "\(command.rawValue) requested", &fx)
                }
            }
        }
    }

    // MARK: - Reconciliation: make observed follow desired

    private mutating func reconcile(_ fx: inout Effects) {
        if isShuttingDown {
            advanceShutdown(&fx)
            return
        }
        // Repeat until nothing starts: a job that is already done can unblock its dependents at once.
        var changed = true
        while changed {
            changed = false
            for name in order {
                guard var record = records[name], record.afterExit != .remove else { continue }
                let before = record.state
                switch (record.desired, record.state) {
                case (.up, .stopped), (.up, .waiting):
                    if record.spec.isJob, record.jobSucceeded {
                        record.transition(to: .exited, "already done for this revision", &fx)
                    } else if let blocker = firstUnmetDependency(of: record.spec) {
                        record.transition(to: .waiting, "waiting for \(blocker)", &fx)
                    } else {
                        record.start(&fx)
                    }
                case (.down, .waiting), (.down, .backoff), (.down, .crashloop):
                    record.restartAt = nil
                    record.transition(to: .stopped, "stopped by operator", &fx)
                case (.down, .starting), (.down, .running):
                    if record.isAlive { record.beginStop(.stopped, &fx) }
                case (.up, _), (.down, _):
                    break
                }
                if record.state != before { changed = true }
                records[name] = record
            }
        }
        if !isStartupAnnounced, !order.contains(where: { isProgressing($0) }) {
            isStartupAnnounced = true
            fx.actions.append(.startupCompleted)
        }
    }

    private func firstUnmetDependency(of spec: ServiceSpec) -> ServiceName? {
        spec.after.first { dependency in
            guard let record = records[dependency] else { return true }
            return record.spec.isJob ? !record.jobSucceeded : !(record.isReady && record.state == .running)
        }
    }

    /// Still on its way to a settled state (for the one-time `READY=1` to systemd).
    private func isProgressing(_ name: ServiceName, depth: Int = 0) -> Bool {
        guard let record = records[name], record.desired == .up, depth < 64 else { return false }
        switch record.state {
        case .starting, .stopping: return true
        case .running: return record.spec.isJob || (!record.isReady && record.readyDeadline != nil)
        case .waiting: return record.spec.after.contains { isProgressing($0, depth: depth + 1) }
        case .stopped: return true
        case .backoff, .crashloop, .exited, .failed: return false
        }
    }

    /// Stop in reverse dependency order: a service goes once nothing alive depends on it.
    private mutating func advanceShutdown(_ fx: inout Effects) {
        for name in order {
            update(name) { record in
                if !record.isAlive, record.state != .stopped {
                    record.restartAt = nil
                    record.transition(to: .stopped, "whisperd is shutting down", &fx)
                }
            }
        }
        for name in order {
            guard let record = records[name], record.isAlive, record.state != .stopping else { continue }
            let hasLiveDependent = order.contains { other in
                guard let dependent = records[other], dependent.isAlive else { return false }
                return dependent.spec.after.contains(name)
            }
            if !hasLiveDependent { update(name) { $0.beginStop(.stopped, &fx) } }
        }
        if !isShutdownAnnounced, !order.contains(where: { records[$0]?.isAlive == true }) {
            isShutdownAnnounced = true
            fx.actions.append(.shutdownCompleted)
        }
    }
}
