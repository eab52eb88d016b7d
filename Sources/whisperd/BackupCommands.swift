import ArgumentParser
import Foundation
import Glibc
import WhisperBackup
import WhisperConfig
import WhisperCore
import WhisperFiles
import WhisperSystem
import WhisperWorker

extension Whisperd {
    /// The archive's work, run by `whisperctl backup` (which asks the running whisperd for the
    /// paths and the characters): whisperd's binary holds the store code for the snapshots.
    struct BackupCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "backup",
            abstract: "Write one archive of characters' data, whisperd's state and the roster (use `whisperctl backup`).")
        // Not --state-dir / --roster: those are the daemon's own options, which the root command takes.
        // A job of the roster (a scheduled backup) gets the three from whisperd's environment.
        @Option(help: "whisperd's state directory (default: $WHISPERD_STATE_DIR, which whisperd gives its jobs).")
        var statePath: String?
        @Option(help: "The roster file (default: $WHISPERD_ROSTER).") var rosterPath: String?
        @Option(help: "The characters' files directory (default: $WHISPERD_CHARACTERS_DIR).") var charactersPath: String?
        @Option(help: "Directory the archive is written into.") var to: String
        @Flag(help: "Also the env files next to the roster (the archive is then mode 0600).") var includeSecrets = false
        @Flag(help: "The stores are in PostgreSQL (said in the manifest; not archived).") var postgres = false
        @Flag(help: "Every character of the roster (and whether their stores are in PostgreSQL, from it).") var all = false
        @Argument(help: "Characters.") var names: [String] = []

        func validate() throws {
            if all == !names.isEmpty { throw ValidationError("name characters, or give --all") }
        }

        func run() throws {
            let environment = ProcessInfo.processInfo.environment
            func path(_ given: String?, _ key: String, _ flag: String) throws -> String {
                guard let value = given ?? environment[key], !value.isEmpty else { throw ValidationError("\(flag) is needed (or $\(key))") }
                return value
            }
            let statePath = try path(statePath, "WHISPERD_STATE_DIR", "--state-path")
            let rosterPath = try path(rosterPath, "WHISPERD_ROSTER", "--roster-path")
            let charactersPath = try path(charactersPath, "WHISPERD_CHARACTERS_DIR", "--characters-path")
            var names = names
            var postgres = postgres
            if all {
                let profiles = try StateStore(directory: statePath).activeProfiles(flags: [])
                let loader = RosterLoader(selfExecutable: Whisperd.executablePath(), hostEnvironment: environment, profiles: profiles)
                switch loader.load(path: rosterPath) {
                case .failure(let error):
                    FileHandle.standardError.write(Data("whisperd backup: \(rosterPath): \(error)\n".utf8))
                    throw ExitCode(1)
                case .success(let loaded):
                    let characters = loaded.roster.services.filter { !$0.isJob }
                    names = characters.map(\.name.rawValue)
                    postgres = postgres || characters.contains { $0.launch.storesInPostgres }
                }
            }
            let request = BackupRequest(
                stateDirectory: statePath, rosterPath: rosterPath, charactersDirectory: charactersPath, characters: names,
                includeSecrets: includeSecrets, databaseURLConfigured: postgres)
            let now = Clock.iso8601(realtimeNanoseconds: Clock.realtimeNanoseconds())
            let bytes: [UInt8]
            do {
                bytes = try Backup.archive(request, now: now) { try StoreSnapshot.copy(sqlite: $0, to: $1) }
            } catch {
                FileHandle.standardError.write(Data("whisperd backup: \(error)\n".utf8))
                throw ExitCode(1)
            }
            // What a restore will check, checked before anyone can rely on the archive.
            do {
                let (manifest, _) = try Backup.verify(bytes)
                for skipped in manifest.skipped ?? [] { FileHandle.standardError.write(Data("whisperd backup: left out \(skipped)\n".utf8)) }
            } catch {
                FileHandle.standardError.write(Data("whisperd backup: the archive made does not verify: \(error)\n".utf8))
                throw ExitCode(1)
            }
            // A scheduled backup's first run makes its directory (private: archives hold conversations).
            if mkdir(to, 0o700) != 0, errno != EEXIST {
                FileHandle.standardError.write(Data("whisperd backup: cannot create \(to): \(String(cString: strerror(errno)))\n".utf8))
                throw ExitCode(1)
            }
            let stamp = now.filter { $0.isNumber }.prefix(14)
            let path = "\(to)/whisperd-backup-\(stamp).tar"
            // Written beside and renamed: a reader never sees half an archive.
            let temporary = path + ".partial"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, includeSecrets ? 0o600 : 0o640)
            guard fd >= 0 else {
                FileHandle.standardError.write(Data("whisperd backup: cannot create \(temporary): \(String(cString: strerror(errno)))\n".utf8))
                throw ExitCode(1)
            }
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            let synced = fsync(fd) == 0
            close(fd)
            guard written == bytes.count, synced, rename(temporary, path) == 0 else {
                unlink(temporary)
                FileHandle.standardError.write(Data("whisperd backup: cannot write \(path)\n".utf8))
                throw ExitCode(1)
            }
            print(path)
        }
    }

    struct RestoreCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "restore",
            abstract: "Verify an archive, or put characters' state back from it (use `whisperctl restore`, which stops and starts them).")
        @Option(help: "whisperd's state directory.") var statePath: String?
        @Flag(help: "Only verify the archive and list its characters.") var verifyOnly = false
        @Argument(help: "The archive.") var archive: String
        @Argument(help: "Characters to restore (default: every character in the archive).") var names: [String] = []

        func run() throws {
            func fail(_ message: String) throws -> Never {
                FileHandle.standardError.write(Data("whisperd restore: \(message)\n".utf8))
                throw ExitCode(1)
            }
            guard let data = readFileContents(archive) else { try fail("cannot read \(archive)") }
            let manifest: BackupManifest
            let contents: [String: [UInt8]]
            do { (manifest, contents) = try Backup.verify(Array(data)) } catch { try fail("\(archive): \(error)") }
            let chosen = names.isEmpty ? manifest.characters : names
            if let missing = chosen.first(where: { !manifest.characters.contains($0) }) {
                try fail("\(archive) holds no character named \(missing) (it holds \(manifest.characters.joined(separator: ", ")))")
            }
            if verifyOnly {
                print("ok: \(manifest.files.count) files, made \(manifest.createdAt); stores: \(manifest.stores)")
                print("characters: \(manifest.characters.joined(separator: " "))")
                return
            }
            guard let statePath else { try fail("--state-path is needed to restore") }
            for name in chosen {
                do {
                    let files = try Backup.restore(name, from: contents, stateDirectory: statePath)
                    print("\(name): restored \(files.joined(separator: ", "))")
                } catch { try fail("\(name): \(error)") }
            }
        }
    }
}
