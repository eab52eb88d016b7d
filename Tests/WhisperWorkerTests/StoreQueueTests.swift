import Foundation
import Synchronization
import Testing
import WhisperChat
import WhisperCore
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
