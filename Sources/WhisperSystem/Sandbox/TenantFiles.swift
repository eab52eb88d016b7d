import CWhisperLinux
import Glibc

/// The passwd and group databases (through NSS), for `user:`/`group:` names and for the ids the
/// dynamic range must skip.
public enum UserDatabase {
    public struct User: Hashable, Sendable {
        public var uid: UInt32
        public var gid: UInt32
        public var name: String
    }

    public static func user(named name: String) -> User? {
        guard let entry = getpwnam(name) else { return nil }
        return User(uid: entry.pointee.pw_uid, gid: entry.pointee.pw_gid, name: name)
    }

    public static func user(id: UInt32) -> User? {
        guard let entry = getpwuid(id) else { return nil }
        return User(uid: id, gid: entry.pointee.pw_gid, name: String(cString: entry.pointee.pw_name))
    }

    public static func group(named name: String) -> UInt32? { getgrnam(name).map { $0.pointee.gr_gid } }

    /// True when a user or a group already has this number (two lookups through NSS; with
    /// systemd's NSS module each walks its userdb directories: see ``listedIDs()``).
    public static func isIDTaken(_ id: UInt32) -> Bool { getpwuid(id) != nil || getgrgid(id) != nil }

    /// Every uid and gid of both databases, read in one pass each — or `nil` when a source the
    /// host's `nsswitch.conf` names for them may hold entries it does not list (LDAP, SSSD,
    /// NIS…): then only ``isIDTaken(_:)`` is sure. One pass costs about what one or two
    /// lookups do (`docs/security.md`, "What it costs").
    public static func listedIDs(nsswitch path: String = "/etc/nsswitch.conf") -> Set<UInt32>? {
        guard let configuration = readSmallFile(path), NameServiceSwitch.listsEveryEntry(configuration) else { return nil }
        var ids = Set<UInt32>()
        setpwent()
        while let entry = getpwent() { ids.insert(entry.pointee.pw_uid) }
        endpwent()
        setgrent()
        while let entry = getgrent() { ids.insert(entry.pointee.gr_gid) }
        endgrent()
        return ids
    }

    /// Every group the user is a member of in the group database, its primary group included.
    public static func memberships(of user: User) -> [UInt32] {
        var count: Int32 = 64
        while true {
            var groups = [gid_t](repeating: 0, count: Int(count))
            var asked = count
            if getgrouplist(user.name, user.gid, &groups, &asked) >= 0 { return Array(groups.prefix(Int(asked))) }
            guard asked > count, asked < 65536 else { return [user.gid] }
            count = asked
        }
    }
}

/// What `nsswitch.conf` says about the passwd and group databases.
public enum NameServiceSwitch {
    /// Sources whose enumeration lists every entry a lookup could find: the local files and
    /// systemd's userdb (its drop-in records and dynamic users).
    static let completeSources: Set<Substring> = ["files", "systemd"]

    /// True when `passwd:` and `group:` both name only complete sources (actions such as
    /// `[NOTFOUND=return]` aside). A database the file does not name falls back to glibc's
    /// default, which is not assumed.
    public static func listsEveryEntry(_ configuration: String) -> Bool {
        var sources: [Substring: [Substring]] = [:]
        for rawLine in configuration.split(separator: "\n") {
            let line = rawLine.prefix { $0 != "#" }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let database = String(line[..<colon].filter { $0 != " " && $0 != "\t" })
            guard database == "passwd" || database == "group" else { continue }
            var words: [Substring] = []
            var inAction = false
            for word in line[line.index(after: colon)...].split(whereSeparator: { $0 == " " || $0 == "\t" }) {
                if word.hasPrefix("[") { inAction = true }
                if !inAction { words.append(word) }
                if word.hasSuffix("]") { inAction = false }
            }
            sources[Substring(database)] = words
        }
        return ["passwd", "group"].allSatisfy { database in
            guard let named = sources[Substring(database)], !named.isEmpty else { return false }
            return named.allSatisfy(completeSources.contains)
        }
    }
}

/// Directories and sockets whisperd hands to a tenant, made without ever following a symlink.
public enum TenantFiles {
    /// `parent/name`, a directory owned by uid:gid with mode 0700, created if missing. Files
    /// inside are given to the tenant too when the directory belonged to someone else (a
    /// changed `user:`, or a directory made before tenants existed).
    public static func prepareOwnDirectory(parent: String, name: String, uid: UInt32, gid: UInt32) throws {
        let parentFD = open(parent, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard parentFD >= 0 else { throw SystemError("open \(parent)") }
        defer { close(parentFD) }
        let created = mkdirat(parentFD, name, 0o700) == 0
        if !created, errno != EEXIST { throw SystemError("mkdir \(parent)/\(name)") }
        let fd = openat(parentFD, name, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            throw SystemError(errno == ELOOP || errno == ENOTDIR ? "\(parent)/\(name) is not a directory (a symlink?)" : "open \(parent)/\(name)")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SystemError("fstat \(parent)/\(name)") }
        if info.st_uid != uid || info.st_gid != gid {
            // Made just now: empty, nothing inside to give (a cold start makes hundreds).
            if !created { try giveContents(of: fd, to: uid, gid, depth: 0) }
            guard fchown(fd, uid, gid) == 0 else { throw SystemError("chown \(parent)/\(name)") }
        }
        let mode: mode_t = info.st_mode & 0o7777
        if mode != 0o700, fchmod(fd, 0o700) != 0 { throw SystemError("chmod \(parent)/\(name)") }
    }

    /// chown -R without following links, to a bounded depth.
    private static func giveContents(of directoryFD: Int32, to uid: UInt32, _ gid: UInt32, depth: Int) throws {
        guard depth < 64 else { return }
        let listFD = dup(directoryFD)
        guard listFD >= 0, let directory = fdopendir(listFD) else { throw SystemError("opendir") }
        defer { closedir(directory) }
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            if name == "." || name == ".." { continue }
            // A second link to a file may lead out of the directory (a hard link the old owner
            // made to someone else's file): such a file is not given away.
            var info = stat()
            guard fstatat(directoryFD, name, &info, AT_SYMLINK_NOFOLLOW) == 0 else { throw SystemError("stat \(name)") }
            if (info.st_mode & S_IFMT) != S_IFDIR && info.st_nlink > 1 { continue }
            guard fchownat(directoryFD, name, uid, gid, AT_SYMLINK_NOFOLLOW) == 0 else { throw SystemError("chown \(name)") }
            if entry.pointee.d_type == UInt8(DT_DIR) {
                let child = openat(directoryFD, name, O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard child >= 0 else { continue }
                defer { close(child) }
                try giveContents(of: child, to: uid, gid, depth: depth + 1)
            }
        }
    }

    /// Moves `from` to `to` (same filesystem: atomic) unless `to` exists; then gives it to the
    /// tenant. Returns whether it moved.
    @discardableResult
    public static func move(_ from: String, to: String, uid: UInt32, gid: UInt32) throws -> Bool {
        var info = stat()
        guard lstat(from, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return false }
        if lstat(to, &info) == 0 { return false }
        guard rename(from, to) == 0 else { throw SystemError("rename \(from) -> \(to)") }
        guard lchown(to, uid, gid) == 0 else { throw SystemError("chown \(to)") }
        return true
    }

    /// A socket whisperd created, made writable (so connectable) by its tenant only.
    public static func giveSocket(_ path: String, to uid: UInt32, _ gid: UInt32) throws {
        guard lchown(path, uid, gid) == 0 else { throw SystemError("chown \(path)") }
        guard chmod(path, 0o600) == 0 else { throw SystemError("chmod \(path)") }
    }

    /// Refuses a directory whisperd writes as root when someone else could put things there:
    /// a symlink, owned by another non-root user, or group/world-writable without the sticky bit.
    public static func checkOwnDirectory(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw SystemError("stat \(path)") }
        if (info.st_mode & S_IFMT) == S_IFLNK {
            throw SystemError("\(path) is a symlink; give whisperd a real directory", errno: ELOOP)
        }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { throw SystemError("\(path) is not a directory", errno: ENOTDIR) }
        if info.st_uid != 0 && info.st_uid != geteuid() {
            throw SystemError("\(path) belongs to uid \(info.st_uid), not to whisperd's user or root", errno: EPERM)
        }
        let mode: mode_t = info.st_mode & 0o7777
        let writableByOthers: Bool = mode & 0o022 != 0
        let sticky: Bool = mode & 0o1000 != 0
        if writableByOthers && !sticky {
            let octal = String(mode, radix: 8)
            throw SystemError("\(path) is group- or world-writable (mode \(octal)): chmod go-w \(path)", errno: EPERM)
        }
    }
}
