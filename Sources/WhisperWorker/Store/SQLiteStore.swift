import CWorkerLibs
import Glibc
import WhisperChat
import Synchronization
import WhisperConcurrency

/// A character's conversations in one SQLite file: WAL, parameterised statements only, and a
/// write is on disk before it is acknowledged. SQLite runs with `synchronous=NORMAL` (no sync at
/// commit) and the store syncs the write-ahead log itself after committing (`makeDurable`:
/// `fdatasync` of the `-wal` file — what `synchronous=FULL` does at each commit), so the chat
/// path's store thread can commit the next batch while the last one is being synced. Writes
/// from other threads are group-committed (`GroupCommit`): the writes queued while a commit is
/// under way go together in the next transaction (each in its own savepoint if one fails, so it
/// fails alone) — one sync for many instead of one each. Reads go through a second
/// connection, so they never wait behind a sync.
public final class SQLiteStore: ConversationStore {
    public let kind = "sqlite"
    public let path: String
    private let connection: Locked<Connection>
    private let reader: Locked<Connection>
    private let writes = GroupCommit<PendingWrite>()
    private let writeAheadLog: Locked<WriteAheadLog>

    /// A write waiting for the next group commit.
    private final class PendingWrite: @unchecked Sendable {
        // @unchecked: `result` is set by the committing thread, and read by the submitting
        // thread only after `GroupCommit.submit` returns — which, for a write another thread
        // committed, is after that thread signalled the semaphore the submitter waits on — or,
        // in `perform`, by the thread that committed it.
        let body: (inout Connection) throws -> Any
        var result: Result<Any, any Error>?

        init(_ body: @escaping (inout Connection) throws -> Any) { self.body = body }
    }

    /// The raw handle and its prepared statements (compiled once, reused: preparing is most
    /// of a small statement's cost); only touched with the lock held.
    private struct Connection: ~Copyable {
        let handle: OpaquePointer
        var statements: [String: OpaquePointer] = [:]

        init(handle: OpaquePointer) { self.handle = handle }

        deinit {
            for statement in statements.values { wl_sqlite3_finalize(statement) }
            wl_sqlite3_close_v2(handle)
        }

        mutating func prepared(_ sql: String) throws -> OpaquePointer {
            if let statement = statements[sql] { return statement }
            var statement: OpaquePointer?
            guard wl_sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil) == SQLITE_OK, let statement else {
                throw StoreError("sqlite: \(String(cString: wl_sqlite3_errmsg(handle)))")
            }
            statements[sql] = statement
            return statement
        }
    }

    public init(path: String) throws {
        self.path = path
        writeAheadLog = Locked(WriteAheadLog(path: path + "-wal"))
        try WorkerLibraries.load(.sqlite)
        connection = Locked(Connection(handle: try Self.open(path)))
        try connection.withLock { db in
            try Self.switchToWAL(db.handle)
            // Checkpoints still sync the log and the database; commits are synced by `makeDurable`.
            try Self.run(&db, "PRAGMA synchronous=NORMAL")
        }
        reader = Locked(Connection(handle: try Self.open(path)))
    }

    private static func open(_ path: String) throws -> OpaquePointer {
        var handle: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        guard wl_sqlite3_open_v2(path, &handle, flags, nil) == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: wl_sqlite3_errmsg($0)) } ?? "out of memory"
            if let handle { wl_sqlite3_close_v2(handle) }
            throw StoreError("cannot open \(path): \(message)")
        }
        // Another process (the migrate job, a second worker) may hold the write lock briefly.
        wl_sqlite3_busy_timeout(handle, 5000)
        return handle
    }

    /// Turning a new file to WAL takes its exclusive lock from a read lock, and when another
    /// process is doing the same (several `whisperd migrate`, or the migrate job beside a
    /// worker, creating one store at once) SQLite answers SQLITE_BUSY at once rather than call
    /// the busy handler, as waiting could deadlock. So it is retried here, for up to the same
    /// 5 s the busy handler would wait.
    private static func switchToWAL(_ handle: OpaquePointer) throws {
        var statement: OpaquePointer?
        guard wl_sqlite3_prepare_v3(handle, "PRAGMA journal_mode=WAL", -1, 0, &statement, nil) == SQLITE_OK, let statement else {
            throw StoreError("sqlite: \(String(cString: wl_sqlite3_errmsg(handle)))")
        }
        defer { wl_sqlite3_finalize(statement) }
        var waitedMilliseconds = 0
        while true {
            let step = wl_sqlite3_step(statement)
            if step == SQLITE_ROW || step == SQLITE_DONE { return }
            guard step & 0xff == SQLITE_BUSY, waitedMilliseconds < 5000 else {
                throw StoreError("sqlite: \(String(cString: wl_sqlite3_errmsg(handle)))")
            }
            wl_sqlite3_reset(statement)
            usleep(10_000)
            waitedMilliseconds += 10
        }
    }

    public func migrate() throws {
        try transaction { db in
            try Self.run(&db, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
            let applied = Set(try Self.query(&db, "SELECT version FROM schema_migrations") { Int(wl_sqlite3_column_int64($0, 0)) })
            for migration in StoreSchema.migrations where !applied.contains(migration.version) {
                for statement in migration.sqlite { try Self.run(&db, statement) }
                try Self.run(
                    &db, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    [.int(Int64(migration.version)), .double(Self.now())])
            }
        }
    }

    public func ping() -> Bool {
        (try? reader.withLock { db in try Self.query(&db, "SELECT 1") { wl_sqlite3_column_int($0, 0) } }) == [1]
    }

    public func append(_ message: NewMessage) throws -> Int64 {
        try groupCommit { db in try Self.insert(&db, message) }
    }

    public func recentMessages(character: String, userID: String, limit: Int) throws -> [StoredMessage] {
        try reader.withLock { db in try Self.recent(&db, character: character, userID: userID, limit: limit) }
    }

    public func completeExchange(_ reply: NewMessage, trustDelta: Int, facts: [String]) throws -> Int {
        try groupCommit { db in try Self.completeExchange(&db, reply, trustDelta: trustDelta, facts: facts) }
    }

    /// The read and the write in the same transaction, on the writing connection.
    public func appendAfterReading(_ message: NewMessage, recent limit: Int) throws -> [StoredMessage] {
        try groupCommit { db in try Self.beginExchange(&db, message, recent: limit) }
    }

    /// The whole batch in one transaction (one sync), taken straight to the connection: the
    /// caller (`StoreQueue`) already collected what a group commit would have.
    public func perform(_ batch: [StoreOperation]) -> [Result<StoreOutcome, any Error>] {
        durable(performCommitted(batch))
    }

    public var defersDurability: Bool { true }

    /// Syncs the write-ahead log: every transaction committed before this began is on disk
    /// when it returns (SQLite writes a commit's frames to the log before it returns).
    public func makeDurable() throws {
        try writeAheadLog.withLock { log in try log.sync() }
    }

    /// `results` once synced; a sync that fails fails the writes that succeeded (committed, but
    /// not known to be on disk, so not acknowledged).
    private func durable<T>(_ results: [Result<T, any Error>]) -> [Result<T, any Error>] {
        guard results.contains(where: { (try? $0.get()) != nil }) else { return results }
        do {
            try makeDurable()
            return results
        } catch {
            return results.map { result in result.flatMap { _ in .failure(error) } }
        }
    }

    public func performCommitted(_ batch: [StoreOperation]) -> [Result<StoreOutcome, any Error>] {
        let writes = batch.map { operation in
            PendingWrite { db -> Any in
                switch operation {
                case .beginExchange(let message, let recent):
                    StoreOutcome.history(try Self.beginExchange(&db, message, recent: recent))
                case .completeExchange(let reply, let trustDelta, let facts):
                    StoreOutcome.trust(try Self.completeExchange(&db, reply, trustDelta: trustDelta, facts: facts))
                }
            }
        }
        commit(writes)
        return writes.map { write in
            // Each body made a StoreOutcome.
            (write.result ?? .failure(StoreError("sqlite: write lost"))).map { $0 as! StoreOutcome }
        }
    }

    private static func beginExchange(_ db: inout Connection, _ message: NewMessage, recent limit: Int) throws -> [StoredMessage] {
        let recent = try recent(&db, character: message.character, userID: message.userID, limit: limit)
        _ = try insert(&db, message)
        return recent
    }

    /// The newest `limit` messages of a conversation, newest first.
    private static func recent(_ db: inout Connection, character: String, userID: String, limit: Int) throws -> [StoredMessage] {
        try query(
            &db, "SELECT id, role, content, created_at FROM messages WHERE character = ? AND user_id = ? ORDER BY id DESC LIMIT ?",
            [.text(character), .text(userID), .int(Int64(limit))]
        ) { row in
            StoredMessage(
                id: wl_sqlite3_column_int64(row, 0), role: StoredMessage.Role(rawValue: text(row, 1)) ?? .user,
                content: text(row, 2), createdAt: wl_sqlite3_column_double(row, 3))
        }
    }

    /// Returns the new message's id.
    private static func insert(_ db: inout Connection, _ message: NewMessage) throws -> Int64 {
        try run(
            &db, "INSERT INTO messages (character, user_id, role, content, created_at) VALUES (?, ?, ?, ?, ?)",
            [.text(message.character), .text(message.userID), .text(message.role.rawValue), .text(message.content),
             .double(message.createdAt)])
        return wl_sqlite3_last_insert_rowid(db.handle)
    }

    private static func completeExchange(_ db: inout Connection, _ reply: NewMessage, trustDelta: Int, facts: [String]) throws -> Int {
        _ = try insert(&db, reply)
        let bounds = Conversation.trustRange
        let score = try query(
            &db,
            """
            INSERT INTO trust (character, user_id, score) VALUES (?1, ?2, max(?4, min(?5, ?3)))
            ON CONFLICT (character, user_id) DO UPDATE SET score = max(?4, min(?5, score + ?3)) RETURNING score
            """,
            [.text(reply.character), .text(reply.userID), .int(Int64(trustDelta)), .int(Int64(bounds.lowerBound)),
             .int(Int64(bounds.upperBound))]
        ) { Int(wl_sqlite3_column_int64($0, 0)) }.first ?? 0
        for fact in facts {
            try run(
                &db, "INSERT OR IGNORE INTO facts (character, user_id, fact, created_at) VALUES (?, ?, ?, ?)",
                [.text(reply.character), .text(reply.userID), .text(fact), .double(reply.createdAt)])
        }
        return score
    }

    public func userState(character: String, userID: String, recent: Int) throws -> UserState {
        try reader.withLock { db in
            let key: [Value] = [.text(character), .text(userID)]
            let trust = try Self.query(&db, "SELECT score FROM trust WHERE character = ? AND user_id = ?", key) {
                Int(wl_sqlite3_column_int64($0, 0))
            }.first ?? 0
            let count = try Self.query(&db, "SELECT count(*) FROM messages WHERE character = ? AND user_id = ?", key) {
                Int(wl_sqlite3_column_int64($0, 0))
            }.first ?? 0
            let messages = try Self.query(
                &db,
                "SELECT content FROM messages WHERE character = ? AND user_id = ? AND role = 'user' ORDER BY id DESC LIMIT ?",
                key + [.int(Int64(recent))]
            ) { Self.text($0, 0) }
            let facts = try Self.query(
                &db, "SELECT fact FROM facts WHERE character = ? AND user_id = ? ORDER BY id DESC LIMIT 50", key
            ) { Self.text($0, 0) }
            return UserState(trust: trust, messageCount: count, recentUserMessages: messages, facts: facts)
        }
    }

    public func clear(character: String, userID: String, memories: Bool, trust: Bool) throws -> ClearedData {
        try groupCommit { db in
            let key: [Value] = [.text(character), .text(userID)]
            var cleared = ClearedData(memoriesCleared: 0, trustReset: false, knowledgeCleared: 0)
            if memories {
                try Self.run(&db, "DELETE FROM messages WHERE character = ? AND user_id = ?", key)
                cleared.memoriesCleared = Int(wl_sqlite3_changes(db.handle))
                try Self.run(&db, "DELETE FROM facts WHERE character = ? AND user_id = ?", key)
                cleared.knowledgeCleared = Int(wl_sqlite3_changes(db.handle))
            }
            if trust {
                try Self.run(&db, "DELETE FROM trust WHERE character = ? AND user_id = ?", key)
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
        try reader.withLock { db in
            Export(
                messages: try Self.query(&db, "SELECT character, user_id, role, content, created_at FROM messages ORDER BY id") {
                    (Self.text($0, 0), Self.text($0, 1), Self.text($0, 2), Self.text($0, 3), wl_sqlite3_column_double($0, 4))
                },
                trust: try Self.query(&db, "SELECT character, user_id, score FROM trust") {
                    (Self.text($0, 0), Self.text($0, 1), Int(wl_sqlite3_column_int64($0, 2)))
                },
                facts: try Self.query(&db, "SELECT character, user_id, fact, created_at FROM facts ORDER BY id") {
                    (Self.text($0, 0), Self.text($0, 1), Self.text($0, 2), wl_sqlite3_column_double($0, 3))
                })
        }
    }

    // MARK: - SQLite

    enum Value {
        case text(String)
        case int(Int64)
        case double(Double)
    }

    /// Runs `body` in the next group commit (`GroupCommit`) and returns its result once that
    /// is on disk.
    private func groupCommit<T>(_ body: @escaping (inout Connection) throws -> T) throws -> T {
        let write = PendingWrite { db in try body(&db) }
        writes.submit(write) { [self] batch in
            commit(batch)
            let synced = durable(batch.map { $0.result ?? .failure(StoreError("sqlite: write lost")) })
            for (write, result) in zip(batch, synced) { write.result = result }
        }
        guard let result = write.result else { throw StoreError("sqlite: write lost") }
        // The body made this value, of this type.
        return try result.get() as! T
    }

    /// The batch in one transaction. Optimistically without savepoints (two statements a write
    /// fewer); if a write fails, that transaction is rolled back and the batch redone with each
    /// write in its own savepoint, so one failing write fails alone.
    private func commit(_ batch: [PendingWrite]) {
        connection.withLock { db in
            if !Self.commitAll(batch, &db, isolatingFailures: batch.count == 1) {
                _ = Self.commitAll(batch, &db, isolatingFailures: true)
            }
        }
    }

    /// False when a write failed and `isolatingFailures` is off: then nothing was committed and
    /// no result recorded. Otherwise every write of the batch has its result.
    private static func commitAll(_ batch: [PendingWrite], _ db: inout Connection, isolatingFailures: Bool) -> Bool {
        do {
            try run(&db, "BEGIN IMMEDIATE")
        } catch {
            for write in batch { write.result = .failure(error) }
            return true
        }
        var results: [Result<Any, any Error>] = []
        results.reserveCapacity(batch.count)
        for write in batch {
            if isolatingFailures, batch.count > 1 {
                do {
                    try run(&db, "SAVEPOINT one_write")
                    let value = try write.body(&db)
                    try run(&db, "RELEASE one_write")
                    results.append(.success(value))
                } catch {
                    _ = try? run(&db, "ROLLBACK TO one_write")
                    _ = try? run(&db, "RELEASE one_write")
                    results.append(.failure(error))
                }
            } else {
                do {
                    results.append(.success(try write.body(&db)))
                } catch {
                    // Some errors end the transaction by themselves; ROLLBACK then has nothing to do.
                    _ = try? run(&db, "ROLLBACK")
                    if isolatingFailures {
                        write.result = .failure(error)
                        return true
                    }
                    return false
                }
            }
        }
        do {
            try run(&db, "COMMIT")
        } catch {
            _ = try? run(&db, "ROLLBACK")
            for write in batch { write.result = .failure(error) }
            return true
        }
        for (write, result) in zip(batch, results) { write.result = result }
        return true
    }

    /// `BEGIN IMMEDIATE` takes the write lock up front, so two processes migrating at once
    /// run one after the other instead of failing on a lock upgrade.
    private func transaction<T>(_ body: (inout Connection) throws -> T) throws -> T {
        let result = try connection.withLock { db in
            try Self.run(&db, "BEGIN IMMEDIATE")
            do {
                let result = try body(&db)
                try Self.run(&db, "COMMIT")
                return result
            } catch {
                _ = try? Self.run(&db, "ROLLBACK")
                throw error
            }
        }
        try makeDurable()
        return result
    }

    /// The `-wal` file, opened by the store to sync it. It is the file SQLite writes as long as
    /// a connection is open (SQLite removes it only when the last one closes); if it was
    /// replaced all the same, the new one is opened.
    private struct WriteAheadLog: ~Copyable {
        let path: String
        var descriptor: Int32 = -1
        var identity: (device: UInt64, inode: UInt64) = (0, 0)

        init(path: String) { self.path = path }

        deinit { if descriptor >= 0 { close(descriptor) } }

        mutating func sync() throws {
            var current = stat()
            guard stat(path, &current) == 0 else {
                throw StoreError("sqlite: cannot sync \(path): \(String(cString: strerror(errno)))")
            }
            if descriptor < 0 || identity != (UInt64(current.st_dev), UInt64(current.st_ino)) {
                if descriptor >= 0 { close(descriptor) }
                descriptor = Glibc.open(path, O_RDONLY | O_CLOEXEC)
                guard descriptor >= 0, fstat(descriptor, &current) == 0 else {
                    throw StoreError("sqlite: cannot open \(path) to sync it: \(String(cString: strerror(errno)))")
                }
                identity = (UInt64(current.st_dev), UInt64(current.st_ino))
            }
            guard fdatasync(descriptor) == 0 else {
                throw StoreError("sqlite: fdatasync \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    private static func run(_ db: inout Connection, _ sql: String, _ values: [Value] = []) throws {
        _ = try query(&db, sql, values) { _ in () }
    }

    private static func query<Row>(_ db: inout Connection, _ sql: String, _ values: [Value] = [], _ read: (OpaquePointer) -> Row) throws
        -> [Row]
    {
        let statement = try db.prepared(sql)
        defer {
            wl_sqlite3_reset(statement)
            wl_sqlite3_clear_bindings(statement)
        }
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            switch value {
            case .text(let text): _ = wl_sqlite3_bind_text_transient(statement, index, text, -1)
            case .int(let number): wl_sqlite3_bind_int64(statement, index, number)
            case .double(let number): wl_sqlite3_bind_double(statement, index, number)
            }
        }
        var rows: [Row] = []
        while true {
            let step = wl_sqlite3_step(statement)
            if step == SQLITE_ROW {
                rows.append(read(statement))
            } else if step == SQLITE_DONE {
                return rows
            } else {
                throw StoreError("sqlite: \(String(cString: wl_sqlite3_errmsg(db.handle)))")
            }
        }
    }

    private static func text(_ row: OpaquePointer, _ column: Int32) -> String {
        guard let bytes = wl_sqlite3_column_text(row, column) else { return "" }
        return String(cString: bytes)
    }

    static func now() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}
