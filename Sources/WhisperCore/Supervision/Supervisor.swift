import WhisperRandom

/// The whole fleet as a pure state machine: events in, actions out.
///
/// The shell owns one timer, set to ``nextDeadline``; when it fires it sends
/// ``SupervisorEvent/timerFired``. Nothing here reads a clock, sleeps or touches a process.
///
/// An event costs O(what it affects): the records it touched and their dependents are
/// reconciled, and only their deadlines (a heap) and summary counts are brought up to date.
/// A roster load, a removal and shutdown go over the whole fleet.
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
    /// Each record's earliest deadline, so ``nextDeadline`` is O(1) and a change O(log N).
    private var deadlines = DeadlineQueue<ServiceName>()
    /// The counts behind ``summary``, adjusted as records change.
    private var fleetSummary = FleetSummary()
    /// Records were added, removed or reordered: every deadline and count is refreshed.
    private var needsFullRefresh = false
    private var roster: Roster?
    private var completedJobs: [ServiceName: String]
    private var persistedDown: Set<ServiceName>
    private var rng: SplitMix64
    /// Runs handed over by a previous whisperd, taken at the first roster load.
    private var adopted: [ServiceName: AdoptedRun]
    public private(set) var isShuttingDown = false
    public private(set) var isStartupAnnounced = false
    private var isShutdownAnnounced = false

    /// - Parameters:
    ///   - persistedDown: services an operator stopped, from the state dir; they stay down.
    ///   - completedJobs: `once-per-revision` jobs and the revision that last succeeded.
    ///   - seed: seeds the restart jitter.
    ///   - adopted: processes a previous whisperd handed over (re-exec): they are taken as running.
    public init(
        persistedDown: Set<ServiceName> = [], completedJobs: [ServiceName: String] = [:], adopted: [ServiceName: AdoptedRun] = [:],
        seed: UInt64
    ) {
        self.adopted = adopted
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
        needsFullRefresh = false
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
        case .programStarted(let name, let pid):
            update(name) { record in
                guard record.pid == pid else { return }
                record.programStarted(&fx)
            }
        case .startFailed(let name, let pid, let errno):
            if let i = index[name], records[i].pid == pid {
                records[i].abandonSuccessor("the process it was to replace could not start", &fx)
                let reason = records[i].recordExit(nil, spawnErrno: errno, &fx)
                afterExit(at: i, reason, &fx)
                touched.insert(name)
                if records[i].afterExit == .remove { dropRemoved(&fx) }
            }
        case .childExited(let name, let pid, let termination, let peak):
            if let i = index[name], records[i].pid != pid {
                if records[i].sideProcessExited(pid: pid, termination, &fx) { touched.insert(name) }
            } else if let i = index[name], records[i].pid == pid {
                // The main process gone in the middle of a rolling restart: the new one goes too
                // (the restart policy starts a fresh run).
                records[i].abandonSuccessor("the process it was to replace exited", &fx)
                let reason = records[i].recordExit(termination, spawnErrno: nil, peakMemoryBytes: peak, &fx)
                afterExit(at: i, reason, &fx)
                touched.insert(name)
                // Only the record that exited can have become one to forget: every other
                // removed one was forgotten when it stopped (see `derivedStateIsConsistent`).
                if records[i].afterExit == .remove { dropRemoved(&fx) }
            }
        case .notified(let name, let message):
            update(name) { $0.apply(message, &fx) }
        case .probeFinished(let name, let succeeded):
            update(name) { $0.probeFinished(succeeded: succeeded, &fx) }
        case .readyLineSeen(let name):
            update(name) { record in
                guard record.isAlive, !record.isReady, record.state == .starting, record.spec.health.ready == .log else { return }
                record.becomeReady("ready_log_line matched", &fx)
            }
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
        case .successorSpawned(let name, let pid):
            update(name) { $0.successorSpawned(pid: pid, &fx) }
        case .successorSpawnFailed(let name, let errno):
            update(name) { record in
                guard record.successor != nil else { return }
                record.successor = nil
                fx.actions.append(.alert(name, "rolling restart of \(name) abandoned: cannot start the new process (errno \(errno)); pid \(record.pid ?? 0) keeps serving"))
            }
        case .successorReady(let name):
            update(name) { $0.successorReady(&fx) }
        case .scheduledRunDue(let name):
            update(name) { record in
                guard record.spec.isJob, record.spec.schedule != nil, record.desired == .up else { return }
                if record.isAlive {
                    record.skippedScheduledRuns += 1
                    fx.actions.append(.alert(name, "scheduled run of \(name) skipped: its last run is still going"))
                } else {
                    record.jobSucceeded = false
                    record.forgetFailures()
                    // A new run, not a restart of the last one.
                    record.hasStarted = false
                    record.transition(to: .stopped, "scheduled run", &fx)
                }
            }
        case .shutdownRequested:
            for i in records.indices {
                records[i].abandonSuccessor("whisperd is stopping", &fx)
                if let old = records[i].retiringPID { fx.actions.append(.killProcessGroup(records[i].spec.name, pid: old)) }
            }
            if isShuttingDown {
                for record in records { if let pid = record.pid { fx.actions.append(.killAll(record.spec.name, pid: pid)) } }
            } else {
                isShuttingDown = true
            }
            needsFullReconcile = true
        }
        reconcile(&fx)
        refreshDeadlinesAndSummary()
        assert(derivedStateIsConsistent(), "deadlines or summary counts out of step with the records")
        rng = fx.rng
        return fx.actions
    }

    /// The earliest moment something must happen without an outside event. O(1).
    public var nextDeadline: Instant? { deadlines.earliest }

    public func statuses() -> [ServiceStatus] { records.map { $0.status() } }
    public func status(of name: ServiceName) -> ServiceStatus? { index[name].map { records[$0].status() } }
    /// The main pid of a service, without building a whole status.
    public func pid(of name: ServiceName) -> Int32? { index[name].flatMap { records[$0].pid } }

    /// `3/3 ready`, plus whatever needs attention: the `STATUS=` line whisperd gives systemd.
    /// O(crash-looping + failed services): the counts are kept as records change.
    public var summary: String {
        fleetSummary.text(isShuttingDown: isShuttingDown) { index[$0] ?? Int.max }
    }

    // MARK: - Derived state: deadlines and summary counts

    /// Brings the deadline heap and the summary counts up to date with the records this event
    /// changed (every mutation of a record goes through `touched`, or sets `needsFullRefresh`).
    private mutating func refreshDeadlinesAndSummary() {
        if needsFullRefresh {
            deadlines.removeAll()
            fleetSummary.removeAll()
            for record in records {
                deadlines.schedule(record.spec.name, at: record.earliestDeadline)
                fleetSummary.update(record.spec.name, FleetSummary.Membership(record))
            }
            return
        }
        for name in touched {
            guard let i = index[name] else { continue }
            deadlines.schedule(name, at: records[i].earliestDeadline)
            fleetSummary.update(name, FleetSummary.Membership(records[i]))
        }
    }

    /// The incremental state equals a recount over every record (debug builds check this after
    /// every event, so each core test checks it too), and no record waits to be forgotten.
    private func derivedStateIsConsistent() -> Bool {
        var recount = FleetSummary()
        var withDeadline = 0
        for record in records {
            recount.update(record.spec.name, FleetSummary.Membership(record))
            guard deadlines.deadline(of: record.spec.name) == record.earliestDeadline else { return false }
            if record.earliestDeadline != nil { withDeadline += 1 }
            if record.afterExit == .remove, !record.isAlive { return false }
        }
        let earliest = records.compactMap(\.earliestDeadline).min()
        return recount == fleetSummary && deadlines.count == withDeadline && deadlines.earliest == earliest
    }

    // MARK: - Events

    private mutating func update(_ name: ServiceName, _ body: (inout ServiceRecord) -> Void) {
        guard let i = index[name] else { return }
        body(&records[i])
        touched.insert(name)
    }

    private mutating func rebuildIndex() {
        needsFullRefresh = true
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
                if let run = adopted[spec.name] { record.adopt(run, &fx) }
                return record
            }
            adopted = [:]
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
        let relaunched = Set(diff.relaunched)
        for name in diff.relaunched { restartDependents(of: name, except: relaunched, &fx) }
        dropRemoved(&fx)
    }

    private func isAlreadyDone(_ spec: ServiceSpec) -> Bool {
        // A scheduled job has nothing to do until its time comes.
        if spec.isJob, spec.schedule != nil { return true }
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
        case .restartAfterDependencies:
            // Stopped but wanted: reconcile starts it once what it waits for is back.
            records[i].transition(to: .stopped, "restarted with a dependency", &fx)
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
        // Only the records due, from the heap, in roster order (the order actions come out in).
        for i in deadlines.due(at: now).compactMap({ index[$0] }).sorted() {
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
                let probe = records[i].spec.health.probe
            {
                records[i].probeAt = nil
                records[i].isProbeInFlight = true
                fx.actions.append(.probe(name, probe.check, port: records[i].spec.port, timeout: probe.timeout))
            }
            records[i].fireRollingDeadlines(&fx)
            if let restartAt = records[i].restartAt, restartAt <= now {
                // Leave it stopped-but-wanted; reconcile starts it once its dependencies allow.
                records[i].restartAt = nil
                records[i].transition(to: .stopped, "restart delay over", &fx)
            }
        }
    }

    private mutating func operate(_ requested: OperatorCommand, _ name: ServiceName, _ fx: inout Effects) {
        guard !isShuttingDown else { return }
        // Not running and ready (or readiness that cannot tell two processes apart): nothing is
        // served that a new process could take over without a gap, so it is an ordinary restart.
        var command = requested
        if command == .rollingRestart, let i = index[name], !records[i].canRoll { command = .restart }
        var restartsWith: [ServiceName] = []
        defer { for restarted in restartsWith { restartDependents(of: restarted, &fx) } }
        update(name) { record in
            let wasDown = record.desired == .down
            if command != .rollingRestart, command != .run { record.abandonSuccessor("\(command.rawValue) requested", &fx) }
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
            case .rollingRestart:
                record.beginRolling(&fx)
            case .run:
                guard record.spec.isJob, !record.isAlive else { return }
                record.desired = .up
                if wasDown { fx.actions.append(.persistIntent(name, .up)) }
                record.forgetFailures()
                record.jobSucceeded = false
                record.hasStarted = false
                record.transition(to: .stopped, "run requested", &fx)
            case .start, .restart:
                if command == .restart { restartsWith.append(name) }
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
                touched.insert(records[i].spec.name)
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
        spec.dependencies.first { dependency in
            guard let i = index[dependency.name], records[i].afterExit != .remove else { return dependency.required }
            let record = records[i]
            // `required: false`: a dependency that is stopped for good or has given up does not hold it back.
            if !dependency.required, record.desired == .down || record.state == .failed || record.state == .crashloop {
                return false
            }
            switch dependency.condition {
            case .started:
                return record.spec.isJob ? !(record.isAlive || record.jobSucceeded) : !(record.isAlive && record.state != .stopping)
            case .healthy:
                return record.spec.isJob ? !record.jobSucceeded : !(record.isReady && record.state == .running)
            case .completedSuccessfully:
                return !record.jobSucceeded
            }
        }?.name
    }

    /// Compose's `restart: true`: the services that asked to be restarted with `name` are, once
    /// it is restarted by the operator or a reload (they then wait for it again, by condition).
    private mutating func restartDependents(of name: ServiceName, except skipped: Set<ServiceName> = [], _ fx: inout Effects) {
        for dependent in dependents[name] ?? [] where !skipped.contains(dependent) {
            guard let i = index[dependent],
                records[i].spec.dependencies.contains(where: { $0.name == name && $0.restartsWithIt }),
                records[i].desired == .up, records[i].isAlive, records[i].afterExit == .followPolicy
            else { continue }
            records[i].afterExit = .restartAfterDependencies
            records[i].beginStop(.stopped, &fx)
            touched.insert(dependent)
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
        needsFullRefresh = true
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
