import CWhisperLinux
import Glibc
import WhisperCore

/// What a character's cgroups say about it right now.
public struct CgroupUsage: Hashable, Sendable {
    public var memoryBytes: UInt64?
    public var memoryPeakBytes: UInt64?
    public var cpuMicroseconds: UInt64?
    /// Tasks (pids controller) or processes (grouping cgroup).
    public var pids: Int?
    public var oomKills: UInt64?
}

/// One character's cgroups: `char-NAME` in every tree the backend uses. Kept across restarts
/// (the directory, its limits and the open `cgroup.procs` files are reused), removed when the
/// character is stopped for good or whisperd exits.
///
/// Not `Sendable`: owned by the supervisor's loop thread.
public final class CharacterCgroup {
    public let name: String
    let backend: CgroupBackend
    /// Trees joined so far, in join order, with what a child joins them through: the v2
    /// directory, or the v1 `tasks` file.
    private var joined: [(tree: CgroupTree, placementFD: Int32)] = []
    /// The limits last written, per function.
    private var written: [String: Limits] = [:]
    /// Directories this instance just made and has not written to yet (they hold the defaults).
    private var fresh: Set<String> = []
    private var oomCounterFD: Int32 = -1
    private var lastOOMKills: UInt64 = 0
    /// Memory, peak, CPU and pids figures; the metrics thread reads them through it too.
    public let usageProbe = CgroupUsageProbe()
    /// `cgroup.kill` was used on this cgroup: from then on (Linux 6.18 at least) the kernel
    /// SIGKILLs every child that clone3 puts into it (its kill sequence number no longer matches
    /// the parent's), so later children join by writing `cgroup.procs`, until the cgroup is
    /// made anew (whisperd does that once the cgroup is empty).
    public private(set) var wasKilledByCgroupKill = false { didSet { cachedPlacement = nil } }
    /// What the last ``prepare(limits:)`` returned, for the same limits: a restart's fast path.
    private var cachedPlacement: (limits: Limits, placement: CgroupPlacement)?

    /// Becomes readable (v1 eventfd) or priority-readable (v2 `memory.events`) on an OOM kill.
    public private(set) var oomEventFD: Int32 = -1
    public var oomEventNeedsPriority: Bool { backend.memory?.version == .v2 }
    /// v2 `cgroup.events`: priority-readable when `populated` changes.
    public private(set) var populatedEventFD: Int32 = -1

    init(name: String, backend: CgroupBackend) {
        self.name = name
        self.backend = backend
        hasGrouping = backend.grouping != nil
    }

    deinit { closeDescriptors() }

    /// Kept, not computed: asked at the end of every run (a look at the backend copies a tree).
    public let hasGrouping: Bool

    /// The trees `limits` needs: grouping, memory and cpu accounting always (kill scope,
    /// accounting, OOM events); cpu and pids only when limited, so an unlimited character costs
    /// fewer cgroups on a v1 host. A v1 tree joined once stays joined.
    private func trees(for limits: Limits) -> [CgroupTree] {
        var wanted = [backend.grouping, backend.memory, backend.cpuAccounting].compactMap { $0 }
        if limits.cpus != nil || limits.cpuWeight != nil || isJoined(backend.cpu), let cpu = backend.cpu { wanted.append(cpu) }
        if limits.pids != nil || isJoined(backend.pids), let pids = backend.pids { wanted.append(pids) }
        if limits.cpuset != nil || isJoined(backend.cpuset), let cpuset = backend.cpuset { wanted.append(cpuset) }
        var unique: [CgroupTree] = []
        for tree in wanted where !unique.contains(where: { $0.baseDirectory == tree.baseDirectory }) { unique.append(tree) }
        return unique
    }

    private func isJoined(_ tree: CgroupTree?) -> Bool {
        guard let tree else { return false }
        return joined.contains { $0.tree.baseDirectory == tree.baseDirectory }
    }

    private func directory(_ tree: CgroupTree) -> String { tree.characterDirectory(name) }

    /// Before each spawn: creates what is missing, writes limits that changed, and returns the
    /// descriptors that place the child before exec.
    public func prepare(limits: Limits) throws(SystemError) -> CgroupPlacement {
        if let cachedPlacement, cachedPlacement.limits == limits { return cachedPlacement.placement }
        for tree in trees(for: limits) where !isJoined(tree) { try join(tree) }
        try write(limits)
        var placement = CgroupPlacement()
        for (tree, fd) in joined {
            if tree.version == .v2 {
                placement.directoryFD = fd
                placement.joinsDirectoryByWrite = wasKilledByCgroupKill
            } else {
                placement.taskFDs.append(fd)
            }
        }
        // Joined at clone, a v2 CPU quota, weight or cpuset, or memory.high, can hold the child
        // before its first instruction: the spawn must not wait for it then (see spawn.c, "Slots").
        if placement.directoryFD >= 0, !placement.joinsDirectoryByWrite {
            let cpu = backend.cpu?.version == .v2 && (limits.cpus != nil || limits.cpuWeight != nil)
            let cpuset = backend.cpuset?.version == .v2 && limits.cpuset != nil
            let memoryHigh = backend.memory?.version == .v2 && limits.memoryHighBytes != nil
            placement.mayHoldTheChildAtClone = cpu || cpuset || memoryHigh
        }
        cachedPlacement = (limits, placement)
        return placement
    }

    private func join(_ tree: CgroupTree) throws(SystemError) {
        let directory = directory(tree)
        if try CgroupFS.makeDirectory(directory) { fresh.insert(directory) }
        // Its files are opened relative to the directory: one path walk, not one per file.
        let directoryFD = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw SystemError("open \(directory)") }
        let fd: Int32
        if tree.version == .v2 {
            fd = directoryFD
        } else {
            fd = openat(directoryFD, "tasks", O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else {
                let saved = errno
                close(directoryFD)
                throw SystemError("open \(directory)/tasks", errno: saved)
            }
        }
        defer { if fd != directoryFD { close(directoryFD) } }
        joined.append((tree, fd))
        usageProbe.update(probeTrees())
        if tree.baseDirectory == backend.memory?.baseDirectory { watchOOM(in: directoryFD, directory, version: tree.version) }
        if tree.baseDirectory == backend.grouping?.baseDirectory, tree.version == .v2 {
            populatedEventFD = openat(directoryFD, "cgroup.events", O_RDONLY | O_CLOEXEC)
        }
    }

    private func watchOOM(in directoryFD: Int32, _ directory: String, version: CgroupVersion) {
        switch version {
        case .v2:
            oomCounterFD = openat(directoryFD, "memory.events", O_RDONLY | O_CLOEXEC)
            oomEventFD = oomCounterFD
        case .v1:
            oomCounterFD = openat(directoryFD, "memory.oom_control", O_RDONLY | O_CLOEXEC)
            let eventFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
            let control = openat(directoryFD, "cgroup.event_control", O_WRONLY | O_TRUNC | O_CLOEXEC)
            if oomCounterFD >= 0, eventFD >= 0, control >= 0,
                (try? CgroupFS.write("\(eventFD) \(oomCounterFD)", fd: control, path: directory + "/cgroup.event_control")) != nil
            {
                oomEventFD = eventFD
            } else if eventFD >= 0 {
                close(eventFD)
            }
            if control >= 0 { close(control) }
        }
        lastOOMKills = readOOMKills() ?? 0
    }

    /// Writes the files of every function whose limits differ from what was written.
    private func write(_ limits: Limits) throws(SystemError) {
        var problems: [SystemError] = []
        func apply(_ function: String, _ tree: CgroupTree?, _ files: [(file: String, value: String)], _ relevant: Limits) {
            guard let tree, isJoined(tree), written[function] != relevant else { return }
            let directory = directory(tree)
            let isFresh = fresh.contains(directory)
            for (file, value) in files where !(isFresh && CgroupLimitFiles.isKernelDefault(value, for: file)) {
                do { try CgroupFS.write(value, to: directory + "/" + file) } catch {
                    if error.errno == ENOENT, CgroupLimitFiles.optionalFiles.contains(file) { continue }
                    problems.append(error)
                }
            }
            written[function] = relevant
        }
        if let memory = backend.memory {
            apply(
                "memory", memory, CgroupLimitFiles.memory(limits, memory.version),
                Limits(memoryBytes: limits.memoryBytes, memoryHighBytes: limits.memoryHighBytes, memoryLowBytes: limits.memoryLowBytes))
        }
        if let cpu = backend.cpu {
            apply("cpu", cpu, CgroupLimitFiles.cpu(limits, cpu.version), Limits(cpus: limits.cpus, cpuWeight: limits.cpuWeight))
        }
        if let pids = backend.pids { apply("pids", pids, CgroupLimitFiles.pids(limits), Limits(pids: limits.pids)) }
        if let cpuset = backend.cpuset {
            apply(
                "cpuset", cpuset, CgroupLimitFiles.cpuset(limits, cpuset.version, allCPUs: backend.allCPUs),
                Limits(cpuset: limits.cpuset))
        }
        fresh = []
        if let first = problems.first {
            // Try again next time rather than believing a half-written state.
            written = [:]
            throw first
        }
    }

    /// A reload changed only `limits:` of a running character: write them to its cgroups now.
    /// A v1 tree it was not in yet (a newly set `cpus:`) is joined by moving its processes,
    /// after its limits are written (a v1 cpuset takes no task before its CPUs are set).
    public func applyLive(_ limits: Limits) throws(SystemError) {
        cachedPlacement = nil
        let members = processIDs()
        let newTrees = trees(for: limits).filter { !isJoined($0) }
        for tree in newTrees { try join(tree) }
        try write(limits)
        for tree in newTrees {
            let procs = directory(tree) + "/cgroup.procs"
            for pid in members { try? CgroupFS.write(String(pid), to: procs) }
        }
    }

    // MARK: - Membership and kill

    /// Processes in the character's grouping cgroup.
    public func processIDs() -> [Int32] {
        guard let grouping = backend.grouping else { return [] }
        return CgroupFS.processIDs(directory(grouping) + "/cgroup.procs")
    }

    public func isEmpty() -> Bool {
        guard hasGrouping else { return true }
        // Open only for a v2 grouping cgroup.
        if populatedEventFD >= 0, let populated = CgroupFS.field("populated", fd: populatedEventFD) { return populated == 0 }
        return processIDs().isEmpty
    }

    /// Whether `pid` is inside this character (its notify datagrams are then accepted).
    public func contains(pid: Int32) -> Bool {
        guard let grouping = backend.grouping, let text = readSmallFile("/proc/\(pid)/cgroup") else { return false }
        let path = grouping.characterPath(name)
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let matchesHierarchy =
                grouping.version == .v2
                ? parts[0] == "0" && parts[1].isEmpty
                : parts[1].split(separator: ",").contains { $0 == grouping.controller ?? "" }
            if matchesHierarchy {
                let own = String(parts[2])
                return own == path || own.hasPrefix(path + "/")
            }
        }
        return false
    }

    /// SIGKILL to every process of the character, grandchildren included.
    public func killAll() {
        guard let grouping = backend.grouping else { return }
        Self.kill(directory: directory(grouping), version: grouping.version)
        if grouping.version == .v2 { wasKilledByCgroupKill = true }
    }

    /// v2: `cgroup.kill` (atomic, even against forks). v1: freeze so nothing can fork, SIGKILL
    /// each pid, thaw so the kills are delivered.
    static func kill(directory: String, version: CgroupVersion) {
        switch version {
        case .v2:
            if (try? CgroupFS.write("1", to: directory + "/cgroup.kill")) != nil { return }
            // Kernels before 5.14 have no cgroup.kill: one pass over the members.
            for pid in CgroupFS.processIDs(directory + "/cgroup.procs") { Glibc.kill(pid, SIGKILL) }
        case .v1:
            let state = directory + "/freezer.state"
            let frozen = (try? CgroupFS.write("FROZEN", to: state)) != nil
            for pid in CgroupFS.processIDs(directory + "/cgroup.procs") { Glibc.kill(pid, SIGKILL) }
            if frozen { try? CgroupFS.write("THAWED", to: state) }
        }
    }

    // MARK: - Accounting

    /// OOM kills since the last call (0 if none), read from the kernel's counter.
    /// `consumingWakeUp`: called for the OOM event itself (v1: drain the eventfd).
    public func takeNewOOMKills(consumingWakeUp: Bool = true) -> UInt64 {
        if consumingWakeUp, oomEventFD >= 0, oomEventFD != oomCounterFD {
            var value: UInt64 = 0
            _ = read(oomEventFD, &value, 8)  // v1 eventfd: consume the wake-up
        }
        guard let total = readOOMKills() else { return 0 }
        defer { lastOOMKills = total }
        return total > lastOOMKills ? total - lastOOMKills : 0
    }

    private func readOOMKills() -> UInt64? {
        guard oomCounterFD >= 0 else { return nil }
        return CgroupFS.field("oom_kill", fd: oomCounterFD)
    }

    /// The highest memory use since the last ``resetPeak()`` (or since the cgroup was made).
    public func peakMemory() -> UInt64? { usageProbe.peak() }

    /// Opens the peak file ahead of the run's end (see ``CgroupUsageProbe/openPeak()``).
    public func openPeak() { usageProbe.openPeak() }

    /// Starts a new peak for the next run.
    public func resetPeak() { usageProbe.resetPeak() }

    public func usage() -> CgroupUsage { usageProbe.read() }

    /// The trees joined so far, for the accounting files.
    private func probeTrees() -> CgroupUsageProbe.Trees {
        var trees = CgroupUsageProbe.Trees()
        trees.name = name
        if isJoined(backend.memory) { trees.memory = backend.memory }
        if isJoined(backend.cpuAccounting) { trees.cpuAccounting = backend.cpuAccounting }
        if isJoined(backend.pids) { trees.pids = backend.pids }
        if isJoined(backend.grouping) { trees.grouping = backend.grouping }
        return trees
    }

    // MARK: - Removal

    /// Removes the character's cgroups (they must be empty); returns the ones that could not be.
    @discardableResult
    public func remove(using remover: CgroupRemover? = nil) -> [SystemError] {
        closeDescriptors()
        var failures: [SystemError] = []
        if let remover {
            remover.remove(joined.map { directory($0.tree) })
        } else {
            for (tree, _) in joined where rmdir(directory(tree)) != 0 && errno != ENOENT {
                failures.append(SystemError("rmdir \(directory(tree))"))
            }
        }
        joined = []
        written = [:]
        fresh = []
        cachedPlacement = nil
        wasKilledByCgroupKill = false
        return failures
    }

    private func closeDescriptors() {
        for (_, fd) in joined where fd >= 0 { close(fd) }
        joined = joined.map { ($0.tree, -1) }
        for fd in Set([oomEventFD, oomCounterFD, populatedEventFD]) where fd >= 0 { close(fd) }
        usageProbe.update(CgroupUsageProbe.Trees())
        oomEventFD = -1
        oomCounterFD = -1
        populatedEventFD = -1
    }
}

extension String {
    var trimmingTrailingNewline: Substring {
        var text = self[...]
        while text.last == "\n" || text.last == " " { text = text.dropLast() }
        return text
    }
}
