import CSystemd
import CWhisperLinux
import Glibc

/// whisperd's own sd_notify link to its parent (systemd), through libsystemd.
/// Every call is a no-op when `NOTIFY_SOCKET` is unset.
public struct SystemdNotifier: Sendable {
    /// Half the watchdog interval systemd asked for, if it asked (`WATCHDOG_USEC`).
    public let watchdogPingInterval: Int64?

    public init() {
        var usec: UInt64 = 0
        if sd_watchdog_enabled(0, &usec) > 0, usec > 0 {
            watchdogPingInterval = Int64(usec) * 1000 / 2
        } else {
            watchdogPingInterval = nil
        }
    }

    public var isUnderSystemd: Bool { getenv("NOTIFY_SOCKET") != nil }

    public func ready(status: String) { send("READY=1\nSTATUS=\(status)") }
    public func status(_ text: String) { send("STATUS=\(text)") }
    public func watchdog() { send("WATCHDOG=1") }
    public func stopping() { send("STOPPING=1") }
    public func reloading(monotonicMicroseconds: Int64) { send("RELOADING=1\nMONOTONIC_USEC=\(monotonicMicroseconds)") }

    public func send(_ state: String) {
        guard isUnderSystemd else { return }
        _ = sd_notify(0, state)
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
