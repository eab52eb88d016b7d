import ArgumentParser
import Foundation
import WhisperAPI
import Glibc

/// `whisperctl backup` / `restore`: the running whisperd says where its data is; the archive
/// work is done by the whisperd binary beside whisperctl (it holds the store code).
enum WhisperdBinary {
    static var path: String {
        let selfPath = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return (selfPath as NSString).deletingLastPathComponent + "/whisperd"
    }

    /// Runs whisperd with `arguments` (posix_spawn, not Foundation's Process, which leaks under
    /// LeakSanitizer); its exit code, and its stdout when `capture`, else passed through.
    @discardableResult
    static func run(_ arguments: [String], capture: Bool = false) throws -> (code: Int32, output: String) {
        var pipe: [Int32] = [-1, -1]
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if capture {
            guard Glibc.pipe(&pipe) == 0 else { throw OperationFailed(description: "pipe: \(String(cString: strerror(errno)))") }
            posix_spawn_file_actions_adddup2(&actions, pipe[1], 1)
            posix_spawn_file_actions_addclose(&actions, pipe[0])
        }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, path, &actions, nil, argv, environ)
        if capture { close(pipe[1]) }
        guard status == 0 else {
            if capture { close(pipe[0]) }
            throw OperationFailed(description: "cannot run \(path): \(String(cString: strerror(status)))")
        }
        var output: [UInt8] = []
        if capture {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(pipe[0], &buffer, buffer.count)
                if count > 0 { output += buffer[0..<count] } else if count < 0, errno == EINTR { continue } else { break }
            }
            close(pipe[0])
        }
        var wait: Int32 = 0
        while waitpid(pid, &wait, 0) < 0, errno == EINTR {}
        let code = (wait & 0x7f) == 0 ? (wait >> 8) & 0xff : 128 + (wait & 0x7f)
        return (code, String(decoding: output, as: UTF8.self))
    }
}

extension Paths {
    init(_ client: ControlClient) throws {
        let response = try client.get("/v1/paths")
        guard response.status == 200 else {
            throw OperationFailed(description: "this whisperd does not tell its paths (GET /v1/paths: \(response.status)); is it older than whisperctl?")
        }
        self = try response.decode(Paths.self)
    }
}

extension Whisperctl {
    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write one archive of characters' data (a consistent snapshot of each store, while they run), whisperd's state and the roster.",
            discussion: "The archive (tar) starts with manifest.json: every file, its character, size and SHA-256, which `restore` checks. Env files only with --include-secrets (the archive is then 0600). PostgreSQL stores are not archived: the manifest says so; use pg_dump.")
        @OptionGroup var connection: Connection
        @Option(help: "Directory to write the archive into.") var to: String
        @Flag(help: "Every character.") var all = false
        @Flag(help: "Also the env files next to the roster.") var includeSecrets = false
        @Argument(help: "Characters to back up.") var names: [String] = []

        func validate() throws {
            if all == !names.isEmpty { throw ValidationError("name characters, or --all") }
        }

        func run() throws {
            let paths = try Paths(connection.client)
            let chosen = all ? paths.characters : names
            if let unknown = chosen.first(where: { !paths.characters.contains($0) }) {
                throw OperationFailed(description: "no character named \(unknown)")
            }
            var arguments = [
                "backup", "--state-path", paths.stateDir, "--roster-path", paths.roster, "--characters-path", paths.charactersDir, "--to", to,
            ]
            if includeSecrets { arguments.append("--include-secrets") }
            if paths.storesOnPostgres { arguments.append("--postgres") }
            let code = try WhisperdBinary.run(arguments + chosen).code
            if code != 0 { throw OperationFailed(description: "backup failed (whisperd backup exited \(code))") }
            if paths.storesOnPostgres {
                FileHandle.standardError.write(Data("whisperctl: the conversation stores are in PostgreSQL: not in this archive; back them up with pg_dump\n".utf8))
            }
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put characters' data back from an archive: verified whole first (a damaged one changes nothing), then each character stopped, restored, started again if it was running.")
        @OptionGroup var connection: Connection
        @Argument(help: "The archive (from `whisperctl backup`).") var archive: String
        @Argument(help: "Characters to restore (default: every character in the archive).") var names: [String] = []

        func run() throws {
            let client = connection.client
            let paths = try Paths(client)
            let verified = try WhisperdBinary.run(["restore", "--verify-only", archive] + names).code
            if verified != 0 { throw OperationFailed(description: "\(archive) refused; nothing was changed") }
            let chosen = names.isEmpty ? try archiveCharacters() : names
            if let unknown = chosen.first(where: { !paths.characters.contains($0) }) {
                throw OperationFailed(description: "\(unknown) is not a character of this whisperd; nothing was changed")
            }
            // Wanted up before (running, or between restarts): wanted up after, whatever happens.
            var wantedUp: [String] = []
            for name in chosen where try client.character(name).desired == "up" { wantedUp.append(name) }
            var target = try Target.parse(["--all"])
            target.all = false
            target.names = chosen
            defer {
                if !wantedUp.isEmpty {
                    target.names = wantedUp
                    do { try Operation.run("start", target, client) } catch {
                        FileHandle.standardError.write(Data("whisperctl: starting \(wantedUp.joined(separator: ", ")) again: \(error)\n".utf8))
                    }
                }
            }
            try Operation.run("stop", target, client)
            let code = try WhisperdBinary.run(["restore", "--state-path", paths.stateDir, archive] + chosen).code
            if code != 0 { throw OperationFailed(description: "restore failed (whisperd restore exited \(code))") }
        }

        /// The characters listed in the verified archive's manifest.
        private func archiveCharacters() throws -> [String] {
            let listing = try WhisperdBinary.run(["restore", "--verify-only", archive], capture: true)
            guard listing.code == 0, let line = listing.output.split(separator: "\n").first(where: { $0.hasPrefix("characters: ") }) else {
                throw OperationFailed(description: "cannot list the characters of \(archive)")
            }
            return line.dropFirst("characters: ".count).split(separator: " ").map(String.init)
        }
    }
}
