import Foundation
import WhisperCore

/// Turns the raw document into specs and runs the whole-roster pre-flight (DESIGN §3).
struct RosterResolver {
    let loader: RosterLoader
    var reader: RosterReader
    let baseDirectory: String
    let document: RosterDocument
    /// Not errors, but worth saying (`--check` prints them): e.g. a service that keeps root.
    var warnings: [RosterProblem] = []
    /// Entries left out by the active profiles.
    var inactive: [RosterDocument.Entry] = []
    /// Each env file read once per load: every service names the default `?.env`.
    private var envFiles: [String: EnvFileReading] = [:]

    private enum EnvFileReading {
        case absent
        case refused(String)
        case read(name: String, entries: [Dotenv.Entry])
    }

    /// Floors below which a limit is a typo, not a plan.
    static let minimumMemory: UInt64 = 8 << 20
    static let minimumPids = 8
    static let minimumCPUs = 0.01
    /// More CPUs than any host has (Linux's CONFIG_NR_CPUS maximum): a typo, and a quota the
    /// cgroup files cannot hold. (pids are bounded by the reader: 1...PID_MAX_LIMIT.)
    static let maximumCPUs = 8192.0
    static let minimumLogSize: UInt64 = 4096

    init(loader: RosterLoader, reader: RosterReader, baseDirectory: String, document: RosterDocument) {
        self.loader = loader
        self.reader = reader
        self.baseDirectory = baseDirectory
        self.document = document
    }

    private func absolute(_ path: String, from directory: String) -> String {
        Paths.absolute(path, from: directory)
    }

    mutating func resolve() -> LoadedRoster? {
        let charactersDirectory = absolute(document.charactersDirectory ?? "characters", from: baseDirectory)
        let defaults = RosterSettings.builtIn.overlaid(with: document.defaults)
        var specs: [ServiceSpec] = []
        var origins: [ServiceName: [String: String]] = [:]
        var seenNames: [String: Int?] = [:]
        var identitySecrets: [String: [(service: String, key: String)]] = [:]
        var ports: [Int: [(name: String, path: String, line: Int?)]] = [:]

        // Jobs first: they usually gate characters, and status lists them that way. A service
        // whose profiles are all inactive is left out (Compose's rule), and said.
        let active = loader.profiles
        let isActive = { (entry: RosterDocument.Entry) in entry.profiles.isEmpty || !active.isDisjoint(with: entry.profiles) }
        let written = oneServiceEntries() ?? document.entries
        let entries = expandReplicas((written.filter(\.isJob) + written.filter { !$0.isJob }).filter(isActive))
        inactive = written.filter { !isActive($0) }
        for entry in entries {
            let path = "\(entry.isJob ? "jobs" : "characters").\(entry.name)"
            if seenNames[entry.name] != nil {
                reader.problems.append(
                    RosterProblem(file: reader.file, line: entry.line, key: path, message: "the name `\(entry.name)` is used twice (jobs and characters share one namespace)"))
                continue
            }
            seenNames[entry.name] = entry.line
            if Self.reservedNames.contains(entry.name) {
                reader.problems.append(
                    RosterProblem(
                        file: reader.file, line: entry.line, key: path,
                        message: "`\(entry.name)` is reserved (whisperd's own entry in the state or runtime directory); choose another name"))
            }
            let settings = defaults.overlaid(with: entry.settings)
            checkSettings(settings, path: path, line: entry.line)
            if !entry.isJob { checkHealth(settings, port: entry.port, path: path, line: entry.line) }

            let workingDirectory = absolute(entry.workingDirectory ?? ".", from: baseDirectory)
            if entry.workingDirectory != nil {
                var isDirectory: ObjCBool = false
                if !FileManager.default.fileExists(atPath: workingDirectory, isDirectory: &isDirectory) || !isDirectory.boolValue {
                    reader.problems.append(
                        RosterProblem(
                            file: reader.file, line: entry.line, key: "\(path).working_dir",
                            message: "\(workingDirectory) is not a directory (the child would fail to start)"))
                }
            }
            var environment = Environment()
            if loader.oneService != nil {
                for (key, value) in loader.hostEnvironment where !RosterLoader.supervisorVariables.contains(key) {
                    environment.set(key, value, origin: "container")
                }
            } else {
                for key in ["PATH", "LANG", "TZ", "HOME"] {
                    if let value = loader.hostEnvironment[key] { environment.set(key, value, origin: "base") }
                }
            }
            if environment.values["PATH"] == nil {
                environment.set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", origin: "base")
            }
            for file in settings.envFiles ?? [] {
                readEnvFile(file, into: &environment, path: "\(path).env_file", line: entry.line)
            }
            for (key, value) in (settings.env ?? [:]).sorted(by: { $0.key < $1.key }) {
                environment.set(key, value, origin: "env")
            }
            let isBuiltInWorker = entry.command == nil && !entry.isJob
            environment.set("WHISPERD_CHARACTER", entry.characterName, origin: "whisperd")
            if !entry.isJob { environment.set("DISCORD_BOT_NAME", entry.characterName, origin: "whisperd") }
            if let replica = entry.replica {
                environment.set("REPLICA_INDEX", String(replica.index), origin: "whisperd")
                environment.set("REPLICA_COUNT", String(replica.count), origin: "whisperd")
            }
            environment.set("WHISPERD_CHARACTERS_DIR", charactersDirectory, origin: "whisperd")
            if let port = entry.port { environment.set("API_PORT", String(port), origin: "whisperd") }
            if let watchdog = settings.watchdog ?? nil {
                environment.set("WATCHDOG_USEC", String(watchdog.nanoseconds / 1000), origin: "whisperd")
            }

            if isBuiltInWorker {
                let characterFile = "\(charactersDirectory)/\(entry.characterName)/character.md"
                if access(characterFile, R_OK) != 0 {
                    reader.problems.append(
                        RosterProblem(
                            file: reader.file, line: entry.line, key: path,
                            message: "built-in worker needs \(characterFile) (missing or unreadable); or give `command:`"))
                }
            }
            var arguments = entry.command ?? [loader.selfExecutable, "worker", entry.characterName]
            if arguments.first == "whisperd" { arguments[0] = loader.selfExecutable }

            if let port = entry.port { ports[port, default: []].append((entry.name, path, entry.portLine)) }
            for (key, value) in environment.values where Secrets.isIdentitySecret(key) && !value.isEmpty {
                // Replicas of one character share its bot account on purpose (gateway shards).
                identitySecrets[value, default: []].append((entry.characterName, key))
            }

            guard let name = ServiceName(entry.name) else { continue }
            var after: [Dependency] = []
            for dependency in entry.after {
                if let dependencyName = ServiceName(dependency.name) {
                    after.append(
                        Dependency(
                            dependencyName, condition: dependency.condition, required: dependency.required,
                            restartsWithIt: dependency.restart))
                } else {
                    reader.problems.append(
                        RosterProblem(
                            file: reader.file, line: dependency.line, key: "\(path).after", message: "`\(dependency.name)` is not a valid name"))
                }
            }
            let kind: ServiceKind = entry.isJob ? .job(entry.jobRun ?? .oncePerRevision) : .character
            let tenant = tenantSpec(settings, isBuiltInWorker: isBuiltInWorker, path: path, line: entry.line)
            specs.append(
                ServiceSpec(
                    name: name, kind: kind,
                    launch: LaunchSpec(
                        arguments: arguments, environment: environment.values, workingDirectory: workingDirectory, tenant: tenant),
                    port: entry.port, after: after, restart: settings.restartPolicy, stopSignal: settings.stopSignal!,
                    stopGrace: settings.stopGrace!, limits: settings.limits, health: settings.healthPolicy(port: entry.port),
                    logs: settings.logPolicy))
            specs[specs.count - 1].schedule = entry.schedule
            origins[name] = environment.origins
        }

        for (port, users) in ports.sorted(by: { $0.key < $1.key }) where users.count > 1 {
            // At the second user's `port:`, the line to change.
            reader.report(
                line: users[1].line, "\(users[1].path).port", "port \(port) is used by \(users.map(\.name).joined(separator: ", "))")
        }
        for (_, users) in identitySecrets where Set(users.map(\.service)).count > 1 {
            let described = users.map { "\($0.service) (\($0.key))" }.joined(separator: ", ")
            reader.report(nil, "env", "the same bot token is given to \(described): two bots on one account")
        }
        checkDependencies(specs)
        guard reader.problems.isEmpty else { return nil }
        let inactiveNames = Set(inactive.map(\.name))
        var loaded = LoadedRoster(
            roster: Roster(services: specs), path: absolute(reader.file, from: baseDirectory),
            charactersDirectory: charactersDirectory, environmentOrigins: origins, warnings: warnings,
            inactive: inactive.map(\.name))
        loaded.profileMembers = document.entries.reduce(into: [:]) { members, entry in
            for profile in entry.profiles { members[profile, default: []].append(entry.name) }
        }
        loaded.characterEntries = Set(document.entries.filter { !$0.isJob && !inactiveNames.contains($0.name) }.map(\.name))
        return loaded
    }

    /// `run-one NAME`: that entry alone, without what the pod around it does instead (see
    /// `RosterLoader.oneService`); nil when not in that mode or when it is not there (reported).
    private mutating func oneServiceEntries() -> [RosterDocument.Entry]? {
        guard let one = loader.oneService else { return nil }
        guard var entry = document.entries.first(where: { $0.name == one.name }) else {
            reader.report(line: nil, one.name, "no character or job `\(one.name.prefix(63))` in this roster")
            return []
        }
        let path = "\(entry.isJob ? "jobs" : "characters").\(entry.name)"
        entry.after = []
        entry.profiles = []
        if let count = entry.replicas, !entry.isJob {
            if count == 0 {
                reader.report(line: entry.line, "\(path).replicas", "replicas: 0: no instance to run")
            } else if let index = one.replicaIndex, (0..<count).contains(index) {
                entry.replica = .init(base: entry.name, index: index, count: count)
            } else {
                let given = one.replicaIndex.map { "instance \($0) is not in 0...\(count - 1)" } ?? "no instance given"
                reader.report(line: entry.line, "\(path).replicas", "\(given): run-one needs the pod's ordinal (REPLICA_INDEX, or a HOSTNAME ending in -N)")
            }
            // Each instance is a pod of its own: every one listens on the first (or only) port.
            entry.port = entry.ports?.first ?? entry.port
            entry.ports = nil
            entry.replicas = nil
        }
        return [entry]
    }

    /// `replicas: N` → `NAME-0 … NAME-(N-1)`, each with its port (`port:` + i, or the i-th of a
    /// list); an `after:` naming the character waits for every instance. 0 replicas: none.
    private mutating func expandReplicas(_ entries: [RosterDocument.Entry]) -> [RosterDocument.Entry] {
        var instances: [String: [String]] = [:]
        var counts: [String: Int] = [:]
        for entry in entries where !entry.isJob {
            guard let count = loader.replicaOverrides[entry.name] ?? entry.replicas else { continue }
            counts[entry.name] = count
            instances[entry.name] = (0..<count).map { "\(entry.name)-\($0)" }
        }
        var expanded: [RosterDocument.Entry] = []
        for var entry in entries {
            entry.after = entry.after.flatMap { dependency -> [DependencyEntry] in
                guard let names = instances[dependency.name] else { return [dependency] }
                return names.map { name in
                    var instance = dependency
                    instance.name = name
                    return instance
                }
            }
            let path = "characters.\(entry.name)"
            if entry.isJob, entry.ports != nil {
                reader.report(line: entry.portLine, "jobs.\(entry.name).port", "a list of ports is for a character with replicas")
            }
            guard let count = counts[entry.name] else {
                if entry.ports != nil, !entry.isJob {
                    reader.report(line: entry.portLine, "\(path).port", "a list of ports needs `replicas:` (one port each)")
                }
                expanded.append(entry)
                continue
            }
            if let ports = entry.ports, ports.count != count {
                reader.report(line: entry.portLine, "\(path).port", "\(ports.count) ports for \(count) replicas: give one each (or one base port)")
            }
            if let base = entry.port, base + count - 1 > 65535 {
                reader.report(line: entry.portLine, "\(path).port", "ports \(base)…\(base + count - 1) go past 65535")
            }
            if !ServiceName.isValid("\(entry.name)-\(count - 1)") {
                reader.report(line: entry.line, path, "`\(entry.name)-\(count - 1)` is too long for a name: shorten `\(entry.name)`")
            }
            for index in 0..<count {
                var instance = entry
                instance.name = "\(entry.name)-\(index)"
                instance.replica = .init(base: entry.name, index: index, count: count)
                instance.port = entry.ports.map { index < $0.count ? $0[index] : nil } ?? entry.port.map { $0 + index }
                instance.ports = nil
                if let port = instance.port, port > 65535 { instance.port = nil }
                expanded.append(instance)
            }
        }
        return expanded
    }

    /// Names whose `<state>/<name>/` or `<runtime>/<name>/` would be whisperd's own directory.
    static let reservedNames: Set<String> = ["notify", "incidents", "memory"]

    private mutating func tenantSpec(_ settings: RosterSettings, isBuiltInWorker: Bool, path: String, line: Int?) -> TenantSpec {
        if settings.user == .root {
            warnings.append(
                RosterProblem(
                    file: reader.file, line: line, key: "\(path).user",
                    message: "runs as root: it can read every other character's files and drive whisperd (user: dynamic is the default)"))
        }
        if settings.sandboxFilesystem == .off {
            warnings.append(
                RosterProblem(file: reader.file, line: line, key: "\(path).sandbox.filesystem", message: "off: no filesystem rules for this service"))
        }
        let sandbox = SandboxSpec(
            filesystem: settings.sandboxFilesystem ?? (isBuiltInWorker ? .strict : .default),
            readPaths: (settings.readPaths ?? []).map { absolute($0, from: baseDirectory) },
            writePaths: (settings.writePaths ?? []).map { absolute($0, from: baseDirectory) },
            bindPorts: settings.bindPorts ?? [])
        return TenantSpec(
            user: settings.user, group: settings.group, supplementaryGroups: settings.supplementaryGroups ?? [], sandbox: sandbox,
            oomScoreAdjust: settings.oomScoreAdjust, resourceLimits: settings.resourceLimits ?? [])
    }

    /// What each `ready:` mode needs, and sane probe schedules.
    private mutating func checkHealth(_ settings: RosterSettings, port: Int?, path: String, line: Int?) {
        func problem(_ key: String, _ message: String) {
            reader.problems.append(RosterProblem(file: reader.file, line: line, key: "\(path).\(key)", message: message))
        }
        switch settings.ready {
        case .http where port == nil: problem("health.ready", "ready: http probes the service's port: give it a `port:`")
        case .exec where (settings.execTest ?? nil) == nil: problem("health.exec.test", "ready: exec needs a test ([CMD, …] or [CMD-SHELL, \"…\"])")
        case .tcp where settings.tcpPort == nil && port == nil: problem("health.tcp.port", "ready: tcp needs a port (or the service's `port:`)")
        case .log where settings.readyLogLine == nil: problem("health.ready_log_line", "ready: log needs the line to wait for (a regular expression)")
        default: break
        }
        for (name, probe) in [("exec", settings.exec), ("tcp", settings.tcp)] {
            if let interval = probe.interval, interval < .milliseconds(10) { problem("health.\(name).interval", "must be at least 10ms") }
            if let interval = probe.startInterval, interval < .milliseconds(10) { problem("health.\(name).start_interval", "must be at least 10ms") }
            if let timeout = probe.timeout, timeout <= .zero { problem("health.\(name).timeout", "must be above 0") }
        }
    }

    private mutating func checkSettings(_ settings: RosterSettings, path: String, line: Int?) {
        func problem(_ key: String, _ message: String) {
            reader.problems.append(RosterProblem(file: reader.file, line: line, key: "\(path).\(key)", message: message))
        }
        if let memory = settings.memory, memory < Self.minimumMemory {
            problem("limits.memory", "\(Units.formatSize(memory)) is below the floor of \(Units.formatSize(Self.minimumMemory))")
        }
        if let high = settings.memoryHigh {
            if high < Self.minimumMemory {
                problem("limits.memory_high", "\(Units.formatSize(high)) is below the floor of \(Units.formatSize(Self.minimumMemory))")
            }
            if let memory = settings.memory, high > memory {
                problem("limits.memory_high", "\(Units.formatSize(high)) is above limits.memory (\(Units.formatSize(memory)))")
            }
        }
        if let low = settings.memoryLow, let memory = settings.memory, low > memory {
            problem("memory_low", "\(Units.formatSize(low)) is above limits.memory (\(Units.formatSize(memory)))")
        }
        if let cpus = settings.cpus, cpus < Self.minimumCPUs { problem("limits.cpus", "\(cpus) is below the floor of \(Self.minimumCPUs)") }
        if let cpus = settings.cpus, !(cpus <= Self.maximumCPUs) {
            problem("limits.cpus", "\(cpus) is above the ceiling of \(Int(Self.maximumCPUs))")
        }
        if let pids = settings.pids, pids < Self.minimumPids { problem("limits.pids", "\(pids) is below the floor of \(Self.minimumPids)") }
        if let size = settings.logMaxSize, size < Self.minimumLogSize {
            problem("logs.max_size", "\(size) bytes is below the floor of \(Self.minimumLogSize)")
        }
        if let delay = settings.restartDelay, let cap = settings.restartDelayMax, delay > cap {
            problem("restart_delay", "\(delay.humanReadable) is above restart_delay_max (\(cap.humanReadable))")
        }
        if let timeout = settings.readyTimeout, timeout <= .zero { problem("health.ready_timeout", "must be above 0") }
        if let interval = settings.httpInterval, interval < .milliseconds(10) { problem("health.http.interval", "must be at least 10ms") }
        if let timeout = settings.httpTimeout, timeout <= .zero { problem("health.http.timeout", "must be above 0") }
        if let window = settings.budgetWindow, window <= .zero { problem("restart_budget.window", "must be above 0") }
    }

    private mutating func readEnvFile(_ raw: String, into environment: inout Environment, path: String, line: Int?) {
        let isOptional = raw.hasPrefix("?")
        let file = absolute(isOptional ? String(raw.dropFirst()) : raw, from: baseDirectory)
        let reading = envFiles[raw] ?? Self.readEnvFile(file, isOptional: isOptional)
        envFiles[raw] = reading
        switch reading {
        case .absent: return
        case .refused(let message): reader.problems.append(RosterProblem(file: reader.file, line: line, key: path, message: message))
        case .read(let name, let entries):
            for entry in entries { environment.set(entry.key, entry.value, origin: "\(name):\(entry.line)") }
        }
    }

    private static func readEnvFile(_ file: String, isOptional: Bool) -> EnvFileReading {
        // The opened file is what is checked and read: no symlink, no swap between check and read.
        let fd = open(file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            if errno == ELOOP { return .refused("\(file) is a symlink; name the file itself") }
            if !isOptional || errno != ENOENT {
                return .refused("\(file): \(String(cString: strerror(errno))) (prefix with ? to make it optional)")
            }
            return .absent
        }
        let handle = FileHandle(fileDescriptor: fd, closeOnDealloc: true)
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return .refused("\(file) is not a regular file") }
        // Whoever can write it can inject LD_PRELOAD or PATH into a child.
        let mode: mode_t = info.st_mode & 0o7777
        if mode & 0o022 != 0 {
            return .refused("\(file) is group- or world-writable (mode \(String(mode, radix: 8))): chmod go-w \(file)")
        }
        if info.st_uid != 0 && info.st_uid != geteuid() {
            return .refused("\(file) belongs to uid \(info.st_uid), not to root or whisperd's user: chown root \(file)")
        }
        guard info.st_size <= 1 << 20 else { return .refused("\(file) is larger than 1 MiB") }
        guard let data = try? handle.readToEnd() ?? Data() else { return .refused("\(file): cannot read it") }
        guard let text = String(data: data, encoding: .utf8) else { return .refused("\(file) is not UTF-8") }
        switch Dotenv.parse(text) {
        case .failure(let error):
            return .refused("\(Paths.lastComponent(file)):\(error.line): \(error.message)")
        case .success(let entries):
            if info.st_mode & S_IROTH != 0, let secret = entries.first(where: { Secrets.isSecret($0.key) }) {
                return .refused("\(file) holds \(secret.key) but is world-readable: chmod o-r \(file)")
            }
            return .read(name: Paths.lastComponent(file), entries: entries)
        }
    }

    private mutating func checkDependencies(_ specs: [ServiceSpec]) {
        let byName = Dictionary(specs.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let knownNames = Set(specs.map(\.name.rawValue))
        let inactiveProfiles = Dictionary(inactive.map { ($0.name, $0.profiles) }, uniquingKeysWith: { first, _ in first })
        // The line of each `after:` item, to point at the one to change.
        var afterLines: [String: [String: Int]] = [:]
        for entry in document.entries {
            for dependency in entry.after {
                if let line = dependency.line { afterLines[entry.name, default: [:]][dependency.name] = line }
            }
        }
        func problem(_ spec: ServiceSpec, _ dependency: ServiceName, _ message: String) {
            reader.report(
                line: afterLines[spec.name.rawValue]?[dependency.rawValue],
                "\(spec.isJob ? "jobs" : "characters").\(spec.name).after", message)
        }
        for spec in specs {
            for dependency in spec.dependencies {
                if dependency.name == spec.name {
                    problem(spec, dependency.name, "\(spec.name) cannot wait for itself")
                } else if !knownNames.contains(dependency.name.rawValue) {
                    // Compose's `required: false`: a dependency that may be absent is not an error.
                    if dependency.required, let profiles = inactiveProfiles[dependency.name.rawValue] {
                        problem(
                            spec, dependency.name,
                            "`\(dependency.name)` runs only with profile \(profiles.joined(separator: " or ")): activate one (--profile), or make it `required: false`")
                    } else if dependency.required {
                        problem(spec, dependency.name, "unknown service `\(dependency.name)` (not a character or job in this roster)")
                    }
                } else if let waited = byName[dependency.name], let schedule = waited.schedule {
                    problem(
                        spec, dependency.name,
                        "`\(dependency.name)` runs by the clock (\(schedule)): nothing can wait for it; drop it from after:")
                } else if dependency.condition == .completedSuccessfully, byName[dependency.name]?.isJob == false {
                    problem(
                        spec, dependency.name,
                        "`\(dependency.name)` is a character, which never completes: completed_successfully needs a job (under jobs:)")
                }
            }
        }
        // Cycles: depth-first search, reporting each cycle once.
        var state: [ServiceName: Int] = [:]  // 1 visiting, 2 done
        var reported: Set<Set<ServiceName>> = []
        func visit(_ name: ServiceName, _ stack: [ServiceName]) {
            if state[name] == 2 { return }
            if state[name] == 1 {
                guard let start = stack.firstIndex(of: name) else { return }
                let cycle = Array(stack[start...])
                if reported.insert(Set(cycle)).inserted, cycle.count > 1, let first = byName[cycle[0]] {
                    let text = (cycle + [name]).map(\.rawValue).joined(separator: " → ")
                    problem(first, cycle[1], "dependency cycle: \(text)")
                }
                return
            }
            state[name] = 1
            for dependency in byName[name]?.after ?? [] where byName[dependency] != nil && dependency != name {
                visit(dependency, stack + [name])
            }
            state[name] = 2
        }
        for spec in specs { visit(spec.name, []) }
    }
}

/// Layered environment: later `set` wins, and remembers which layer set each variable.
struct Environment {
    var values: [String: String] = [:]
    var origins: [String: String] = [:]

    mutating func set(_ key: String, _ value: String, origin: String) {
        values[key] = value
        origins[key] = origin
    }
}
