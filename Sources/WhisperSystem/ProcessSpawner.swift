import CWhisperLinux
import Glibc
import WhisperCore

/// Open cgroup files a child is placed with before exec: a v2 cgroup directory (joined by
/// clone3 with CLONE_INTO_CGROUP) and v1 `tasks` files (the single-threaded child writes "0").
public struct CgroupPlacement: Sendable {
    public var directoryFD: Int32
    /// Join the v2 cgroup by writing `cgroup.procs` (slow: the kernel's global lock) instead of
    /// at clone time.
    public var joinsDirectoryByWrite: Bool
    public var taskFDs: [Int32]
    /// The v2 cgroup joined at clone has limits that can keep the new child from running for a
    /// while (a CPU quota, weight or cpuset, `memory.high`): the spawn then does not wait for the
    /// child's first step (it copies whisperd's whole descriptor table instead; spawn.c, "Slots").
    public var mayHoldTheChildAtClone: Bool

    public init(directoryFD: Int32 = -1, joinsDirectoryByWrite: Bool = false, taskFDs: [Int32] = [], mayHoldTheChildAtClone: Bool = false) {
        self.directoryFD = directoryFD
        self.joinsDirectoryByWrite = joinsDirectoryByWrite
        self.taskFDs = taskFDs
        self.mayHoldTheChildAtClone = mayHoldTheChildAtClone
    }
}

/// Starts a program in its own process group with pipes for stdout and stderr, and hands back
/// a pidfd to watch it. Placement in cgroups happens in the child before `execve` (see
/// `whisper_spawn`), so no instruction of the target runs outside its limits.
public struct ProcessSpawner: Sendable {
    /// True in a ThreadSanitizer or AddressSanitizer build (scripts/sanitizers.sh).
    public static let isSanitizerBuild = whisper_sanitizer_build() != 0
    /// True where `spawn` returns only after the child's exec (ThreadSanitizer builds, other
    /// architectures than x86-64); a failed set-up step is then reported by `spawn` itself.
    public static let waitsForExec = whisper_spawn_waits_for_exec() != 0

    /// What a child runs: its program, found on PATH the way execvp would (so "not found" is
    /// said before spawning), and its argv and environment laid out as execve takes them. Made
    /// once, it serves every start with the same command (a restart redoes none of it).
    ///
    /// `@unchecked Sendable`: every stored property is a `let`, and the C arrays are written
    /// only in `init` and then only read, so sharing one between threads is safe.
    public final class Command: @unchecked Sendable {
        /// As given; the program is the first.
        public let arguments: [String]
        /// The program as found; `nil`: not found (or no arguments), so a spawn fails with
        /// ``Failure/notFound(_:)`` without starting anything.
        public let path: String?
        let argv: CStringArray
        let envp: CStringArray

        public init(arguments: [String], environment: [String: String], workingDirectory: String) {
            self.arguments = arguments
            path = arguments.first.flatMap {
                ProcessSpawner.resolve($0, path: environment["PATH"], workingDirectory: workingDirectory)
            }
            argv = CStringArray(arguments)
            envp = CStringArray(environment: environment)
        }
    }

    public struct Request: Sendable {
        public var command: Command
        /// The child's current directory (a relative program is found from it too: give the
        /// ``Command`` the same one).
        public var workingDirectory: String
        /// Where the child is before its program's first instruction (see `whisper_spawn`).
        public var placement: CgroupPlacement
        /// RLIMIT_DATA for the child: the only memory bound left when there is no memory cgroup.
        public var dataLimitBytes: UInt64?
        /// Who the child becomes after joining its cgroup; `nil`: whisperd's own ids.
        public var identity: ProcessIdentity?
        /// Empty the capability bounding and ambient sets before exec.
        public var dropsCapabilities: Bool
        /// `no_new_privs`: exec never grants privileges (setuid bits and file capabilities are ignored).
        public var noNewPrivileges: Bool
        /// A Landlock ruleset the child restricts itself with before exec (see ``LandlockRuleset``).
        public var landlockRulesetFD: Int32
        public var oomScoreAdjust: Int32?
        public var resourceLimits: [ResourceLimitSetting]
        /// Hand back ``Child/execFD``, a pipe that hangs up when the child's program starts or
        /// the child ends before it.
        public var reportsExec = false
        /// Keep a copy of the output pipes' write ends (``Child/heldWriteFDs``) until the caller
        /// closes them, at the reap: the child's exit then hangs up no pipe, so its end is seen
        /// once, through the pidfd, instead of waking the parent first while the child is still
        /// exiting (and taking the CPU from it).
        public var holdsOutputOpen = false

        public init(
            command: Command, workingDirectory: String,
            placement: CgroupPlacement = CgroupPlacement(), dataLimitBytes: UInt64? = nil, identity: ProcessIdentity? = nil,
            dropsCapabilities: Bool = false, noNewPrivileges: Bool = false, landlockRulesetFD: Int32 = -1,
            oomScoreAdjust: Int32? = nil, resourceLimits: [ResourceLimitSetting] = []
        ) {
            self.command = command
            self.workingDirectory = workingDirectory
            self.placement = placement
            self.dataLimitBytes = dataLimitBytes
            self.identity = identity
            self.dropsCapabilities = dropsCapabilities
            self.noNewPrivileges = noNewPrivileges
            self.landlockRulesetFD = landlockRulesetFD
            self.oomScoreAdjust = oomScoreAdjust
            self.resourceLimits = resourceLimits
        }

        /// A request with a command of its own, found from `workingDirectory`.
        public init(
            arguments: [String], environment: [String: String], workingDirectory: String,
            placement: CgroupPlacement = CgroupPlacement(), dataLimitBytes: UInt64? = nil, identity: ProcessIdentity? = nil,
            dropsCapabilities: Bool = false, noNewPrivileges: Bool = false, landlockRulesetFD: Int32 = -1,
            oomScoreAdjust: Int32? = nil, resourceLimits: [ResourceLimitSetting] = []
        ) {
            self.init(
                command: Command(arguments: arguments, environment: environment, workingDirectory: workingDirectory),
                workingDirectory: workingDirectory, placement: placement, dataLimitBytes: dataLimitBytes, identity: identity,
                dropsCapabilities: dropsCapabilities, noNewPrivileges: noNewPrivileges, landlockRulesetFD: landlockRulesetFD,
                oomScoreAdjust: oomScoreAdjust, resourceLimits: resourceLimits)
        }
    }

    /// The highest capability number this kernel knows (for dropping the bounding set).
    static let lastCapability: Int32 = {
        guard let text = readSmallFile("/proc/sys/kernel/cap_last_cap"),
            let value = text.split(whereSeparator: \.isWhitespace).first.flatMap({ Int32($0) })
        else { return 40 }
        return value
    }()

    public struct Child: Sendable {
        public let pid: Int32
        public let pidFD: Int32
        public let stdoutFD: Int32
        public let stderrFD: Int32
        /// With ``Request/reportsExec``: readable (hung up) once the exec succeeded or the child
        /// ended before it (then ``ProcessSpawner/startFailure(of:)`` says why); else -1.
        public let execFD: Int32
        /// With ``Request/holdsOutputOpen``: the write ends of stdout's and stderr's pipes, the
        /// caller's to close once the child is reaped; else empty.
        public let heldWriteFDs: [Int32]
        /// Set when `spawn` returned before the child's exec: a step that then fails is known
        /// once the child has exited (``ProcessSpawner/startFailure(of:)``).
        /// The program's path, as resolved.
        public let program: String
        let pendingStart: PendingStart?
    }

    /// What is needed to name a step that failed after `spawn` returned.
    struct PendingStart: Sendable {
        let serial: UInt64
        let path: String
        let workingDirectory: String
        let user: String
    }

    public enum Failure: Error, CustomStringConvertible, Equatable, Sendable {
        case notFound(String)
        case failed(step: String, errno: Int32)

        public var errno: Int32 {
            switch self {
            case .notFound: ENOENT
            case .failed(_, let errno): errno
            }
        }

        public var description: String {
            switch self {
            case .notFound(let program): "\(program): command not found on the character's PATH"
            case .failed(let step, let errno): "\(step): \(String(cString: strerror(errno)))"
            }
        }
    }

    private let devNull: Int32
    private let nofileSoftLimit: Int64

    /// - Parameter nofileSoftLimit: the RLIMIT_NOFILE soft limit children get back (whisperd raises its own).
    public init(nofileSoftLimit: Int64 = -1) throws {
        devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard devNull >= 0 else { throw SystemError("open /dev/null") }
        // Early, while whisperd holds few descriptors: children then copy only the low ones.
        whisper_spawn_reserve_slots()
        self.nofileSoftLimit = nofileSoftLimit
    }

    /// Finds `program` on `PATH` the way execvp would, so "not found" is reported before spawning.
    public static func resolve(_ program: String, path: String?, workingDirectory: String) -> String? {
        if program.contains("/") {
            let absolute = program.hasPrefix("/") ? program : workingDirectory + "/" + program
            return access(absolute, X_OK) == 0 ? absolute : nil
        }
        for directory in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
            let candidate = String(directory) + "/" + program
            var info = stat()
            if stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        return nil
    }

    public func spawn(_ request: Request) -> Result<Child, Failure> {
        let command = request.command
        guard let program = command.arguments.first else { return .failure(.notFound("(empty command)")) }
        guard let path = command.path else { return .failure(.notFound(program)) }

        var stdoutPipe: [Int32] = [-1, -1]
        var stderrPipe: [Int32] = [-1, -1]
        guard whisper_pipe(&stdoutPipe) == 0 else { return .failure(.failed(step: "pipe", errno: errno)) }
        guard whisper_pipe(&stderrPipe) == 0 else {
            let saved = errno
            close(stdoutPipe[0])
            close(stdoutPipe[1])
            return .failure(.failed(step: "pipe", errno: saved))
        }

        // The child's copy of the write end closes at exec (close-on-exec) or when it exits.
        var execPipe: [Int32] = [-1, -1]
        if request.reportsExec, whisper_pipe(&execPipe) != 0 {
            let saved = errno
            for fd in stdoutPipe + stderrPipe { close(fd) }
            return .failure(.failed(step: "pipe", errno: saved))
        }

        let identity = request.identity
        let groups: [UInt32] = identity?.supplementaryGroups ?? []
        let limits: [whisper_rlimit] = request.resourceLimits.map { whisper_rlimit(resource: $0.resource, soft: $0.soft, hard: $0.hard) }
        let result: whisper_spawn_result = path.withCString { cPath in
            request.workingDirectory.withCString { cwd in
                request.placement.taskFDs.withUnsafeBufferPointer { taskFDs in
                    groups.withUnsafeBufferPointer { groupIDs in
                        limits.withUnsafeBufferPointer { rlimits in
                            // Field by field: the type checker is slow on one call with every field.
                            var spawnRequest = whisper_spawn_request()
                            spawnRequest.path = cPath
                            spawnRequest.argv = command.argv.pointer
                            spawnRequest.envp = command.envp.pointer
                            spawnRequest.working_directory = cwd
                            spawnRequest.stdin_fd = devNull
                            spawnRequest.stdout_fd = stdoutPipe[1]
                            spawnRequest.stderr_fd = stderrPipe[1]
                            spawnRequest.cgroup_dir_fd = request.placement.directoryFD
                            spawnRequest.cgroup_dir_by_write = request.placement.joinsDirectoryByWrite ? 1 : 0
                            spawnRequest.cgroup_task_fds = taskFDs.baseAddress
                            spawnRequest.cgroup_task_count = Int32(taskFDs.count)
                            spawnRequest.new_session = 1
                            spawnRequest.nofile_soft = nofileSoftLimit
                            spawnRequest.data_limit = request.dataLimitBytes.map { Int64(clamping: $0) } ?? -1
                            if let adjust = request.oomScoreAdjust {
                                spawnRequest.set_oom_score_adj = 1
                                spawnRequest.oom_score_adj = adjust
                            }
                            spawnRequest.rlimits = rlimits.baseAddress
                            spawnRequest.rlimit_count = Int32(rlimits.count)
                            if let identity {
                                spawnRequest.change_identity = 1
                                spawnRequest.uid = identity.uid
                                spawnRequest.gid = identity.gid
                                spawnRequest.groups = groupIDs.baseAddress
                                spawnRequest.group_count = Int32(groupIDs.count)
                            }
                            spawnRequest.drop_capabilities = request.dropsCapabilities ? 1 : 0
                            spawnRequest.cap_last = Self.lastCapability
                            spawnRequest.no_new_privs = request.noNewPrivileges ? 1 : 0
                            spawnRequest.landlock_ruleset_fd = request.landlockRulesetFD
                            spawnRequest.exec_report_fd = execPipe[1]
                            spawnRequest.copy_whole_table = request.placement.mayHoldTheChildAtClone ? 1 : 0
                            return whisper_spawn(&spawnRequest)
                        }
                    }
                }
            }
        }
        // The arrays the child read stay allocated until here (the child has copied or exec'd).
        withExtendedLifetime(command) {}
        // The child has its own descriptor table by now (spawn.c waits for that): ours can go.
        let holdsOutput = request.holdsOutputOpen && result.pid > 0
        if !holdsOutput {
            close(stdoutPipe[1])
            close(stderrPipe[1])
        }
        if execPipe[1] >= 0 { close(execPipe[1]) }
        let user: String = request.identity.map { "uid \($0.uid) gid \($0.gid)" } ?? "own user"
        guard result.pid > 0 else {
            close(stdoutPipe[0])
            close(stderrPipe[0])
            if execPipe[0] >= 0 { close(execPipe[0]) }
            return .failure(Self.failure(step: result.failed_step, errno: result.error, path: path, workingDirectory: request.workingDirectory, user: user))
        }
        let pending = result.exec_pending != 0
            ? PendingStart(serial: result.serial, path: path, workingDirectory: request.workingDirectory, user: user) : nil
        return .success(Child(pid: result.pid, pidFD: result.pidfd, stdoutFD: stdoutPipe[0], stderrFD: stderrPipe[0], execFD: execPipe[0],
            heldWriteFDs: holdsOutput ? [stdoutPipe[1], stderrPipe[1]] : [], program: path, pendingStart: pending))
    }

    /// For a child that has exited: the step that failed before its program ran, if one did (it
    /// then exited with 127 without running the program). Asked once; `nil` after.
    public func startFailure(of child: Child) -> Failure? {
        guard let pending = child.pendingStart else { return nil }
        var error: Int32 = 0
        var step: Int32 = 0
        guard whisper_spawn_take_failure(pending.serial, &error, &step) == 1 else { return nil }
        return Self.failure(step: step, errno: error, path: pending.path, workingDirectory: pending.workingDirectory, user: pending.user)
    }

    private static func failure(step: Int32, errno: Int32, path: String, workingDirectory: String, user: String) -> Failure {
        let steps: [Int32: String] = [
            1: "fork", 2: "chdir \(workingDirectory) as \(user)", 3: "join cgroup", 4: "dup2", 5: "exec \(path) as \(user)",
            6: "setsid/setgroups/setgid/setuid to \(user)", 7: "no_new_privs", 8: "Landlock restrict_self",
            9: "ulimits/oom_score_adj",
        ]
        return .failed(step: steps[step] ?? "spawn", errno: errno)
    }
}

/// The ids a child takes on before exec.
public struct ProcessIdentity: Hashable, Sendable {
    public var uid: UInt32
    public var gid: UInt32
    public var supplementaryGroups: [UInt32]

    public init(uid: UInt32, gid: UInt32, supplementaryGroups: [UInt32] = []) {
        self.uid = uid
        self.gid = gid
        self.supplementaryGroups = supplementaryGroups
    }
}

/// One `setrlimit` for a child; -1 is unlimited.
public struct ResourceLimitSetting: Hashable, Sendable {
    public var resource: Int32
    public var soft: Int64
    public var hard: Int64

    public init(resource: Int32, soft: Int64, hard: Int64) {
        self.resource = resource
        self.soft = soft
        self.hard = hard
    }
}

extension ResourceLimitSetting {
    /// The roster's `ulimits:` entry as a `setrlimit` call.
    public init(_ limit: ResourceLimit) {
        // Linux's resource numbers (asm-generic/resource.h); Glibc does not export them all to Swift.
        let numbers: [ResourceLimit.Resource: Int32] = [
            .cpu: 0, .fsize: 1, .data: 2, .stack: 3, .core: 4, .rss: 5, .nproc: 6, .nofile: 7, .memlock: 8, .locks: 10,
            .sigpending: 11, .msgqueue: 12, .nice: 13, .rtprio: 14, .rttime: 15,
        ]
        let resource = numbers[limit.resource] ?? -1
        let soft: Int64 = limit.soft.map { Int64(clamping: $0) } ?? -1
        let hard: Int64 = limit.hard.map { Int64(clamping: $0) } ?? -1
        self.init(resource: resource, soft: soft, hard: hard)
    }
}

/// A NULL-terminated `char *[]` that lives as long as this value; its strings share one block.
final class CStringArray {
    private let storage: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    private let block: UnsafeMutablePointer<CChar>

    init(_ strings: [String]) {
        storage = .allocate(capacity: strings.count + 1)
        block = .allocate(capacity: max(1, strings.reduce(0) { $0 + $1.utf8.count + 1 }))
        var cursor = block
        for (index, string) in strings.enumerated() {
            storage[index] = cursor
            cursor = Self.copy(string, to: cursor)
            cursor.pointee = 0
            cursor += 1
        }
        storage[strings.count] = nil
    }

    /// An environment block: `KEY=value`, sorted by key, with no string built per entry.
    init(environment: [String: String]) {
        let entries = environment.sorted { $0.key < $1.key }
        storage = .allocate(capacity: entries.count + 1)
        block = .allocate(capacity: max(1, entries.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count + 2 }))
        var cursor = block
        for (index, entry) in entries.enumerated() {
            storage[index] = cursor
            cursor = Self.copy(entry.key, to: cursor)
            cursor.pointee = 0x3D  // "="
            cursor = Self.copy(entry.value, to: cursor + 1)
            cursor.pointee = 0
            cursor += 1
        }
        storage[entries.count] = nil
    }

    /// Copies the string's UTF-8 bytes; returns the position after them.
    private static func copy(_ string: String, to cursor: UnsafeMutablePointer<CChar>) -> UnsafeMutablePointer<CChar> {
        var string = string
        return string.withUTF8 { bytes in
            guard let base = bytes.baseAddress else { return cursor }
            UnsafeMutableRawPointer(cursor).copyMemory(from: base, byteCount: bytes.count)
            return cursor + bytes.count
        }
    }

    var pointer: UnsafePointer<UnsafeMutablePointer<CChar>?> { UnsafePointer(storage) }

    deinit {
        block.deallocate()
        storage.deallocate()
    }
}

/// Watches a child through its pidfd and reaps it; never `waitpid(-1)`.
public enum ChildReaper {
    /// `nil` while the child still runs.
    public static func reap(pidFD: Int32) -> (code: Int32?, signal: Int32?)? { wait(pidFD, keepZombie: false) }

    /// How the child ended, leaving it a zombie (`WNOWAIT`) for a later ``reap(pidFD:)``: the
    /// kernel's release of the task (about as long as a spawn) can then wait until its successor
    /// is started. `nil` while the child still runs.
    public static func exitStatus(pidFD: Int32) -> (code: Int32?, signal: Int32?)? { wait(pidFD, keepZombie: true) }

    private static func wait(_ pidFD: Int32, keepZombie: Bool) -> (code: Int32?, signal: Int32?)? {
        var code: Int32 = -1
        var signal: Int32 = 0
        guard whisper_pidfd_reap(pidFD, &code, &signal, keepZombie ? 1 : 0) == 1 else { return nil }
        return signal != 0 ? (nil, signal) : (code, nil)
    }

    /// A pidfd for any process (not only our children): it polls readable when the process exits.
    public static func openPidFD(_ pid: Int32) -> Int32 {
        whisper_pidfd_open(pid)  // pidfds are always close-on-exec
    }

    public static func signal(pidFD: Int32, _ signal: Int32) -> Bool {
        whisper_pidfd_send_signal(pidFD, signal) == 0
    }
}
