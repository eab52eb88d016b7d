import Glibc
import Synchronization
import WhisperConcurrency

/// Reads one character's accounting files through descriptors kept open. Safe from any thread,
/// so the metrics thread can read a whole fleet (on the loop, that read was the p99 of every
/// endpoint: `docs/bench/history.md`, "/health and /metrics under load") while the event loop
/// goes on serving. The memory peak is read and reset through the same open file:
/// on v2 kernels that reset `memory.peak` per open file, that is what makes the reset count.
/// Holds no path strings: a file's path is made when it is first opened (a fleet of idle
/// probes costs a few bytes each).
public final class CgroupUsageProbe: Sendable {
    /// The character and the trees it is in (`nil` where it is not).
    public struct Trees: Sendable, Equatable {
        var name = ""
        var memory: CgroupTree?
        var cpuAccounting: CgroupTree?
        var pids: CgroupTree?
        var grouping: CgroupTree?

        public init() {}
    }

    private enum File: Int, CaseIterable {
        case memoryCurrent, memoryPeak, oomCounter, cpu, pidsCurrent, groupProcs

        /// The tree the file lives in, and its name there.
        func location(in trees: Trees) -> (tree: CgroupTree, file: String)? {
            switch self {
            case .memoryCurrent: trees.memory.map { ($0, $0.version == .v2 ? "memory.current" : "memory.usage_in_bytes") }
            case .memoryPeak: trees.memory.map { ($0, $0.version == .v2 ? "memory.peak" : "memory.max_usage_in_bytes") }
            // Both have an `oom_kill` line.
            case .oomCounter: trees.memory.map { ($0, $0.version == .v2 ? "memory.events" : "memory.oom_control") }
            case .cpu: trees.cpuAccounting.map { ($0, $0.version == .v2 ? "cpu.stat" : "cpuacct.usage") }
            case .pidsCurrent: trees.pids.map { ($0, "pids.current") }
            case .groupProcs: trees.pids == nil ? trees.grouping.map { ($0, "cgroup.procs") } : nil
            }
        }
    }

    private struct State {
        var trees = Trees()
        /// Per ``File``; -1 while not open.
        var descriptors = [Int32](repeating: -1, count: File.allCases.count)
    }

    private let state = Locked(State())

    public init() {}

    deinit {
        state.withLock { state in
            for fd in state.descriptors where fd >= 0 { close(fd) }
        }
    }

    /// The character joined or left a tree: descriptors of files whose tree changed are
    /// closed; the others are kept (with their peak-reset state).
    public func update(_ trees: Trees) {
        state.withLock { state in
            for file in File.allCases where state.descriptors[file.rawValue] >= 0 {
                let before = file.location(in: state.trees)
                let after = file.location(in: trees)
                if before?.tree != after?.tree || before?.file != after?.file || state.trees.name != trees.name {
                    close(state.descriptors[file.rawValue])
                    state.descriptors[file.rawValue] = -1
                }
            }
            state.trees = trees
        }
    }

    public func read() -> CgroupUsage {
        state.withLock { state in
            var usage = CgroupUsage()
            usage.memoryBytes = Self.descriptor(.memoryCurrent, &state).flatMap(CgroupFS.number(fd:))
            usage.memoryPeakBytes = Self.descriptor(.memoryPeak, &state).flatMap(CgroupFS.number(fd:))
            usage.oomKills = Self.descriptor(.oomCounter, &state).flatMap { CgroupFS.field("oom_kill", fd: $0) }
            if let fd = Self.descriptor(.cpu, &state) {
                usage.cpuMicroseconds =
                    state.trees.cpuAccounting?.version == .v2
                    ? CgroupFS.field("usage_usec", fd: fd) : CgroupFS.number(fd: fd).map { $0 / 1000 }
            }
            if let fd = Self.descriptor(.pidsCurrent, &state) {
                usage.pids = CgroupFS.number(fd: fd).map { Int(clamping: $0) }
            } else if let text = Self.read(.groupProcs, &state) {
                usage.pids = text.split(separator: "\n").count
            }
            return usage
        }
    }

    public func peak() -> UInt64? {
        state.withLock { state in Self.descriptor(.memoryPeak, &state).flatMap(CgroupFS.number(fd:)) }
    }

    /// Opens the peak file now, so that the end of a run (which reads it before the restart)
    /// does not.
    public func openPeak() {
        state.withLock { state in _ = Self.descriptor(.memoryPeak, &state) }
    }

    /// Starts a new peak (v1 always; v2 on kernels that reset per open file).
    public func resetPeak() {
        state.withLock { state in
            guard let memory = state.trees.memory, let fd = Self.descriptor(.memoryPeak, &state) else { return }
            try? CgroupFS.write(memory.version == .v2 ? "reset" : "0", fd: fd, path: "memory peak")
        }
    }

    private static func read(_ file: File, _ state: inout State) -> String? {
        guard let fd = descriptor(file, &state) else { return nil }
        return CgroupFS.read(fd: fd)
    }

    /// Opened at first use; the peak file read-write when the kernel allows (for the reset).
    private static func descriptor(_ file: File, _ state: inout State) -> Int32? {
        let open = state.descriptors[file.rawValue]
        if open >= 0 { return open }
        guard let (tree, name) = file.location(in: state.trees) else { return nil }
        let path = tree.characterDirectory(state.trees.name) + "/" + name
        var fd: Int32 = -1
        if file == .memoryPeak { fd = Glibc.open(path, O_RDWR | O_CLOEXEC) }
        if fd < 0 { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else { return nil }
        state.descriptors[file.rawValue] = fd
        return fd
    }
}
