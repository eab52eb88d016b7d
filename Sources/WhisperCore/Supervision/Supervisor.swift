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
    /// Records in roster order, with an index by name: mutated in place, never copied per event.
    private var records: [ServiceRecord] = []
    private var index: [ServiceName: Int] = [:]
    /// Who waits for whom (`after:` reversed), for reconciling only what an event can affect.
    private var dependents: [ServiceName: [ServiceName]] = [:]
    /// Records touched by the current event; reconcile looks at these (and their dependents) only.
    private var touched: Set<ServiceName> = []
    private var needsFullReconcile = false
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
        touched.removeAll(keepingCapacity: true)
        needsFullReconcile = false
        switch event {
        case .rosterLoaded(let newRoster):
            load(newRoster, &fx)
            needsFullReconcile = true
        case .spawnSucceeded(let name, let pid):
            update(name) { $0.spawned(pid: pid, &fx) }
        case .spawnFailed(let name, let errno):
            if let i = index[name], records[i].state == .starting, records[i].pid == nil {
                let reason = records[i].recordExit(nil, spawnErrno: errno, &fx)
                afterExit(at: i, reason, &fx)
                touched.insert(name)
            }
        case .childExited(let name, let pid, let termination, let peak):
            if let i = index[name], records[i].pid == pid {
                let reason = records[i].recordExit(termination, spawnErrno: nil, peakMemoryBytes: peak, &fx)
                afterExit(at: i, reason, &fx)
                touched.insert(name)
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
                for record in records { if let pid = record.pid { fx.actions.append(.killAll(record.spec.name, pid: pid)) } }
            } else {
                isShuttingDown = true
            }
            needsFullReconcile = true
        }
        reconcile(&fx)
        rng = fx.rng
        return fx.actions
    }

    /// The earliest moment something must happen without an outside event.
    public var nextDeadline: Instant? {
        var earliest: Instant?
        for i in records.indices {
            if let deadline = records[i].earliestDeadline, earliest == nil || deadline < earliest! { earliest = deadline }
        }
        return earliest
    }

    public func statuses() -> [ServiceStatus] { records.map { $0.status() } }
    public func status(of name: ServiceName) -> ServiceStatus? { index[name].map { records[$0].status() } }
    /// The main pid of a service, without building a whole status.
    public func pid(of name: ServiceName) -> Int32? { index[name].flatMap { records[$0].pid } }

    /// `3/3 ready`, plus whatever needs attention: the `STATUS=` line whisperd gives systemd.
    public var summary: String {
        var wanted = 0
        var ready = 0
        var looping: [String] = []
        var failed: [String] = []
        for record in records {
            if record.state == .failed { failed.append(record.spec.name.rawValue) }
            guard !record.spec.isJob, record.desired == .up else { continue }
            wanted += 1
            if record.isReady { ready += 1 }
            if record.isCrashLooping { looping.append(record.spec.name.rawValue) }
        }
        var text = "\(ready)/\(wanted) characters ready"
        if !looping.isEmpty { text += "; crash loop: " + looping.joined(separator: ", ") }
        if !failed.isEmpty { text += "; failed: " + failed.joined(separator: ", ") }
        if isShuttingDown { text = "stopping; " + text }
        return text
    }

    // MARK: - Events

    private mutating func update(_ name: ServiceName, _ body: (inout ServiceRecord) -> Void) {
        guard let i = index[name] else { return }
        body(&records[i])
        touched.insert(name)
    }

    private mutating func rebuildIndex() {
        index = Dictionary(uniqueKeysWithValues: records.enumerated().map { ($1.spec.name, $0) })
        dependents = [:]
        for record in records {
            for dependency in record.spec.after { dependents[dependency, default: []].append(record.spec.name) }
        }
    }

    private mutating func load(_ newRoster: Roster, _ fx: inout Effects) {
        guard !isShuttingDown else { return }
        guard let oldRoster = roster else {
            roster = newRoster
            records = newRoster.services.map { spec in
                var record = ServiceRecord(spec: spec, desired: persistedDown.contains(spec.name) ? .down : .up)
                record.jobSucceeded = isAlreadyDone(spec)
                return record
            }
            rebuildIndex()
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
        // New roster order; removed services that are still stopping stay at the end until gone.
        var reordered: [ServiceRecord] = []
        for spec in newRoster.services {
            if let i = index[spec.name] {
                reordered.append(records[i])
            } else {
                var record = ServiceRecord(spec: spec, desired: .up)
                record.jobSucceeded = isAlreadyDone(spec)
                reordered.append(record)
            }
        }
        reordered += records.filter { $0.afterExit == .remove && newRoster[$0.spec.name] == nil }
        records = reordered
        rebuildIndex()
        dropRemoved(&fx)
    }

    private func isAlreadyDone(_ spec: ServiceSpec) -> Bool {
        guard case .job(.oncePerRevision) = spec.kind else { return false }
        return completedJobs[spec.name] == spec.revision
    }

    private mutating func afterExit(at i: Int, _ reason: ExitReason, _ fx: inout Effects) {
        let plan = records[i].afterExit
        records[i].afterExit = .followPolicy
        if isShuttingDown {
            records[i].transition(to: .stopped, records[i].stoppedDetail(reason), &fx)
            return
        }
        switch plan {
        case .remove:
            records[i].afterExit = .remove
            records[i].transition(to: .stopped, "removed from the roster", &fx)
            return
        case .restartNow:
            records[i].start(&fx)
            return
        case .stayDown:
            records[i].transition(to: .stopped, records[i].stoppedDetail(reason), &fx)
            return
        case .followPolicy:
            break
        }
        guard records[i].desired == .up else {
            records[i].transition(to: .stopped, records[i].stoppedDetail(reason), &fx)
            return
        }
        let spec = records[i].spec
        if spec.isJob, reason.isSuccess {
            records[i].jobSucceeded = true
            if case .job(.oncePerRevision) = spec.kind {
                completedJobs[spec.name] = spec.revision
                fx.actions.append(.recordJobCompleted(spec.name, revision: spec.revision))
            }
        }
        records[i].applyRestartPolicy(reason, &fx)
    }

    private mutating func dropRemoved(_ fx: inout Effects) {
        guard records.contains(where: { $0.afterExit == .remove && !$0.isAlive }) else { return }
        for record in records where record.afterExit == .remove && !record.isAlive {
            fx.actions.append(.forget(record.spec.name))
        }
        records.removeAll { $0.afterExit == .remove && !$0.isAlive }
        rebuildIndex()
    }

    private mutating func fireDeadlines(_ fx: inout Effects) {
        let now = fx.now
        for i in records.indices {
            guard let earliest = records[i].earliestDeadline, earliest <= now else { continue }
            touched.insert(records[i].spec.name)
            let name = records[i].spec.name
            if let killDeadline = records[i].killDeadline, killDeadline <= now, let pid = records[i].pid {
                records[i].killDeadline = nil
                fx.actions.append(.killAll(name, pid: pid))
            }
            if let deadline = records[i].readyDeadline, deadline <= now, records[i].isAlive, !records[i].isReady {
                records[i].readyDeadline = nil
                records[i].beginStop(.readyTimeout, &fx)
            }
            if let deadline = records[i].watchdogDeadline, deadline <= now, records[i].isAlive {
                records[i].watchdogDeadline = nil
                records[i].beginStop(.watchdogTimeout, &fx)
            }
            if let probeAt = records[i].probeAt, probeAt <= now, !records[i].isProbeInFlight, records[i].isAlive,
                let port = records[i].spec.port
            {
                records[i].probeAt = nil
                records[i].isProbeInFlight = true
                let http = records[i].spec.health.http
                fx.actions.append(.probe(name, port: port, path: http.path, timeout: http.timeout))
            }
            if let restartAt = records[i].restartAt, restartAt <= now {
                // Leave it stopped-but-wanted; reconcile starts it once its dependencies allow.
                records[i].restartAt = nil
                records[i].transition(to: .stopped, "restart delay over", &fx)
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
                    if case .job(.everyStart) = record.spec.kind { record.jobSucceeded = false }
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
        // What this event can affect: the records it touched and whoever waits for them;
        // repeated while something starts, as a job already done can unblock its dependents.
        var pending: [Int]
        if needsFullReconcile {
            pending = Array(records.indices)
        } else {
            var names = touched
            for name in touched { names.formUnion(dependents[name] ?? []) }
            pending = names.compactMap { index[$0] }.sorted()
        }
        while !pending.isEmpty {
            var next: Set<ServiceName> = []
            for i in pending where records[i].afterExit != .remove {
                let before = records[i].state
                reconcileOne(i, &fx)
                if records[i].state != before { next.formUnion(dependents[records[i].spec.name] ?? []) }
            }
            pending = next.compactMap { index[$0] }.sorted()
        }
        if !isStartupAnnounced, !records.indices.contains(where: { isProgressing($0) }) {
            isStartupAnnounced = true
            fx.actions.append(.startupCompleted)
        }
    }

    private mutating func reconcileOne(_ i: Int, _ fx: inout Effects) {
        switch (records[i].desired, records[i].state) {
        case (.up, .stopped), (.up, .waiting):
            if records[i].spec.isJob, records[i].jobSucceeded {
                records[i].transition(to: .exited, "already done for this revision", &fx)
            } else if let blocker = firstUnmetDependency(of: records[i].spec) {
                records[i].transition(to: .waiting, "waiting for \(blocker)", &fx)
            } else {
                records[i].start(&fx)
            }
        case (.down, .waiting), (.down, .backoff), (.down, .crashloop):
            records[i].restartAt = nil
            records[i].transition(to: .stopped, "stopped by operator", &fx)
        case (.down, .starting), (.down, .running):
            if records[i].isAlive { records[i].beginStop(.stopped, &fx) }
        case (.up, _), (.down, _):
            break
        }
    }

    private func firstUnmetDependency(of spec: ServiceSpec) -> ServiceName? {
        spec.after.first { dependency in
            guard let i = index[dependency] else { return true }
            return records[i].spec.isJob ? !records[i].jobSucceeded : !(records[i].isReady && records[i].state == .running)
        }
    }

    /// Still on its way to a settled state (for the one-time `READY=1` to systemd).
    private func isProgressing(_ i: Int, depth: Int = 0) -> Bool {
        guard records[i].desired == .up, depth < 64 else { return false }
        switch records[i].state {
        case .starting, .stopping: return true
        case .running: return records[i].spec.isJob || (!records[i].isReady && records[i].readyDeadline != nil)
        case .waiting:
            return records[i].spec.after.contains { name in index[name].map { isProgressing($0, depth: depth + 1) } ?? false }
        case .stopped: return true
        case .backoff, .crashloop, .exited, .failed: return false
        }
    }

    /// Stop in reverse dependency order: a service goes once nothing alive depends on it.
    private mutating func advanceShutdown(_ fx: inout Effects) {
        var anyAlive = false
        for i in records.indices {
            if !records[i].isAlive {
                if records[i].state != .stopped {
                    records[i].restartAt = nil
                    records[i].transition(to: .stopped, "whisperd is shutting down", &fx)
                }
                continue
            }
            anyAlive = true
            guard records[i].state != .stopping else { continue }
            let hasLiveDependent = (dependents[records[i].spec.name] ?? []).contains { name in
                index[name].map { records[$0].isAlive } ?? false
            }
            if !hasLiveDependent { records[i].beginStop(.stopped, &fx) }
        }
        if !isShutdownAnnounced, !anyAlive {
            isShutdownAnnounced = true
            fx.actions.append(.shutdownCompleted)
        }
    }
}
