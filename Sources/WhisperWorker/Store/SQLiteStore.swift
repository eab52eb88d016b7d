import CSQLite
import Glibc
import Synchronization
import WhisperChat

/// A character's conversations in one SQLite file: WAL, `synchronous=FULL` (a message is on
/// disk when `append` returns), one connection behind a lock (SQLite writes one at a time
/// anyway), parameterised statements only.
public final class SQLiteStore: ConversationStore {
    public let kind = "sqlite"
    public let path: String
    private let connection: Mutex<Connection>

    /// The raw handle; only touched with the lock held.
    private struct Connection: ~Copyable {
        let handle: OpaquePointer

        deinit { sqlite3_close_v2(handle) }
    }

    public init(path: String) throws {
        self.path = path
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        guard sqlite3_open_v2(path, &handle, flags, nil) == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            if let handle { sqlite3_close_v2(handle) }
            throw StoreError("cannot open \(path): \(message)")
        }
        // Another process (the migrate job, a second worker) may hold the write lock briefly.
        sqlite3_busy_timeout(handle, 5000)
        connection = Mutex(Connection(handle: handle))
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=FULL")
        try execute("PRAGMA foreign_keys=ON")
    }

    public func migrate() throws {
        try transaction { db in
            try Self.run(db, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
            let applied = Set(try Self.query(db, "SELECT version FROM schema_migrations") { Int(sqlite3_column_int64($0, 0)) })
            for migration in StoreSchema.migrations where !applied.contains(migration.version) {
                for statement in migration.sqlite { try Self.run(db, statement) }
                try Self.run(
                    db, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    [.int(Int64(migration.version)), .double(Self.now())])
            }
        }
    }

    public func ping() -> Bool {
        (try? connection.withLock { db in try Self.query(db.handle, "SELECT 1") { sqlite3_column_int($0, 0) } }) == [1]
    }

    public func append(_ message: NewMessage) throws -> Int64 {
        try connection.withLock { db in
            try Self.run(
                db.handle, "INSERT INTO messages (character, user_id, role, content, created_at) VALUES (?, ?, ?, ?, ?)",
                [.text(message.character), .text(message.userID), .text(message.role.rawValue), .text(message.content),
                 .double(message.createdAt)])
            return sqlite3_last_insert_rowid(db.handle)
        }
    }

    public func recentMessages(character: String, userID: String, limit: Int) throws -> [StoredMessage] {
        try connection.withLock { db in
            try Self.query(
                db.handle,
                "SELECT id, role, content, created_at FROM messages WHERE character = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
                [.text(character), .text(userID), .int(Int64(limit))]
            ) { row in
                StoredMessage(
                    id: sqlite3_column_int64(row, 0), role: StoredMessage.Role(rawValue: Self.text(row, 1)) ?? .user,
                    content: Self.text(row, 2), createdAt: sqlite3_column_double(row, 3))
            }
        }
    }

    public func completeExchange(_ reply: NewMessage, trustDelta: Int, facts: [String]) throws -> Int {
        try transaction { db in
            try Self.run(
                db, "INSERT INTO messages (character, user_id, role, content, created_at) VALUES (?, ?, ?, ?, ?)",
                [.text(reply.character), .text(reply.userID), .text(reply.role.rawValue), .text(reply.content), .double(reply.createdAt)])
            let current = try Self.query(
                db, "SELECT score FROM trust WHERE character = ? AND user_id = ?", [.text(reply.character), .text(reply.userID)]
            ) { Int(sqlite3_column_int64($0, 0)) }.first ?? 0
            let score = Conversation.clampTrust(current + trustDelta)
            try Self.run(
                db,
                "INSERT INTO trust (character, user_id, score) VALUES (?, ?, ?) ON CONFLICT (character, user_id) DO UPDATE SET score = excluded.score",
                [.text(reply.character), .text(reply.userID), .int(Int64(score))])
            for fact in facts {
                try Self.run(
                    db, "INSERT OR IGNORE INTO facts (character, user_id, fact, created_at) VALUES (?, ?, ?, ?)",
                    [.text(reply.character), .text(reply.userID), .text(fact), .double(reply.createdAt)])
            }
            return score
        }
    }

    public func userState(character: String, userID: String, recent: Int) throws -> UserState {
        try connection.withLock { db in
            let key: [Value] = [.text(character), .text(userID)]
            let trust = try Self.query(db.handle, "SELECT score FROM trust WHERE character = ? AND user_id = ?", key) {
                Int(sqlite3_column_int64($0, 0))
            }.first ?? 0
            let count = try Self.query(db.handle, "SELECT count(*) FROM messages WHERE character = ? AND user_id = ?", key) {
                Int(sqlite3_column_int64($0, 0))
            }.first ?? 0
            let messages = try Self.query(
                db.handle,
                "SELECT content FROM messages WHERE character = ? AND user_id = ? AND role = 'user' ORDER BY id DESC LIMIT ?",
                key + [.int(Int64(recent))]
            ) { Self.text($0, 0) }
            let facts = try Self.query(
                db.handle, "SELECT fact FROM facts WHERE character = ? AND user_id = ? ORDER BY id DESC LIMIT 50", key
            ) { Self.text($0, 0) }
            return UserState(trust: trust, messageCount: count, recentUserMessages: messages, facts: facts)
        }
    }

    public func clear(character: String, userID: String, memories: Bool, trust: Bool) throws -> ClearedData {
        try transaction { db in
            let key: [Value] = [.text(character), .text(userID)]
            var cleared = ClearedData(memoriesCleared: 0, trustReset: false, knowledgeCleared: 0)
            if memories {
                try Self.run(db, "DELETE FROM messages WHERE character = ? AND user_id = ?", key)
                cleared.memoriesCleared = Int(sqlite3_changes(db))
                try Self.run(db, "DELETE FROM facts WHERE character = ? AND user_id = ?", key)
                cleared.knowledgeCleared = Int(sqlite3_changes(db))
            }
            if trust {
                try Self.run(db, "DELETE FROM trust WHERE character = ? AND user_id = ?", key)
                cleared.trustReset = true
            }
            return cleared
        }
    }

    // MARK: - Copying (migrate-store)

    struct Export {
        var messages: [(character: String, userID: String, role: String, content: String, createdAt: Double)]
        var trust: [(character: String, userID: String, score: Int)]
        var facts: [(character: String, userID: String, fact: String, createdAt: Double)]
    }

    /// Every row, messages in the order they were written.
    func exportAll() throws -> Export {
        try connection.withLock { db in
            Export(
                messages: try Self.query(db.handle, "SELECT character, user_id, role, content, created_at FROM messages ORDER BY id") {
                    (Self.text($0, 0), Self.text($0, 1), Self.text($0, 2), Self.text($0, 3), sqlite3_column_double($0, 4))
                },
                trust: try Self.query(db.handle, "SELECT character, user_id, score FROM trust") {
                    (Self.text($0, 0), Self.text($0, 1), Int(sqlite3_column_int64($0, 2)))
                },
                facts: try Self.query(db.handle, "SELECT character, user_id, fact, created_at FROM facts ORDER BY id") {
                    (Self.text($0, 0), Self.text($0, 1), Self.text($0, 2), sqlite3_column_double($0, 3))
                })
        }
    }

    // MARK: - SQLite

    enum Value {
        case text(String)
        case int(Int64)
        case double(Double)
    }

    private func execute(_ sql: String) throws {
        try connection.withLock { db in try Self.run(db.handle, sql) }
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front, so two processes migrating at once
    /// run one after the other instead of failing on a lock upgrade.
    private func transaction<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        try connection.withLock { db in
            try Self.run(db.handle, "BEGIN IMMEDIATE")
            do {
                let result = try body(db.handle)
                try Self.run(db.handle, "COMMIT")
                return result
            } catch {
                _ = try? Self.run(db.handle, "ROLLBACK")
                throw error
            }
        }
    }

    private static func run(_ db: OpaquePointer, _ sql: String, _ values: [Value] = []) throws {
        _ = try query(db, sql, values) { _ in () }
    }

    private static func query<Row>(_ db: OpaquePointer, _ sql: String, _ values: [Value] = [], _ read: (OpaquePointer) -> Row) throws
        -> [Row]
    {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw StoreError("sqlite: \(String(cString: sqlite3_errmsg(db)))")
        }
        defer { sqlite3_finalize(statement) }
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            switch value {
            case .text(let text): _ = whisper_sqlite_bind_text(statement, index, text, -1)
            case .int(let number): sqlite3_bind_int64(statement, index, number)
            case .double(let number): sqlite3_bind_double(statement, index, number)
            }
        }
        var rows: [Row] = []
        while true {
            let step = sqlite3_step(statement)
            if step == SQLITE_ROW {
                rows.append(read(statement))
            } else if step == SQLITE_DONE {
                return rows
            } else {
                throw StoreError("sqlite: \(String(cString: sqlite3_errmsg(db)))")
            }
        }
    }

    private static func text(_ row: OpaquePointer, _ column: Int32) -> String {
        guard let bytes = sqlite3_column_text(row, column) else { return "" }
        return String(cString: bytes)
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
