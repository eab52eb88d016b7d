import CWhisperLinux
import Glibc
import WhisperCore

/// `--cgroup-backend`: `auto` picks, per function, the best writable hierarchy.
public enum CgroupMode: String, CaseIterable, Sendable {
    case auto
    case v2
    case v1
    case none
}

/// One hierarchy whisperd puts characters in, with whisperd's base cgroup there.
public struct CgroupTree: Hashable, Sendable {
    public let version: CgroupVersion
    public let hierarchy: CgroupLayout.Hierarchy
    /// whisperd's base cgroup, relative to the hierarchy root ("/system.slice/whisperd.service").
    public let basePath: String
    /// The v1 controller this tree was chosen for; `nil` on v2.
    public let controller: String?
    public let baseDirectory: String

    public init(version: CgroupVersion, hierarchy: CgroupLayout.Hierarchy, basePath: String, controller: String?) {
        self.version = version
        self.hierarchy = hierarchy
        self.basePath = basePath
        self.controller = controller
        self.baseDirectory = hierarchy.directory(basePath)
    }

    public func characterPath(_ name: String) -> String {
        (basePath == "/" ? "" : basePath) + "/" + CgroupTree.characterPrefix + name
    }

    public func characterDirectory(_ name: String) -> String { hierarchy.directory(characterPath(name)) }

    /// Character cgroups are `char-NAME`, so leftovers are recognisable and nothing else is touched.
    public static let characterPrefix = "char-"

    var label: String { controller.map { "v1 \($0)" } ?? "v2" }
}

/// What whisperd can enforce on this host, decided once at start, per function: process
/// grouping and kill, memory, cpu, cpu accounting, pids. Each comes from cgroup v2 if the
/// delegated subtree has it, else from a writable v1 hierarchy, else it is not available (and
/// the warning names it). Mixed layouts (v2 for grouping, v1 for limits) are normal.
///
/// Not `Sendable`: it lives on the supervisor's loop thread.
public final class CgroupBackend {
    public let mode: CgroupMode
    /// Where processes are grouped, counted and killed; `nil`: process groups only.
    public let grouping: CgroupTree?
    public let memory: CgroupTree?
    public let cpu: CgroupTree?
    /// CPU time: v2 `cpu.stat` (present without the cpu controller) or v1 `cpuacct`.
    public let cpuAccounting: CgroupTree?
    public let pids: CgroupTree?
    /// CPU pinning (`cpuset:`).
    public let cpuset: CgroupTree?
    /// What a v1 character cgroup's `cpuset.cpus` goes back to when its `cpuset:` is removed:
    /// the base's CPUs (v1 has no "inherit"; v2 takes an empty value).
    let allCPUs: String
    /// Why something is not available, for the log.
    public let notes: [String]
    /// The bases this whisperd (or the one that re-executed into it) made, removed at exit.
    public private(set) var createdBases: [String]
    private var lockFDs: [Int32]

    init(
        mode: CgroupMode, grouping: CgroupTree?, memory: CgroupTree?, cpu: CgroupTree?, cpuAccounting: CgroupTree?,
        pids: CgroupTree?, cpuset: CgroupTree? = nil, allCPUs: String = "", notes: [String], createdBases: [String],
        lockFDs: [Int32]
    ) {
        self.mode = mode
        self.grouping = grouping
        self.memory = memory
        self.cpu = cpu
        self.cpuAccounting = cpuAccounting
        self.pids = pids
        self.cpuset = cpuset
        self.allCPUs = allCPUs
        self.notes = notes
        self.createdBases = createdBases
        self.lockFDs = lockFDs
    }

    /// Process groups only: nothing enforced.
    public static func none(notes: [String] = []) -> CgroupBackend {
        CgroupBackend(
            mode: .none, grouping: nil, memory: nil, cpu: nil, cpuAccounting: nil, pids: nil, notes: notes, createdBases: [],
            lockFDs: [])
    }

    /// Every distinct tree in use.
    public var trees: [CgroupTree] {
        var seen: [CgroupTree] = []
        for tree in [grouping, memory, cpu, cpuAccounting, pids, cpuset].compactMap({ $0 }) where !seen.contains(tree) {
            seen.append(tree)
        }
        return seen
    }

    /// `v2`, `v1`, `hybrid` (both in use) or `none`.
    public var name: String {
        let versions = Set(trees.map(\.version))
        if versions.isEmpty { return "none" }
        if versions.count == 2 { return "hybrid" }
        return versions.first!.rawValue
    }

    /// The limits that cannot be enforced here, by their roster names.
    public var notEnforced: [String] {
        var missing: [String] = []
        if memory == nil { missing += ["memory", "memory_high"] }
        if cpu == nil { missing.append("cpus") }
        if pids == nil { missing.append("pids") }
        if cpuset == nil { missing.append("cpuset") }
        return missing
    }

    /// Per function, which hierarchy serves it: for the log, `/health` and status.
    public var functions: [(function: String, provider: String)] {
        func describe(_ tree: CgroupTree?, _ fallback: String) -> String {
            guard let tree else { return fallback }
            return "\(tree.label) \(tree.baseDirectory)"
        }
        return [
            ("grouping", describe(grouping, "process group (grandchildren that leave it survive their character)")),
            ("memory", describe(memory, "not enforced (RLIMIT_DATA bounds the heap only)")),
            ("cpus", describe(cpu, "not enforced")),
            ("pids", describe(pids, "not enforced")),
            ("cpuset", describe(cpuset, "not enforced")),
            ("cpu accounting", describe(cpuAccounting, "not available")),
        ]
    }

    public var summary: String {
        "cgroup backend \(name): " + functions.map { "\($0.function): \($0.provider)" }.joined(separator: "; ")
    }

    public func makeCharacterCgroup(_ name: String) -> CharacterCgroup {
        CharacterCgroup(name: name, backend: self)
    }

    // MARK: - Detection

    public enum DetectionError: Error, CustomStringConvertible {
        case busy(directory: String)

        public var description: String {
            switch self {
            case .busy(let directory):
                "another whisperd already manages the character cgroups under \(directory); give this one its own with --cgroup PATH"
            }
        }
    }

    /// Looks at the mounted hierarchies and decides, per function, what to use. Only writable
    /// subtrees are used; what is missing is explained in ``notes``. Throws only when another
    /// whisperd holds the same base (starting would kill its characters as "leftovers").
    public static func detect(mode: CgroupMode, basePath requestedBase: String?, layout: CgroupLayout) throws(DetectionError)
        -> CgroupBackend
    {
        guard mode != .none else { return .none(notes: ["--cgroup-backend none: cgroups not used"]) }
        var notes: [String] = []
        var created: [String] = []

        func basePath(in hierarchy: CgroupLayout.Hierarchy) -> String {
            if let requestedBase { return requestedBase.hasPrefix("/") ? requestedBase : "/" + requestedBase }
            // Never fill a hierarchy's root with character cgroups.
            return hierarchy.ownPath == "/" ? "/whisperd" : hierarchy.ownPath
        }

        /// Creates the base if needed and checks it accepts processes.
        func usableBase(_ hierarchy: CgroupLayout.Hierarchy, _ path: String, _ label: String) -> Bool {
            let directory = hierarchy.directory(path)
            do {
                if try CgroupFS.makeDirectory(directory) { created.append(directory) }
            } catch {
                notes.append("\(label): \(directory) is not writable (\(error))")
                return false
            }
            guard access(directory + "/cgroup.procs", W_OK) == 0 else {
                notes.append("\(label): \(directory)/cgroup.procs is not writable (\(String(cString: strerror(errno))))")
                return false
            }
            return true
        }

        // v2: one tree for everything it offers.
        var unified: CgroupTree?
        var v2Controllers: Set<String> = []
        if mode == .auto || mode == .v2 {
            if let hierarchy = layout.unified {
                let path = basePath(in: hierarchy)
                if usableBase(hierarchy, path, "cgroup v2") {
                    let tree = CgroupTree(version: .v2, hierarchy: hierarchy, basePath: path, controller: nil)
                    unified = tree
                    v2Controllers = enableV2Controllers(tree, ownPath: hierarchy.ownPath, notes: &notes)
                }
            } else {
                notes.append("cgroup v2: not mounted")
            }
        }

        var v1Trees: [String: CgroupTree] = [:]
        func v1Tree(_ controller: String) -> CgroupTree? {
            guard mode == .auto || mode == .v1 else { return nil }
            if let tree = v1Trees[controller] { return tree }
            guard let hierarchy = layout.controllers[controller] else {
                notes.append("cgroup v1 \(controller): not mounted")
                return nil
            }
            // Co-mounted controllers (cpu,cpuacct) share one tree.
            if let shared = v1Trees.values.first(where: { $0.hierarchy == hierarchy }) {
                let tree = CgroupTree(version: .v1, hierarchy: hierarchy, basePath: shared.basePath, controller: controller)
                v1Trees[controller] = tree
                return tree
            }
            let path = basePath(in: hierarchy)
            guard usableBase(hierarchy, path, "cgroup v1 \(controller)") else { return nil }
            let tree = CgroupTree(version: .v1, hierarchy: hierarchy, basePath: path, controller: controller)
            if controller == "cpuset", !prepareV1CpusetBase(tree, notes: &notes) { return nil }
            v1Trees[controller] = tree
            return tree
        }

        func pick(_ v2Controller: String, _ v1Controller: String) -> CgroupTree? {
            if let unified, v2Controllers.contains(v2Controller) { return unified }
            return v1Tree(v1Controller)
        }

        let grouping: CgroupTree? =
            switch mode {
            case .v2: unified
            case .v1: v1Tree("freezer")
            default: unified ?? v1Tree("freezer")
            }
        let memory = pick("memory", "memory")
        let cpu = pick("cpu", "cpu")
        let pids = pick("pids", "pids")
        let cpuAccounting = unified ?? v1Tree("cpuacct")
        let cpuset = pick("cpuset", "cpuset")
        let allCPUs = cpuset.flatMap { CgroupFS.read($0.baseDirectory + "/cpuset.cpus")?.trimmingTrailingNewline }.map(String.init) ?? ""

        var backend = CgroupBackend(
            mode: mode, grouping: grouping, memory: memory, cpu: cpu, cpuAccounting: cpuAccounting, pids: pids, cpuset: cpuset,
            allCPUs: allCPUs, notes: notes, createdBases: created, lockFDs: [])
        // Bases made for trees that ended up unused are removed again.
        let used = Set(backend.trees.map(\.baseDirectory))
        for directory in created.reversed() where !used.contains(directory) { rmdir(directory) }
        backend = CgroupBackend(
            mode: mode, grouping: grouping, memory: memory, cpu: cpu, cpuAccounting: cpuAccounting, pids: pids, cpuset: cpuset,
            allCPUs: allCPUs, notes: notes, createdBases: created.filter { used.contains($0) }, lockFDs: [])
        try backend.lockBases()
        return backend
    }

    /// v2 allows processes only in leaves once controllers are enabled: if whisperd lives in its
    /// base (systemd's delegated cgroup), it first moves itself to `<base>/supervisor`.
    private static func enableV2Controllers(_ tree: CgroupTree, ownPath: String, notes: inout [String]) -> Set<String> {
        let wanted = ["memory", "cpu", "pids", "cpuset"]
        let available = Set((CgroupFS.read(tree.baseDirectory + "/cgroup.controllers") ?? "").split(whereSeparator: \.isWhitespace).map(String.init))
        let offered = wanted.filter(available.contains)
        if offered.count < wanted.count {
            let missing = wanted.filter { !available.contains($0) }
            notes.append("cgroup v2: \(tree.baseDirectory) has no \(missing.joined(separator: ", ")) controller (not delegated)")
        }
        guard !offered.isEmpty else { return [] }
        if ownPath == tree.basePath {
            let leaf = tree.baseDirectory + "/supervisor"
            do {
                try CgroupFS.makeDirectory(leaf)
                try CgroupFS.write("0", to: leaf + "/cgroup.procs")
            } catch {
                notes.append("cgroup v2: cannot move whisperd into \(leaf) (\(error)); controllers stay off")
                return []
            }
        }
        let subtreeControl = tree.baseDirectory + "/cgroup.subtree_control"
        if (try? CgroupFS.write(offered.map { "+" + $0 }.joined(separator: " "), to: subtreeControl)) != nil {
            return Set(offered)
        }
        // One at a time, to say exactly which one the kernel refused.
        var enabled: Set<String> = []
        for controller in offered {
            do {
                try CgroupFS.write("+\(controller)", to: subtreeControl)
                enabled.insert(controller)
            } catch {
                notes.append("cgroup v2: cannot enable \(controller) in \(tree.baseDirectory) (\(error))")
            }
        }
        return enabled
    }

    /// A v1 cpuset cgroup accepts no task until its `cpuset.cpus` and `cpuset.mems` are set, and
    /// a new one starts empty: fill the base (and any empty ancestor) from its parent, and let
    /// the kernel copy them into each new character cgroup (`cgroup.clone_children`), so joining
    /// costs no extra writes.
    private static func prepareV1CpusetBase(_ tree: CgroupTree, notes: inout [String]) -> Bool {
        var path = tree.hierarchy.directory("/")
        var parent = path
        for component in tree.basePath.split(separator: "/") {
            path += (path.hasSuffix("/") ? "" : "/") + component
            for file in ["cpuset.cpus", "cpuset.mems"] {
                guard (CgroupFS.read(path + "/" + file)?.trimmingTrailingNewline ?? "").isEmpty else { continue }
                let inherited = CgroupFS.read(parent + "/" + file)?.trimmingTrailingNewline ?? ""
                do { try CgroupFS.write(String(inherited), to: path + "/" + file) } catch {
                    notes.append("cgroup v1 cpuset: cannot fill \(path)/\(file) (\(error))")
                    return false
                }
            }
            parent = path
        }
        do { try CgroupFS.write("1", to: tree.baseDirectory + "/cgroup.clone_children") } catch {
            notes.append("cgroup v1 cpuset: cannot set \(tree.baseDirectory)/cgroup.clone_children (\(error))")
            return false
        }
        return true
    }

    /// One whisperd per base: a second one would take the first one's characters for leftovers.
    private func lockBases() throws(DetectionError) {
        for tree in trees {
            let fd = open(tree.baseDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            if flock(fd, LOCK_EX | LOCK_NB) != 0, errno == EWOULDBLOCK {
                close(fd)
                release()
                throw .busy(directory: tree.baseDirectory)
            }
            lockFDs.append(fd)
        }
    }

    private func release() {
        for fd in lockFDs { close(fd) }
        lockFDs = []
    }

    // MARK: - Leftovers and shutdown

    /// Character cgroups in our bases: a previous whisperd that died left them behind.
    /// `keeping`: characters whose processes were handed over by a re-exec (not leftovers).
    public func leftoverCharacterCgroups(keeping: Set<String> = []) -> [(name: String, directory: String, pids: [Int32])] {
        var found: [(String, String, [Int32])] = []
        for tree in trees {
            for child in CgroupFS.childNames(tree.baseDirectory) where child.hasPrefix(CgroupTree.characterPrefix) {
                guard !keeping.contains(String(child.dropFirst(CgroupTree.characterPrefix.count))) else { continue }
                let directory = tree.baseDirectory + "/" + child
                found.append((String(child.dropFirst(CgroupTree.characterPrefix.count)), directory, CgroupFS.processIDs(directory + "/cgroup.procs")))
            }
        }
        return found
    }

    /// Kills every process in leftover character cgroups, waits (up to `timeout`) until they
    /// are gone, and removes the cgroups. Returns what was found, per character, for the log.
    public func clearLeftovers(keeping: Set<String> = [], timeoutMilliseconds: Int32 = 5000) -> [(name: String, pids: [Int32])] {
        var report: [String: Set<Int32>] = [:]
        let deadline = Clock.monotonicNanoseconds() + Int64(timeoutMilliseconds) * 1_000_000
        while true {
            let leftovers = leftoverCharacterCgroups(keeping: keeping)
            let populated = leftovers.filter { !$0.pids.isEmpty }
            for entry in leftovers { report[entry.name, default: []].formUnion(entry.pids) }
            if populated.isEmpty || Clock.monotonicNanoseconds() >= deadline { break }
            var pidFDs: [Int32] = []
            for entry in populated {
                if let grouping, entry.directory.hasPrefix(grouping.baseDirectory + "/") {
                    CharacterCgroup.kill(directory: entry.directory, version: grouping.version)
                } else {
                    for pid in entry.pids { Glibc.kill(pid, SIGKILL) }
                }
                for pid in entry.pids {
                    let fd = whisper_pidfd_open(pid)
                    if fd >= 0 { pidFDs.append(fd) }
                }
            }
            // Wait on the processes themselves (pidfds poll readable at exit), not on a timer.
            var polls = pidFDs.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            while !polls.isEmpty {
                let remaining = max(0, (deadline - Clock.monotonicNanoseconds()) / 1_000_000)
                let count = poll(&polls, nfds_t(polls.count), Int32(remaining))
                if count == 0 { break }
                if count < 0 { if errno == EINTR { continue } else { break } }
                polls.removeAll { $0.revents != 0 }
            }
            for fd in pidFDs { close(fd) }
        }
        for entry in leftoverCharacterCgroups(keeping: keeping) { rmdir(entry.directory) }
        return report.filter { !$0.value.isEmpty }.map { ($0.key, $0.value.sorted()) }.sorted { $0.name < $1.name }
    }

    /// After a re-exec: the bases the previous process made are this one's to remove (only
    /// those of this backend's hierarchies).
    public func adoptCreatedBases(_ bases: [String]) {
        let ours = Set(trees.map(\.baseDirectory))
        for base in bases where ours.contains(base) && !createdBases.contains(base) { createdBases.append(base) }
    }

    /// At exit: drops the locks and removes the bases whisperd created (if empty).
    public func finish() {
        release()
        for directory in createdBases.reversed() { rmdir(directory) }
    }
}
