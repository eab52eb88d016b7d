import WhisperRandom

/// Collects what one `handle` call decided, and carries its inputs (time, randomness).
struct Effects {
    let now: Instant
    var actions: [SupervisorAction] = []
    var rng: SplitMix64

    mutating func jitter() -> Double { Double.random(in: -1...1, using: &rng) }
}

/// Per-service transitions. They touch only their own record; cross-service questions
/// (dependencies, shutdown order) are answered by ``Supervisor``.
extension ServiceRecord {
    mutating func transition(to newState: ServiceState, _ detail: String, _ fx: inout Effects) {
        guard newState != state else { return }
        fx.actions.append(.transitioned(spec.name, from: state, to: newState, detail: detail))
        state = newState
    }

    mutating func start(_ fx: inout Effects) {
        if hasStarted { restarts += 1 }
        hasStarted = true
        restartAt = nil
        clearRunDeadlines()
        let detail = restarts == 0 ? "spawning" : "spawning (restart \(restarts))"
        transition(to: .starting, detail, &fx)
        fx.actions.append(.spawn(spec))
    }

    mutating func spawned(pid newPID: Int32, _ fx: inout Effects) {
        pid = newPID
        startedAt = fx.now
        isReady = false
        isReloading = false
        watchdogInterval = spec.health.watchdog
        pendingKillReason = nil
        sawOOMKill = false
        if spec.isJob {
            transition(to: .running, "job running, pid \(newPID)", &fx)
            return
        }
        switch spec.health.ready {
        case .started:
            break  // ready once its program runs: `programStarted`
        case .notify:
            readyDeadline = fx.now.advanced(by: spec.health.readyTimeout)
        case .http, .exec, .tcp:
            readyDeadline = fx.now.advanced(by: spec.health.readyTimeout)
            probeAt = spec.health.probe.map { fx.now.advanced(by: $0.startInterval) }
        case .log:
            readyDeadline = fx.now.advanced(by: spec.health.readyTimeout)
        }
    }

    /// The exec succeeded: `ready: started` means this (systemd's `Type=exec`), not the fork.
    mutating func programStarted(_ fx: inout Effects) {
        guard let pid, !spec.isJob, spec.health.ready == .started, state == .starting, !isReady else { return }
        becomeReady("started, pid \(pid)", &fx)
    }

    mutating func becomeReady(_ detail: String, _ fx: inout Effects) {
        isReady = true
        readyDeadline = nil
        if readyAt == nil || state != .running { readyAt = fx.now }
        if let probe = spec.health.probe { probeAt = fx.now.advanced(by: probe.interval) }
        if state == .running {
            fx.actions.append(.transitioned(spec.name, from: .running, to: .running, detail: "ready again"))
        }
        transition(to: .running, "ready: " + detail, &fx)
    }

    /// Stop signal now, SIGKILL for the whole group when the grace period ends.
    mutating func beginStop(_ reason: ExitReason, _ fx: inout Effects) {
        guard let pid else { return }
        if state == .stopping {
            // Already on its way down; a health verdict never downgrades an operator's stop.
            return
        }
        pendingKillReason = reason
        isReady = false
        clearRunDeadlines()
        transition(to: .stopping, reason == .stopped ? "stopping" : "killing: \(reason)", &fx)
        if spec.stopGrace <= .zero {
            fx.actions.append(.killAll(spec.name, pid: pid))
        } else {
            fx.actions.append(.signal(spec.name, pid: pid, spec.stopSignal))
            killDeadline = fx.now.advanced(by: spec.stopGrace)
        }
    }

    /// Bookkeeping common to every end of a run; returns the reason recorded.
    mutating func recordExit(
        _ termination: ProcessTermination?, spawnErrno: Int32?, peakMemoryBytes: UInt64? = nil, _ fx: inout Effects
    ) -> ExitReason {
        let reason: ExitReason
        if let spawnErrno {
            reason = .spawnFailed(errno: spawnErrno)
        } else if let pending = pendingKillReason {
            reason = pending
        } else if sawOOMKill, termination != .exited(code: 0) {
            // The kernel killed a process of this run for memory and the run then failed: that
            // is the cause, whether the victim was the main process or a child it relied on.
            reason = .oomKilled
        } else {
            switch termination {
            case .exited(code: 0): reason = .completed
            case .exited(let code): reason = .error(code: code)
            case .signaled(let signal): reason = .signaled(signal)
            case nil: reason = .error(code: -1)
            }
        }
        let uptime = startedAt.map { fx.now.duration(since: $0) } ?? .zero
        lastExit = ExitRecord(
            reason: reason, termination: termination, at: fx.now, uptime: uptime, peakMemoryBytes: peakMemoryBytes)
        if let pid { fx.actions.append(.killAll(spec.name, pid: pid)) }
        pid = nil
        isReady = false
        isReloading = false
        pendingKillReason = nil
        sawOOMKill = false
        inflight = nil
        clearRunDeadlines()
        return reason
    }

    /// The restart policy, applied to a run that just ended on its own.
    mutating func applyRestartPolicy(_ reason: ExitReason, _ fx: inout Effects) {
        let restart: Bool
        if spec.isJob {
            // A job that succeeded is done whatever the mode; `always` means "until it succeeds".
            restart = !reason.isSuccess && spec.restart.mode != .no
        } else {
            switch spec.restart.mode {
            case .no: restart = false
            case .onFailure: restart = !reason.isSuccess
            case .always, .unlessStopped: restart = true
            }
        }
        guard restart else {
            if reason.isSuccess {
                transition(to: .exited, "exited: \(exitSummary(reason))", &fx)
            } else {
                transition(to: .failed, "failed: \(exitSummary(reason)), restart: \(spec.restart.mode.rawValue)", &fx)
                fx.actions.append(.alert(spec.name, "failed with \(reason); not restarted (restart: \(spec.restart.mode.rawValue))"))
            }
            return
        }
        scheduleRestart(after: reason, &fx)
    }

    mutating func scheduleRestart(after reason: ExitReason, _ fx: inout Effects) {
        let policy = spec.restart
        if let lastExit, lastExit.uptime >= policy.resetAfter {
            consecutiveFailures = 0
            isCrashLooping = false
        }
        consecutiveFailures += 1
        recentRestarts = recentRestarts.filter { fx.now.duration(since: $0) < policy.budgetWindow }
        recentRestarts.append(fx.now)
        restartsByReason[reason.kind, default: 0] += 1
        if recentRestarts.count > policy.budgetMax, !isCrashLooping {
            isCrashLooping = true
            fx.actions.append(
                .alert(
                    spec.name,
                    "crash loop: \(recentRestarts.count) restarts within \(policy.budgetWindow.humanReadable) "
                        + "(budget \(policy.budgetMax)); retrying every \(policy.delayMax.humanReadable)"))
        }
        let delay =
            isCrashLooping
            ? policy.delayMax
            : Backoff.delay(for: policy, consecutiveFailures: consecutiveFailures, jitter: fx.jitter())
        if delay <= .zero {
            start(&fx)
            return
        }
        restartAt = fx.now.advanced(by: delay)
        transition(
            to: isCrashLooping ? .crashloop : .backoff, "\(exitSummary(reason)); restart in \(delay.humanReadable)", &fx)
    }

    /// The reason, with the run's peak memory when known ("OOMKilled (peak 64.0 MiB)").
    func exitSummary(_ reason: ExitReason) -> String {
        guard let lastExit, lastExit.reason == reason, let peak = lastExit.peakMemoryBytes else { return reason.description }
        return "\(reason) (peak \(ByteCount.humanReadable(peak)))"
    }

    /// "stopped (peak 2.4 MiB)" for a stop on purpose, "stopped (Error(3))" for anything else.
    func stoppedDetail(_ reason: ExitReason) -> String {
        guard reason == .stopped else { return "stopped (\(exitSummary(reason)))" }
        guard let peak = lastExit?.peakMemoryBytes else { return "stopped" }
        return "stopped (peak \(ByteCount.humanReadable(peak)))"
    }

    mutating func forgetFailures() {
        consecutiveFailures = 0
        recentRestarts = []
        isCrashLooping = false
        restartAt = nil
    }

    mutating func apply(_ message: NotifyMessage, _ fx: inout Effects) {
        if let status = message.status { statusText = String(status.prefix(256)) }
        if let errno = message.errno { reportedErrno = errno }
        for facet in message.facets { facets[facet.name] = facet }
        if let inflight = message.inflight { self.inflight = inflight }
        if let tokens = message.llmTokens { llmTokens = tokens }
        if let remaining = message.llmBudgetRemaining { llmBudgetRemaining = remaining }
        guard isAlive, state != .stopping else { return }
        if let interval = message.watchdogInterval {
            watchdogInterval = interval > .zero ? interval : nil
            watchdogDeadline = watchdogInterval.map { fx.now.advanced(by: $0) }
        }
        if let extend = message.extendTimeout {
            if let deadline = readyDeadline { readyDeadline = max(deadline, fx.now.advanced(by: extend)) }
        }
        if message.isReloading {
            isReloading = true
            isReady = false
            readyDeadline = fx.now.advanced(by: spec.health.readyTimeout)
            fx.actions.append(.transitioned(spec.name, from: state, to: state, detail: "reloading (not ready)"))
        }
        if message.isStopping {
            isReady = false
            fx.actions.append(.transitioned(spec.name, from: state, to: state, detail: "child reports stopping"))
        }
        if message.isReady, !message.isStopping, !spec.isJob, spec.health.ready == .notify || isReloading,
            !isReady
        {
            isReloading = false
            becomeReady("READY=1", &fx)
        }
        switch message.watchdog {
        case .ping?:
            if let interval = watchdogInterval { watchdogDeadline = fx.now.advanced(by: interval) }
        case .trigger?:
            beginStop(.watchdogTimeout, &fx)
        case nil:
            break
        }
    }

    mutating func probeFinished(succeeded: Bool, _ fx: inout Effects) {
        isProbeInFlight = false
        guard isAlive, state != .stopping, let probe = spec.health.probe else { return }
        if succeeded {
            probeFailures = 0
            if !isReady {
                becomeReady("\(probe.label) passed", &fx)
            } else {
                probeAt = fx.now.advanced(by: probe.interval)
            }
            return
        }
        if !isReady {
            // Starting: ready_timeout decides. Reported unhealthy already: keep probing for recovery.
            probeAt = fx.now.advanced(by: readyDeadline == nil ? probe.interval : probe.startInterval)
            return
        }
        if let startedAt, fx.now.duration(since: startedAt) < probe.startPeriod {
            probeAt = fx.now.advanced(by: probe.interval)
            return
        }
        probeFailures += 1
        probeAt = fx.now.advanced(by: probe.interval)
        if probeFailures >= probe.retries { unhealthy(&fx) }
    }

    private mutating func unhealthy(_ fx: inout Effects) {
        let failures = probeFailures
        switch spec.health.onUnhealthy {
        case .restart:
            beginStop(.healthCheckFailed, &fx)
        case .report:
            if isReady {
                isReady = false
                fx.actions.append(
                    .transitioned(
                        spec.name, from: state, to: state,
                        detail: "unhealthy: \(failures) failed \(spec.health.probe?.label ?? "") probes"))
            }
        }
    }

    func status() -> ServiceStatus {
        ServiceStatus(
            name: spec.name, isJob: spec.isJob, state: state, desired: desired, isReady: isReady, pid: pid,
            startedAt: startedAt, readyAt: readyAt, restarts: restarts, restartsByReason: restartsByReason,
            oomKills: oomKills, isCrashLooping: isCrashLooping, lastExit: lastExit, statusText: statusText,
            facets: facets.keys.sorted().compactMap { facets[$0] }, inflight: inflight, nextRestartAt: restartAt,
            llmTokens: llmTokens, llmBudgetRemaining: llmBudgetRemaining, skippedScheduledRuns: skippedScheduledRuns)
    }
}
