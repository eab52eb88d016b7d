import CWhisperLinux
import Glibc

/// A single-threaded epoll loop: file descriptors with callbacks, plus one absolute deadline.
///
/// Everything the supervisor does happens on this loop's thread, so its state needs no locks.
/// It is not `Sendable` on purpose: it must never be touched from another thread.
public final class EventLoop {
    public struct Interest: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Interest(rawValue: EPOLLIN.rawValue | EPOLLRDHUP.rawValue)
        public static let writable = Interest(rawValue: EPOLLOUT.rawValue)
        /// cgroupfs "file modified" notifications (`cgroup.events`, `memory.events`).
        public static let priority = Interest(rawValue: EPOLLPRI.rawValue)
    }

    public typealias Handler = (_ events: UInt32) -> Void

    private let epollFD: Int32
    private let timerFD: Int32
    private var handlers: [Int32: Handler] = [:]
    private var deadlineHandler: (() -> Void)?
    private var armedDeadline: Int64?
    private var isStopped = false

    public init() throws {
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epollFD >= 0 else { throw SystemError("epoll_create1") }
        timerFD = whisper_timerfd_create()
        guard timerFD >= 0 else { throw SystemError("timerfd_create") }
        try add(timerFD, .readable) { [unowned self] _ in
            var expirations: UInt64 = 0
            _ = read(self.timerFD, &expirations, 8)
            self.armedDeadline = nil
            self.deadlineHandler?()
        }
    }

    deinit {
        close(timerFD)
        close(epollFD)
    }

    public func add(_ fd: Int32, _ interest: Interest, _ handler: @escaping Handler) throws {
        var event = epoll_event()
        event.events = interest.rawValue
        event.data.fd = fd
        guard epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) == 0 else { throw SystemError("epoll_ctl(ADD)") }
        handlers[fd] = handler
    }

    public func modify(_ fd: Int32, _ interest: Interest) {
        var event = epoll_event()
        event.events = interest.rawValue
        event.data.fd = fd
        _ = epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event)
    }

    /// Stops watching `fd` (the caller closes it).
    public func remove(_ fd: Int32) {
        guard handlers.removeValue(forKey: fd) != nil else { return }
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil)
    }

    /// The one timer: `handler` runs when `monotonicNanoseconds` passes. `nil` disarms it.
    public func setDeadline(_ monotonicNanoseconds: Int64?, _ handler: @escaping () -> Void) {
        deadlineHandler = handler
        guard monotonicNanoseconds != armedDeadline else { return }
        armedDeadline = monotonicNanoseconds
        _ = whisper_timerfd_arm_absolute(timerFD, monotonicNanoseconds ?? -1)
    }

    public func stop() { isStopped = true }

    /// Runs until ``stop()``; blocks in epoll_wait while there is nothing to do.
    public func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        while !isStopped {
            let count = epoll_wait(epollFD, &events, Int32(events.count), -1)
            if count < 0 {
                if errno == EINTR { continue }
                fatalError("epoll_wait: \(SystemError("epoll_wait"))")
            }
            for index in 0..<Int(count) {
                let fd = events[index].data.fd
                // A handler earlier in this batch may have removed this fd.
                handlers[fd]?(events[index].events)
                if isStopped { return }
            }
        }
    }
}
