import CWhisperLinux
import Glibc
import WhisperCore

/// A Landlock ruleset built from a ``SandboxPlan``, held open so every restart of the service
/// reuses it: the child only calls `landlock_restrict_self` on it before exec.
public final class LandlockRuleset {
    /// The kernel's Landlock ABI version, 0 without Landlock.
    public static let abi = Int(whisper_landlock_abi())

    /// Filesystem access rights (landlock(7)), by the ABI that introduced them.
    enum FileAccess {
        static let execute: UInt64 = 1 << 0
        static let writeFile: UInt64 = 1 << 1
        static let readFile: UInt64 = 1 << 2
        static let readDirectory: UInt64 = 1 << 3
        static let removeDirectory: UInt64 = 1 << 4
        static let removeFile: UInt64 = 1 << 5
        static let makeCharacterDevice: UInt64 = 1 << 6
        static let makeDirectory: UInt64 = 1 << 7
        static let makeRegular: UInt64 = 1 << 8
        static let makeSocket: UInt64 = 1 << 9
        static let makeFIFO: UInt64 = 1 << 10
        static let makeBlockDevice: UInt64 = 1 << 11
        static let makeSymlink: UInt64 = 1 << 12
        static let refer: UInt64 = 1 << 13  // ABI 2
        static let truncate: UInt64 = 1 << 14  // ABI 3
        static let ioctlDevice: UInt64 = 1 << 15  // ABI 5

        /// Every right the given ABI knows.
        static func handled(abi: Int) -> UInt64 {
            var mask: UInt64 = (1 << 13) - 1
            if abi >= 2 { mask |= refer }
            if abi >= 3 { mask |= truncate }
            if abi >= 5 { mask |= ioctlDevice }
            return mask
        }

        /// Rights that make sense on a regular file (a directory takes all).
        static let onFiles: UInt64 = execute | writeFile | readFile | truncate | ioctlDevice
        static let read: UInt64 = execute | readFile | readDirectory | ioctlDevice
        static let device: UInt64 = readFile | writeFile | truncate | ioctlDevice
        static let write: UInt64 = ~0
    }

    static let bindTCP: UInt64 = 1 << 0
    static let scopeAbstractUnixSocket: UInt64 = 1 << 0
    static let scopeSignal: UInt64 = 1 << 1

    /// O_PATH (Glibc does not export it to Swift): a handle on the file, no access to its data.
    static let openPathOnly: Int32 = 0o10000000

    public let fd: Int32

    /// - Throws: ``SystemError`` when the kernel refuses the ruleset or a rule; a path that does
    ///   not exist is skipped (a host without /lib64, say), never an error.
    /// O_PATH handles on the paths many rulesets name (the system's directories, the devices),
    /// each opened once for a batch of rulesets instead of once a ruleset. Not `Sendable`: the
    /// loop thread's; closed when dropped.
    public final class SharedPaths {
        let paths: Set<String>
        private var handles: [String: Handle?] = [:]

        struct Handle {
            var fd: Int32
            var isDirectory: Bool
        }

        public init(_ paths: some Sequence<String>) { self.paths = Set(paths) }

        deinit { for case let handle? in handles.values { close(handle.fd) } }

        /// `nil`: the path does not exist (its rule is skipped).
        func handle(_ path: String) throws -> Handle? {
            if let known = handles[path] { return known }
            let handle = try LandlockRuleset.open(path)
            handles[path] = handle
            return handle
        }
    }

    public init(plan: SandboxPlan, abi: Int = LandlockRuleset.abi, shared: SharedPaths? = nil) throws {
        guard abi >= 1 else { throw SystemError("Landlock is not available", errno: EOPNOTSUPP) }
        let handledFiles = plan.filesystem == .off ? 0 : FileAccess.handled(abi: abi)
        let handledNetwork = abi >= 4 ? Self.bindTCP : 0
        let scoped = abi >= 6 ? Self.scopeSignal | Self.scopeAbstractUnixSocket : 0
        let fd = whisper_landlock_create_ruleset(handledFiles, handledNetwork, scoped)
        guard fd >= 0 else { throw SystemError("landlock_create_ruleset") }
        self.fd = fd
        do {
            if handledFiles != 0 {
                for path in plan.readPaths { try allow(path, FileAccess.read & handledFiles, shared) }
                for path in plan.devicePaths { try allow(path, FileAccess.device & handledFiles, shared) }
                for path in plan.writePaths { try allow(path, FileAccess.write & handledFiles, shared) }
            }
            if handledNetwork != 0 {
                for port in plan.bindPorts where whisper_landlock_allow_port(fd, UInt64(port), Self.bindTCP) != 0 {
                    throw SystemError("landlock_add_rule bind port \(port)")
                }
            }
        } catch {
            close(fd)
            throw error
        }
    }

    private func allow(_ path: String, _ access: UInt64, _ shared: SharedPaths?) throws {
        let handle: SharedPaths.Handle?
        if let shared, shared.paths.contains(path) {
            handle = try shared.handle(path)
        } else {
            handle = try Self.open(path)
        }
        guard let handle else { return }
        defer { if shared?.paths.contains(path) != true { close(handle.fd) } }
        let rights = handle.isDirectory ? access : access & FileAccess.onFiles
        guard rights != 0 else { return }
        if whisper_landlock_allow_path(fd, handle.fd, rights) != 0 { throw SystemError("landlock_add_rule \(path)") }
    }

    /// An O_PATH handle on `path`, `nil` when it does not exist.
    private static func open(_ path: String) throws -> SharedPaths.Handle? {
        let target = Glibc.open(path, openPathOnly | O_CLOEXEC)
        guard target >= 0 else {
            if errno == ENOENT || errno == ENOTDIR { return nil }
            throw SystemError("open \(path) for a Landlock rule")
        }
        var info = stat()
        guard fstat(target, &info) == 0 else {
            close(target)
            throw SystemError("fstat \(path)")
        }
        return SharedPaths.Handle(fd: target, isDirectory: (info.st_mode & S_IFMT) == S_IFDIR)
    }

    deinit { close(fd) }

    /// Directories of the shared libraries this process maps: a `strict` built-in worker (this
    /// same binary) must be able to load them, wherever the toolchain put its runtime.
    public static func mappedLibraryDirectories() -> [String] {
        guard let maps = readSmallFile("/proc/self/maps", limit: 4 << 20) else { return [] }
        var directories: [String] = []
        for line in maps.split(separator: "\n") {
            guard let slash = line.firstIndex(of: "/") else { continue }
            let path = line[slash...]
            guard path.contains(".so"), let last = path.lastIndex(of: "/") else { continue }
            let directory = String(path[..<last])
            if !directories.contains(directory) { directories.append(directory) }
        }
        return directories
    }
}
