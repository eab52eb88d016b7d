import CWhisperLinux
import Glibc

/// A single-threaded epoll loop: file descriptors with callbacks, plus one absolute deadline.
///
/// Everything the supervisor does happens on this loop's thread, so its state needs no locks.
/// It is not `Sendable` on purpose: it must never be touched from another thread.
///
/// Each registration has an id, packed with the fd into the event's data (as NIO's
/// registration ids): a handler that closes fd X while another registers a new X in the same
/// `epoll_wait` batch would otherwise hand the old X's event to the new handler.
public final class EventLoop {
    public struct Interest: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let readable = Interest(rawValue: EPOLLIN.rawValue | EPOLLRDHUP.rawValue)
        public static let writable = Interest(rawValue: EPOLLOUT.rawValue)
        /// cgroupfs "file modified" notifications (`cgroup.events`, `memory.events`).
        public static let priority = Interest(rawValue: EPOLLPRI.rawValue)
        /// Reported once, then not again until the registration is modified (``modify(_:_:)``):
        /// for a handler that queues the descriptor's work instead of doing it at once.
        public static let oneShot = Interest(rawValue: EPOLLONESHOT.rawValue)
    }

    public typealias Handler = (_ events: UInt32) -> Void

    private let epollFD: Int32

    /// Sleeps until `fd` polls ready, another event of the loop is pending, or `milliseconds`
    /// pass; returns whether `fd` is ready.
    public func waitBriefly(for fd: Int32, milliseconds: Int32) -> Bool {
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: epollFD, events: Int16(POLLIN), revents: 0)]
        guard poll(&fds, 2, milliseconds) > 0 else { return false }
        return fds[0].revents != 0
    }
    private let timerFD: Int32
    private struct Registration {
        let id: UInt32
        let handler: Handler
    }

    private var registrations: [Int32: Registration] = [:]
    /// Ids repeat only after 2^32 registrations; a stale event would need its fd's number and
    /// an id that old within one batch of at most 64 events.
    private var lastRegistrationID: UInt32 = 0
    private var deadlineHandler: (() -> Void)?
    private var armedDeadline: Int64?
    private var isStopped = false
    /// Work done a slice at a time between batches of events (``addSliceWork(_:)``).
    private var sliceWork: [(id: Int, slice: () -> Bool)] = []
    private var lastSliceWorkID = 0

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
        lastRegistrationID &+= 1
        let registration = Registration(id: lastRegistrationID, handler: handler)
        var event = Self.event(interest, fd: fd, id: registration.id)
        guard epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) == 0 else { throw SystemError("epoll_ctl(ADD)") }
        registrations[fd] = registration
    }

    /// Changes what `fd` is watched for; its registration (and id) stays.
    public func modify(_ fd: Int32, _ interest: Interest) {
        guard let registration = registrations[fd] else { return }
        var event = Self.event(interest, fd: fd, id: registration.id)
        _ = epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event)
    }

    /// Stops watching `fd` (the caller closes it).
    public func remove(_ fd: Int32) {
        guard registrations.removeValue(forKey: fd) != nil else { return }
        _ = epoll_ctl(epollFD, EPOLL_CTL_DEL, fd, nil)
    }

    /// The registration id in the high 32 bits of the event's data, the fd in the low 32.
    private static func event(_ interest: Interest, fd: Int32, id: UInt32) -> epoll_event {
        var event = epoll_event()
        event.events = interest.rawValue
        event.data.u64 = UInt64(id) << 32 | UInt64(UInt32(bitPattern: fd))
        return event
    }

    /// The one timer: `handler` runs when `monotonicNanoseconds` passes. `nil` disarms it.
    public func setDeadline(_ monotonicNanoseconds: Int64?, _ handler: @escaping () -> Void) {
        deadlineHandler = handler
        guard monotonicNanoseconds != armedDeadline else { return }
        armedDeadline = monotonicNanoseconds
        _ = whisper_timerfd_arm_absolute(timerFD, monotonicNanoseconds ?? -1)
    }

    public func stop() { isStopped = true }

    /// Work that is done a slice at a time: `slice` runs after every batch of events and says
    /// whether work is left; while some is, the loop looks for new events without waiting, so
    /// the descriptors it watches get their turn between slices. Returns an id for
    /// ``removeSliceWork(_:)``.
    @discardableResult
    public func addSliceWork(_ slice: @escaping () -> Bool) -> Int {
        lastSliceWorkID += 1
        sliceWork.append((lastSliceWorkID, slice))
        return lastSliceWorkID
    }

    public func removeSliceWork(_ id: Int) {
        sliceWork.removeAll { $0.id == id }
    }

    /// Runs until ``stop()``; blocks in epoll_wait while there is nothing to do.
    public func run() {
        var events = [epoll_event](repeating: epoll_event(), count: 64)
        var isWorkLeft = false
        while !isStopped {
            let count = epoll_wait(epollFD, &events, Int32(events.count), isWorkLeft ? 0 : -1)
            if count < 0 {
                if errno == EINTR { continue }
                fatalError("epoll_wait: \(SystemError("epoll_wait"))")
            }
            for index in 0..<Int(count) {
                let data = events[index].data.u64
                let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: data))
                // A handler earlier in this batch may have removed this fd, or removed it and
                // registered a new descriptor with the same number: then the event is not its.
                guard let registration = registrations[fd], registration.id == UInt32(data >> 32) else { continue }
                registration.handler(events[index].events)
                if isStopped { return }
            }
            isWorkLeft = false
            for work in sliceWork where work.slice() { isWorkLeft = true }
            if isStopped { return }
        }
    }
}
