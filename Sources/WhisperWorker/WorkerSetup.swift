import Foundation
import Glibc
import WhisperChat
import WhisperCore
import WhisperSystem
import WhisperFiles

extension Worker {
    /// What a character's chat path is made of, from its name and environment: its files, its
    /// store, its LLM client and its admission rules. The worker's start-up, and that of the
    /// bench-only Hummingbird server (``ChatRoute``), so the two run the same chat path.
    struct Setup {
        let name: String
        let environment: [String: String]

        /// The character folder: `$WHISPERD_CHARACTERS_DIR/NAME`, else `./characters/NAME`.
        var characterDirectory: String {
            let base = environment["WHISPERD_CHARACTERS_DIR"] ?? FileManager.default.currentDirectoryPath + "/characters"
            return base + "/" + name
        }

        /// `WHISPERD_SQLITE_PATH`, else `$STATE_DIRECTORY/memory.sqlite3` (the character's own
        /// directory, given by whisperd), else `<state dir>/memory/NAME.sqlite3`.
        var sqlitePath: String {
            if let explicit = environment["WHISPERD_SQLITE_PATH"], !explicit.isEmpty { return explicit }
            if let own = environment["STATE_DIRECTORY"], !own.isEmpty { return own + "/memory.sqlite3" }
            let state = environment["WHISPERD_STATE_DIR"] ?? FileManager.default.currentDirectoryPath + "/.whisperd-state"
            return state + "/memory/" + name + ".sqlite3"
        }

        /// Where the token budget is kept: `$STATE_DIRECTORY/llm-budget` (the character's own
        /// directory, when whisperd gives one), else `<state dir>/budget/NAME`.
        var budgetPath: String {
            if let own = environment["STATE_DIRECTORY"], !own.isEmpty { return own + "/llm-budget" }
            let state = environment["WHISPERD_STATE_DIR"] ?? FileManager.default.currentDirectoryPath + "/.whisperd-state"
            return state + "/budget/" + name
        }

        /// Loads the libraries (up front, so a missing one is a clear exit, not a failed first
        /// chat), the character, the store, the LLM client and the admission rules.
        func makeService(metrics: WorkerMetrics) throws -> (ChatService, storeProblem: String?) {
            let storeLibrary: WorkerLibraries.Set = StoreCommands.postgresURL(environment) == nil ? .sqlite : .postgres
            do { try WorkerLibraries.load([.curl, storeLibrary]) } catch { throw Failure(description: "\(error)") }
            let profile = try loadProfile()
            let (store, storeProblem) = try openStore()
            let llm: Result<LLMClient, LLMNotConfigured>
            switch LLMConfiguration.from(environment) {
            case .success(let configuration): llm = .success(try LLMClient(configuration: configuration))
            case .failure(let problem): llm = .failure(problem)
            }
            let admission: AdmissionSettings
            switch AdmissionSettings.from(environment) {
            case .success(let valid): admission = valid
            case .failure(let problem): throw Failure(description: problem.description)
            }
            let name = name
            let service = ChatService(
                profile: profile, store: store, llm: llm, metrics: metrics,
                admission: ChatAdmission(
                    settings: admission, budgetPath: budgetPath,
                    log: Worker.log(name)))
            return (service, storeProblem)
        }

        private func loadProfile() throws -> CharacterProfile {
            var files: [String: String] = [:]
            for file in ["character.md"] + CharacterProfile.optionalFiles {
                let path = characterDirectory + "/" + file
                guard let data = readFileContents(path) else {
                    if file == "character.md" {
                        throw Failure(description: "cannot read \(path): \(String(cString: strerror(errno))) (a character needs character.md)")
                    }
                    continue
                }
                guard let text = String(data: data, encoding: .utf8) else { throw Failure(description: "\(path) is not UTF-8") }
                files[file] = text
            }
            switch CharacterProfile.parse(name: name, files: files) {
            case .success(let profile): return profile
            case .failure(let error): throw Failure(description: "\(characterDirectory)/\(error)")
            }
        }

        /// PostgreSQL when `POSTGRES_URL`/`DATABASE_URL` is set (if it is down, the worker starts
        /// anyway, says `store:down`, answers 503 and recovers when it is back), else SQLite.
        private func openStore() throws -> (any ConversationStore, problem: String?) {
            if let url = StoreCommands.postgresURL(environment) {
                let store = PostgresStore(url: url)
                do {
                    try store.migrate()
                    return (store, nil)
                } catch {
                    return (store, "\(error)")
                }
            }
            let path = sqlitePath
            do {
                try FileManager.default.createDirectory(
                    atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o700])
                let store = try SQLiteStore(path: path)
                try store.migrate()
                return (store, nil)
            } catch {
                throw Failure(description: "conversation store \(path): \(error)")
            }
        }
    }
}
