import CWhisperLinux
import Glibc

/// A timerfd in the event loop that calls `fire` every `period` (missed periods are not
/// replayed: a loop that was busy gets one call, then the next on schedule).
public final class PeriodicTimer {
    private let loop: EventLoop
    private let fd: Int32
    private let period: Int64
    private var next: Int64

    public init(loop: EventLoop, periodNanoseconds: Int64, fire: @escaping () -> Void) throws {
        precondition(periodNanoseconds > 0)
        let fd = whisper_timerfd_create()
        guard fd >= 0 else { throw SystemError("timerfd_create") }
        self.loop = loop
        self.fd = fd
        self.period = periodNanoseconds
        self.next = Clock.monotonicNanoseconds() + periodNanoseconds
        try loop.add(fd, .readable) { [unowned self] _ in
            var expirations: UInt64 = 0
            _ = Glibc.read(self.fd, &expirations, 8)
            let now = Clock.monotonicNanoseconds()
            while self.next <= now { self.next += self.period }
            _ = whisper_timerfd_arm_absolute(self.fd, self.next)
            fire()
        }
        _ = whisper_timerfd_arm_absolute(fd, next)
    }

    public func cancel() {
        loop.remove(fd)
        Glibc.close(fd)
    }
}
