import Foundation
import Synchronization
import Testing
import WhisperChat
import WhisperConcurrency
@testable import WhisperWorker

/// The chat path's store thread on a real SQLite file: operations submitted while a batch is
/// written go together in the next one, in order, each seeing those before it.
@Suite struct StoreQueueTests {
    @Test func operationsQueuedMeanwhile_shareATransaction_inOrder_andSeeEachOther() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("whisperd-queue-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/memory.sqlite3"
        let store = try SQLiteStore(path: path)
        try store.migrate()
        let queue = StoreQueue(store: store, name: "test")

        struct Seen: Sendable { var order: [Int] = []; var histories: [Int: Int] = [:]; var failures: [String] = [] }
        let seen = Locked(Seen())
        let done = DispatchSemaphore(value: 0)
        let count = 200
        for index in 0..<count {
            let message = NewMessage(character: "elena", userID: "u", role: .user, content: "m\(index)", createdAt: 1_800_000_000)
            queue.submit(.beginExchange(message, recent: 1_000)) { result in
                seen.withLock { seen in
                    seen.order.append(index)
                    switch result {
                    case .success(.history(let history)): seen.histories[index] = history.count
                    case .success(.trust): seen.failures.append("\(index): a trust outcome")
                    case .failure(let error): seen.failures.append("\(index): \(error)")
                    }
                }
                done.signal()
            }
        }
        for _ in 0..<count { done.wait() }
        let result = seen.withLock { $0 }
        #expect(result.failures.isEmpty)
        #expect(result.order == Array(0..<count))
        // Each message's history is exactly the messages submitted before it, committed or not yet.
        #expect((0..<count).allSatisfy { result.histories[$0] == $0 })
        #expect(try store.recentMessages(character: "elena", userID: "u", limit: 1_000).count == count)
        // Fewer transactions than operations: the WAL has one commit frame per transaction
        // (SQLite writes frames straight to the file; 200 small writes stay below a checkpoint).
        let frames = try Self.commitFrames(inWAL: path + "-wal")
        #expect(frames >= 1 && frames < count, "\(frames) commits for \(count) operations")
    }

    /// Commit frames in a WAL file: frames whose header's "database size after commit" is non-zero.
    static func commitFrames(inWAL path: String) throws -> Int {
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        guard bytes.count >= 32 else { return 0 }
        let pageSize = Int(bytes[8]) << 24 | Int(bytes[9]) << 16 | Int(bytes[10]) << 8 | Int(bytes[11])
        var commits = 0
        var offset = 32
        while offset + 24 + pageSize <= bytes.count {
            let sizeAfterCommit = Int(bytes[offset + 4]) << 24 | Int(bytes[offset + 5]) << 16 | Int(bytes[offset + 6]) << 8 | Int(bytes[offset + 7])
            if sizeAfterCommit != 0 { commits += 1 }
            offset += 24 + pageSize
        }
        return commits
    }
}

/// The real SQLite store, with what the queue asks of it recorded (and a sync that can be made
/// to fail), to check the order the queue promises: no completion before a sync that began
/// after its batch was committed has ended.
private final class RecordingStore: ConversationStore, Sendable {
    enum Event: Equatable { case committed(batch: Int), syncBegan, syncEnded, completed(batch: Int) }

    let real: SQLiteStore
    let events = Locked<[Event]>([])
    let failSync = Locked(false)
    private let batches = Locked(0)

    init(_ real: SQLiteStore) { self.real = real }

    var kind: String { real.kind }
    var defersDurability: Bool { true }
    func migrate() throws { try real.migrate() }
    func ping() -> Bool { real.ping() }
    func append(_ message: NewMessage) throws -> Int64 { try real.append(message) }
    func recentMessages(character: String, userID: String, limit: Int) throws -> [StoredMessage] {
        try real.recentMessages(character: character, userID: userID, limit: limit)
    }
    func completeExchange(_ reply: NewMessage, trustDelta: Int, facts: [String]) throws -> Int {
        try real.completeExchange(reply, trustDelta: trustDelta, facts: facts)
    }
    func perform(_ batch: [StoreOperation]) -> [Result<StoreOutcome, any Error>] { real.perform(batch) }
    func userState(character: String, userID: String, recent: Int) throws -> UserState {
        try real.userState(character: character, userID: userID, recent: recent)
    }
    func clear(character: String, userID: String, memories: Bool, trust: Bool) throws -> ClearedData {
        try real.clear(character: character, userID: userID, memories: memories, trust: trust)
    }

    /// The batch's number is the first message's content ("b<number>-…").
    func performCommitted(_ batch: [StoreOperation]) -> [Result<StoreOutcome, any Error>] {
        let results = real.performCommitted(batch)
        for operation in batch {
            if case .beginExchange(let message, _) = operation, let number = Int(message.content.dropFirst().prefix { $0 != "-" }) {
                events.withLock { $0.append(.committed(batch: number)) }
            }
        }
        return results
    }

    func makeDurable() throws {
        events.withLock { $0.append(.syncBegan) }
        defer { events.withLock { $0.append(.syncEnded) } }
        if failSync.withLock({ $0 }) { throw StoreError("the disk is gone") }
        try real.makeDurable()
    }
}

extension StoreQueueTests {
    @Test func aCompletion_comesAfterASyncThatBeganAfterItsCommit_andAFailedSyncAcknowledgesNothing() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("whisperd-queue-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let real = try SQLiteStore(path: directory + "/memory.sqlite3")
        try real.migrate()
        let store = RecordingStore(real)
        let queue = StoreQueue(store: store, name: "test")

        func submitAll(_ count: Int, prefix: String) -> [Result<StoreOutcome, any Error>] {
            let results = Locked<[Int: Result<StoreOutcome, any Error>]>([:])
            let done = DispatchSemaphore(value: 0)
            for index in 0..<count {
                let message = NewMessage(character: "elena", userID: "u", role: .user, content: "b\(index)-\(prefix)", createdAt: 1_800_000_000)
                queue.submit(.beginExchange(message, recent: 5)) { result in
                    store.events.withLock { $0.append(.completed(batch: index)) }
                    results.withLock { $0[index] = result }
                    done.signal()
                }
            }
            for _ in 0..<count { done.wait() }
            return results.withLock { results in (0..<count).map { results[$0]! } }
        }

        let results = submitAll(100, prefix: "ok")
        #expect(results.allSatisfy { (try? $0.get()) != nil })
        let events = store.events.withLock { $0 }
        for index in 0..<100 {
            guard let committed = events.firstIndex(of: .committed(batch: index)), let completed = events.firstIndex(of: .completed(batch: index)) else {
                Issue.record("operation \(index) was not committed and completed")
                continue
            }
            // A sync that began after the commit and ended before the completion.
            let began = events[committed..<completed].firstIndex(of: .syncBegan)
            #expect(began.map { events[$0..<completed].contains(.syncEnded) } == true, "operation \(index)")
        }

        store.failSync.withLock { $0 = true }
        store.events.withLock { $0 = [] }
        let failed = submitAll(20, prefix: "lost")
        #expect(failed.allSatisfy { result in "\(result)".contains("the disk is gone") })
    }
}
