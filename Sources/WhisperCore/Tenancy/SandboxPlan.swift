/// What one service's Landlock ruleset allows, decided from its roster settings and a few facts
/// about the host; the OS adapter turns it into a ruleset. Pure: paths are not checked here.
public struct SandboxPlan: Hashable, Sendable {
    public var filesystem: FilesystemSandbox
    /// Read, list and execute beneath these.
    public var readPaths: [String]
    /// Read and write files beneath these (devices such as /dev/null), but create nothing.
    public var devicePaths: [String]
    /// Everything beneath these: create, write, remove, rename.
    public var writePaths: [String]
    /// The TCP ports it may listen on; every other bind is refused.
    public var bindPorts: [Int]

    /// The system's own files a `strict` service reads: libraries, configuration (TLS roots,
    /// resolver, time zones), and the kernel's views of itself that runtimes read.
    public static let systemReadPaths = [
        "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/proc", "/sys",
        "/run/systemd/resolve", "/dev/urandom", "/dev/random",
    ]
    /// Devices any service may write: discarding output is not a way out.
    public static let devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"]

    /// - Parameters:
    ///   - libraryPaths: directories of the libraries whisperd itself maps (its Swift runtime
    ///     may live outside /usr), for a `strict` built-in worker.
    ///   - ownDirectories: the service's state and runtime directories.
    ///   - characterDirectory: `characters/<name>/` for a built-in worker, read-only.
    public init(
        sandbox: SandboxSpec, port: Int?, executable: String, libraryPaths: [String], ownDirectories: [String],
        characterDirectory: String?
    ) {
        filesystem = sandbox.filesystem
        switch sandbox.filesystem {
        case .strict:
            var read = Self.systemReadPaths + libraryPaths + [executable]
            if let characterDirectory { read.append(characterDirectory) }
            readPaths = Self.unique(read + sandbox.readPaths)
        case .default:
            readPaths = ["/"]
        case .off:
            readPaths = []
        }
        devicePaths = sandbox.filesystem == .off ? [] : Self.devices
        writePaths = sandbox.filesystem == .off ? [] : Self.unique(ownDirectories + sandbox.writePaths)
        bindPorts = Self.unique((port.map { [$0] } ?? []) + sandbox.bindPorts)
    }

    private static func unique<T: Hashable>(_ items: [T]) -> [T] {
        var seen: Set<T> = []
        return items.filter { seen.insert($0).inserted }
    }
}

/// How much of a sandbox the kernel enforces, for status and the start-up warning.
public struct SandboxCoverage: Hashable, Sendable {
    public enum Level: String, Hashable, Sendable {
        case enforced, partly, not
    }

    public var level: Level
    /// What is not enforced, in words (empty when everything is).
    public var missing: [String]

    /// Landlock ABI 1 brings filesystem rules, 4 TCP bind rules, 6 signal and abstract-socket
    /// scoping; ABI 0 is a kernel without Landlock.
    public init(abi: Int, filesystem: FilesystemSandbox) {
        var missing: [String] = []
        if abi < 1 {
            missing = ["Landlock (kernel has none): filesystem, network and signal rules"]
        } else {
            if abi < 4 { missing.append("TCP bind rules (Landlock ABI \(abi) < 4)") }
            if abi < 6 { missing.append("signal and abstract-socket scoping (Landlock ABI \(abi) < 6)") }
        }
        if filesystem == .off { missing.insert("filesystem rules (sandbox.filesystem: off)", at: 0) }
        self.missing = missing
        level = missing.isEmpty ? .enforced : (abi < 1 && filesystem != .off ? .not : .partly)
    }
}
