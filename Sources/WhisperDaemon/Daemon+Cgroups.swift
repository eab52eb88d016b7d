import Glibc
import WhisperCore
import WhisperSystem

/// The fleet's side of a run's cgroups (``CgroupKeeper`` owns them): the end of a run, killing
/// a character, and telling a character's processes from others.
extension Daemon {
    /// The end of a run: OOM kills counted first (so the reason is right even when the exit was
    /// seen before the OOM event), then the exit with the run's peak memory.
    func finishRun(_ name: ServiceName, _ run: LiveRun, _ termination: ProcessTermination, startErrno: Int32? = nil) {
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

    /// SIGKILL for everything of the character: its cgroup, and its process group (which is all
    /// there is without a cgroup backend).
    func killAll(_ name: ServiceName, pid: Int32) {
        let run = runs[name]
        let isCurrent = run?.pid == pid
        // The run already ended and its cgroup was emptied: the pid (and its group) is not ours.
        guard cgroups.killAll(name, isCurrentRun: isCurrent) else { return }
        _ = kill(-pid, SIGKILL)
        if isCurrent, let run, run.pidFD >= 0 { _ = ChildReaper.signal(pidFD: run.pidFD, SIGKILL) }
    }

    /// The character's cgroups go; off the loop thread while the fleet stops.
    func removeCgroup(of name: ServiceName) { cgroups.remove(name, offThread: core.isShuttingDown) }

    /// Whether a notify datagram's sender belongs to the character: its main process or anything
    /// in its cgroup; with no cgroup backend, a process of its own uid when it has one. Never
    /// its process group: any process can join a group of its session, so that proves nothing.
    func isMember(_ pid: Int32, uid: UInt32, of name: ServiceName, run: LiveRun) -> Bool {
        if pid == run.pid { return true }
        if let contained = cgroups.contains(pid, in: name) { return contained }
        if let own = tenants.uid(of: name), own != geteuid() { return uid == own }
        return isInSession(of: run, pid: pid, uid: uid)
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
}
