import Foundation
import Glibc
import WhisperFiles

/// What an archive holds, checked entry by entry on restore.
public struct BackupManifest: Codable, Equatable, Sendable {
    public struct File: Codable, Equatable, Sendable {
        public var path: String
        /// The character it belongs to; `nil` for whisperd's own state, the roster and env files.
        public var character: String?
        public var size: Int
        public var sha256: String
    }

    public var format = 1
    public var createdAt: String
    public var includesSecrets: Bool
    /// How the conversation stores were saved: SQLite snapshots, or why not (PostgreSQL).
    public var stores: String
    public var characters: [String]
    public var files: [File]
}

/// `whisperctl backup`: one archive (ustar) with `manifest.json` first, then per character its
/// state directory (the SQLite store through a consistent online snapshot, never the live file)
/// and its character files, whisperd's state (intents, uid map, job revisions, profiles,
/// scale), the roster, and with `includeSecrets` the env files (the archive is then 0600).
public struct BackupRequest: Sendable {
    public var stateDirectory: String
    public var rosterPath: String
    public var charactersDirectory: String
    public var characters: [String]
    public var includeSecrets: Bool
    public var databaseURLConfigured: Bool

    public init(
        stateDirectory: String, rosterPath: String, charactersDirectory: String, characters: [String], includeSecrets: Bool,
        databaseURLConfigured: Bool
    ) {
        self.stateDirectory = stateDirectory
        self.rosterPath = rosterPath
        self.charactersDirectory = charactersDirectory
        self.characters = characters
        self.includeSecrets = includeSecrets
        self.databaseURLConfigured = databaseURLConfigured
    }
}

public struct BackupFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public enum Backup {
    /// whisperd's own state files kept in an archive.
    public static let daemonStateFiles = ["intents.json", "jobs.json", "dynamic-users.json", "profiles.json", "scale.json"]
    static let storeName = "memory.sqlite3"

    /// Builds the archive. `snapshot(source, destination)` copies a live SQLite store
    /// consistently (the worker's `VACUUM INTO`); `now` names the time in the manifest.
    public static func archive(
        _ request: BackupRequest, now: String, snapshot: (String, String) throws -> Void
    ) throws -> [UInt8] {
        var entries: [Tar.Entry] = []
        var files: [BackupManifest.File] = []
        func add(_ path: String, _ bytes: [UInt8], character: String?, mode: Int = 0o600) {
            entries.append(Tar.Entry(path: path, mode: mode, bytes: bytes))
            files.append(.init(path: path, character: character, size: bytes.count, sha256: SHA256.hex(bytes)))
        }
        let scratch = NSTemporaryDirectory() + "/whisperd-backup-\(getpid())"
        try? FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        for name in request.characters {
            let own = "\(request.stateDirectory)/\(name)"
            for file in regularFiles(in: own) where !file.hasSuffix("-wal") && !file.hasSuffix("-shm") && !file.hasSuffix(".tmp") {
                if file == storeName {
                    let copy = "\(scratch)/\(name).sqlite3"
                    try? FileManager.default.removeItem(atPath: copy)
                    try snapshot("\(own)/\(file)", copy)
                    guard let bytes = readFileContents(copy) else { throw BackupFailure("cannot read the snapshot of \(name)'s store") }
                    add("characters/\(name)/state/\(file)", Array(bytes), character: name)
                } else if let bytes = readFileContents("\(own)/\(file)") {
                    add("characters/\(name)/state/\(file)", Array(bytes), character: name)
                }
            }
            for file in regularFiles(in: "\(request.charactersDirectory)/\(name)") {
                if let bytes = readFileContents("\(request.charactersDirectory)/\(name)/\(file)") {
                    add("characters/\(name)/files/\(file)", Array(bytes), character: name, mode: 0o644)
                }
            }
        }
        for file in daemonStateFiles {
            if let bytes = readFileContents("\(request.stateDirectory)/\(file)") { add("whisperd/\(file)", Array(bytes), character: nil) }
        }
        let rosterDirectory = (request.rosterPath as NSString).deletingLastPathComponent
        if let bytes = readFileContents(request.rosterPath) {
            add("roster/\((request.rosterPath as NSString).lastPathComponent)", Array(bytes), character: nil, mode: 0o644)
        }
        if request.includeSecrets {
            for file in regularFiles(in: rosterDirectory) where file == ".env" || file.hasPrefix(".env.") || file.hasSuffix(".env") {
                if let bytes = readFileContents("\(rosterDirectory)/\(file)") { add("roster/\(file)", Array(bytes), character: nil) }
            }
        }
        let stores =
            request.databaseURLConfigured
            ? "PostgreSQL (DATABASE_URL/POSTGRES_URL): not in this archive; back it up with pg_dump (docs/operations.md)"
            : "SQLite: an online snapshot of each character's store"
        let manifest = BackupManifest(
            createdAt: now, includesSecrets: request.includeSecrets, stores: stores, characters: request.characters, files: files)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let manifestBytes = Array(try encoder.encode(manifest))
        return Tar.write([Tar.Entry(path: "manifest.json", mode: 0o600, bytes: manifestBytes)] + entries, mtime: Int(time(nil)))
    }

    /// Reads and verifies a whole archive: the manifest first, every file listed there present
    /// with its size and SHA-256, nothing unlisted. Throws, naming what is wrong; never partial.
    public static func verify(_ archive: [UInt8]) throws -> (BackupManifest, [String: [UInt8]]) {
        let entries: [Tar.Entry]
        do { entries = try Tar.read(archive) } catch { throw BackupFailure("damaged archive: \(error)") }
        guard let first = entries.first, first.path == "manifest.json" else { throw BackupFailure("damaged archive: no manifest.json first") }
        let manifest: BackupManifest
        do { manifest = try JSONDecoder().decode(BackupManifest.self, from: Data(first.bytes)) } catch {
            throw BackupFailure("damaged archive: manifest.json is not a whisperd manifest")
        }
        guard manifest.format == 1 else { throw BackupFailure("archive format \(manifest.format) is not one this whisperd reads") }
        var contents: [String: [UInt8]] = [:]
        for entry in entries.dropFirst() { contents[entry.path] = entry.bytes }
        for file in manifest.files {
            guard let bytes = contents[file.path] else { throw BackupFailure("damaged archive: \(file.path) is missing") }
            guard bytes.count == file.size, SHA256.hex(bytes) == file.sha256 else {
                throw BackupFailure("damaged archive: \(file.path) does not match its checksum")
            }
        }
        let listed = Set(manifest.files.map(\.path))
        if let extra = contents.keys.first(where: { !listed.contains($0) }) { throw BackupFailure("damaged archive: \(extra) is not in the manifest") }
        return (manifest, contents)
    }

    /// Puts `name`'s state back into `<state>/<name>/`, owned as that directory is: each file
    /// written beside and renamed over, the store's WAL files removed. The character must be
    /// stopped (the caller stops it and starts it again).
    public static func restore(_ name: String, from contents: [String: [UInt8]], stateDirectory: String) throws -> [String] {
        let prefix = "characters/\(name)/state/"
        let own = "\(stateDirectory)/\(name)"
        var info = stat()
        guard lstat(own, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR else { throw BackupFailure("\(own) is not a directory") }
        var restored: [String] = []
        for (path, bytes) in contents.sorted(by: { $0.key < $1.key }) where path.hasPrefix(prefix) {
            let file = String(path.dropFirst(prefix.count))
            guard !file.isEmpty, !file.contains("/") else { continue }
            let target = "\(own)/\(file)"
            let temporary = target + ".restore-tmp"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw BackupFailure("cannot write \(temporary): \(String(cString: strerror(errno)))") }
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            let synced = fsync(fd) == 0
            fchown(fd, info.st_uid, info.st_gid)
            close(fd)
            guard written == bytes.count, synced, rename(temporary, target) == 0 else {
                unlink(temporary)
                throw BackupFailure("cannot write \(target)")
            }
            if file == storeName {
                unlink(target + "-wal")
                unlink(target + "-shm")
            }
            restored.append(file)
        }
        return restored
    }

    private static func regularFiles(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted().filter { name in
            var info = stat()
            return lstat("\(directory)/\(name)", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
        }
    }
}
