import Foundation

/// `whisperd migrate` and `whisperd migrate-store`: the store's schema and data, from the
/// command line (the sample roster runs `migrate` as a job before the characters start).
public enum StoreCommands {
    /// The database every character shares, if one is configured (`POSTGRES_URL`, else
    /// `DATABASE_URL`).
    public static func postgresURL(_ environment: [String: String]) -> String? {
        for key in ["POSTGRES_URL", "DATABASE_URL"] {
            if let url = environment[key], !url.isEmpty { return url }
        }
        return nil
    }

    /// Applies the schema migrations to the configured store: PostgreSQL when a URL is set,
    /// else the given SQLite files, else every `<state dir>/memory/*.sqlite3`. Returns what
    /// it did, one line per store.
    public static func migrate(environment: [String: String], sqlitePaths: [String]) throws -> [String] {
        if let url = postgresURL(environment) {
            try PostgresStore(url: url).migrate()
            return ["migrated \(PostgresStore.redacted(url))"]
        }
        var paths = sqlitePaths
        if paths.isEmpty, let state = environment["WHISPERD_STATE_DIR"] {
            let directory = state + "/memory"
            paths = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
                .filter { $0.hasSuffix(".sqlite3") }.sorted().map { directory + "/" + $0 }
        }
        if paths.isEmpty { return ["nothing to migrate: no POSTGRES_URL/DATABASE_URL and no SQLite store yet (workers create theirs)"] }
        return try paths.map { path in
            try SQLiteStore(path: path).migrate()
            return "migrated \(path)"
        }
    }

    /// Copies one SQLite store into PostgreSQL (schema migrated first), in one transaction.
    /// Refuses when the database already holds messages of a character being copied, unless
    /// `append` (so running it twice does not double a history).
    public static func copy(sqlitePath: String, to url: String, append: Bool) throws -> String {
        guard FileManager.default.fileExists(atPath: sqlitePath) else { throw StoreError("\(sqlitePath): no such file") }
        let source = try SQLiteStore(path: sqlitePath)
        let rows = try source.exportAll()
        let target = PostgresStore(url: url)
        try target.migrate()
        let characters = Set(rows.messages.map(\.character) + rows.trust.map(\.character) + rows.facts.map(\.character)).sorted()
        if !append {
            for character in characters {
                let existing = try target.messageCount(character: character)
                if existing > 0 {
                    throw StoreError(
                        "\(PostgresStore.redacted(url)) already holds \(existing) messages of \(character); nothing copied (--append to add anyway)")
                }
            }
        }
        try target.importRows(messages: rows.messages, trust: rows.trust, facts: rows.facts)
        return "copied \(rows.messages.count) messages, \(rows.trust.count) trust scores and \(rows.facts.count) facts "
            + "of \(characters.joined(separator: ", ")) from \(sqlitePath) to \(PostgresStore.redacted(url))"
    }
}
