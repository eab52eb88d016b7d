import Glibc
import WhisperCore
import WhisperSystem

/// A character whose main process is gone while other processes of it remain: they were
/// SIGKILLed, and the run ends when the cgroup is empty (or after ``Daemon/drainTimeout``).
final class CgroupDrain {
    let name: ServiceName
    let group: CharacterCgroup
    let run: Daemon.LiveRun
    let termination: ProcessTermination
    let deadline: Int64
    /// v1: pidfds of the processes being waited for; v2 waits on `cgroup.events` instead.
    var pidFDs: Set<Int32> = []
    var watchesPopulated = false

    init(name: ServiceName, group: CharacterCgroup, run: Daemon.LiveRun, termination: ProcessTermination, deadline: Int64) {
        self.name = name
        self.group = group
        self.run = run
        self.termination = termination
        self.deadline = deadline
    }
}

extension Daemon {
    /// How long SIGKILLed processes may take to disappear before whisperd stops waiting (a task
    /// stuck in the kernel, e.g. on a dead NFS server, cannot be killed at all).
    static let drainTimeout: Int64 = 10_000_000_000

    /// The character's cgroups, created or updated for this run; how the child is placed in
    /// them before exec.
    func prepareCgroup(for spec: ServiceSpec) throws(SystemError) -> CgroupPlacement {
        guard cgroups.grouping != nil || cgroups.memory != nil else { return CgroupPlacement() }
        let group = characterCgroups[spec.name] ?? cgroups.makeCharacterCgroup(spec.name.rawValue)
        characterCgroups[spec.name] = group
        let placement = try group.prepare(limits: spec.limits)
        if oomWatches[spec.name] == nil, group.oomEventFD >= 0 {
            let fd = group.oomEventFD
            let name = spec.name
            do {
                try loop.add(fd, group.oomEventNeedsPriority ? .priority : .readable) { [unowned self] _ in
                    self.reportOOMKills(name)
                }
                oomWatches[name] = fd
            } catch {
                log.log(.warning, character: name, "cannot watch its OOM events: \(error)")
            }
        }
        return placement
    }

    /// Turns new kills in the kernel's OOM counter into core events (one per kill).
    func reportOOMKills(_ name: ServiceName, consumingWakeUp: Bool = true) {
        guard let group = characterCgroups[name] else { return }
        let kills = group.takeNewOOMKills(consumingWakeUp: consumingWakeUp)
        guard kills > 0 else { return }
        let usage = group.usage()
        let peak = usage.memoryPeakBytes.map { ", peak \(ByteCount.humanReadable($0))" } ?? ""
        log.log(.warning, character: name, "OOM: the kernel killed \(kills) process(es) at the memory limit\(peak)")
        for _ in 0..<min(kills, 1000) { post(.oomKilled(name)) }
    }

    /// The end of a run: OOM kills counted first (so the reason is right even when the exit was
    /// seen before the OOM event), then the exit with the run's peak memory.
    func finishRun(_ name: ServiceName, _ run: LiveRun, _ termination: ProcessTermination, startErrno: Int32? = nil) {
        if runs[name] === run { runs[name] = nil }
        // A check of this run must not judge the next one: dropped (an exec probe is killed).
        probes[name] = nil
        var peak: UInt64?
        if let group = characterCgroups[name] {
            reportOOMKills(name, consumingWakeUp: false)
            peak = group.peakMemory()
            group.resetPeak()
            // After cgroup.kill the kernel would kill children clone3 puts there: make it anew.
            if group.wasKilledByCgroupKill { removeCgroup(of: name) }
        }
        if let startErrno {
            post(.startFailed(name, pid: run.pid, errno: startErrno))
        } else {
            post(.childExited(name, pid: run.pid, termination, peakMemoryBytes: peak))
        }
        recordIncident(name)
    }

    func drain(_ name: ServiceName, _ group: CharacterCgroup, _ run: LiveRun, _ termination: ProcessTermination) {
        let remaining = group.processIDs()
        log.log(
            .info, character: name,
            "main process \(run.pid) ended; killing \(remaining.count) remaining process(es) of the character")
        let drain = CgroupDrain(
            name: name, group: group, run: run, termination: termination,
            deadline: Clock.monotonicNanoseconds() + Daemon.drainTimeout)
        drains[name] = drain
        group.killAll()
        if group.populatedEventFD >= 0 {
            // v2: the kernel says when the cgroup becomes empty.
            do {
                try loop.add(group.populatedEventFD, .priority) { [unowned self, unowned drain] _ in self.checkDrain(drain) }
                drain.watchesPopulated = true
            } catch {
                log.log(.warning, character: name, "cannot watch cgroup.events: \(error)")
            }
        } else {
            watchProcesses(of: drain)
        }
        checkDrain(drain)
    }

    /// v1 has no "empty" event: wait on a pidfd per remaining process instead.
    private func watchProcesses(of drain: CgroupDrain) {
        for pid in drain.group.processIDs() {
            let fd = ChildReaper.openPidFD(pid)
            guard fd >= 0 else { continue }
            do {
                try loop.add(fd, .readable) { [unowned self, unowned drain] _ in
                    self.loop.remove(fd)
                    close(fd)
                    drain.pidFDs.remove(fd)
                    if drain.pidFDs.isEmpty { self.checkDrain(drain) }
                }
                drain.pidFDs.insert(fd)
            } catch {
                close(fd)
            }
        }
    }

    private func checkDrain(_ drain: CgroupDrain) {
        guard drains[drain.name] === drain else { return }
        if drain.group.isEmpty() {
            completeDrain(drain)
        } else if !drain.watchesPopulated, drain.pidFDs.isEmpty {
            // Something forked before the freeze took hold: kill again and wait for those.
            drain.group.killAll()
            watchProcesses(of: drain)
            if drain.pidFDs.isEmpty, drain.group.isEmpty() { completeDrain(drain) }
        }
    }

    func drainTimedOut(_ drain: CgroupDrain) {
        let left = drain.group.processIDs()
        log.log(
            .error, character: drain.name,
            "\(left.count) process(es) survived SIGKILL for \(Daemon.drainTimeout / 1_000_000_000) s (pids "
                + left.map(String.init).joined(separator: ", ") + "); continuing without them")
        completeDrain(drain)
    }

    private func completeDrain(_ drain: CgroupDrain) {
        drains[drain.name] = nil
        if drain.watchesPopulated { loop.remove(drain.group.populatedEventFD) }
        for fd in drain.pidFDs {
            loop.remove(fd)
            close(fd)
        }
        drain.pidFDs = []
        finishRun(drain.name, drain.run, drain.termination)
    }

    /// SIGKILL for everything of the character: its cgroup, and its process group (which is all
    /// there is without a cgroup backend).
    func killAll(_ name: ServiceName, pid: Int32) {
        let run = runs[name]
        let isCurrent = run?.pid == pid
        if let group = characterCgroups[name], group.hasGrouping {
            // The run already ended and its cgroup was emptied: the pid (and its group) is not ours.
            guard isCurrent else { return }
            group.killAll()
        }
        _ = kill(-pid, SIGKILL)
        if isCurrent, let run, run.pidFD >= 0 { _ = ChildReaper.signal(pidFD: run.pidFD, SIGKILL) }
    }

    func applyLimitsLive(_ name: ServiceName, _ limits: Limits) {
        guard let group = characterCgroups[name] else {
            log.log(.warning, character: name, "limits changed; not enforced (\(cgroups.name) backend)")
            return
        }
        do {
            try group.applyLive(limits)
            log.log(.info, character: name, "limits updated live: \(describe(limits))")
        } catch {
            log.log(.error, character: name, "cannot update limits live: \(error)")
        }
    }

    func describe(_ limits: Limits) -> String {
        var parts: [String] = []
        parts.append("memory=" + (limits.memoryBytes.map(ByteCount.humanReadable) ?? "unlimited"))
        if let high = limits.memoryHighBytes { parts.append("memory_high=" + ByteCount.humanReadable(high)) }
        parts.append("cpus=" + (limits.cpus.map { String($0) } ?? "unlimited"))
        parts.append("pids=" + (limits.pids.map(String.init) ?? "unlimited"))
        if let cpuset = limits.cpuset { parts.append("cpuset=\(cpuset)") }
        return parts.joined(separator: " ")
    }

    /// The character's cgroup figures, at most a second old: `/health` and `/metrics` under
    /// load would otherwise read five cgroup files per character per request.
    func usage(of name: ServiceName, now: Int64) -> CgroupUsage? {
        guard let group = characterCgroups[name] else { return nil }
        if let cached = usageCache[name], now - cached.at < 1_000_000_000 { return cached.usage }
        let usage = group.usage()
        usageCache[name] = (now, usage)
        return usage
    }

    func removeCgroup(of name: ServiceName) {
        usageCache[name] = nil
        guard let group = characterCgroups.removeValue(forKey: name) else { return }
        if let fd = oomWatches.removeValue(forKey: name) { loop.remove(fd) }
        // While the fleet stops, nothing starts again: the rmdirs can go to another thread.
        let remover = core.isShuttingDown ? cgroupRemover : nil
        for failure in group.remove(using: remover) { log.log(.warning, character: name, "cgroup not removed: \(failure)") }
    }

    /// Whether a notify datagram's sender belongs to the character: its main process or anything
    /// in its cgroup; with no cgroup backend, a process of its own uid when it has one. Never
    /// its process group: any process can join a group of its session, so that proves nothing.
    func isMember(_ pid: Int32, uid: UInt32, of name: ServiceName, run: LiveRun) -> Bool {
        if pid == run.pid { return true }
        if let group = characterCgroups[name], group.hasGrouping { return group.contains(pid: pid) }
        if let own = tenants.uid(of: name), own != geteuid() { return uid == own }
        return isInSession(of: run, pid: pid, uid: uid)
    }

    /// Whether a process belongs to any character (its cgroup, or its process being a main
    /// process): such a peer never gets the control socket.
    func isCharacterProcess(_ pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        // A peer gone before it is checked (connect, send, exit) cannot show its cgroup: refused.
        if cgroups.grouping != nil, readSmallFile("/proc/\(pid)/cgroup") == nil { return true }
        for (name, run) in runs {
            if run.pid == pid { return true }
            if let group = characterCgroups[name], group.hasGrouping, group.contains(pid: pid) { return true }
        }
        return false
    }
}
