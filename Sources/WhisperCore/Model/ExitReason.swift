/// How a process ended, as the kernel reports it.
public enum ProcessTermination: Hashable, Sendable {
    case exited(code: Int32)
    case signaled(Signal)
}

/// Why a run ended, as whisperd reports it (`whisperctl why`, metrics, logs).
public enum ExitReason: Hashable, Sendable, CustomStringConvertible {
    case completed
    case error(code: Int32)
    case signaled(Signal)
    case oomKilled
    case watchdogTimeout
    case healthCheckFailed
    /// Never became ready within `ready_timeout`.
    case readyTimeout
    /// Stopped on purpose: operator, reload or shutdown.
    case stopped
    /// The program could not be started at all (not found, not executable, …).
    case spawnFailed(errno: Int32)

    public var isSuccess: Bool { self == .completed }

    /// The label used in metrics (`restarts_total{reason=…}`).
    public var kind: String {
        switch self {
        case .completed: "Completed"
        case .error: "Error"
        case .signaled: "Signaled"
        case .oomKilled: "OOMKilled"
        case .watchdogTimeout: "WatchdogTimeout"
        case .healthCheckFailed: "HealthCheckFailed"
        case .readyTimeout: "ReadyTimeout"
        case .stopped: "Stopped"
        case .spawnFailed: "SpawnFailed"
        }
    }

    public var description: String {
        switch self {
        case .error(let code): "Error(\(code))"
        case .signaled(let signal): "Signaled(\(signal.name))"
        case .spawnFailed(let errno): "SpawnFailed(errno \(errno))"
        default: kind
        }
    }
}

/// One finished run: the core of an incident.
public struct ExitRecord: Hashable, Sendable {
    public var reason: ExitReason
    public var termination: ProcessTermination?
    public var at: Instant
    public var uptime: Duration
    /// The run's peak memory (cgroup accounting), when known.
    public var peakMemoryBytes: UInt64?

    public init(reason: ExitReason, termination: ProcessTermination?, at: Instant, uptime: Duration, peakMemoryBytes: UInt64? = nil) {
        self.reason = reason
        self.termination = termination
        self.at = at
        self.uptime = uptime
        self.peakMemoryBytes = peakMemoryBytes
    }
}
