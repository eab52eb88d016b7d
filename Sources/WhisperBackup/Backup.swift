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
    /// Files of a character's state directory left out, and why (not a plain file, too big, a
    /// name too long for the archive): a character cannot make everyone's backup fail.
    public var skipped: [String]?
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
    public static let daemonStateFiles = ["intents.json", "jobs.json", "dynamic-users.json", "profiles.json", "scale.json", "schedules.json"]
    static let storeName = "memory.sqlite3"

    /// The largest file of a character's state directory taken (a store past it is an error).
    public static let maxFileBytes = 1 << 30

    /// Builds the archive. `snapshot(source, destination)` copies a live SQLite store
    /// consistently (the worker's `VACUUM INTO`, symlinks refused); `now` names the time in the
    /// manifest. A character's directory is the character's: every file in it is opened without
    /// following a link, checked on the open descriptor (a plain file with one link, not too
    /// big) and read from that descriptor.
    public static func archive(
        _ request: BackupRequest, now: String, snapshot: (String, String) throws -> Void
    ) throws -> [UInt8] {
        var entries: [Tar.Entry] = []
        var files: [BackupManifest.File] = []
        var skipped: [String] = []
        func add(_ path: String, _ bytes: [UInt8], character: String?, mode: Int = 0o600) {
            guard path.utf8.count <= Tar.maxPathBytes else {
                skipped.append("\(path): name too long for the archive")
                return
            }
            entries.append(Tar.Entry(path: path, mode: mode, bytes: bytes))
            files.append(.init(path: path, character: character, size: bytes.count, sha256: SHA256.hex(bytes)))
        }
        // Private to whisperd's user: the snapshots are other characters' conversations.
        var template = Array((NSTemporaryDirectory() + "/whisperd-backup-XXXXXX").utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw BackupFailure("cannot make a private scratch directory: \(String(cString: strerror(errno)))")
        }
        let scratch = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        for name in request.characters {
            let own = "\(request.stateDirectory)/\(name)"
            // Every name, so that what is not a plain file is said, not silently dropped.
            // A character with no state yet has no directory; one that cannot be read is an
            // error (a backup run without the rights to read the fleet must not pass as done).
            var names: [String] = []
            if access(own, F_OK) == 0 {
                do { names = try FileManager.default.contentsOfDirectory(atPath: own).sorted() } catch {
                    throw BackupFailure("cannot list \(name)'s state \(own): \(String(cString: strerror(access(own, R_OK | X_OK) == 0 ? EIO : errno)))")
                }
            }
            for file in names where !file.hasSuffix("-wal") && !file.hasSuffix("-shm") && !file.hasSuffix(".tmp") {
                let path = "characters/\(name)/state/\(file)"
                if file == storeName {
                    if case .failure(let reason) = checkOwnFile("\(own)/\(file)") {
                        throw BackupFailure("\(name)'s store \(own)/\(file): \(reason.description)")
                    }
                    let copy = "\(scratch)/\(name).sqlite3"
                    try snapshot("\(own)/\(file)", copy)
                    guard let bytes = readFileContents(copy) else { throw BackupFailure("cannot read the snapshot of \(name)'s store") }
                    add(path, Array(bytes), character: name)
                } else {
                    switch readOwnFile("\(own)/\(file)") {
                    case .success(let bytes): add(path, bytes, character: name)
                    case .failure(let reason): skipped.append("\(path): \(reason.description)")
                    }
                }
            }
            for file in regularFiles(in: "\(request.charactersDirectory)/\(name)") {
                if let bytes = readFileContents("\(request.charactersDirectory)/\(name)/\(file)") {
                    add("characters/\(name)/files/\(file)", Array(bytes), character: name, mode: 0o644)
                }
            }
        }
        for file in daemonStateFiles {
            let path = "\(request.stateDirectory)/\(file)"
            if let bytes = readFileContents(path) {
                add("whisperd/\(file)", Array(bytes), character: nil)
            } else if access(path, F_OK) == 0 {
                throw BackupFailure("cannot read whisperd's \(path): \(String(cString: strerror(access(path, R_OK) == 0 ? EIO : errno)))")
            }
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
        var manifest = BackupManifest(
            createdAt: now, includesSecrets: request.includeSecrets, stores: stores, characters: request.characters, files: files)
        manifest.skipped = skipped.isEmpty ? nil : skipped
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

    /// Puts `name`'s state back into `<state>/<name>/`, owned as that directory is. The
    /// directory is the character's, so it is opened without following a link and every name
    /// in it is worked on relative to that descriptor: a temporary name removed and created anew
    /// (`O_EXCL`: never a planted FIFO, link or symlink), written, synced, chowned, then renamed
    /// over; the store's WAL files go before the store is replaced (an old WAL must never be
    /// replayed into the restored store), and the directory is synced. The character must be
    /// stopped (the caller stops it and starts it again).
    public static func restore(_ name: String, from contents: [String: [UInt8]], stateDirectory: String) throws -> [String] {
        let prefix = "characters/\(name)/state/"
        let own = "\(stateDirectory)/\(name)"
        let directory = open(own, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard directory >= 0 else { throw BackupFailure("\(own): \(String(cString: strerror(errno)))") }
        defer { close(directory) }
        var info = stat()
        guard fstat(directory, &info) == 0 else { throw BackupFailure("\(own): cannot stat") }
        var restored: [String] = []
        for (path, bytes) in contents.sorted(by: { $0.key < $1.key }) where path.hasPrefix(prefix) {
            let file = String(path.dropFirst(prefix.count))
            guard !file.isEmpty, !file.contains("/"), file != ".", file != ".." else { continue }
            let temporary = ".\(file).restore-tmp"
            _ = unlinkat(directory, temporary, 0)
            let fd = openat(directory, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw BackupFailure("cannot write \(own)/\(temporary): \(String(cString: strerror(errno)))") }
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            let synced = fsync(fd) == 0
            let owned = fchown(fd, info.st_uid, info.st_gid) == 0
            close(fd)
            if file == storeName {
                _ = unlinkat(directory, file + "-wal", 0)
                _ = unlinkat(directory, file + "-shm", 0)
            }
            guard written == bytes.count, synced, owned, renameat(directory, temporary, directory, file) == 0 else {
                _ = unlinkat(directory, temporary, 0)
                throw BackupFailure("cannot write \(own)/\(file)\(owned ? "" : " (chown to the character failed)")")
            }
            restored.append(file)
        }
        guard fsync(directory) == 0 else { throw BackupFailure("\(own): cannot sync the directory") }
        return restored
    }

    struct Refused: Error, CustomStringConvertible {
        var description: String
    }

    /// A file of a directory a character owns, opened without following a link and without
    /// blocking (a FIFO), checked on the descriptor: a plain file with one link. The caller
    /// closes the descriptor.
    static func openOwnFile(_ path: String) -> Result<(fd: Int32, size: Int), Refused> {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { return .failure(Refused(description: String(cString: strerror(errno)))) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            return .failure(Refused(description: "not a plain file"))
        }
        guard info.st_nlink == 1 else {
            close(fd)
            return .failure(Refused(description: "has other hard links"))
        }
        return .success((fd, Int(info.st_size)))
    }

    /// The checks of ``openOwnFile`` without the read (the store is read by SQLite).
    static func checkOwnFile(_ path: String) -> Result<Void, Refused> {
        openOwnFile(path).map { close($0.fd) }
    }

    /// A file of a directory a character owns: checked by ``openOwnFile``, read from that descriptor.
    static func readOwnFile(_ path: String) -> Result<[UInt8], Refused> {
        let opened: (fd: Int32, size: Int)
        switch openOwnFile(path) {
        case .failure(let refused): return .failure(refused)
        case .success(let file): opened = file
        }
        let fd = opened.fd
        defer { close(fd) }
        guard opened.size <= maxFileBytes else { return .failure(Refused(description: "larger than \(maxFileBytes >> 20) MiB")) }
        var bytes = [UInt8](repeating: 0, count: opened.size)
        var offset = 0
        while offset < bytes.count {
            let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + offset, $0.count - offset, off_t(offset)) }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { return .failure(Refused(description: "changed while read")) }
            offset += count
        }
        return .success(bytes)
    }

    private static func regularFiles(in directory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted().filter { name in
            var info = stat()
            return lstat("\(directory)/\(name)", &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG
        }
    }
}
