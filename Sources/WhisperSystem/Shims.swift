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
