import Glibc
import WhisperCore
import WhisperSystem

/// Who each service runs as and what it may reach (DESIGN §10): the ids it takes on, its own
/// state and runtime directories, its Landlock ruleset and its notify socket's owner. Owned by
/// the ``Daemon`` (which makes it) and used by the ``Fleet``, on the loop thread only.
final class Tenants {
    /// What one spawn needs from the tenant side.
    struct Prepared {
        /// `nil`: the child keeps whisperd's own ids (whisperd is not root, or `user: root`).
        var identity: ProcessIdentity?
        /// Held here as well, so its descriptor stays open (and its number never another's)
        /// while anyone keeps this preparation.
        var ruleset: LandlockRuleset?
        var rulesetFD: Int32 { ruleset?.fd ?? -1 }
        /// STATE_DIRECTORY, RUNTIME_DIRECTORY, TMPDIR and, for a tenant of its own, HOME.
        var environment: [String: String]
    }

    /// How a service runs, for status and `/health`.
    struct Report: Sendable {
        var uid: UInt32
        var gid: UInt32
        var coverage: SandboxCoverage
    }

    struct Refusal: Error, CustomStringConvertible {
        var description: String
    }

    let stateDirectory: String
    let runtimeDirectory: String
    let executable: String
    let isRoot = geteuid() == 0
    /// whisperd's control group: no tenant may hold it (set once the control socket exists).
    var controlGroupID: UInt32?
    private let stateStore: StateStore
    private var allocator: DynamicIDAllocator
    /// Ids given since the file was last written: written once per batch of events (a cold
    /// start of N characters writes it once, not N times).
    private var hasUnsavedAllocations = false
    /// The user and group ids the host lists, read once per batch of events when the dynamic
    /// range is first consulted (a cold start of N characters asks N times): `.some(nil)` when
    /// the host's sources cannot all be listed, so each id is looked up instead.
    private var batchListedIDs: Set<UInt32>??
    /// The paths every ruleset names, opened once per batch (a path replaced between batches is
    /// opened anew).
    private var batchSharedPaths: LandlockRuleset.SharedPaths?
    private let libraryDirectories = LandlockRuleset.mappedLibraryDirectories()
    private var rulesets: [ServiceName: (plan: SandboxPlan, ruleset: LandlockRuleset)] = [:]
    private var socketOwners: [ServiceName: ProcessIdentity] = [:]
    /// Services whose identity and directories were settled in this whisperd's life: a restart
    /// reuses them (nothing a tenant can do replaces its directory, whose parent is whisperd's).
    /// Keyed with the roster's tenant settings: a reload that changes `user:` settles anew.
    private var settled: [ServiceName: (tenant: TenantSpec, identity: ProcessIdentity?)] = [:]
    private(set) var reports: [ServiceName: Report] = [:]
    /// A service's last preparation for its own process, reused by a restart while nothing it
    /// was made from changed (a restart then costs no sandbox plan to build and compare).
    private var lastPrepared: [ServiceName: (key: PreparedKey, prepared: Prepared)] = [:]

    private struct PreparedKey: Equatable {
        var tenant: TenantSpec
        var port: Int?
        var characterDirectory: String
        var homeIsInherited: Bool
        var notifySocket: String
    }

    init(stateDirectory: String, runtimeDirectory: String, executable: String, stateStore: StateStore) {
        self.stateDirectory = stateDirectory
        self.runtimeDirectory = runtimeDirectory
        self.executable = executable
        self.stateStore = stateStore
        allocator = DynamicIDAllocator(assignments: stateStore.dynamicIDs())
    }

    /// The ids of a live tenant: a notify datagram from this uid is its own when there is no
    /// cgroup to ask.
    func uid(of name: ServiceName) -> UInt32? { reports[name]?.uid }

    /// `notifySocket`: given to the service's user (`nil` for a health-check process, which has none).
    func prepare(_ spec: ServiceSpec, charactersDirectory: String, homeIsInherited: Bool, notifySocket: String?) throws -> Prepared {
        let name = spec.name
        let tenant = spec.launch.tenant
        // A replica (`elena-1`) reads the files of the character it is (`elena`).
        let characterDirectory = "\(charactersDirectory)/\(spec.launch.environment["WHISPERD_CHARACTER"] ?? name.rawValue)"
        let key = notifySocket.map {
            PreparedKey(tenant: tenant, port: spec.port, characterDirectory: characterDirectory, homeIsInherited: homeIsInherited, notifySocket: $0)
        }
        if let key, let last = lastPrepared[name], last.key == key, socketOwners[name] != nil { return last.prepared }
        let ownState = "\(stateDirectory)/\(name.rawValue)"
        let ownRuntime = "\(runtimeDirectory)/\(name.rawValue)"
        let identity: ProcessIdentity?
        if let known = settled[name], known.tenant == tenant {
            identity = known.identity
        } else {
            identity = try resolveIdentity(name, tenant)
            let uid = identity?.uid ?? getuid()
            let gid = identity?.gid ?? getgid()
            try TenantFiles.prepareOwnDirectory(parent: stateDirectory, name: name.rawValue, uid: uid, gid: gid)
            try TenantFiles.prepareOwnDirectory(parent: runtimeDirectory, name: name.rawValue, uid: uid, gid: gid)
            try moveSharedStore(of: name, into: ownState, uid: uid, gid: gid)
            settled[name] = (tenant, identity)
        }
        let uid = identity?.uid ?? getuid()
        let gid = identity?.gid ?? getgid()
        let owner = identity ?? ProcessIdentity(uid: uid, gid: gid)
        if let notifySocket, socketOwners[name] != owner {
            try TenantFiles.giveSocket(notifySocket, to: uid, gid)
            socketOwners[name] = owner
        }

        var writePaths = [ownState, ownRuntime]
        var sandbox = tenant.sandbox
        if ProcessSpawner.isSanitizerBuild {
            let sanitizer = Self.sanitizerPaths()
            writePaths += sanitizer.write
            sandbox.readPaths += sanitizer.read
        }
        let plan = SandboxPlan(
            sandbox: sandbox, port: spec.port, executable: executable, libraryPaths: libraryDirectories,
            ownDirectories: writePaths, characterDirectory: characterDirectory)
        var ruleset: LandlockRuleset?
        if LandlockRuleset.abi >= 1 {
            if let cached = rulesets[name], cached.plan == plan {
                ruleset = cached.ruleset
            } else {
                if batchSharedPaths == nil {
                    batchSharedPaths = LandlockRuleset.SharedPaths(
                        ["/", executable] + SandboxPlan.systemReadPaths + SandboxPlan.devices + libraryDirectories)
                }
                let made = try LandlockRuleset(plan: plan, shared: batchSharedPaths)
                rulesets[name] = (plan, made)
                ruleset = made
            }
        }
        reports[name] = Report(uid: uid, gid: gid, coverage: SandboxCoverage(abi: LandlockRuleset.abi, filesystem: plan.filesystem))

        var environment = ["STATE_DIRECTORY": ownState, "RUNTIME_DIRECTORY": ownRuntime, "TMPDIR": ownRuntime]
        if identity != nil, homeIsInherited { environment["HOME"] = ownState }
        let prepared = Prepared(identity: identity, ruleset: ruleset, environment: environment)
        if let key { lastPrepared[name] = (key, prepared) }
        return prepared
    }

    /// Writes the dynamic ids given since the last call (the daemon calls it after each batch
    /// of events, before it waits for the next), and forgets what the batch shared (the list of
    /// taken ids, the handles on system paths): the next batch reads them again.
    func saveAllocations() throws {
        batchListedIDs = nil
        batchSharedPaths = nil
        guard hasUnsavedAllocations else { return }
        try stateStore.setDynamicIDs(allocator.assignments)
        hasUnsavedAllocations = false
    }

    /// A removed service: its ruleset is closed; its directories and uid are kept (its data).
    func forget(_ name: ServiceName) {
        settled[name] = nil
        rulesets[name] = nil
        socketOwners[name] = nil
        reports[name] = nil
        lastPrepared[name] = nil
    }

    /// The notify socket was made anew (after a removal): its owner must be set again.
    func socketRecreated(_ name: ServiceName) { socketOwners[name] = nil }

    private func resolveIdentity(_ name: ServiceName, _ tenant: TenantSpec) throws -> ProcessIdentity? {
        guard isRoot else { return nil }  // said once at start: every service keeps whisperd's user
        let user = tenant.user ?? .dynamic
        var uid: UInt32
        var gid: UInt32
        var groups: [UInt32] = []
        switch user {
        case .root:
            return nil
        case .dynamic:
            let before = allocator.assignments[name.rawValue]
            if batchListedIDs == nil { batchListedIDs = .some(UserDatabase.listedIDs()) }
            let listed = batchListedIDs ?? nil
            switch allocator.id(for: name.rawValue, isTaken: { id in listed?.contains(id) ?? UserDatabase.isIDTaken(id) }) {
            case .failure(let failure): throw Refusal(description: "user: dynamic: \(failure)")
            case .success(let assigned):
                uid = assigned.id
                gid = assigned.id
            }
            if before != uid { hasUnsavedAllocations = true }
        case .named(let userName):
            guard let entry = UserDatabase.user(named: userName) else {
                throw Refusal(description: "user: no user \(userName) in the passwd database")
            }
            uid = entry.uid
            gid = entry.gid
            groups = UserDatabase.memberships(of: entry).filter { $0 != entry.gid }
        case .id(let id):
            uid = id
            gid = UserDatabase.user(id: id)?.gid ?? id
        }
        if let group = tenant.group { gid = try resolve(group, "group") }
        if !tenant.supplementaryGroups.isEmpty {
            groups = try tenant.supplementaryGroups.map { try resolve($0, "supplementary_groups") }
        }
        if uid == 0 { throw Refusal(description: "user: uid 0 is root; write `user: root` to mean it") }
        if let control = controlGroupID, gid == control || groups.contains(control) {
            throw Refusal(description: "its groups include whisperd's control group (gid \(control)): it could drive the whole fleet")
        }
        return ProcessIdentity(uid: uid, gid: gid, supplementaryGroups: groups)
    }

    private func resolve(_ group: GroupSpec, _ key: String) throws -> UInt32 {
        switch group {
        case .id(let id): return id
        case .named(let groupName):
            guard let id = UserDatabase.group(named: groupName) else { throw Refusal(description: "\(key): no group \(groupName)") }
            return id
        }
    }

    /// The store of the shared layout (`<state>/memory/NAME.sqlite3`) moves into the service's
    /// own directory as `memory.sqlite3`: the log and index files first, the database last, so
    /// an interrupted move is finished by the next start and no committed row is left behind.
    private func moveSharedStore(of name: ServiceName, into directory: String, uid: UInt32, gid: UInt32) throws {
        let old = "\(stateDirectory)/memory/\(name.rawValue).sqlite3"
        let new = "\(directory)/memory.sqlite3"
        guard access(old, F_OK) == 0, access(new, F_OK) != 0 else { return }
        for suffix in ["-wal", "-shm", "-journal"] { try TenantFiles.move(old + suffix, to: new + suffix, uid: uid, gid: gid) }
        try TenantFiles.move(old, to: new, uid: uid, gid: gid)
    }

    /// What a sanitizer build's children touch outside their sandbox: the directories they write
    /// reports to (`log_path=`) and the suppression files they read, from *SAN_OPTIONS.
    private static func sanitizerPaths() -> (write: [String], read: [String]) {
        var write: [String] = []
        var read: [String] = []
        for key in ["TSAN_OPTIONS", "ASAN_OPTIONS", "LSAN_OPTIONS"] {
            guard let value = getenv(key).map({ String(cString: $0) }) else { continue }
            for option in value.split(whereSeparator: { $0 == ":" || $0 == " " }) {
                let parts = option.split(separator: "=", maxSplits: 1).map(String.init)
                guard parts.count == 2 else { continue }
                if parts[0] == "log_path", let slash = parts[1].lastIndex(of: "/") { write.append(String(parts[1][..<slash])) }
                if parts[0] == "suppressions" { read.append(parts[1]) }
            }
        }
        return (write, read)
    }
}
