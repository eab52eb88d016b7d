import Dispatch
import Foundation
import Synchronization
import WhisperCore

/// The chat path's one store thread: operations queue up while a batch is being written, and
/// the next batch takes all of them — one transaction and one fsync for every chat that arrived
/// meanwhile, with no thread per request waiting in a lock. Completions run on this thread, in
/// the order the operations were submitted; they must not block.
final class StoreQueue: Sendable {
    typealias Completion = @Sendable (Result<StoreOutcome, any Error>) -> Void

    private struct Pending {
        var operation: StoreOperation
        var submitted: UInt64
        var completion: Completion
    }

    let store: any ConversationStore
    private let pending = Locked<[Pending]>([])
    private let wakeUp = DispatchSemaphore(value: 0)
    /// Seconds from submission to result, per operation (the chat's wait for the store).
    private let recordLatency: @Sendable (Double) -> Void

    init(store: any ConversationStore, name: String, recordLatency: @escaping @Sendable (Double) -> Void = { _ in }) {
        self.store = store
        self.recordLatency = recordLatency
        let thread = Thread { [self] in self.run() }
        thread.name = "store-\(name)"
        thread.start()
    }

    func submit(_ operation: StoreOperation, completion: @escaping Completion) {
        let entry = Pending(operation: operation, submitted: DispatchTime.now().uptimeNanoseconds, completion: completion)
        let wasEmpty = pending.withLock { queue in
            queue.append(entry)
            return queue.count == 1
        }
        // The thread takes everything queued each time it wakes, so one signal per batch.
        if wasEmpty { wakeUp.signal() }
    }

    private func run() {
        while true {
            wakeUp.wait()
            let batch = pending.withLock { queue in
                defer { queue = [] }
                return queue
            }
            if batch.isEmpty { continue }
            let results = store.perform(batch.map(\.operation))
            let finished = DispatchTime.now().uptimeNanoseconds
            for (entry, result) in zip(batch, results) {
                recordLatency(Double(finished - entry.submitted) / 1e9)
                entry.completion(result)
            }
        }
    }
}
