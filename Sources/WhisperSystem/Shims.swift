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

/// Lowers the calling thread's scheduling priority to nice 19 (Linux niceness is per thread).
public func lowerCurrentThreadPriority() {
    _ = setpriority(Int32(PRIO_PROCESS.rawValue), id_t(whisper_gettid()), 19)
}
