import WhisperChat

/// Where a character's conversations live: SQLite (one file per character, the default) or
/// PostgreSQL (one database for all, rows keyed by character). Every method is safe to call
/// from any thread; every write is durable when it returns.
public protocol ConversationStore: Sendable {
    /// `sqlite` or `postgres`.
    var kind: String { get }
    /// Applies the schema migrations not applied yet; safe when several processes run it.
    func migrate() throws
    /// A round trip to the store.
    func ping() -> Bool
    /// Stores one message; returns its id.
    func append(_ message: NewMessage) throws -> Int64
    /// The newest `limit` messages of a conversation (any order).
    func recentMessages(character: String, userID: String, limit: Int) throws -> [StoredMessage]
    /// Stores a user's message (durably) and returns the newest `limit` messages of its
    /// conversation from before it (any order): what a chat needs before asking the LLM.
    func appendAfterReading(_ message: NewMessage, recent limit: Int) throws -> [StoredMessage]
    /// The reply to a user message, the trust it earns and the facts the user gave, in one
    /// transaction. Returns the new trust score.
    func completeExchange(_ reply: NewMessage, trustDelta: Int, facts: [String]) throws -> Int
    /// The operations in as few transactions as the store can (one, unless one fails), in
    /// order, each seeing the ones before it; every result is durable when this returns.
    func perform(_ batch: [StoreOperation]) -> [Result<StoreOutcome, any Error>]
    /// Whether `performCommitted` leaves its results to be made durable by `makeDurable`.
    var defersDurability: Bool { get }
    /// `perform`, except that the results may not be on disk yet: they are once a call of
    /// `makeDurable` that began after this returned has returned. Until then nothing may be
    /// acknowledged. (Committing the next batch while the last one syncs is what keeps one
    /// store thread busy instead of waiting for the disk.)
    func performCommitted(_ batch: [StoreOperation]) -> [Result<StoreOutcome, any Error>]
    func makeDurable() throws
    func userState(character: String, userID: String, recent: Int) throws -> UserState
    func clear(character: String, userID: String, memories: Bool, trust: Bool) throws -> ClearedData
}

extension ConversationStore {
    /// A read, then a write.
    public func appendAfterReading(_ message: NewMessage, recent limit: Int) throws -> [StoredMessage] {
        let recent = try recentMessages(character: message.character, userID: message.userID, limit: limit)
        _ = try append(message)
        return recent
    }
}

/// The writes of a chat, batched by `StoreQueue`.
public enum StoreOperation: Sendable {
    /// The user's message stored, and the newest `recent` messages from before it read.
    case beginExchange(NewMessage, recent: Int)
    /// The reply, the trust it earns and the facts the user gave.
    case completeExchange(NewMessage, trustDelta: Int, facts: [String])
}

public enum StoreOutcome: Sendable {
    /// Of `beginExchange`: the history before the message (any order).
    case history([StoredMessage])
    /// Of `completeExchange`: the new trust score.
    case trust(Int)
}

extension StoreOutcome {
    /// The history of a `beginExchange` (empty for another outcome).
    public var history: [StoredMessage] {
        if case .history(let messages) = self { return messages }
        return []
    }

    /// The trust score of a `completeExchange` (0 for another outcome).
    public var trust: Int {
        if case .trust(let score) = self { return score }
        return 0
    }
}

extension ConversationStore {
    public var defersDurability: Bool { false }
    public func performCommitted(_ batch: [StoreOperation]) -> [Result<StoreOutcome, any Error>] { perform(batch) }
    public func makeDurable() throws {}

    /// One operation on its own.
    func performOne(_ operation: StoreOperation) -> Result<StoreOutcome, any Error> {
        Result {
            switch operation {
            case .beginExchange(let message, let recent): .history(try appendAfterReading(message, recent: recent))
            case .completeExchange(let reply, let trustDelta, let facts):
                .trust(try completeExchange(reply, trustDelta: trustDelta, facts: facts))
            }
        }
    }
}

public struct NewMessage: Sendable {
    public var character: String
    public var userID: String
    public var role: StoredMessage.Role
    public var content: String
    /// Seconds since 1970.
    public var createdAt: Double

    public init(character: String, userID: String, role: StoredMessage.Role, content: String, createdAt: Double) {
        self.character = character
        self.userID = userID
        self.role = role
        self.content = content
        self.createdAt = createdAt
    }
}

public struct UserState: Sendable, Equatable {
    public var trust: Int
    public var messageCount: Int
    /// Newest first.
    public var recentUserMessages: [String]
    public var facts: [String]
}

public struct ClearedData: Sendable, Equatable {
    public var memoriesCleared: Int
    public var trustReset: Bool
    public var knowledgeCleared: Int
}

public struct StoreError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) { self.description = description }
}

/// The schema, as numbered steps; a store records which ones it applied.
enum StoreSchema {
    struct Migration {
        var version: Int
        var sqlite: [String]
        var postgres: [String]
    }

    static let migrations: [Migration] = [
        Migration(
            version: 1,
            sqlite: [
                """
                CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, character TEXT NOT NULL, user_id TEXT NOT NULL,
                  role TEXT NOT NULL CHECK (role IN ('user', 'assistant')), content TEXT NOT NULL, created_at REAL NOT NULL)
                """,
                "CREATE INDEX messages_by_conversation ON messages (character, user_id, id)",
                """
                CREATE TABLE trust (character TEXT NOT NULL, user_id TEXT NOT NULL, score INTEGER NOT NULL DEFAULT 0,
                  PRIMARY KEY (character, user_id))
                """,
                """
                CREATE TABLE facts (id INTEGER PRIMARY KEY AUTOINCREMENT, character TEXT NOT NULL, user_id TEXT NOT NULL,
                  fact TEXT NOT NULL, created_at REAL NOT NULL, UNIQUE (character, user_id, fact))
                """,
            ],
            postgres: [
                """
                CREATE TABLE messages (id BIGSERIAL PRIMARY KEY, character TEXT NOT NULL, user_id TEXT NOT NULL,
                  role TEXT NOT NULL CHECK (role IN ('user', 'assistant')), content TEXT NOT NULL,
                  created_at DOUBLE PRECISION NOT NULL)
                """,
                "CREATE INDEX messages_by_conversation ON messages (character, user_id, id)",
                """
                CREATE TABLE trust (character TEXT NOT NULL, user_id TEXT NOT NULL, score INTEGER NOT NULL DEFAULT 0,
                  PRIMARY KEY (character, user_id))
                """,
                """
                CREATE TABLE facts (id BIGSERIAL PRIMARY KEY, character TEXT NOT NULL, user_id TEXT NOT NULL,
                  fact TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, UNIQUE (character, user_id, fact))
                """,
            ])
    ]
}
