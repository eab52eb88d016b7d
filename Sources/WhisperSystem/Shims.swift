import Glibc
import CWhisperLinux

// The C shim's names, gathered so the rest of the module reads as Swift.
@inline(__always) func whisperMonotonic() -> Int64 { whisper_monotonic_ns() }
@inline(__always) func whisperRealtime() -> Int64 { whisper_realtime_ns() }

/// A nonblocking eventfd: how a helper thread wakes the event loop.
public enum EventFD {
    public static func make() -> Int32 { eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }

    public static func signal(_ fd: Int32) {
        var one: UInt64 = 1
        _ = write(fd, &one, 8)
    }

    public static func drain(_ fd: Int32) {
        var value: UInt64 = 0
        _ = read(fd, &value, 8)
    }
}

/// Puts the calling thread in `SCHED_IDLE` (per thread on Linux): it runs only on CPU time
/// nothing else wants, and the event loop, when woken, preempts it at once — which nice 19
/// alone does not promise (on one core it held the loop off for up to a slice, milliseconds).
/// Falls back to nice 19.
public func lowerCurrentThreadPriority() {
    var parameters = sched_param(sched_priority: 0)
    let schedIdle: Int32 = 5  // SCHED_IDLE (linux/sched.h; glibc shows it only with _GNU_SOURCE)
    if sched_setscheduler(whisper_gettid(), schedIdle, &parameters) != 0 {
        _ = setpriority(Int32(PRIO_PROCESS.rawValue), id_t(whisper_gettid()), 19)
    }
}

/// Whether the calling thread's wake-ups take the CPU from the task running on it. Under
/// `SCHED_OTHER` a woken thread preempts it; under `SCHED_BATCH` it does not (it runs once that
/// task blocks, at the next tick, or on another CPU). For the thread that made it; only ever
/// between those two, and only from `SCHED_OTHER`: a policy an operator set (real-time, batch,
/// idle; at start or later with `chrt`) is left alone.
public struct WakeUpPreemption {
    private let thread = whisper_gettid()
    private static let batch: Int32 = 3  // SCHED_BATCH (linux/sched.h; glibc shows it only with _GNU_SOURCE)

    public init() {}

    /// The next wake-ups leave the running task its CPU. Returns whether the policy changed
    /// (false: the thread was not under `SCHED_OTHER`, or the kernel refused).
    public func stopPreempting() -> Bool { change(from: SCHED_OTHER, to: Self.batch) }

    /// Back to `SCHED_OTHER`, after ``stopPreempting()`` changed it.
    public func preemptAgain() { _ = change(from: Self.batch, to: SCHED_OTHER) }

    private func change(from: Int32, to: Int32) -> Bool {
        guard sched_getscheduler(thread) == from else { return false }
        var parameters = sched_param(sched_priority: 0)
        return sched_setscheduler(thread, to, &parameters) == 0
    }
}
