import Dispatch
import Foundation
import Synchronization
import WhisperConcurrency

/// The chat path's one store thread: operations queue up while a batch is being written, and
/// the next batch takes all of them — one transaction for every chat that arrived meanwhile,
/// with no thread per request waiting in a lock. When the store leaves durability to a
/// separate sync (SQLite: `performCommitted`, then `makeDurable`), a second thread syncs while
/// this one commits the next batch, and one sync covers every batch committed before it began.
/// Completions run in the order the operations were submitted, after their results are on
/// disk; they must not block.
final class StoreQueue: Sendable {
    typealias Completion = @Sendable (Result<StoreOutcome, any Error>) -> Void

    private struct Pending {
        var operation: StoreOperation
        var submitted: UInt64
        var completion: Completion
    }

    /// A committed batch waiting for its sync.
    private struct Committed {
        var batch: [Pending]
        var results: [Result<StoreOutcome, any Error>]
    }

    let store: any ConversationStore
    private let pending = Locked<[Pending]>([])
    private let wakeUp = DispatchSemaphore(value: 0)
    private let committed = Locked<[Committed]>([])
    private let wakeUpSyncer = DispatchSemaphore(value: 0)
    /// Seconds from submission to durable result, per operation (the chat's wait for the store).
    private let recordLatency: @Sendable (Double) -> Void

    init(store: any ConversationStore, name: String, recordLatency: @escaping @Sendable (Double) -> Void = { _ in }) {
        self.store = store
        self.recordLatency = recordLatency
        let thread = Thread { [self] in self.commitBatches() }
        thread.name = "store-\(name)"
        thread.start()
        if store.defersDurability {
            let syncer = Thread { [self] in self.syncBatches() }
            syncer.name = "store-sync-\(name)"
            syncer.start()
        }
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

    private func commitBatches() {
        while true {
            wakeUp.wait()
            let batch = pending.withLock { queue in
                defer { queue = [] }
                return queue
            }
            if batch.isEmpty { continue }
            guard store.defersDurability else {
                deliver(batch, store.perform(batch.map(\.operation)))
                continue
            }
            let results = store.performCommitted(batch.map(\.operation))
            let wasEmpty = committed.withLock { waiting in
                waiting.append(Committed(batch: batch, results: results))
                return waiting.count == 1
            }
            if wasEmpty { wakeUpSyncer.signal() }
        }
    }

    private func syncBatches() {
        while true {
            wakeUpSyncer.wait()
            let batches = committed.withLock { waiting in
                defer { waiting = [] }
                return waiting
            }
            if batches.isEmpty { continue }
            // Every batch here was committed before this sync began.
            let failure: (any Error)?
            do {
                try store.makeDurable()
                failure = nil
            } catch {
                failure = error
            }
            for committed in batches {
                // Committed but not known to be on disk: not acknowledged.
                let results = failure.map { error in committed.results.map { $0.flatMap { _ in .failure(error) } } } ?? committed.results
                deliver(committed.batch, results)
            }
        }
    }

    private func deliver(_ batch: [Pending], _ results: [Result<StoreOutcome, any Error>]) {
        let finished = DispatchTime.now().uptimeNanoseconds
        for (entry, result) in zip(batch, results) {
            recordLatency(Double(finished - entry.submitted) / 1e9)
            entry.completion(result)
        }
    }
}
