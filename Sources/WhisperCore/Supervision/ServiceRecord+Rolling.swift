/// A rolling restart (`whisperctl restart --rolling`): the new process starts beside the old
/// one; once it is ready it becomes the service's process and the old one is stopped (it
/// drains: finishes what it is answering, within `stop_grace`). Until then the old one serves
/// and the service stays ready; a new process that exits or is not ready within
/// `ready_timeout` is killed and the old one keeps serving.
struct Successor: Sendable, Hashable {
    var pid: Int32?
    var startedAt: Instant
    var readyDeadline: Instant
}

extension ServiceRecord {
    /// Whether a rolling restart can start now; otherwise it is an ordinary restart.
    /// Readiness must say which process is ready: `notify` (by the sender) or `started`; a probe
    /// on the shared port could be answered by either.
    var canRoll: Bool {
        isAlive && isReady && state == .running && !spec.isJob && successor == nil && retiringPID == nil
            && (spec.health.ready == .notify || spec.health.ready == .started)
    }

    mutating func beginRolling(_ fx: inout Effects) {
        successor = Successor(pid: nil, startedAt: fx.now, readyDeadline: fx.now.advanced(by: spec.health.readyTimeout))
        fx.actions.append(.transitioned(spec.name, from: state, to: state, detail: "rolling restart: starting a new process beside pid \(pid ?? 0)"))
        fx.actions.append(.spawnSuccessor(spec))
    }

    mutating func successorSpawned(pid newPID: Int32, _ fx: inout Effects) {
        guard successor != nil else {
            // Given up while it was being spawned (shutdown): it goes at once.
            fx.actions.append(.killProcessGroup(spec.name, pid: newPID))
            return
        }
        successor?.pid = newPID
        fx.actions.append(.transitioned(spec.name, from: state, to: state, detail: "rolling restart: new process pid \(newPID), waiting for it to be ready"))
    }

    /// The new process is ready: it becomes the service's process; the old one is stopped.
    mutating func successorReady(_ fx: inout Effects) {
        guard let next = successor, let nextPID = next.pid, let oldPID = pid else { return }
        successor = nil
        retiringPID = oldPID
        retireDeadline = fx.now.advanced(by: spec.stopGrace)
        pid = nextPID
        startedAt = next.startedAt
        readyAt = fx.now
        restarts += 1
        restartsByReason["rolling", default: 0] += 1
        facets = [:]
        statusText = nil
        inflight = nil
        watchdogInterval = spec.health.watchdog
        watchdogDeadline = watchdogInterval.map { fx.now.advanced(by: $0) }
        if let probe = spec.health.probe { probeAt = fx.now.advanced(by: probe.interval) }
        fx.actions.append(.transitioned(spec.name, from: .running, to: .running, detail: "rolled over to pid \(nextPID); stopping pid \(oldPID)"))
        fx.actions.append(.signal(spec.name, pid: oldPID, spec.stopSignal))
    }

    /// The new process failed before it was ready: it goes, the old one keeps serving.
    mutating func abandonSuccessor(_ why: String, _ fx: inout Effects) {
        guard let next = successor else { return }
        successor = nil
        if let nextPID = next.pid { fx.actions.append(.killProcessGroup(spec.name, pid: nextPID)) }
        fx.actions.append(.alert(spec.name, "rolling restart of \(spec.name) abandoned: \(why); pid \(pid ?? 0) keeps serving"))
    }

    /// An exit of a process that is not the service's main one: the old process of a rolling
    /// restart (done draining) or the new one before it was ready. True when it was one of them.
    mutating func sideProcessExited(pid exited: Int32, _ reason: ProcessTermination, _ fx: inout Effects) -> Bool {
        if exited == retiringPID {
            retiringPID = nil
            retireDeadline = nil
            fx.actions.append(.transitioned(spec.name, from: state, to: state, detail: "the replaced process pid \(exited) ended: \(reason)"))
            return true
        }
        if let next = successor, next.pid == exited {
            successor = nil
            fx.actions.append(.alert(spec.name, "rolling restart of \(spec.name) abandoned: the new process exited (\(reason)); pid \(pid ?? 0) keeps serving"))
            return true
        }
        return false
    }

    /// Deadlines of the two side processes.
    mutating func fireRollingDeadlines(_ fx: inout Effects) {
        if let next = successor, next.readyDeadline <= fx.now {
            abandonSuccessor("not ready within ready_timeout (\(spec.health.readyTimeout.humanReadable))", &fx)
        }
        if let deadline = retireDeadline, deadline <= fx.now, let old = retiringPID {
            retireDeadline = nil
            fx.actions.append(.killProcessGroup(spec.name, pid: old))
        }
    }
}
