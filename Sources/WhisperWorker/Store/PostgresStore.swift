import CWorkerLibs
import Foundation
import WhisperChat
import Synchronization
import WhisperConcurrency

/// Conversations in PostgreSQL through libpq: one database for every character (rows keyed
/// by character), parameterised statements only, a small pool of connections made on demand.
/// A chat costs two round trips — store the user's message and read the history before it, then
/// store the reply with its trust and facts — each one statement prepared once per connection.
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

    /// One libpq connection and the statements prepared on it, used by one thread at a time
    /// (taken from the pool and put back).
    private final class Connection: @unchecked Sendable {
        // @unchecked: a connection moves between threads only through the pool's lock and is
        // used by one thread at a time, which is what libpq requires and what keeps `prepared`
        // unshared.
        let raw: OpaquePointer
        /// SQL → the name it was prepared under on this connection.
        var prepared: [String: String] = [:]
        /// Left in a state it cannot be used in again.
        var isBroken = false

        init(raw: OpaquePointer) { self.raw = raw }

        /// `sql` as a prepared statement: parsed and planned by the server once per connection
        /// instead of at every call.
        func execute(_ sql: String, _ parameters: [String] = []) throws -> QueryResult {
            let name = try preparedName(sql, parameterCount: parameters.count)
            return try PostgresStore.withCStrings(parameters) { values in
                try PostgresStore.rows(of: wl_PQexecPrepared(raw, name, Int32(parameters.count), values, nil, nil, 0), on: raw)
            }
        }

        /// The name `sql` is prepared under on this connection, preparing it the first time.
        func preparedName(_ sql: String, parameterCount: Int) throws -> String {
            if let known = prepared[sql] { return known }
            let name = "whisperd_\(prepared.count)"
            guard let result = wl_PQprepare(raw, name, sql, Int32(parameterCount), nil) else {
                throw StoreError("postgres: \(String(cString: wl_PQerrorMessage(raw)))")
            }
            defer { wl_PQclear(result) }
            try PostgresStore.check(result)
            prepared[sql] = name
            return name
        }

        /// `BEGIN`, the statements, `COMMIT` sent at once (libpq's pipeline mode), the results
        /// read after: one round trip for the whole batch instead of one per statement. Every
        /// result is a `.failure` when the transaction did not commit (it is then rolled back);
        /// a thrown error when the connection itself failed.
        func pipelinedTransaction(_ statements: [(sql: String, parameters: [String])]) throws -> [Result<QueryResult, StoreError>] {
            let names = try statements.map { try preparedName($0.sql, parameterCount: $0.parameters.count) }
            guard wl_PQenterPipelineMode(raw) == 1 else { throw StoreError("postgres: \(String(cString: wl_PQerrorMessage(raw)))") }
            do {
                return try runPipeline(names, statements)
            } catch {
                // Maybe still in pipeline mode, with results unread: never reused.
                isBroken = true
                throw error
            }
        }

        private func runPipeline(_ names: [String], _ statements: [(sql: String, parameters: [String])]) throws -> [Result<QueryResult, StoreError>] {
            var sentAll = wl_PQsendQueryParams(raw, "BEGIN", 0, nil) == 1
            for (name, statement) in zip(names, statements) where sentAll {
                sentAll = PostgresStore.withCStrings(statement.parameters) { values in
                    wl_PQsendQueryPrepared(raw, name, Int32(statement.parameters.count), values) == 1
                }
            }
            sentAll = sentAll && wl_PQsendQueryParams(raw, "COMMIT", 0, nil) == 1 && wl_PQpipelineSync(raw) == 1
            guard sentAll else { throw StoreError("postgres: \(String(cString: wl_PQerrorMessage(raw)))") }
            var results: [Result<QueryResult, StoreError>] = []
            for _ in 0..<(statements.count + 2) {
                guard let result = wl_PQgetResult(raw) else { throw StoreError("postgres: \(String(cString: wl_PQerrorMessage(raw)))") }
                results.append(Result { try PostgresStore.rows(of: result, on: raw) }.mapError { $0 as? StoreError ?? StoreError("\($0)") })
                // Each statement's results end with a null one.
                while let extra = wl_PQgetResult(raw) { wl_PQclear(extra) }
            }
            guard let sync = wl_PQgetResult(raw) else { throw StoreError("postgres: \(String(cString: wl_PQerrorMessage(raw)))") }
            let synced = wl_PQresultStatus(sync) == WL_PGRES_PIPELINE_SYNC
            wl_PQclear(sync)
            guard synced, wl_PQexitPipelineMode(raw) == 1 else { throw StoreError("postgres: the pipeline did not end") }
            if wl_PQtransactionStatus(raw) != WL_PQTRANS_IDLE { _ = try? PostgresStore.execute(raw, "ROLLBACK") }
            let commit = results.removeLast()
            results.removeFirst()
            // Not committed (a statement failed, or COMMIT itself): nothing of it stands.
            if case .failure(let error) = commit { return results.map { _ in .failure(error) } }
            return results
        }
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
            _ = try Self.execute(db.raw, "SELECT pg_advisory_xact_lock(7305727356)")
            _ = try Self.execute(db.raw, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)")
            let applied = Set(try Self.execute(db.raw, "SELECT version FROM schema_migrations").rows.compactMap { Int($0[0]) })
            for migration in StoreSchema.migrations where !applied.contains(migration.version) {
                for statement in migration.postgres { _ = try Self.execute(db.raw, statement) }
                _ = try Self.execute(
                    db.raw, "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
                    [String(migration.version), String(Date().timeIntervalSince1970)])
            }
        }
        isMigrated.withLock { $0 = true }
    }

    private func ensureMigrated() throws {
        if !isMigrated.withLock({ $0 }) { try migrate() }
    }

    public func ping() -> Bool {
        (try? withConnection { db in try db.execute("SELECT 1").rows.first?.first }) == "1"
    }

    public func append(_ message: NewMessage) throws -> Int64 {
        try ensureMigrated()
        return try withConnection { db in
            let result = try db.execute(
                "INSERT INTO messages (character, user_id, role, content, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                [message.character, message.userID, message.role.rawValue, message.content, String(message.createdAt)])
            return result.rows.first.flatMap { Int64($0[0]) } ?? 0
        }
    }

    public func recentMessages(character: String, userID: String, limit: Int) throws -> [StoredMessage] {
        try ensureMigrated()
        return try withConnection { db in
            try db.execute(
                "SELECT id, role, content, created_at FROM messages WHERE character = $1 AND user_id = $2 ORDER BY id DESC LIMIT $3",
                [character, userID, String(limit)]
            ).rows.map(Self.storedMessage)
        }
    }

    /// A batch in one transaction on one connection, pipelined (one round trip, one commit). If
    /// a statement fails, the transaction is rolled back and each operation redone alone, so it
    /// fails alone; if the connection fails, nothing is known to be stored and all fail.
    public func perform(_ batch: [StoreOperation]) -> [Result<StoreOutcome, any Error>] {
        if batch.count == 1 { return [performOne(batch[0])] }
        do { try ensureMigrated() } catch { return batch.map { _ in .failure(error) } }
        do {
            let results = try withConnection { db in try db.pipelinedTransaction(batch.map(Self.statement)) }
            if results.contains(where: { (try? $0.get()) == nil }) { return batch.map(performOne) }
            return zip(batch, results).map { operation, result in .success(Self.outcome(of: operation, try! result.get())) }
        } catch {
            return batch.map { _ in .failure(error) }
        }
    }

    /// One statement: the message stored, and the history as it was before it (a statement
    /// sees the rows as they were when it began, its own insert not included).
    public func appendAfterReading(_ message: NewMessage, recent limit: Int) throws -> [StoredMessage] {
        try performAlone(.beginExchange(message, recent: limit)).history
    }

    /// One statement, so one round trip and atomic on its own: the reply, the facts (an
    /// array parameter) and the trust score.
    public func completeExchange(_ reply: NewMessage, trustDelta: Int, facts: [String]) throws -> Int {
        try performAlone(.completeExchange(reply, trustDelta: trustDelta, facts: facts)).trust
    }

    private func performAlone(_ operation: StoreOperation) throws -> StoreOutcome {
        try ensureMigrated()
        let statement = Self.statement(operation)
        return Self.outcome(of: operation, try withConnection { db in try db.execute(statement.sql, statement.parameters) })
    }

    private static func statement(_ operation: StoreOperation) -> (sql: String, parameters: [String]) {
        switch operation {
        case .beginExchange(let message, let limit):
            return (
                """
                WITH stored AS (
                  INSERT INTO messages (character, user_id, role, content, created_at) VALUES ($1, $2, $3, $4, $5)
                )
                SELECT id, role, content, created_at FROM messages WHERE character = $1 AND user_id = $2 ORDER BY id DESC LIMIT $6
                """,
                [message.character, message.userID, message.role.rawValue, message.content, String(message.createdAt), String(limit)]
            )
        case .completeExchange(let reply, let trustDelta, let facts):
            let bounds = Conversation.trustRange
            return (
                """
                WITH reply AS (
                  INSERT INTO messages (character, user_id, role, content, created_at) VALUES ($1, $2, $3, $4, $5)
                ), learned AS (
                  INSERT INTO facts (character, user_id, fact, created_at)
                  SELECT $1, $2, fact, $5 FROM unnest($6::text[]) WITH ORDINALITY AS given(fact, position) ORDER BY position
                  ON CONFLICT DO NOTHING
                )
                INSERT INTO trust (character, user_id, score) VALUES ($1, $2, GREATEST($8, LEAST($9, $7::int)))
                ON CONFLICT (character, user_id) DO UPDATE SET score = GREATEST($8, LEAST($9, trust.score + $7::int)) RETURNING score
                """,
                [reply.character, reply.userID, reply.role.rawValue, reply.content, String(reply.createdAt), textArray(facts),
                 String(trustDelta), String(bounds.lowerBound), String(bounds.upperBound)]
            )
        }
    }

    private static func outcome(of operation: StoreOperation, _ result: QueryResult) -> StoreOutcome {
        switch operation {
        case .beginExchange: .history(result.rows.map(storedMessage))
        case .completeExchange: .trust(result.rows.first.flatMap { Int($0[0]) } ?? 0)
        }
    }

    private static func storedMessage(_ row: [String]) -> StoredMessage {
        StoredMessage(id: Int64(row[0]) ?? 0, role: StoredMessage.Role(rawValue: row[1]) ?? .user, content: row[2], createdAt: Double(row[3]) ?? 0)
    }

    /// A `text[]` literal: every element quoted, `"` and `\` escaped.
    static func textArray(_ elements: [String]) -> String {
        var literal = "{"
        for (index, element) in elements.enumerated() {
            if index > 0 { literal += "," }
            literal += "\""
            for character in element.unicodeScalars {
                if character == "\"" || character == "\\" { literal += "\\" }
                literal.unicodeScalars.append(character)
            }
            literal += "\""
        }
        return literal + "}"
    }

    public func userState(character: String, userID: String, recent: Int) throws -> UserState {
        try ensureMigrated()
        return try withConnection { db in
            let key = [character, userID]
            let trust = try db.execute("SELECT score FROM trust WHERE character = $1 AND user_id = $2", key).rows.first.flatMap { Int($0[0]) } ?? 0
            let count = try db.execute("SELECT count(*) FROM messages WHERE character = $1 AND user_id = $2", key).rows.first.flatMap { Int($0[0]) } ?? 0
            let messages = try db.execute(
                "SELECT content FROM messages WHERE character = $1 AND user_id = $2 AND role = 'user' ORDER BY id DESC LIMIT $3",
                key + [String(recent)]
            ).rows.map { $0[0] }
            let facts = try db.execute(
                "SELECT fact FROM facts WHERE character = $1 AND user_id = $2 ORDER BY id DESC LIMIT 50", key
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
                cleared.memoriesCleared = try Self.execute(db.raw, "DELETE FROM messages WHERE character = $1 AND user_id = $2", key).affected
                cleared.knowledgeCleared = try Self.execute(db.raw, "DELETE FROM facts WHERE character = $1 AND user_id = $2", key).affected
            }
            if trust {
                _ = try Self.execute(db.raw, "DELETE FROM trust WHERE character = $1 AND user_id = $2", key)
                cleared.trustReset = true
            }
            return cleared
        }
    }

    // MARK: - Copying (migrate-store)

    /// How many rows of each kind the database holds for a character.
    func messageCount(character: String) throws -> Int {
        try withConnection { db in
            try Self.execute(db.raw, "SELECT count(*) FROM messages WHERE character = $1", [character]).rows.first.flatMap { Int($0[0]) } ?? 0
        }
    }

    /// Inserts rows read elsewhere, in one transaction.
    func importRows(messages: [(character: String, userID: String, role: String, content: String, createdAt: Double)],
                    trust: [(character: String, userID: String, score: Int)],
                    facts: [(character: String, userID: String, fact: String, createdAt: Double)]) throws {
        try transaction { db in
            for row in messages {
                _ = try Self.execute(
                    db.raw, "INSERT INTO messages (character, user_id, role, content, created_at) VALUES ($1, $2, $3, $4, $5)",
                    [row.character, row.userID, row.role, row.content, String(row.createdAt)])
            }
            for row in trust {
                _ = try Self.execute(
                    db.raw,
                    "INSERT INTO trust (character, user_id, score) VALUES ($1, $2, $3) ON CONFLICT (character, user_id) DO UPDATE SET score = excluded.score",
                    [row.character, row.userID, String(row.score)])
            }
            for row in facts {
                _ = try Self.execute(
                    db.raw, "INSERT INTO facts (character, user_id, fact, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
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
    private func withConnection<T>(_ body: (Connection) throws -> T) throws -> T {
        let connection = try idle.withLock { $0.popLast() } ?? connect()
        do {
            let result = try body(connection)
            release(connection)
            return result
        } catch {
            release(connection)
            throw error
        }
    }

    private func release(_ connection: Connection) {
        let healthy = !connection.isBroken && wl_PQstatus(connection.raw) == WL_CONNECTION_OK
            && wl_PQtransactionStatus(connection.raw) == WL_PQTRANS_IDLE
        let kept = healthy && idle.withLock { connections in
            guard connections.count < maxIdle else { return false }
            connections.append(connection)
            return true
        }
        if !kept { wl_PQfinish(connection.raw) }
    }

    private func transaction<T>(_ body: (Connection) throws -> T) throws -> T {
        try withConnection { db in
            _ = try Self.execute(db.raw, "BEGIN")
            do {
                let result = try body(db)
                _ = try Self.execute(db.raw, "COMMIT")
                return result
            } catch {
                _ = try? Self.execute(db.raw, "ROLLBACK")
                throw error
            }
        }
    }

    /// One parameterised statement, not kept prepared (migrations, transaction control, rare
    /// operations); parameters go as text, never into the SQL.
    static func execute(_ db: OpaquePointer, _ sql: String, _ parameters: [String] = []) throws -> QueryResult {
        try withCStrings(parameters) { values in
            try rows(of: wl_PQexecParams(db, sql, Int32(parameters.count), nil, values, nil, nil, 0), on: db)
        }
    }

    fileprivate static func withCStrings<T>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) throws -> T) rethrows -> T {
        let copies = strings.map { strdup($0) }
        defer { for pointer in copies { free(pointer) } }
        let values = copies.map { UnsafePointer<CChar>($0) }
        return try values.withUnsafeBufferPointer { try body($0.baseAddress ?? UnsafePointer(bitPattern: 1)!) }
    }

    fileprivate static func check(_ result: OpaquePointer) throws {
        let status = wl_PQresultStatus(result)
        guard status == WL_PGRES_COMMAND_OK || status == WL_PGRES_TUPLES_OK else {
            throw StoreError("postgres: \(String(cString: wl_PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
    }

    /// The rows of a statement's result (cleared here), or its error.
    fileprivate static func rows(of result: OpaquePointer?, on db: OpaquePointer) throws -> QueryResult {
        guard let result else { throw StoreError("postgres: \(String(cString: wl_PQerrorMessage(db)))") }
        defer { wl_PQclear(result) }
        try check(result)
        var rows: [[String]] = []
        for row in 0..<wl_PQntuples(result) {
            rows.append((0..<wl_PQnfields(result)).map { String(cString: wl_PQgetvalue(result, row, $0)) })
        }
        return QueryResult(rows: rows, affected: Int(String(cString: wl_PQcmdTuples(result))) ?? 0)
    }
}
