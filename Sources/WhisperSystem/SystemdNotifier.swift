import CWhisperLinux
import Glibc

/// A process's sd_notify link to its supervisor: whisperd's to systemd, the worker's to
/// whisperd. Every call is a no-op when `NOTIFY_SOCKET` is unset.
///
/// It sends through ``NotifySocket/send(_:to:waiting:)``, the one sd_notify sender, beside the
/// receiver that whisperd needs anyway (libsystemd has none). libsystemd's `sd_notify` cannot be
/// it: it only sends to `$NOTIFY_SOCKET` and always waits while the receiver's queue is full, and
/// the worker's in-flight reports must not wait (`docs/internals.md`, "One sd_notify sender").
public struct SystemdNotifier: Sendable {
    /// Half the watchdog interval the supervisor asked for, if it asked (`WATCHDOG_USEC`).
    public let watchdogPingInterval: Int64?
    private let socket: String?

    /// From this process's environment.
    public init() {
        var environment: [String: String] = [:]
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        self.init(environment: environment)
    }

    /// `NOTIFY_SOCKET`, and the watchdog as `sd_watchdog_enabled(3)` reads it: `WATCHDOG_USEC` is a
    /// positive count of microseconds, and the watchdog is this process's only if `WATCHDOG_PID`
    /// is unset or names it.
    public init(environment: [String: String], ownPID: Int32 = getpid()) {
        socket = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        let watchdogPID = environment["WATCHDOG_PID"]
        if let text = environment["WATCHDOG_USEC"], let usec = UInt64(text), usec > 0, usec <= UInt64(Int64.max / 1000),
            watchdogPID == nil || watchdogPID.flatMap({ Int32($0) }) == ownPID
        {
            watchdogPingInterval = Int64(usec) * 1000 / 2
        } else {
            watchdogPingInterval = nil
        }
    }

    public var isUnderSystemd: Bool { socket != nil }

    public func ready(status: String) { send("READY=1\nSTATUS=\(status)") }
    public func status(_ text: String) { send("STATUS=\(text)") }
    public func watchdog() { send("WATCHDOG=1") }
    public func stopping() { send("STOPPING=1") }
    public func reloading(monotonicMicroseconds: Int64) { send("RELOADING=1\nMONOTONIC_USEC=\(monotonicMicroseconds)") }

    /// `waiting: false` gives up at once while the supervisor's queue is full (for what may be
    /// dropped); otherwise it waits, as `sd_notify` does.
    public func send(_ state: String, waiting: Bool = true) {
        guard let socket else { return }
        _ = NotifySocket.send(state, to: socket, waiting: waiting)
    }
}

/// The signals a long-running mode of the binary reads from its signalfd. They must be blocked
/// in every thread, or a thread that does not block them takes the default action (SIGTERM:
/// the process dies mid-drain). A signal mask is per thread and inherited at thread creation,
/// so ``blockBeforeAnyThreadStarts()`` runs first thing in `main`, while the main thread is the
/// only one — before Foundation, curl, the Swift concurrency pool or a ``WorkerPool`` start any.
public enum HandledSignals: Sendable {
    /// whisperd supervising: stop (SIGTERM, SIGINT, SIGQUIT), reload (SIGHUP), re-exec (SIGUSR2).
    case supervisor
    /// `whisperd worker`: drain and exit (SIGTERM, SIGINT).
    case worker

    public var signals: [Int32] {
        switch self {
        case .supervisor: [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR2]
        case .worker: [SIGTERM, SIGINT]
        }
    }

    /// Blocks ``signals`` in the calling thread; from `main` before any thread starts, in the
    /// whole process. Children still start with an empty mask (the spawn clears it).
    public func blockBeforeAnyThreadStarts() {
        let signals = signals
        if signals.withUnsafeBufferPointer({ whisper_block_signals($0.baseAddress, Int32($0.count)) }) != 0 {
            fatalError("pthread_sigmask: \(String(cString: strerror(errno)))")
        }
    }
}

/// SIGTERM, SIGINT, SIGHUP … as readable events on the loop (signalfd), never as handlers.
public final class SignalSource {
    public let fd: Int32

    /// The signals must already be blocked in every thread: ``HandledSignals/blockBeforeAnyThreadStarts()``.
    public convenience init(_ handled: HandledSignals) throws {
        try self.init(signals: handled.signals)
    }

    public init(signals: [Int32]) throws {
        fd = signals.withUnsafeBufferPointer { whisper_signalfd($0.baseAddress, Int32($0.count)) }
        guard fd >= 0 else { throw SystemError("signalfd") }
        SignalDispositions.ignoreSIGPIPE()
    }

    /// Every pending signal number.
    public func drain() -> [Int32] {
        var signals: [Int32] = []
        while true {
            let signal = whisper_signalfd_read(fd)
            if signal < 0 { return signals }
            signals.append(signal)
        }
    }
}
