import WhisperCore

public enum CgroupVersion: String, Hashable, Sendable {
    case v1
    case v2
}

/// The interface files and values that express a character's `limits:` in one hierarchy, in
/// the order they must be written. Pure: the fake-cgroupfs tests check exactly these.
public enum CgroupLimitFiles {
    public static let cpuPeriodMicroseconds = 100_000

    public static func memory(_ limits: Limits, _ version: CgroupVersion) -> [(file: String, value: String)] {
        switch version {
        case .v2:
            return [
                ("memory.max", limits.memoryBytes.map(String.init) ?? "max"),
                ("memory.high", limits.memoryHighBytes.map(String.init) ?? "max"),
                // Without swap the limit really bounds the character; with no limit, leave swap alone.
                ("memory.swap.max", limits.memoryBytes == nil ? "max" : "0"),
                ("memory.low", limits.memoryLowBytes.map(String.init) ?? "0"),
                // One OOM kill takes the whole character down, like a container.
                ("memory.oom.group", "1"),
            ]
        case .v1:
            let limit = limits.memoryBytes.map(String.init) ?? "-1"
            // memsw (memory+swap) must stay >= the memory limit at every step: lift it first,
            // set the memory limit, then bring memsw down to the same value (no swap).
            return [
                ("memory.memsw.limit_in_bytes", "-1"),
                ("memory.limit_in_bytes", limit),
                ("memory.memsw.limit_in_bytes", limit),
                ("memory.soft_limit_in_bytes", limits.memoryHighBytes.map(String.init) ?? "-1"),
            ]
        }
    }

    public static func cpu(_ limits: Limits, _ version: CgroupVersion) -> [(file: String, value: String)] {
        // A quota beyond any host (or not finite) is no limit; the roster's ceiling keeps it from here.
        let quota = limits.cpus.flatMap { cpus -> Int? in
            let micros = (cpus * Double(cpuPeriodMicroseconds)).rounded()
            return micros.isFinite && micros < 1e15 ? max(1000, Int(micros)) : nil
        }
        switch version {
        case .v2:
            return [
                ("cpu.max", "\(quota.map(String.init) ?? "max") \(cpuPeriodMicroseconds)"),
                ("cpu.weight", String(limits.cpuWeight ?? 100)),
            ]
        case .v1:
            return [
                ("cpu.cfs_period_us", String(cpuPeriodMicroseconds)), ("cpu.cfs_quota_us", quota.map(String.init) ?? "-1"),
                ("cpu.shares", String(max(2, (limits.cpuWeight ?? 100) * 1024 / 100))),
            ]
        }
    }

    /// `allCPUs`: what v1 goes back to without a `cpuset:` (v2 inherits from an empty value).
    public static func cpuset(_ limits: Limits, _ version: CgroupVersion, allCPUs: String) -> [(file: String, value: String)] {
        [("cpuset.cpus", limits.cpuset?.description ?? (version == .v2 ? "" : allCPUs))]
    }

    public static func pids(_ limits: Limits) -> [(file: String, value: String)] {
        [("pids.max", limits.pids.map(String.init) ?? "max")]
    }

    /// What a newly made cgroup already holds: writing it again is wasted time at cold start.
    public static func isKernelDefault(_ value: String, for file: String) -> Bool {
        switch file {
        case "memory.oom.group": value == "0"
        case "cpu.cfs_period_us": value == String(cpuPeriodMicroseconds)
        case "cpu.max": value == "max \(cpuPeriodMicroseconds)"
        case "cpu.weight": value == "100"
        case "cpu.shares": value == "1024"
        case "memory.low": value == "0"
        // A new v2 cpuset cgroup inherits; a new v1 one is cloned from the base (clone_children).
        case "cpuset.cpus": false
        default: value == "max" || value == "-1"
        }
    }

    /// Files whose absence is not an error: swap accounting is a kernel/boot option.
    public static let optionalFiles: Set<String> = ["memory.swap.max", "memory.memsw.limit_in_bytes", "memory.oom.group"]
}
