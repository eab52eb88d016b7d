import CWorkerLibs
import Foundation
import WhisperChat
import Synchronization
import WhisperCore

/// Conversations in PostgreSQL through libpq: one database for every character (rows keyed
/// by character), parameterised statements only, a small pool of connections made on demand.
/// A connection that fails is dropped and the next operation makes a new one, so the store
/// comes back by itself after the database does.
public final class PostgresStore: ConversationStore {
    public let kind = "postgres"
    /// The URL as given, for connecting; never logged (it may hold a password).
    private let url: String
    private let idle = Locked<[Connection]>([])
    private let maxIdle: Int
    /// Whether this process has seen the schema up to date (a worker that started while the
    /// database was down migrates at its first successful connection).
    private let isMigrated = Locked(false)

    /// One libpq connection, used by one thread at a time (taken from the pool and put back).
    private struct Connection: @unchecked Sendable {
        // @unchecked: a PGconn moves between threads only through the pool's lock and is used
        // by one thread at a time, which is what libpq requires.
        let raw: OpaquePointer
    }

    /// `maxIdle`: connections kept for reuse; at least the worker's thread count, as a
    /// connection made per request costs milliseconds.
    public init(url: String, maxIdle: Int = 32) {
        self.url = url
        self.maxIdle = maxIdle
    }

    deinit {
        idle.withLock { connections in for connection in connections { wl_PQfinish(connection.raw) } }
    }

    /// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for messages.
    public static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url) else { return "postgres://…" }
        if components.password != nil { components.password = "***" }
        return components.string ?? "postgres://…"
    }

    // MARK: - ConversationStore

    public func migrate() throws {
        try transaction { db in
            // One migrator at a time across every process: the lock is released at COMMIT.
            _ = try Self.execute(db, "SELECT pg_advisory_xact_lock(7305727356)")
            _ = try Self.execute(db, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
            let applied = Set(try Self.execute(db, "SELECT version FROM schema_migrations").rows.compactMap { Int($0[0]) })
            for migration in StoreSchema.migrations where !applied.contains(migration.version) {
                for statement in migration.postgres { _ = try Self.execute(db, statement) }
                _ = try Self.execute(
                    db, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    [String(migration.version), String(Date().timeIntervalSince1970)])
            }
        }
        isMigrated.withLock { $0 = true }
    }

    private func ensureMigrated() throws {
        if !isMigrated.withLock({ $0 }) { try migrate() }
    }

    public func ping() -> Bool {
        (try? withConnection { db in try Self.execute(db, "SELECT 1").rows.first?.first }) == "1"
    }

    public func append(_ message: NewMessage) throws -> Int64 {
        try ensureMigrated()
        return try withConnection { db in
            let result = try Self.execute(
                db, "INSERT INTO messages (character, user_id, role, content, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                [message.character, message.userID, message.role.rawValue, message.content, String(message.createdAt)])
            return result.rows.first.flatMap { Int64($0[0]) } ?? 0
        }
    }

    public func recentMessages(character: String, userID: String, limit: Int) throws -> [StoredMessage] {
        try ensureMigrated()
        return try withConnection { db in
            try Self.execute(
                db, "SELECT id, role, content, created_at FROM messages WHERE character = $1 AND user_id = $2 ORDER BY id DESC LIMIT $3",
                [character, userID, String(limit)]
            ).rows.map { row in
                StoredMessage(
                    id: Int64(row[0]) ?? 0, role: StoredMessage.Role(rawValue: row[1]) ?? .user, content: row[2],
                    createdAt: Double(row[3]) ?? 0)
            }
        }
    }

    public func completeExchange(_ reply: NewMessage, trustDelta: Int, facts: [String]) throws -> Int {
        try ensureMigrated()
        return try transaction { db in
            _ = try Self.execute(
                db, "INSERT INTO messages (character, user_id, role, content, created_at) VALUES ($1, $2, $3, $4, $5)",
                [reply.character, reply.userID, reply.role.rawValue, reply.content, String(reply.createdAt)])
            let bounds = Conversation.trustRange
            let score = try Self.execute(
                db,
                """
                INSERT INTO trust (character, user_id, score) VALUES ($1, $2, GREATEST($4, LEAST($5, $3::int)))
                ON CONFLICT (character, user_id) DO UPDATE SET score = GREATEST($4, LEAST($5, trust.score + $3::int)) RETURNING score
                """,
                [reply.character, reply.userID, String(trustDelta), String(bounds.lowerBound), String(bounds.upperBound)]
            ).rows.first.flatMap { Int($0[0]) } ?? 0
            for fact in facts {
                _ = try Self.execute(
                    db, "INSERT INTO facts (character, user_id, fact, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    [reply.character, reply.userID, fact, String(reply.createdAt)])
            }
            return score
        }
    }

    public func userState(character: String, userID: String, recent: Int) throws -> UserState {
        try ensureMigrated()
        return try withConnection { db in
            let key = [character, userID]
            let trust = try Self.execute(db, "SELECT score FROM trust WHERE character = $1 AND user_id = $2", key).rows.first.flatMap { Int($0[0]) } ?? 0
            let count = try Self.execute(db, "SELECT count(*) FROM messages WHERE character = $1 AND user_id = $2", key).rows.first.flatMap { Int($0[0]) } ?? 0
            let messages = try Self.execute(
                db, "SELECT content FROM messages WHERE character = $1 AND user_id = $2 AND role = 'user' ORDER BY id DESC LIMIT $3",
                key + [String(recent)]
            ).rows.map { $0[0] }
            let facts = try Self.execute(
                db, "SELECT fact FROM facts WHERE character = $1 AND user_id = $2 ORDER BY id DESC LIMIT 50", key
            ).rows.map { $0[0] }
            return UserState(trust: trust, messageCount: count, recentUserMessages: messages, facts: facts)
        }
    }

    public func clear(character: String, userID: String, memories: Bool, trust: Bool) throws -> ClearedData {
        try ensureMigrated()
        return try transaction { db in
            let key = [character, userID]
            var cleared = ClearedData(memoriesCleared: 0, trustReset: false, knowledgeCleared: 0)
            if memories {
                cleared.memoriesCleared = try Self.execute(db, "DELETE FROM messages WHERE character = $1 AND user_id = $2", key).affected
                cleared.knowledgeCleared = try Self.execute(db, "DELETE FROM facts WHERE character = $1 AND user_id = $2", key).affected
            }
            if trust {
                _ = try Self.execute(db, "DELETE FROM trust WHERE character = $1 AND user_id = $2", key)
                cleared.trustReset = true
            }
            return cleared
        }
    }

    // MARK: - Copying (migrate-store)

    /// How many rows of each kind the database holds for a character.
    func messageCount(character: String) throws -> Int {
        try withConnection { db in
            try Self.execute(db, "SELECT count(*) FROM messages WHERE character = $1", [character]).rows.first.flatMap { Int($0[0]) } ?? 0
        }
    }

    /// Inserts rows read elsewhere, in one transaction.
    func importRows(messages: [(character: String, userID: String, role: String, content: String, createdAt: Double)],
                    trust: [(character: String, userID: String, score: Int)],
                    facts: [(character: String, userID: String, fact: String, createdAt: Double)]) throws {
        try transaction { db in
            for row in messages {
                _ = try Self.execute(
                    db, "INSERT INTO messages (character, user_id, role, content, created_at) VALUES ($1, $2, $3, $4, $5)",
                    [row.character, row.userID, row.role, row.content, String(row.createdAt)])
            }
            for row in trust {
                _ = try Self.execute(
                    db,
                    "INSERT INTO trust (character, user_id, score) VALUES ($1, $2, $3) ON CONFLICT (character, user_id) DO UPDATE SET score = excluded.score",
                    [row.character, row.userID, String(row.score)])
            }
            for row in facts {
                _ = try Self.execute(
                    db, "INSERT INTO facts (character, user_id, fact, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    [row.character, row.userID, row.fact, String(row.createdAt)])
            }
        }
    }

    // MARK: - libpq

    struct QueryResult {
        var rows: [[String]]
        var affected: Int
    }

    private func connect() throws -> Connection {
        try WorkerLibraries.load(.postgres)
        guard let raw = wl_PQconnectdb(url) else { throw StoreError("postgres: out of memory") }
        guard wl_PQstatus(raw) == WL_CONNECTION_OK else {
            let message = String(cString: wl_PQerrorMessage(raw)).trimmingCharacters(in: .whitespacesAndNewlines)
            wl_PQfinish(raw)
            throw StoreError("postgres \(Self.redacted(url)): \(message)")
        }
        return Connection(raw: raw)
    }

    /// Runs `body` on a pooled connection; a connection that broke is not put back.
    private func withConnection<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        let connection = try idle.withLock { $0.popLast() } ?? connect()
        do {
            let result = try body(connection.raw)
            release(connection)
            return result
        } catch {
            release(connection)
            throw error
        }
    }

    private func release(_ connection: Connection) {
        let healthy = wl_PQstatus(connection.raw) == WL_CONNECTION_OK && wl_PQtransactionStatus(connection.raw) == WL_PQTRANS_IDLE
        let kept = healthy && idle.withLock { connections in
            guard connections.count < maxIdle else { return false }
            connections.append(connection)
            return true
        }
        if !kept { wl_PQfinish(connection.raw) }
    }

    private func transaction<T>(_ body: (OpaquePointer) throws -> T) throws -> T {
        try withConnection { db in
            _ = try Self.execute(db, "BEGIN")
            do {
                let result = try body(db)
                _ = try Self.execute(db, "COMMIT")
                return result
            } catch {
                _ = try? Self.execute(db, "ROLLBACK")
                throw error
            }
        }
    }

    /// One parameterised statement; parameters go as text, never into the SQL.
    static func execute(_ db: OpaquePointer, _ sql: String, _ parameters: [String] = []) throws -> QueryResult {
        let cStrings = parameters.map { strdup($0) }
        defer { for pointer in cStrings { free(pointer) } }
        var values = cStrings.map { UnsafePointer<CChar>($0) }
        guard let result = wl_PQexecParams(db, sql, Int32(parameters.count), nil, &values, nil, nil, 0) else {
            throw StoreError("postgres: \(String(cString: wl_PQerrorMessage(db)))")
        }
        defer { wl_PQclear(result) }
        let status = wl_PQresultStatus(result)
        guard status == WL_PGRES_COMMAND_OK || status == WL_PGRES_TUPLES_OK else {
            throw StoreError("postgres: \(String(cString: wl_PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        var rows: [[String]] = []
        for row in 0..<wl_PQntuples(result) {
            rows.append((0..<wl_PQnfields(result)).map { String(cString: wl_PQgetvalue(result, row, $0)) })
        }
        return QueryResult(rows: rows, affected: Int(String(cString: wl_PQcmdTuples(result))) ?? 0)
    }
}
