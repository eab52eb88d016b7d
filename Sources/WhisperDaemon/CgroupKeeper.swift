import Foundation
import Glibc
import WhisperAPI
import WhisperConfig
import WhisperCore
import WhisperSystem

/// A character whose main process is gone while other processes of it remain: they were
/// SIGKILLed, and the run ends when the cgroup is empty (or after ``CgroupKeeper/drainTimeout``).
final class CgroupDrain {
    let name: ServiceName
    let group: CharacterCgroup
    let run: LiveRun
    let termination: ProcessTermination
    let deadline: Int64
    /// v1: pidfds of the processes being waited for; v2 waits on `cgroup.events` instead.
    var pidFDs: Set<Int32> = []
    var watchesPopulated = false

    init(name: ServiceName, group: CharacterCgroup, run: LiveRun, termination: ProcessTermination, deadline: Int64) {
        self.name = name
        self.group = group
        self.run = run
        self.termination = termination
        self.deadline = deadline
    }
}

/// Owns every cgroup of every character (the backend, each character's ``CharacterCgroup``,
/// its OOM watch, a drain of what outlived the main process, the figures read for status) and
/// gives the rest of whisperd small calls. It knows nothing of the fleet: what it learns (OOM
/// kills, a drain that ended) goes out through ``Events``, which ``Fleet`` sets once.
///
/// Not `Sendable`: runs on the loop thread (the metrics thread only gets ``usageProbes(for:)``).
final class CgroupKeeper {
    /// What the keeper tells the fleet.
    struct Events {
        /// The kernel killed `count` processes of the character at its memory limit.
        var oomKilled: (ServiceName, UInt64) -> Void = { _, _ in }
        /// A drain ended (the cgroup is empty, or it timed out): the run is over.
        var drained: (ServiceName, LiveRun, ProcessTermination) -> Void = { _, _, _ in }
    }

    /// How long SIGKILLed processes may take to disappear before whisperd stops waiting (a task
    /// stuck in the kernel, e.g. on a dead NFS server, cannot be killed at all).
    static let drainTimeout: Int64 = 10_000_000_000

    let backend: CgroupBackend
    private let loop: EventLoop
    private let log: DaemonLog
    var events = Events()
    private var groups: [ServiceName: CharacterCgroup] = [:]
    /// The OOM event descriptor registered in the loop, per character.
    private var oomWatches: [ServiceName: Int32] = [:]
    /// Characters whose main process exited while others of theirs still run: killed, awaited.
    private var drains: [ServiceName: CgroupDrain] = [:]
    /// Cgroup figures for status and metrics, read at most once a second per character.
    private var usageCache: [ServiceName: (at: Int64, usage: CgroupUsage)] = [:]
    /// When the metrics thread last read every character's cgroup figures (0: never).
    private(set) var usageReadAt: Int64 = 0
    private let remover = CgroupRemover()

    init(backend: CgroupBackend, loop: EventLoop, log: DaemonLog) {
        self.backend = backend
        self.loop = loop
        self.log = log
    }

    // MARK: - A run's cgroups

    /// Whether the character has cgroups (made at its first start, gone once it is down for good).
    func hasCgroup(_ name: ServiceName) -> Bool { groups[name] != nil }

    /// The character's cgroups, created or updated for this run; how the child is placed in
    /// them before exec.
    func prepare(for spec: ServiceSpec) throws(SystemError) -> CgroupPlacement {
        guard backend.grouping != nil || backend.memory != nil else { return CgroupPlacement() }
        let group = groups[spec.name] ?? backend.makeCharacterCgroup(spec.name.rawValue)
        groups[spec.name] = group
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

    /// Turns new kills in the kernel's OOM counter into ``Events/oomKilled``.
    func reportOOMKills(_ name: ServiceName, consumingWakeUp: Bool = true) {
        guard let group = groups[name] else { return }
        report(name, group, consumingWakeUp: consumingWakeUp)
    }

    private func report(_ name: ServiceName, _ group: CharacterCgroup, consumingWakeUp: Bool) {
        let kills = group.takeNewOOMKills(consumingWakeUp: consumingWakeUp)
        guard kills > 0 else { return }
        let usage = group.usage()
        let peak = usage.memoryPeakBytes.map { ", peak \(ByteCount.humanReadable($0))" } ?? ""
        log.log(.warning, character: name, "OOM: the kernel killed \(kills) process(es) at the memory limit\(peak)")
        events.oomKilled(name, kills)
    }

    /// The end of a run: OOM kills reported first (so the reason is right even when the exit
    /// was seen before the OOM event); the run's peak memory, the peak then reset. A cgroup
    /// that `cgroup.kill` was used on is made anew at the next start.
    func endRun(_ name: ServiceName, removalOffThread: Bool) -> UInt64? {
        guard let group = groups[name] else { return nil }
        report(name, group, consumingWakeUp: false)
        let peak = group.peakMemory()
        group.resetPeak()
        // After cgroup.kill the kernel would kill children clone3 puts there: make it anew.
        if group.wasKilledByCgroupKill { remove(name, offThread: removalOffThread) }
        return peak
    }

    /// Opens every character's peak file now (once start-up is done), instead of at the end
    /// of its first run, between the exit and the restart.
    func openPeakFiles() {
        for group in groups.values { group.openPeak() }
    }

    /// The main process ended: when other processes of the character remain in its grouping
    /// cgroup they are killed and awaited (like a container whose first process ended), and the
    /// run ends with ``Events/drained``; false when nothing remains (the run is over now).
    func drainIfPopulated(_ name: ServiceName, _ run: LiveRun, _ termination: ProcessTermination) -> Bool {
        guard let group = groups[name], group.hasGrouping, !group.isEmpty() else { return false }
        drain(name, group, run, termination)
        return true
    }

    /// SIGKILL for everything in the character's grouping cgroup, when it is the current run's
    /// (`isCurrentRun`); false when the character has a grouping cgroup and the run is not the
    /// current one (it already ended and its cgroup was emptied: the pid is not ours).
    func killAll(_ name: ServiceName, isCurrentRun: Bool) -> Bool {
        guard let group = groups[name], group.hasGrouping else { return true }
        guard isCurrentRun else { return false }
        group.killAll()
        return true
    }

    /// Whether `pid` is in the character's grouping cgroup; nil when it has none.
    func contains(_ pid: Int32, in name: ServiceName) -> Bool? {
        guard let group = groups[name], group.hasGrouping else { return nil }
        return group.contains(pid: pid)
    }

    /// Whether `/proc/PID/cgroup` must be readable for a peer to be told apart from a character.
    var groupsProcesses: Bool { backend.grouping != nil }

    func applyLive(_ name: ServiceName, _ limits: Limits) {
        guard let group = groups[name] else {
            log.log(.warning, character: name, "limits changed; not enforced (\(backend.name) backend)")
            return
        }
        do {
            try group.applyLive(limits)
            log.log(.info, character: name, "limits updated live: \(Self.describe(limits))")
        } catch {
            log.log(.error, character: name, "cannot update limits live: \(error)")
        }
    }

    static func describe(_ limits: Limits) -> String {
        var parts: [String] = []
        parts.append("memory=" + (limits.memoryBytes.map(ByteCount.humanReadable) ?? "unlimited"))
        if let high = limits.memoryHighBytes { parts.append("memory_high=" + ByteCount.humanReadable(high)) }
        parts.append("cpus=" + (limits.cpus.map { String($0) } ?? "unlimited"))
        parts.append("pids=" + (limits.pids.map(String.init) ?? "unlimited"))
        if let cpuset = limits.cpuset { parts.append("cpuset=\(cpuset)") }
        return parts.joined(separator: " ")
    }

    /// The character's cgroups go (down for good, forgotten, or whisperd stops). While the fleet
    /// stops nothing starts again, so the rmdirs can go to another thread (`offThread`).
    func remove(_ name: ServiceName, offThread: Bool) {
        usageCache[name] = nil
        guard let group = groups.removeValue(forKey: name) else { return }
        if let fd = oomWatches.removeValue(forKey: name) { loop.remove(fd) }
        for failure in group.remove(using: offThread ? remover : nil) {
            log.log(.warning, character: name, "cgroup not removed: \(failure)")
        }
    }

    /// At exit: every cgroup left goes (`offThread`: through the remover thread), and the
    /// remover thread's work is awaited.
    func removeAll(offThread: Bool) {
        for name in Array(groups.keys) { remove(name, offThread: offThread) }
        for failure in remover.finish() { log.log(.warning, "whisperd", "cgroup not removed: \(failure)") }
    }

    // MARK: - Drains

    /// The character whose processes are being drained, if any (a re-exec waits for none).
    var anyDraining: ServiceName? { drains.keys.first }

    func isDraining(_ name: ServiceName) -> Bool { drains[name] != nil }

    /// The earliest drain deadline, for the loop's timer.
    var nextDrainDeadline: Int64? {
        var deadline: Int64?
        for drain in drains.values { deadline = min(deadline ?? drain.deadline, drain.deadline) }
        return deadline
    }

    /// From the timer: drains past their deadline end without their survivors.
    func expireDrains(now: Int64) {
        for drain in drains.values where drain.deadline <= now { drainTimedOut(drain) }
    }

    private func drain(_ name: ServiceName, _ group: CharacterCgroup, _ run: LiveRun, _ termination: ProcessTermination) {
        let remaining = group.processIDs()
        log.log(
            .info, character: name,
            "main process \(run.pid) ended; killing \(remaining.count) remaining process(es) of the character")
        let drain = CgroupDrain(
            name: name, group: group, run: run, termination: termination,
            deadline: Clock.monotonicNanoseconds() + Self.drainTimeout)
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

    private func drainTimedOut(_ drain: CgroupDrain) {
        let left = drain.group.processIDs()
        log.log(
            .error, character: drain.name,
            "\(left.count) process(es) survived SIGKILL for \(Self.drainTimeout / 1_000_000_000) s (pids "
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
        events.drained(drain.name, drain.run, drain.termination)
    }

    // MARK: - Figures for status and metrics

    /// The character's cgroup figures, at most a second old: `/health` and `/metrics` under
    /// load would otherwise read five cgroup files per character per request.
    func usage(of name: ServiceName, now: Int64) -> CgroupUsage? {
        guard let group = groups[name] else { return nil }
        if let cached = usageCache[name], now - cached.at < 1_000_000_000 { return cached.usage }
        let usage = group.usage()
        usageCache[name] = (now, usage)
        return usage
    }

    /// The character's cgroup figures read now.
    func freshUsage(of name: ServiceName) -> CgroupUsage? { groups[name]?.usage() }

    /// The figures last read (by ``usage(of:now:)``, ``readEveryUsage(now:)`` or the metrics
    /// thread), whatever their age; nil without a cgroup.
    func lastUsage(of name: ServiceName) -> CgroupUsage? {
        guard groups[name] != nil else { return nil }
        return usageCache[name]?.usage
    }

    /// Reads every character's figures here, now (the very first `/metrics` scrape).
    func readEveryUsage(now: Int64) {
        for (name, group) in groups { usageCache[name] = (now, group.usage()) }
        usageReadAt = now
    }

    /// Figures read off the loop (the metrics thread), at `at`.
    func store(_ usages: [(ServiceName, CgroupUsage)], readAt at: Int64) {
        for (name, usage) in usages { usageCache[name] = (at, usage) }
        usageReadAt = at
    }

    /// The character's usage probe (for a reader on another thread), nil without a cgroup.
    func usageProbe(of name: ServiceName) -> CgroupUsageProbe? { groups[name]?.usageProbe }

    /// Which hierarchy enforces what; the same facts as the start-up log line.
    var report: CgroupReport {
        CgroupReport(
            backend: backend.name, notEnforced: backend.notEnforced,
            providers: Dictionary(
                backend.functions.map { ($0.function.replacingOccurrences(of: " ", with: "_"), $0.provider) },
                uniquingKeysWith: { first, _ in first }))
    }
}
