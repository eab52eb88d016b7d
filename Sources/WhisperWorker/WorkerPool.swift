import Dispatch
import Foundation
import Synchronization
import WhisperConcurrency
import WhisperSystem

/// A fixed set of threads for blocking work that must not run on the event loop: the store
/// calls outside the chat path (user state, clearing, diagnostics) and Discord's REST calls
/// (`docs/internals.md`, "Concurrency in the worker"). Jobs run in submission order as threads
/// free up.
final class WorkerPool: Sendable {
    private let jobs = Locked<[@Sendable () -> Void]>([])
    private let available = DispatchSemaphore(value: 0)

    init(threads: Int, name: String) {
        for index in 0..<max(1, threads) {
            let thread = Thread { [self] in self.work() }
            thread.name = "\(name)-\(index)"
            thread.start()
        }
    }

    func submit(_ job: @escaping @Sendable () -> Void) {
        jobs.withLock { $0.append(job) }
        available.signal()
    }

    /// Runs `job` on a pool thread and waits (suspending, not blocking) for its result.
    func run<T: Sendable>(_ job: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in submit { continuation.resume(returning: job()) } }
    }

    private func work() {
        while true {
            available.wait()
            guard let job = jobs.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { continue }
            job()
        }
    }
}

/// Results handed from other threads to the event loop: `post` from anywhere, the loop's
/// handler for `fd` calls `drain` and gets them in order.
final class LoopMailbox<Item: Sendable>: Sendable {
    private let items = Locked<[Item]>([])
    let fd: Int32

    init() throws {
        fd = EventFD.make()
        guard fd >= 0 else { throw SystemError("eventfd") }
    }

    func post(_ item: Item) {
        let wasEmpty = items.withLock { items in
            defer { items.append(item) }
            return items.isEmpty
        }
        if wasEmpty { EventFD.signal(fd) }
    }

    func drain() -> [Item] {
        EventFD.drain(fd)
        return items.withLock { items in
            defer { items = [] }
            return items
        }
    }
}
