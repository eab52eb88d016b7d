import WhisperCore

/// One Compose service → one roster entry's keys, with a finding for every key.
struct ComposeServiceTranslation {
    struct Dependency {
        var name: String
        var line: Int?
        var value: RosterValue
    }

    let name: String
    let node: ComposeNode
    let line: Int?
    let isJob: Bool
    var keys: [(String, RosterValue)] = []
    var dependencies: [Dependency] = []
    /// Where `after:` goes among `keys` (after command and port, for reading).
    var afterPosition = 0
    /// Set when the service cannot run under whisperd; it is then left out of the roster.
    var unmappable: String?
    var findings: [ComposeFinding] = []
    var isBuiltInWorker = false
    /// A `healthcheck:` became a probe.
    var hasProbe = false
    var characterName: String?

    init(name: String, node: ComposeNode, line: Int?, isJob: Bool) {
        self.name = name
        self.node = node
        self.line = line
        self.isJob = isJob
    }

    /// The roster's name: the character for the built-in worker, else the Compose name made
    /// valid (lowercase; `.` and other characters become `-`).
    var rosterName: String {
        let source = isBuiltInWorker ? characterName ?? name : name
        let mapped = source.lowercased().unicodeScalars.map { scalar -> Character in
            let valid = scalar.isASCII && (("a"..."z").contains(scalar) || ("0"..."9").contains(scalar) || scalar == "_" || scalar == "-")
            return valid ? Character(scalar) : "-"
        }
        return String(mapped)
    }

    /// Keys with no meaning for a process on one host, and why.
    static let ignoredKeys: [String: String] = [
        "networks": "no network namespaces: every service shares the host's network",
        "network_mode": "no network namespaces",
        "container_name": "services are named by the roster",
        "hostname": "no UTS namespace",
        "domainname": "no UTS namespace",
        "volumes": "no volumes: a service's data lives in its own state dir (STATE_DIRECTORY)",
        "volumes_from": "no volumes",
        "tmpfs": "TMPDIR is the service's own runtime dir",
        "build": "no images are built: the command must exist on this host",
        "pull_policy": "no images",
        "platform": "no images",
        "labels": "no labels",
        "expose": "no network namespaces: ports are the host's",
        "extra_hosts": "no network namespaces",
        "dns": "no network namespaces",
        "dns_search": "no network namespaces",
        "links": "no network namespaces",
        "tty": "no terminal: output goes to the service's log",
        "stdin_open": "no standard input",
        "init": "whisperd reaps the whole cgroup",
        "restart_policy": "see restart",
        "secrets": "no secrets mounts: use env_file (root-owned, not world-readable)",
        "configs": "no configs: give the files' host paths to the command",
        "security_opt": "whisperd's sandbox applies instead (docs/security.md)",
        "cap_add": "services run with no capabilities",
        "cap_drop": "services run with no capabilities",
        "privileged": "services run with no capabilities",
        "read_only": "whisperd's Landlock sandbox applies instead",
        "shm_size": "no IPC namespace",
        "ipc": "no IPC namespace",
        "pid": "no PID namespace",
        "devices": "no device cgroup rules",
        "group_add": "not mapped: use the roster's supplementary_groups",
        "oom_kill_disable": "not settable per service",
        "sysctls": "no network namespace of its own",
    ]

    mutating func note(_ key: String, line: Int?, _ outcome: ComposeFinding.Outcome, file: String? = nil) {
        findings.append(ComposeFinding(file: displayName(file ?? node.file), line: line, key: "services.\(name)" + (key.isEmpty ? "" : ".\(key)"), outcome: outcome))
    }

    mutating func note(_ key: String, _ value: ComposeNode, _ outcome: ComposeFinding.Outcome) {
        note(key, line: value.line, outcome, file: value.file)
    }

    mutating func set(_ key: String, _ value: RosterValue) {
        if let index = keys.firstIndex(where: { $0.0 == key }) { keys[index].1 = value } else { keys.append((key, value)) }
    }

    /// Adds `inner` under `outer` (`limits.memory`), merging with what is there.
    mutating func set(_ outer: String, _ inner: String, _ value: RosterValue) {
        var entries: [(String, RosterValue)] = []
        if let index = keys.firstIndex(where: { $0.0 == outer }), case .map(let existing) = keys[index].1 { entries = existing }
        if let index = entries.firstIndex(where: { $0.0 == inner }) { entries[index].1 = value } else { entries.append((inner, value)) }
        set(outer, .map(entries))
    }

    mutating func translate(options: ComposeImportOptions) {
        let entries = node.entries ?? []
        let environmentValues = readEnvironment()
        let image = node["image"]?.scalar
        let hasCommand = node["command"] != nil || node["entrypoint"] != nil
        if let workerImage = options.workerImage, let image, Self.image(image, matches: workerImage), !isJob {
            isBuiltInWorker = true
            characterName = environmentValues.first { $0.0 == "DISCORD_BOT_NAME" }?.1 ?? name
            note("image", node["image"]!, .mapped("the built-in worker (`whisperd worker \(rosterName)`, --worker-image): it reads characters/\(rosterName)/character.md beside the roster"))
            if let command = node["command"] ?? node["entrypoint"] { note("command", command, .ignored("the built-in worker takes no command")) }
        } else if !hasCommand {
            let reason = image.map { "`image: \($0)` has no `command:`: whisperd runs no images; give the program on this host as `command:`" }
                ?? "no `command:` (and no image given as --worker-image)"
            note("", line: line, .notMappable("left out: " + reason))
            unmappable = reason
            return
        } else {
            readCommand()
            if let image { note("image", node["image"]!, .ignored("`\(image)`: no images; the command must exist on this host")) }
        }
        for entry in entries {
            let key = entry.key
            let value = entry.value
            if key.hasPrefix("x-") {
                note(key, line: entry.line, .ignored("extension field (x-)"), file: value.file)
                continue
            }
            switch key {
            case "image", "command", "entrypoint", "depends_on", "extends": continue
            case "environment", "env_file": continue  // read below
            case "ports": readPorts(value)
            case "healthcheck": readHealthcheck(value)
            case "restart": readRestart(value)
            case "deploy": readDeploy(value)
            case "scale": readReplicas(value, key: key)
            case "cpus": readCPUs(value, key: key)
            case "mem_limit": readSize(value, key: key, outer: "limits", inner: "memory")
            case "mem_reservation": readSize(value, key: key, outer: nil, inner: "memory_low")
            case "memswap_limit": note(key, value, .ignored("whisperd turns swap off for limited services"))
            case "cpuset":
                if let text = value.scalar, (try? CPUSet.parse(text)) != nil {
                    set("cpuset", .scalar(text))
                    note(key, value, .mapped("cpuset: \(text)"))
                } else { note(key, value, .notMappable("\(value.kindName) is not a CPU list")) }
            case "cpu_shares":
                if let shares = Double(value.scalar ?? ""), shares > 0, shares.isFinite {
                    // Clamped before the conversion: a huge share count must not trap.
                    let weight = Int(min(10_000, max(1, (shares / 10.24).rounded())))
                    set("cpu_weight", .scalar(String(weight)))
                    note(key, value, .mapped("cpu_weight: \(weight) (shares / 10.24)"))
                } else { note(key, value, .notMappable("expected a positive number, found \(value.kindName)")) }
            case "pids_limit":
                if let pids = Int(value.scalar ?? ""), pids > 0 {
                    set("limits", "pids", .scalar(String(pids)))
                    note(key, value, .mapped("limits.pids: \(pids)"))
                } else { note(key, value, .ignored("\(value.kindName): no limit")) }
            case "ulimits": readUlimits(value)
            case "user": readUser(value)
            case "working_dir":
                if let path = value.scalar {
                    set("working_dir", .scalar(path))
                    note(key, value, .mapped("working_dir: a path on this host now, not in an image"))
                }
            case "stop_signal":
                if let text = value.scalar, Signal(name: text) != nil {
                    set("stop_signal", .scalar(text.uppercased().hasPrefix("SIG") ? text.uppercased() : "SIG" + text.uppercased()))
                    note(key, value, .mapped("stop_signal"))
                } else { note(key, value, .notMappable("\(value.kindName) is not a signal name")) }
            case "stop_grace_period": readDuration(value, key: key, to: "stop_grace")
            case "logging": readLogging(value)
            case "profiles" where !options.profiles.isEmpty:
                note(key, value, .ignored("chosen by --profile: imported to run always"))
            case "profiles":
                let profiles = value.items?.compactMap(\.scalar) ?? []
                if profiles.allSatisfy(RosterLoader.isValidProfile), !profiles.isEmpty {
                    set("profiles", .list(profiles))
                    note(key, value, .mapped("profiles: [\(profiles.joined(separator: ", "))]"))
                } else { note(key, value, .notMappable("expected a list of profile names")) }
            default:
                if let reason = Self.ignoredKeys[key] {
                    note(key, line: entry.line, .ignored(reason), file: value.file)
                } else {
                    note(key, line: entry.line, .notMappable("whisperd has no equivalent"), file: value.file)
                }
            }
        }
        readEnvironmentKeys(environmentValues)
        readDependsOn()
        if !isJob, !isBuiltInWorker, !hasProbe {
            set("health", "ready", .scalar("started"))
            if node["healthcheck"] == nil {
                note("", line: line, .mapped("health.ready: started: no health check (Compose counts a started container as up)"))
            }
        }
        if node["restart"] == nil, node["deploy"]?["restart_policy"] == nil {
            set("restart", .scalar("no"))
            note("", line: line, .mapped("restart: no (Compose's default; whisperd's own default is always)"))
        }
        if isJob, let index = keys.firstIndex(where: { $0.0 == "replicas" }) {
            keys.remove(at: index)
            note("", line: line, .notMappable("replicas of a job: a job runs once"))
        }
        if isJob {
            for key in ["port", "health"] {
                if let index = keys.firstIndex(where: { $0.0 == key }) {
                    keys.remove(at: index)
                    note("", line: line, .ignored("\(key) of a one-shot job (one that others wait for with service_completed_successfully)"))
                }
            }
        }
    }

    static func image(_ image: String, matches wanted: String) -> Bool {
        func repository(_ reference: String) -> String {
            let withoutDigest = reference.split(separator: "@", maxSplits: 1).first.map(String.init) ?? reference
            guard let colon = withoutDigest.lastIndex(of: ":"), !withoutDigest[colon...].contains("/") else { return withoutDigest }
            return String(withoutDigest[..<colon])
        }
        if image == wanted { return true }
        return repository(wanted) == wanted && repository(image) == wanted
    }

    static func isDisabled(_ healthcheck: ComposeNode) -> Bool {
        if ["true", "yes", "on"].contains(healthcheck["disable"]?.scalar ?? "") { return true }
        return healthcheck["test"]?.items?.first?.scalar == "NONE"
    }

    // MARK: command

    mutating func words(_ value: ComposeNode, key: String) -> [String]? {
        if let items = value.items {
            let words = items.compactMap(\.scalar)
            guard words.count == items.count else {
                note(key, value, .notMappable("every item must be a string"))
                return nil
            }
            return words
        }
        if value.isNull { return [] }
        guard let text = value.scalar else {
            note(key, value, .notMappable("expected a string or a list, found \(value.kindName)"))
            return nil
        }
        do { return try ShellWords.split(text) } catch {
            note(key, value, .notMappable("an unterminated quote or a trailing backslash"))
            return nil
        }
    }

    mutating func readCommand() {
        let entrypoint = node["entrypoint"].flatMap { words($0, key: "entrypoint") }
        let command = node["command"].flatMap { words($0, key: "command") }
        let full = (entrypoint ?? []) + (command ?? [])
        guard !full.isEmpty else {
            unmappable = "the command is empty"
            note("", line: line, .notMappable("left out: the command is empty"))
            return
        }
        set("command", .list(full))
        afterPosition = keys.count
        let what = entrypoint == nil ? "" : command == nil ? " (the entrypoint)" : " (entrypoint + command)"
        var detail = "command:\(what), run on this host (`\(full[0])` must exist here)"
        if entrypoint == nil, node["image"] != nil { detail += "; an image's own entrypoint is not prepended" }
        note(entrypoint == nil ? "command" : "entrypoint", (node["entrypoint"] ?? node["command"])!, .mapped(detail))
    }

    // MARK: environment

    /// `environment:` as a map or a list (`KEY=value`, or `KEY` alone: taken from the
    /// environment of the import, as Compose takes it from its shell), in order.
    func readEnvironment() -> [(String, String?)] {
        guard let value = node["environment"] else { return [] }
        var result: [(String, String?)] = []
        if let entries = value.entries {
            for entry in entries {
                if entry.value.isNull { result.append((entry.key, nil)) } else if let text = entry.value.scalar { result.append((entry.key, text)) }
            }
        } else if let items = value.items {
            for item in items {
                guard let text = item.scalar else { continue }
                if let equals = text.firstIndex(of: "=") {
                    result.append((String(text[..<equals]), String(text[text.index(after: equals)...])))
                } else { result.append((text, nil)) }
            }
        }
        return Self.lastOfEach(result).values
    }

    /// A name given twice (`- KEY=a` then `- KEY=b`): the last is kept, as Compose keeps it, in
    /// the place of the first; the names given more than once, for the report.
    static func lastOfEach(_ pairs: [(String, String?)]) -> (values: [(String, String?)], repeated: [String]) {
        var position: [String: Int] = [:]
        var values: [(String, String?)] = []
        var repeated: [String] = []
        for (key, value) in pairs {
            if let index = position[key] {
                values[index].1 = value
                if !repeated.contains(key) { repeated.append(key) }
            } else {
                position[key] = values.count
                values.append((key, value))
            }
        }
        return (values, repeated)
    }

    /// The names `environment:` gives more than once (a list may; a map cannot).
    private func repeatedEnvironmentNames() -> [String] {
        guard let items = node["environment"]?.items else { return [] }
        let names = items.compactMap { item in item.scalar.map { text in String(text.prefix { $0 != "=" }) } }
        return Self.lastOfEach(names.map { ($0, nil) }).repeated
    }

    mutating func readEnvironmentKeys(_ values: [(String, String?)]) {
        if let value = node["environment"] {
            var env: [(String, RosterValue)] = []
            var bad: [String] = []
            var passed: [String] = []
            for (key, text) in values {
                guard let text else {
                    passed.append(key)
                    continue
                }
                if Dotenv.isValidKey(key) { env.append((key, .scalar(text))) } else { bad.append(key) }
            }
            if !env.isEmpty { set("env", .map(env)) }
            note("environment", value, .mapped("env: \(env.count) variable\(env.count == 1 ? "" : "s") (values not shown)"))
            if !bad.isEmpty { note("environment", value, .notMappable("invalid names left out: \(bad.joined(separator: ", "))")) }
            let repeated = repeatedEnvironmentNames()
            if !repeated.isEmpty {
                note("environment", value, .warning("\(repeated.joined(separator: ", ")) given more than once: the last is kept, as Compose keeps it"))
            }
            if !passed.isEmpty {
                note("environment", value, .warning("\(passed.joined(separator: ", ")) without a value: Compose passes the shell's; whisperd passes only PATH LANG TZ HOME from its own, so set them in env_file"))
            }
        }
        guard let value = node["env_file"] else { return }
        let directory = Paths.directory(of: value.file)
        var files: [String] = []
        for item in value.items ?? [value] {
            let path: String?
            var required = true
            if let text = item.scalar {
                path = text
            } else {
                path = item["path"]?.scalar
                if let flag = item["required"]?.scalar { required = !["false", "no", "off"].contains(flag) }
            }
            guard let path, !path.isEmpty else {
                note("env_file", item, .notMappable("expected a path, a list of paths or {path, required}"))
                continue
            }
            files.append((required ? "" : "?") + Paths.absolute(path, from: directory))
        }
        if !files.isEmpty {
            set("env_file", .list(files))
            note("env_file", value, .mapped("env_file: absolute paths; each must be root's and not group/world-writable (docs/security.md)"))
        }
    }

    // MARK: depends_on

    mutating func readDependsOn() {
        guard let value = node["depends_on"] else { return }
        if let items = value.items {
            for item in items {
                guard let target = item.scalar else { continue }
                dependencies.append(Dependency(name: target, line: item.line, value: .scalar("started")))
            }
            note("depends_on", value, .mapped("after: {NAME: started} (Compose's list form waits for the start)"))
            return
        }
        guard let entries = value.entries else {
            note("depends_on", value, .notMappable("expected a list or a mapping, found \(value.kindName)"))
            return
        }
        for entry in entries {
            let condition = entry.value["condition"]?.scalar ?? "service_started"
            let bare = condition.hasPrefix("service_") ? String(condition.dropFirst("service_".count)) : condition
            guard DependencyCondition(rawValue: bare) != nil else {
                note("depends_on.\(entry.key).condition", entry.value, .notMappable("`\(condition)` is not a condition"))
                continue
            }
            var item: [(String, RosterValue)] = [("condition", .scalar(bare))]
            for flag in ["required", "restart"] {
                if let text = entry.value[flag]?.scalar { item.append((flag, .scalar(["true", "yes", "on"].contains(text) ? "true" : "false"))) }
            }
            dependencies.append(Dependency(name: entry.key, line: entry.line, value: item.count == 1 ? .scalar(bare) : .map(item)))
        }
        note("depends_on", value, .mapped("after: {NAME: condition} (with required and restart)"))
    }

    // MARK: ports

    mutating func readPorts(_ value: ComposeNode) {
        guard let items = value.items, let first = items.first else {
            note("ports", value, .notMappable("expected a list of ports"))
            return
        }
        var host: Int?
        var container: Int?
        if let text = first.scalar {
            let withoutProtocol = text.split(separator: "/").first.map(String.init) ?? text
            let parts = withoutProtocol.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            container = Int(parts.last ?? "")
            host = parts.count >= 2 ? Int(parts[parts.count - 2]) : nil
        } else {
            container = Int(first["target"]?.scalar ?? "")
            host = Int(first["published"]?.scalar ?? "")
        }
        guard let port = host ?? container, (1...65535).contains(port) else {
            note("ports", first, .notMappable("\(first.kindName): only a single port (not a range) can become `port:`"))
            return
        }
        set("port", .scalar(String(port)))
        var detail = "port: \(port) (exported as API_PORT)"
        if host == nil { detail += "; Compose would publish a random host port" }
        if let host, let container, host != container {
            detail += isBuiltInWorker
                ? "; the built-in worker listens there (it was \(container) in its container)"
                : "; the program must listen on \(host) itself (it would have listened on \(container) in its container)"
        }
        note("ports", first, .mapped(detail))
        if items.count > 1 { note("ports", items[1], .ignored("\(items.count - 1) more mapping\(items.count == 2 ? "" : "s"): a service has one `port:`")) }
    }

    // MARK: healthcheck

    mutating func readHealthcheck(_ value: ComposeNode) {
        if Self.isDisabled(value) {
            note("healthcheck", value, .mapped("disabled: no health check (health.ready: started)"))
            return
        }
        guard let test = value["test"] else {
            note("healthcheck", value, .notMappable("no `test:` (an image's own HEALTHCHECK cannot be read)"))
            return
        }
        let testValue: RosterValue
        if let text = test.scalar {
            testValue = .list(["CMD-SHELL", text])
        } else if let items = test.items?.compactMap(\.scalar), let kind = items.first,
            (kind == "CMD" && items.count >= 2) || (kind == "CMD-SHELL" && items.count == 2)
        {
            testValue = .list(items)
        } else {
            note("healthcheck.test", test, .notMappable("expected [CMD, …], [CMD-SHELL, \"…\"], [NONE] or a string"))
            return
        }
        var exec: [(String, RosterValue)] = [("test", testValue)]
        for key in ["interval", "timeout", "start_period", "start_interval"] {
            guard let item = value[key] else { continue }
            if let text = item.scalar, Units.parseDuration(text) != nil { exec.append((key, .scalar(text))) } else {
                note("healthcheck.\(key)", item, .notMappable("\(item.kindName) is not a duration"))
            }
        }
        if let retries = value["retries"] {
            if let count = Int(retries.scalar ?? ""), (1...100).contains(count) { exec.append(("retries", .scalar(String(count)))) } else {
                note("healthcheck.retries", retries, .notMappable("expected 1…100"))
            }
        }
        hasProbe = true
        if !isBuiltInWorker { set("health", "ready", .scalar("exec")) }
        set("health", "exec", .map(exec))
        note("healthcheck", value, .mapped(isBuiltInWorker
            ? "health.exec (liveness once the worker is ready; its READY=1 stays its readiness)"
            : "health: {ready: exec, exec: …}: run on this host as the service"))
    }

    // MARK: restart

    static func restartMode(_ text: String) -> String? {
        switch text {
        case "no", "\"no\"", "none": return "no"
        case "always", "any", "unless-stopped": return text == "any" ? "always" : text
        default: return text == "on-failure" || text.hasPrefix("on-failure:") ? "on-failure" : nil
        }
    }

    mutating func readRestart(_ value: ComposeNode) {
        guard let text = value.scalar, let mode = Self.restartMode(text) else {
            note("restart", value, .notMappable("\(value.kindName) is not no, on-failure, always or unless-stopped"))
            return
        }
        set("restart", .scalar(mode))
        note("restart", value, .mapped(text.hasPrefix("on-failure:")
            ? "restart: on-failure; the retry count is not kept (restart_budget turns endless crashes into crashloop)" : "restart: \(mode)"))
    }

    // MARK: resources

    mutating func readCPUs(_ value: ComposeNode, key: String) {
        if let cpus = Double(value.scalar ?? ""), cpus.isFinite, cpus > 0 {
            set("limits", "cpus", .scalar(value.scalar!))
            note(key, value, .mapped("limits.cpus: \(value.scalar!)"))
        } else if value.scalar == "0" {
            note(key, value, .ignored("0: no limit"))
        } else { note(key, value, .notMappable("\(value.kindName) is not a positive number of CPUs")) }
    }

    mutating func readSize(_ value: ComposeNode, key: String, outer: String?, inner: String) {
        guard let text = value.scalar, let bytes = Units.parseSize(text) else {
            note(key, value, .notMappable("\(value.kindName) is not a size"))
            return
        }
        let formatted = Units.formatSize(bytes)
        let written = Units.parseSize(formatted) == bytes ? formatted : String(bytes)
        if let outer { set(outer, inner, .scalar(written)) } else { set(inner, .scalar(written)) }
        note(key, value, .mapped("\(outer.map { "\($0)." } ?? "")\(inner): \(written)" + (inner == "memory_low" ? " (cgroup v2 only)" : "")))
    }

    mutating func readDuration(_ value: ComposeNode, key: String, to rosterKey: String) {
        if let text = value.scalar, Units.parseDuration(text) != nil {
            set(rosterKey, .scalar(text))
            note(key, value, .mapped("\(rosterKey): \(text)"))
        } else { note(key, value, .notMappable("\(value.kindName) is not a duration")) }
    }

    mutating func readDeploy(_ value: ComposeNode) {
        for entry in value.entries ?? [] {
            let key = "deploy.\(entry.key)"
            switch entry.key {
            case "replicas": readReplicas(entry.value, key: key)
            case "resources":
                for group in entry.value.entries ?? [] {
                    for resource in group.value.entries ?? [] {
                        let resourceKey = "\(key).\(group.key).\(resource.key)"
                        switch (group.key, resource.key) {
                        case ("limits", "cpus"): readCPUs(resource.value, key: resourceKey)
                        case ("limits", "memory"): readSize(resource.value, key: resourceKey, outer: "limits", inner: "memory")
                        case ("limits", "pids"):
                            if let pids = Int(resource.value.scalar ?? ""), pids > 0 {
                                set("limits", "pids", .scalar(String(pids)))
                                note(resourceKey, resource.value, .mapped("limits.pids: \(pids)"))
                            } else { note(resourceKey, resource.value, .notMappable("expected a positive whole number")) }
                        case ("reservations", "memory"): readSize(resource.value, key: resourceKey, outer: nil, inner: "memory_low")
                        case ("reservations", "cpus"):
                            note(resourceKey, resource.value, .notMappable("no CPU reservation in cgroups; cpu_weight shares CPU under contention"))
                        default:
                            note(resourceKey, resource.value, .notMappable("whisperd has no equivalent"))
                        }
                    }
                }
            case "restart_policy":
                let condition = entry.value["condition"]?.scalar ?? "any"
                if node["restart"] == nil, let mode = Self.restartMode(condition) {
                    set("restart", .scalar(mode))
                    note(key, entry.value, .mapped("restart: \(mode); delay, max_attempts and window are not kept"))
                } else { note(key, entry.value, .ignored("`restart:` decides")) }
            default:
                note(key, line: entry.line, .ignored("a swarm setting"), file: entry.value.file)
            }
        }
    }

    mutating func readReplicas(_ value: ComposeNode, key: String) {
        guard let count = Int(value.scalar ?? ""), (0...RosterLoader.maxReplicas).contains(count) else {
            note(key, value, .notMappable("\(value.kindName): replicas are 0…\(RosterLoader.maxReplicas)"))
            return
        }
        set("replicas", .scalar(String(count)))
        note(key, value, .mapped("replicas: \(count)" + (count > 0 ? " (NAME-0 … NAME-\(count - 1))" : "")))
    }

    mutating func readUlimits(_ value: ComposeNode) {
        var limits: [(String, RosterValue)] = []
        for entry in value.entries ?? [] {
            guard ResourceLimit.Resource(rawValue: entry.key) != nil else {
                note("ulimits.\(entry.key)", entry.value, .notMappable("not a limit whisperd sets"))
                continue
            }
            // Docker writes -1 for no limit.
            func bound(_ text: String) -> RosterValue { .scalar(text == "-1" ? "unlimited" : text) }
            let bounds = [entry.value.scalar, entry.value["soft"]?.scalar, entry.value["hard"]?.scalar].compactMap { $0 }
            if let bad = bounds.first(where: { UInt64($0) == nil && !["-1", "unlimited"].contains($0) }) {
                note("ulimits.\(entry.key)", entry.value, .notMappable("`\(bad.prefix(40))` is not a whole number or unlimited"))
            } else if let text = entry.value.scalar {
                limits.append((entry.key, bound(text)))
            } else if let soft = entry.value["soft"]?.scalar, let hard = entry.value["hard"]?.scalar {
                limits.append((entry.key, .map([("soft", bound(soft)), ("hard", bound(hard))])))
            } else {
                note("ulimits.\(entry.key)", entry.value, .notMappable("expected a number or {soft, hard}"))
            }
        }
        if !limits.isEmpty {
            set("ulimits", .map(limits))
            note("ulimits", value, .mapped("ulimits: \(limits.map(\.0).joined(separator: ", "))"))
        }
    }

    mutating func readUser(_ value: ComposeNode) {
        guard let text = value.scalar, !text.isEmpty else {
            note("user", value, .notMappable("expected user or user:group"))
            return
        }
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        set("user", .scalar(parts[0]))
        if parts.count == 2 { set("group", .scalar(parts[1])) }
        note("user", value, .mapped("user: \(parts[0])" + (parts.count == 2 ? ", group: \(parts[1])" : "") + " (a user of this host, not of an image)"))
    }

    mutating func readLogging(_ value: ComposeNode) {
        let driver = value["driver"]?.scalar ?? "json-file"
        guard driver == "json-file" || driver == "local" else {
            note("logging", value, .ignored("driver \(driver): whisperd writes <log-dir>/NAME.log (and the journal under systemd)"))
            return
        }
        for option in value["options"]?.entries ?? [] {
            let key = "logging.options.\(option.key)"
            switch option.key {
            case "max-size":
                if let text = option.value.scalar, Units.parseSize(text) != nil {
                    set("logs", "max_size", .scalar(text))
                    note(key, option.value, .mapped("logs.max_size: \(text)"))
                } else { note(key, option.value, .notMappable("not a size")) }
            case "max-file":
                if let count = Int(option.value.scalar ?? ""), count > 0 {
                    set("logs", "max_files", .scalar(String(count)))
                    note(key, option.value, .mapped("logs.max_files: \(count)"))
                } else { note(key, option.value, .notMappable("expected a whole number")) }
            default:
                note(key, option.value, .ignored("log files are plain text"))
            }
        }
    }
}
