import Foundation
import Synchronization
import Testing
import WhisperChat
import WhisperConcurrency
import WhisperWorker

/// The SQLite store on a real file, written from many threads at once, so writes share group
/// commits.
@Suite struct SQLiteStoreTests {
    /// A store in a fresh directory, removed afterwards.
    private func withStore(_ body: (SQLiteStore, String) throws -> Void) throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("whisperd-sqlite-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/memory.sqlite3"
        let store = try SQLiteStore(path: path)
        try store.migrate()
        try body(store, path)
    }

    /// Another connection to the same file (Python's sqlite3), for what the store cannot do.
    private func sql(_ path: String, _ statement: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.close()", path, statement]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    private func message(_ user: String, _ content: String) -> NewMessage {
        NewMessage(character: "elena", userID: user, role: .user, content: content, createdAt: 1_800_000_000)
    }

    /// A write that fails (here a trigger refuses it) fails alone: the writes committed in the
    /// same batch are kept and acknowledged, the refused ones are neither.
    @Test func aFailingWriteFailsAlone_theRestOfItsBatchIsKept() throws {
        try withStore { store, path in
            try sql(path, "CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.content LIKE 'refuse%' BEGIN SELECT RAISE(ABORT, 'refused'); END;")
            // `Locked`, not `Mutex`: the TSan build swaps in a lock TSan can see.
            let outcomes = Locked<(stored: [String], refused: [String], other: [String])>(([], [], []))
            DispatchQueue.concurrentPerform(iterations: 16) { thread in
                for index in 0..<40 {
                    let content = (index % 5 == 0 ? "refuse-" : "keep-") + "\(thread)-\(index)"
                    do {
                        _ = try store.append(message("u\(thread)", content))
                        outcomes.withLock { $0.stored.append(content) }
                    } catch {
                        outcomes.withLock { "\(error)".contains("refused") ? $0.refused.append(content) : $0.other.append("\(error)") }
                    }
                }
            }
            let result = outcomes.withLock { $0 }
            #expect(result.other.isEmpty)
            #expect(result.refused.count == 16 * 8 && result.refused.allSatisfy { $0.hasPrefix("refuse-") })
            #expect(result.stored.count == 16 * 32 && result.stored.allSatisfy { $0.hasPrefix("keep-") })
            var inFile: [String] = []
            for thread in 0..<16 {
                inFile += try store.recentMessages(character: "elena", userID: "u\(thread)", limit: 100).map(\.content)
            }
            #expect(inFile.sorted() == result.stored.sorted())
        }
    }

    /// The trust score is kept within its range, counting from 0 for a new user.
    @Test func trustIsClampedAndFactsAreKeptOnce() throws {
        try withStore { store, _ in
            let reply = NewMessage(character: "elena", userID: "u", role: .assistant, content: "hi", createdAt: 1_800_000_000)
            #expect(try store.completeExchange(reply, trustDelta: 3, facts: ["name: Ada", "name: Ada"]) == 3)
            #expect(try store.completeExchange(reply, trustDelta: 500, facts: ["likes: tea"]) == Conversation.trustRange.upperBound)
            #expect(try store.completeExchange(reply, trustDelta: -1, facts: []) == Conversation.trustRange.upperBound - 1)
            let other = NewMessage(character: "elena", userID: "v", role: .assistant, content: "hi", createdAt: 1_800_000_000)
            #expect(try store.completeExchange(other, trustDelta: -900, facts: []) == Conversation.trustRange.lowerBound)
            let state = try store.userState(character: "elena", userID: "u", recent: 10)
            #expect(state.trust == Conversation.trustRange.upperBound - 1)
            #expect(state.facts == ["likes: tea", "name: Ada"])
            #expect(state.messageCount == 3)
        }
    }
}
