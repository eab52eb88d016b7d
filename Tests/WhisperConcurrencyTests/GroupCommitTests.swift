import Foundation
import Synchronization
import Testing
import WhisperConcurrency

/// `GroupCommit` with a real commit stand-in that takes a millisecond (an fsync's order), under
/// 16 threads writing as fast as they can — the shape of `wrk -c 16` on the chat API.
@Suite struct GroupCommitTests {
    final class Write: Sendable {
        let id: Int
        init(id: Int) { self.id = id }
    }

    struct Run {
        var committed: [Int] = []
        var batches = 0
        var concurrentCommits = 0
        var maxConcurrentCommits = 0
        /// Per submit call: batches that call committed itself.
        var ledPerCall: [Int] = []
        var returnedBeforeCommitted = 0
        /// Calls whose result (led or not) disagreed with whether they ran `commit`.
        var misreportedLead = 0
    }

    private func hammer(threads: Int, writesPerThread: Int) -> Run {
        let group = GroupCommit<Write>()
        let run = Locked(Run())
        DispatchQueue.concurrentPerform(iterations: threads) { thread in
            for index in 0..<writesPerThread {
                let write = Write(id: thread * writesPerThread + index)
                var ledHere = 0
                let led = group.submit(write) { batch in
                    ledHere += 1
                    run.withLock {
                        $0.concurrentCommits += 1
                        $0.maxConcurrentCommits = max($0.maxConcurrentCommits, $0.concurrentCommits)
                    }
                    usleep(1000)
                    run.withLock {
                        $0.committed += batch.map(\.id)
                        $0.batches += 1
                        $0.concurrentCommits -= 1
                    }
                }
                run.withLock {
                    if !$0.committed.contains(write.id) { $0.returnedBeforeCommitted += 1 }
                    $0.ledPerCall.append(ledHere)
                    if led != (ledHere > 0) { $0.misreportedLead += 1 }
                }
            }
        }
        return run.withLock { $0 }
    }

    @Test func everyWriteIsCommittedOnceBeforeItsCallerReturns() {
        let run = hammer(threads: 16, writesPerThread: 100)
        #expect(run.committed.sorted() == Array(0..<1600))
        #expect(run.returnedBeforeCommitted == 0)
        #expect(run.maxConcurrentCommits == 1)
        // Writes queued during a commit share the next one.
        #expect(run.batches < 1600)
    }

    /// The bug this type fixed: a leader kept committing the batches queued while it committed,
    /// for as long as writes kept coming, so its own caller waited for all of them.
    @Test func noCallerCommitsMoreThanOneBatch() {
        let run = hammer(threads: 16, writesPerThread: 100)
        #expect(run.ledPerCall.count == 1600)
        #expect(run.ledPerCall.allSatisfy { $0 <= 1 })
        #expect(run.ledPerCall.reduce(0, +) == run.batches)
        #expect(run.misreportedLead == 0)
    }

    @Test func aLoneWriterLeadsItsOwnCommit() {
        let group = GroupCommit<Write>()
        var batches: [[Int]] = []
        for id in 0..<3 {
            #expect(group.submit(Write(id: id)) { batches.append($0.map(\.id)) })
        }
        #expect(batches == [[0], [1], [2]])
    }
}
