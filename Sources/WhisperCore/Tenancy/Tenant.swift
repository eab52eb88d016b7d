/// Who a service runs as and what it may reach (DESIGN §10): its identity, its filesystem and
/// network sandbox, and the per-process settings applied before its program starts. A change
/// here restarts the service.
public struct TenantSpec: Hashable, Sendable {
    /// `nil`: whisperd's default, `dynamic` when whisperd is root, else whisperd's own user.
    public var user: UserSpec?
    /// `nil`: the user's own group (a dynamic user's gid equals its uid).
    public var group: GroupSpec?
    public var supplementaryGroups: [GroupSpec]
    public var sandbox: SandboxSpec
    /// Written to /proc/self/oom_score_adj before exec (Compose `oom_score_adj`).
    public var oomScoreAdjust: Int?
    /// Compose `ulimits`, applied before exec.
    public var resourceLimits: [ResourceLimit]

    public init(
        user: UserSpec? = nil, group: GroupSpec? = nil, supplementaryGroups: [GroupSpec] = [],
        sandbox: SandboxSpec = SandboxSpec(), oomScoreAdjust: Int? = nil, resourceLimits: [ResourceLimit] = []
    ) {
        self.user = user
        self.group = group
        self.supplementaryGroups = supplementaryGroups
        self.sandbox = sandbox
        self.oomScoreAdjust = oomScoreAdjust
        self.resourceLimits = resourceLimits
    }
}

/// `user:` in the roster.
public enum UserSpec: Hashable, Sendable, CustomStringConvertible {
    /// A stable uid/gid of its own from the dynamic range, persisted in the state directory.
    case dynamic
    /// The explicit opt-out: the service keeps root (`--check` warns).
    case root
    /// A user of the passwd database.
    case named(String)
    case id(UInt32)

    public var description: String {
        switch self {
        case .dynamic: "dynamic"
        case .root: "root"
        case .named(let name): name
        case .id(let id): String(id)
        }
    }
}

/// `group:` and `supplementary_groups:` entries.
public enum GroupSpec: Hashable, Sendable, CustomStringConvertible {
    case named(String)
    case id(UInt32)

    public var description: String {
        switch self {
        case .named(let name): name
        case .id(let id): String(id)
        }
    }
}

public enum FilesystemSandbox: String, Hashable, Sendable, CaseIterable {
    /// Read the system's libraries and configuration and its own files; write only its own dirs.
    case strict
    /// Read what file permissions allow; write only its own dirs and `write_paths`.
    case `default`
    /// No filesystem rules (network and signal scoping still apply).
    case off
}

/// `sandbox:` in the roster.
public struct SandboxSpec: Hashable, Sendable {
    /// The roster's default: `strict` for the built-in worker, `default` for a `command:`.
    public var filesystem: FilesystemSandbox
    public var readPaths: [String]
    public var writePaths: [String]
    /// Ports it may listen on besides its own `port:`.
    public var bindPorts: [Int]

    public init(filesystem: FilesystemSandbox = .default, readPaths: [String] = [], writePaths: [String] = [], bindPorts: [Int] = []) {
        self.filesystem = filesystem
        self.readPaths = readPaths
        self.writePaths = writePaths
        self.bindPorts = bindPorts
    }
}

/// One entry of `ulimits:` (soft and hard; `nil` hard: the same as soft).
public struct ResourceLimit: Hashable, Sendable {
    public enum Resource: String, Hashable, Sendable, CaseIterable {
        case core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack
    }

    public var resource: Resource
    /// `nil` is unlimited.
    public var soft: UInt64?
    public var hard: UInt64?

    public init(resource: Resource, soft: UInt64?, hard: UInt64?) {
        self.resource = resource
        self.soft = soft
        self.hard = hard
    }
}
