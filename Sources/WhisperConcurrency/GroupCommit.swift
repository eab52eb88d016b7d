import Dispatch
import Synchronization

/// Group commit, for a store whose commit is expensive (an fsync): callers queue writes, and a
/// caller that finds no commit under way leads — it commits everything queued, its own write
/// and those of the callers that queued meanwhile, in one batch — then hands the lead to the
/// oldest write queued during that batch. So a caller waits for at most the batch under way and
/// its own, and commits at most one batch: a leader that went on committing for others while
/// load lasted would hold its own caller for as long as the load (seconds, under `wrk`).
public final class GroupCommit<Write: Sendable>: Sendable {
    private final class Waiter: Sendable {
        let write: Write
        let wakeUp = DispatchSemaphore(value: 0)

        init(_ write: Write) { self.write = write }
    }

    private struct Queue {
        var waiting: [Waiter] = []
        var isLeading = false
        /// The waiter woken to lead the next batch (the others are woken when committed).
        var nextLeader: ObjectIdentifier?
    }

    private let queue = Locked(Queue())

    public init() {}

    /// Returns once `write` has been committed by `commit` — in a batch this call committed
    /// (the result is then true) or in another caller's. `commit` gets each write exactly once
    /// and runs on one thread at a time; it records each write's outcome itself.
    @discardableResult
    public func submit(_ write: Write, committingWith commit: ([Write]) -> Void) -> Bool {
        let waiter = Waiter(write)
        let leads = queue.withLock { queue -> Bool in
            queue.waiting.append(waiter)
            if queue.isLeading { return false }
            queue.isLeading = true
            return true
        }
        if !leads {
            waiter.wakeUp.wait()
            let promoted = queue.withLock { queue -> Bool in
                guard queue.nextLeader == ObjectIdentifier(waiter) else { return false }
                queue.nextLeader = nil
                return true
            }
            if !promoted { return false }
        }
        let batch = queue.withLock { queue -> [Waiter] in
            defer { queue.waiting = [] }
            return queue.waiting
        }
        commit(batch.map(\.write))
        let next = queue.withLock { queue -> Waiter? in
            guard let first = queue.waiting.first else {
                queue.isLeading = false
                return nil
            }
            queue.nextLeader = ObjectIdentifier(first)
            return first
        }
        for other in batch where other !== waiter { other.wakeUp.signal() }
        next?.wakeUp.signal()
        return true
    }
}
