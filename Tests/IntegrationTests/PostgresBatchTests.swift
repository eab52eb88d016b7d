import Foundation
import Testing
import WhisperChat
import WhisperWorker

/// The PostgreSQL store's batches (what the worker's store thread sends), made on purpose on a
/// real cluster: one pipelined transaction, each statement seeing those before it, and a
/// statement that fails failing alone.
extension IntegrationTests {
    @Suite struct PostgresBatchSection {
        private func message(_ user: String, _ content: String, _ role: StoredMessage.Role = .user) -> NewMessage {
            NewMessage(character: "elena", userID: user, role: role, content: content, createdAt: 1_800_000_000)
        }

        @Test func aBatch_isOneTransaction_inOrder_andAFailingStatementFailsAlone() throws {
            let postgres = try TestPostgres()
            let store = PostgresStore(url: postgres.url)
            try store.migrate()

            let first = store.perform([
                .beginExchange(message("u", "a"), recent: 10),
                .beginExchange(message("u", "b"), recent: 10),
                .completeExchange(message("u", "reply", .assistant), trustDelta: 1, facts: ["likes: tea"]),
                .completeExchange(message("u", "reply 2", .assistant), trustDelta: 1, facts: []),
            ])
            let outcomes = try first.map { try $0.get() }
            #expect(outcomes[0].history.isEmpty)
            #expect(outcomes[1].history.map(\.content) == ["a"])  // sees the statement before it
            #expect(outcomes[2].trust == 1 && outcomes[3].trust == 2)
            // One transaction: every row it wrote has the same xmin.
            #expect(try postgres.query("SELECT count(DISTINCT xmin::text) FROM messages WHERE user_id = 'u'") == ["1"])
            #expect(try postgres.query("SELECT count(*) FROM messages WHERE user_id = 'u'") == ["4"])

            try postgres.refuseMessagesStartingRefuse()
            let mixed = store.perform([
                .beginExchange(message("v", "keep-1"), recent: 10),
                .beginExchange(message("v", "refuse-2"), recent: 10),
                .beginExchange(message("v", "keep-3"), recent: 10),
            ])
            #expect((try? mixed[0].get()) != nil && (try? mixed[2].get()) != nil)
            #expect(throws: (any Error).self) { try mixed[1].get() }
            #expect("\(mixed[1])".contains("refused"))
            #expect(try postgres.query("SELECT content FROM messages WHERE user_id = 'v' ORDER BY id") == ["keep-1", "keep-3"])

            // The connection is usable afterwards (its aborted transaction was rolled back).
            let after = store.perform([.beginExchange(message("v", "keep-4"), recent: 10), .beginExchange(message("v", "keep-5"), recent: 10)])
            #expect(try after[1].get().history.map(\.content).sorted() == ["keep-1", "keep-3", "keep-4"])
            #expect(try postgres.query("SELECT count(*) FROM messages") == ["8"])
        }
    }
}
