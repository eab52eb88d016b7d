import Foundation
import WhisperCore
import Yams
import WhisperFiles

/// One thing wrong with a roster, with where it is.
public struct RosterProblem: Hashable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    /// Dotted key path, e.g. `characters.elena.limits.memory`.
    public var key: String
    public var message: String

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        return key.isEmpty ? "\(location): \(message)" : "\(location): \(key): \(message)"
    }
}

/// Every problem found in one pass; the roster is rejected whole.
public struct RosterError: Error, Sendable, CustomStringConvertible {
    public var problems: [RosterProblem]
    public var description: String {
        "roster rejected (\(counted(problems.count, "problem"))):\n"
            + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}

/// A roster read and checked, with what the daemon needs besides the specs.
public struct LoadedRoster: Sendable {
    public var roster: Roster
    public var path: String
    public var charactersDirectory: String
    /// Per service: variable → the layer that set it (`base`, `.env:3`, `env`, `whisperd`).
    public var environmentOrigins: [ServiceName: [String: String]]
    /// Accepted, but worth an operator's attention (printed by `--check` and at start).
    public var warnings: [RosterProblem] = []
    /// Services left out because none of their `profiles:` is active, by name.
    public var inactive: [String] = []
    /// Profile → the services (active or not) that name it.
    public var profileMembers: [String: [String]] = [:]
    /// The active characters as written (before `replicas:` expands them): what `scale` takes.
    public var characterEntries: Set<String> = []

    /// What `--check` prints for a valid roster: "3 characters, 1 job".
    public var summary: String {
        let jobs = roster.services.filter(\.isJob).count
        let counts = counted(roster.services.count - jobs, "character") + ", " + counted(jobs, "job")
        return inactive.isEmpty ? counts : counts + "; not in the active profiles: " + inactive.joined(separator: ", ")
    }
}

/// Reads `roster.yaml`: YAML → typed settings → resolved specs, and the pre-flight check.
public struct RosterLoader: Sendable {
    /// The whisperd binary, used for built-in workers and for `command: [whisperd, …]`.
    public var selfExecutable: String
    /// whisperd's own environment: the source of the base layer (PATH, LANG, TZ, HOME).
    public var hostEnvironment: [String: String]
    /// The active profiles (`--profile`): a service with `profiles:` runs only when one of its
    /// profiles is active; a service without runs always (Compose's rule).
    public var profiles: Set<String>

    public init(selfExecutable: String, hostEnvironment: [String: String], profiles: Set<String> = []) {
        self.selfExecutable = selfExecutable
        self.hostEnvironment = hostEnvironment
        self.profiles = profiles
    }

    /// `whisperctl scale NAME N` at run time, over the roster's `replicas:`.
    public var replicaOverrides: [String: Int] = [:]

    /// `whisperd run-one NAME` (a container's entrypoint): only this service is read, as one
    /// host would run it, except what the pod around it does instead — its `after:` (init
    /// containers wait), `profiles:` (it is asked for by name) and, for `replicas: N`, the
    /// other instances (other pods). The environment whisperd was given (the pod's env and
    /// Secrets) is the service's base layer, under its env files and `env:`.
    public var oneService: OneService?

    public struct OneService: Sendable, Hashable {
        public var name: String
        /// This pod's instance of a character with `replicas:` (the pod's ordinal).
        public var replicaIndex: Int?

        public init(name: String, replicaIndex: Int? = nil) {
            self.name = name
            self.replicaIndex = replicaIndex
        }
    }

    /// whisperd's own variables in its environment, never passed on to a service (run-one).
    static let supervisorVariables: Set<String> = [
        "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "INVOCATION_ID",
        "JOURNAL_STREAM", "STATE_DIRECTORY", "RUNTIME_DIRECTORY", "LOGS_DIRECTORY",
    ]

    public static let maxReplicas = 64

    /// Compose's profile names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    public static func isValidProfile(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= 64, first.isASCII, first.properties.isAlphabetic || ("0"..."9").contains(first)
        else { return false }
        return name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "_.-".unicodeScalars.contains($0)) }
    }

    public static let maxFileSize = 4 << 20

    public func load(path: String) -> Result<LoadedRoster, RosterError> {
        let absolute = Paths.absolute(path, from: FileManager.default.currentDirectoryPath)
        let file = Paths.lastComponent(absolute)
        func fail(_ message: String) -> Result<LoadedRoster, RosterError> {
            .failure(RosterError(problems: [RosterProblem(file: file, line: nil, key: "", message: message)]))
        }
        var info = stat()
        guard stat(absolute, &info) == 0 else { return fail("cannot read \(absolute): \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return fail("\(absolute) is not a regular file") }
        guard info.st_size <= Self.maxFileSize else { return fail("file is \(info.st_size) bytes; the limit is \(Self.maxFileSize)") }
        guard let data = readFileContents(absolute) else { return fail("cannot read \(absolute)") }
        guard let text = String(data: data, encoding: .utf8) else { return fail("file is not valid UTF-8") }
        return parse(text, path: absolute)
    }

    /// Parses and validates roster text as if it lived at `path` (relative paths resolve from there).
    public func parse(_ text: String, path: String) -> Result<LoadedRoster, RosterError> {
        var reader = RosterReader(file: Paths.lastComponent(path))
        let baseDirectory = Paths.directory(of: path)
        if text.utf8.contains(0) {
            reader.report(nil, "", "file contains a NUL byte")
            return .failure(reader.error)
        }
        let root: Node?
        do {
            // `.basic`: every scalar stays a string (we type values ourselves); the default resolver
            // runs NSRegularExpression over each scalar, which drags ICU into whisperd.
            root = try Yams.compose(yaml: text, .basic)
        } catch let error as YamlError {
            reader.report(nil, "", "not valid YAML: \(Self.describe(error, in: text))")
            return .failure(reader.error)
        } catch {
            reader.report(nil, "", "not valid YAML: \(error)")
            return .failure(reader.error)
        }
        guard let root else {
            reader.report(nil, "", "the roster is empty; it needs at least `characters:`")
            return .failure(reader.error)
        }
        let document = reader.readDocument(root)
        var resolver = RosterResolver(
            loader: self, reader: reader, baseDirectory: baseDirectory, document: document)
        let result = resolver.resolve()
        guard resolver.reader.problems.isEmpty, var result else {
            return .failure(resolver.reader.error)
        }
        result.path = path
        return .success(result)
    }

    static func describe(_ error: YamlError, in text: String) -> String {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _):
            return "line \(mark.line), column \(mark.column): \(problem)" + (context.map { " \($0.text)" } ?? "")
                + tabHint(line: mark.line, in: text)
        default:
            return "\(error)"
        }
    }

    /// libyaml's words for a tab ("found character that cannot start any token") do not say
    /// what the character is; an editor that inserts tabs is the usual cause.
    static func tabHint(line: Int, in text: String) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard line >= 1, line <= lines.count else { return "" }
        let indentation = lines[line - 1].prefix { $0 == " " || $0 == "\t" }
        return indentation.contains("\t") ? " (line \(line) is indented with a tab: YAML indents with spaces only)" : ""
    }
}

// MARK: - YAML → raw document

/// The roster's shape, still with source lines, before defaults and files are applied.
struct RosterDocument {
    struct Entry {
        var name: String
        var line: Int?
        var isJob: Bool
        var settings: RosterSettings
        var command: [String]?
        var port: Int?
        /// `port: [8000, 8010]`: one port per replica.
        var ports: [Int]?
        var portLine: Int?
        var after: [DependencyEntry] = []
        var profiles: [String] = []
        var workingDirectory: String?
        var jobRun: JobRunMode?
        /// `schedule:` / `every:` and their options, checked together once the entry is read.
        var schedule: JobSchedule?
        /// `replicas: N` as written.
        var replicas: Int?
        /// Set on the entries a replicated entry expands into: which instance of which character.
        var replica: Replica?

        struct Replica {
            var base: String
            var index: Int
            var count: Int
        }

        /// The character this service is (its files, its bot name): the base name of a replica.
        var characterName: String { replica?.base ?? name }
    }

    var version: Int?
    var charactersDirectory: String?
    var defaults = RosterSettings()
    var entries: [Entry] = []
}

/// One `after:` item as written, with its line for problems.
struct DependencyEntry {
    var name: String
    var line: Int?
    var condition: DependencyCondition = .healthy
    var required = true
    var restart = false
}

struct RosterReader {
    let file: String
    var problems: [RosterProblem] = []
    /// Problems past `maxProblems`, counted, not kept: a roster with a million wrong values
    /// gets a readable report (and a reload does not log a million lines).
    var omitted = 0
    static let maxProblems = 100

    init(file: String) { self.file = file }

    mutating func report(_ node: Node?, _ key: String, _ message: String) {
        report(line: node?.mark?.line, key, message)
    }

    mutating func report(line: Int?, _ key: String, _ message: String) {
        guard problems.count < Self.maxProblems else {
            omitted += 1
            return
        }
        problems.append(RosterProblem(file: file, line: line, key: key, message: message))
    }

    var error: RosterError {
        var listed = problems
        let more = omitted + max(0, problems.count - Self.maxProblems)
        if more > 0 {
            listed = Array(listed.prefix(Self.maxProblems))
            listed.append(RosterProblem(file: file, line: nil, key: "", message: "\(more) more problem\(more == 1 ? "" : "s") not listed"))
        }
        return RosterError(problems: listed)
    }

    static let topKeys = ["version", "characters_dir", "defaults", "jobs", "characters"]
    static let settingKeys = [
        "restart", "restart_delay", "restart_delay_max", "restart_reset_after", "restart_budget", "stop_signal",
        "stop_grace", "limits", "health", "env_file", "env", "logs", "user", "group", "supplementary_groups", "sandbox",
        "oom_score_adj", "ulimits", "cpu_weight", "memory_low", "cpuset",
    ]
    static let characterKeys = settingKeys + ["command", "port", "after", "working_dir", "profiles", "replicas"]
    static let jobKeys = settingKeys + ["command", "run", "after", "working_dir", "profiles", "schedule", "every", "timezone", "jitter", "catch_up"]

    /// The pairs of a mapping, with unknown and duplicate keys reported.
    mutating func pairs(_ node: Node, _ path: String, allowed: [String]?) -> [(key: String, keyNode: Node, value: Node)] {
        guard case .mapping(let mapping) = node else {
            report(node, path, "expected a mapping (key: value), found \(kind(of: node))")
            return []
        }
        var seen: Set<String> = []
        var result: [(String, Node, Node)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                report(keyNode, path, "keys must be plain strings")
                continue
            }
            let key = scalar.string
            let keyPath = path.isEmpty ? key : "\(path).\(key)"
            if !seen.insert(key).inserted {
                report(keyNode, keyPath, "duplicate key")
                continue
            }
            if let allowed, !allowed.contains(key) {
                let hint = closest(key, in: allowed).map { " (did you mean `\($0)`?)" } ?? ""
                report(keyNode, keyPath, "unknown key `\(key)`\(hint)")
                continue
            }
            result.append((key, keyNode, value))
        }
        return result
    }

    func kind(of node: Node) -> String {
        switch node {
        case .scalar(let scalar): return "`\(scalar.string.prefix(40))`"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    private func closest(_ key: String, in candidates: [String]) -> String? {
        func distance(_ a: String, _ b: String) -> Int {
            let a = Array(a), b = Array(b)
            var previous = Array(0...b.count)
            for i in 1...max(a.count, 1) where !a.isEmpty {
                var current = [i] + Array(repeating: 0, count: b.count)
                for j in stride(from: 1, through: b.count, by: 1) {
                    current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
                }
                previous = current
            }
            return previous[b.count]
        }
        let scored = candidates.map { ($0, distance(key, $0)) }.min { $0.1 < $1.1 }
        return scored.flatMap { $0.1 <= 3 ? $0.0 : nil }
    }

    mutating func string(_ node: Node, _ path: String) -> String? {
        guard case .scalar(let scalar) = node else {
            report(node, path, "expected a string, found \(kind(of: node))")
            return nil
        }
        return scalar.string
    }

    mutating func int(_ node: Node, _ path: String, _ range: ClosedRange<Int>) -> Int? {
        guard let text = string(node, path) else { return nil }
        guard let value = Int(text), range.contains(value) else {
            report(node, path, "expected a whole number in \(range.lowerBound)...\(range.upperBound), found `\(text.prefix(40))`")
            return nil
        }
        return value
    }

    mutating func duration(_ node: Node, _ path: String) -> Duration? {
        guard let text = string(node, path) else { return nil }
        guard let value = Units.parseDuration(text) else {
            report(node, path, "`\(text.prefix(40))` is not a duration (use 250ms, 10s, 5m, 1h)")
            return nil
        }
        return value
    }

    mutating func size(_ node: Node, _ path: String) -> UInt64? {
        guard let text = string(node, path) else { return nil }
        guard let value = Units.parseSize(text) else {
            report(node, path, "`\(text.prefix(40))` is not a size (use 512M, 1G, 1.5G)")
            return nil
        }
        return value
    }

    /// `after: [a, b]` (each `healthy`), or Compose's map: `after: {db: healthy, migrate:
    /// completed_successfully, cache: {condition: started, required: false, restart: true}}`.
    mutating func dependencies(_ node: Node, _ path: String) -> [DependencyEntry] {
        if case .sequence = node {
            return (stringList(node, path) ?? []).map { DependencyEntry(name: $0.0, line: $0.1) }
        }
        guard case .mapping = node else {
            report(node, path, "expected a list of names or a map of name: condition, found \(kind(of: node))")
            return []
        }
        var result: [DependencyEntry] = []
        for (name, nameNode, value) in pairs(node, path, allowed: nil) {
            let itemPath = "\(path).\(name)"
            var entry = DependencyEntry(name: name, line: nameNode.mark?.line)
            if case .mapping = value {
                for (key, _, setting) in pairs(value, itemPath, allowed: ["condition", "required", "restart"]) {
                    switch key {
                    case "condition": entry.condition = condition(setting, "\(itemPath).condition") ?? entry.condition
                    case "required": entry.required = flag(setting, "\(itemPath).required") ?? entry.required
                    default: entry.restart = flag(setting, "\(itemPath).restart") ?? entry.restart
                    }
                }
            } else {
                entry.condition = condition(value, itemPath) ?? entry.condition
            }
            result.append(entry)
        }
        return result
    }

    /// A condition by whisperd's name or Compose's (`service_healthy`).
    mutating func condition(_ node: Node, _ path: String) -> DependencyCondition? {
        guard let text = string(node, path) else { return nil }
        let bare = text.hasPrefix("service_") ? String(text.dropFirst("service_".count)) : text
        guard let condition = DependencyCondition(rawValue: bare) else {
            let options = DependencyCondition.allCases.map(\.rawValue).joined(separator: " | ")
            report(node, path, "`\(text.prefix(40))` is not a condition: \(options) (or Compose's service_…)")
            return nil
        }
        return condition
    }

    mutating func flag(_ node: Node, _ path: String) -> Bool? {
        guard let text = string(node, path) else { return nil }
        switch text {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default:
            report(node, path, "expected true or false, found `\(text.prefix(40))`")
            return nil
        }
    }

    mutating func cpuset(_ node: Node, _ path: String) -> CPUSet? {
        guard let text = string(node, path) else { return nil }
        do { return try CPUSet.parse(text) } catch {
            report(node, path, "`\(text.prefix(40))` \(error)")
            return nil
        }
    }

    mutating func choice<T: RawRepresentable & CaseIterable>(_ node: Node, _ path: String, _: T.Type) -> T?
    where T.RawValue == String {
        guard let text = string(node, path) else { return nil }
        guard let value = T(rawValue: text) else {
            let options = T.allCases.map(\.rawValue).joined(separator: " | ")
            report(node, path, "`\(text.prefix(40))` is not one of \(options)")
            return nil
        }
        return value
    }

    mutating func stringList(_ node: Node, _ path: String) -> [(String, Int?)]? {
        guard case .sequence(let sequence) = node else {
            report(node, path, "expected a list, found \(kind(of: node))")
            return nil
        }
        var result: [(String, Int?)] = []
        for (index, item) in sequence.enumerated() {
            guard let text = string(item, "\(path)[\(index)]") else { continue }
            result.append((text, item.mark?.line))
        }
        return result
    }

    mutating func readDocument(_ root: Node) -> RosterDocument {
        var document = RosterDocument()
        let top = pairs(root, "", allowed: Self.topKeys)
        if case .mapping = root, !top.contains(where: { $0.key == "characters" }),
            !problems.contains(where: { $0.key == "characters" })
        {
            report(root, "characters", "missing: the roster must list its characters")
        }
        for (key, _, value) in top {
            switch key {
            case "version":
                document.version = int(value, key, 1...1)
            case "characters_dir":
                document.charactersDirectory = string(value, key)
            case "defaults":
                document.defaults = settings(value, "defaults", allowed: Self.settingKeys).settings
            case "jobs", "characters":
                let isJob = key == "jobs"
                if case .scalar(let scalar) = value, ["", "~", "null"].contains(scalar.string) { continue }
                for (name, nameNode, body) in pairs(value, key, allowed: nil) {
                    let path = "\(key).\(name)"
                    if !ServiceName.isValid(name) {
                        report(nameNode, path, "invalid name: use 1-63 of a-z 0-9 _ - starting with a letter or digit")
                    }
                    var parsed = settings(body, path, allowed: isJob ? Self.jobKeys : Self.characterKeys)
                    parsed.entry.name = name
                    parsed.entry.line = nameNode.mark?.line
                    parsed.entry.isJob = isJob
                    parsed.entry.settings = parsed.settings
                    if isJob, parsed.entry.command == nil, case .mapping = body {
                        report(nameNode, path, "a job needs `command:`")
                    }
                    document.entries.append(parsed.entry)
                }
            default:
                break
            }
        }
        return document
    }

    /// Reads setting keys (and, for entries, command/port/after/run) from one block.
    mutating func settings(_ node: Node, _ path: String, allowed: [String]) -> (settings: RosterSettings, entry: RosterDocument.Entry) {
        var settings = RosterSettings()
        var entry = RosterDocument.Entry(name: "", line: nil, isJob: false, settings: settings)
        if case .scalar(let scalar) = node, ["", "~", "null"].contains(scalar.string) {
            return (settings, entry)  // `elena:` with nothing under it
        }
        for (key, _, value) in pairs(node, path, allowed: allowed) {
            let keyPath = "\(path).\(key)"
            switch key {
            case "restart": settings.restart = choice(value, keyPath, RestartMode.self)
            case "restart_delay": settings.restartDelay = duration(value, keyPath)
            case "restart_delay_max": settings.restartDelayMax = duration(value, keyPath)
            case "restart_reset_after": settings.restartResetAfter = duration(value, keyPath)
            case "restart_budget":
                for (budgetKey, _, budgetValue) in pairs(value, keyPath, allowed: ["max", "window"]) {
                    if budgetKey == "max" {
                        settings.budgetMax = int(budgetValue, "\(keyPath).max", 1...10_000)
                    } else {
                        settings.budgetWindow = duration(budgetValue, "\(keyPath).window")
                    }
                }
            case "stop_signal":
                if let text = string(value, keyPath) {
                    if let signal = Signal(name: text) { settings.stopSignal = signal } else {
                        report(value, keyPath, "`\(text.prefix(20))` is not a signal name (SIGTERM, SIGINT, …)")
                    }
                }
            case "stop_grace": settings.stopGrace = duration(value, keyPath)
            case "limits":
                for (limitKey, _, limitValue) in pairs(value, keyPath, allowed: ["memory", "memory_high", "cpus", "pids"]) {
                    let limitPath = "\(keyPath).\(limitKey)"
                    switch limitKey {
                    case "memory": settings.memory = size(limitValue, limitPath)
                    case "memory_high": settings.memoryHigh = size(limitValue, limitPath)
                    case "cpus":
                        if let text = string(limitValue, limitPath) {
                            if let cpus = Double(text), cpus.isFinite, cpus > 0 { settings.cpus = cpus } else {
                                report(limitValue, limitPath, "`\(text.prefix(20))` is not a positive number of CPUs")
                            }
                        }
                    default: settings.pids = int(limitValue, limitPath, 1...4_194_304)
                    }
                }
            case "health":
                readHealth(value, keyPath, &settings)
            case "env_file":
                if case .scalar = value {
                    settings.envFiles = string(value, keyPath).map { [$0] }
                } else {
                    settings.envFiles = stringList(value, keyPath)?.map(\.0)
                }
            case "env":
                var env: [String: String] = [:]
                for (name, nameNode, envValue) in pairs(value, keyPath, allowed: nil) {
                    guard Dotenv.isValidKey(name) else {
                        report(nameNode, "\(keyPath).\(name)", "invalid environment variable name")
                        continue
                    }
                    if case .scalar(let scalar) = envValue { env[name] = scalar.string } else {
                        report(envValue, "\(keyPath).\(name)", "expected a string value, found \(kind(of: envValue))")
                    }
                }
                settings.env = env
            case "logs":
                for (logKey, _, logValue) in pairs(value, keyPath, allowed: ["max_size", "max_files"]) {
                    if logKey == "max_size" {
                        settings.logMaxSize = size(logValue, "\(keyPath).max_size")
                    } else {
                        settings.logMaxFiles = int(logValue, "\(keyPath).max_files", 1...100)
                    }
                }
            case "user":
                if let text = string(value, keyPath) {
                    switch text {
                    case "dynamic": settings.user = .dynamic
                    case "root", "0": settings.user = .root
                    default:
                        if let id = UInt32(text) { settings.user = .id(id) } else if Self.isValidAccountName(text) {
                            settings.user = .named(text)
                        } else {
                            report(value, keyPath, "`\(text.prefix(40))` is not dynamic, root, a user name or a uid")
                        }
                    }
                }
            case "group":
                settings.group = groupSpec(value, keyPath)
            case "supplementary_groups":
                if let items = stringList(value, keyPath) {
                    settings.supplementaryGroups = items.enumerated().compactMap { index, item in
                        groupSpec(text: item.0, node: value, "\(keyPath)[\(index)]")
                    }
                }
            case "sandbox":
                readSandbox(value, keyPath, &settings)
            case "oom_score_adj":
                settings.oomScoreAdjust = int(value, keyPath, -1000...1000)
            case "cpu_weight":
                settings.cpuWeight = int(value, keyPath, 1...10_000)
            case "memory_low":
                settings.memoryLow = size(value, keyPath)
            case "cpuset":
                settings.cpuset = cpuset(value, keyPath)
            case "ulimits":
                var limits: [ResourceLimit] = []
                for (name, nameNode, limitValue) in pairs(value, keyPath, allowed: ResourceLimit.Resource.allCases.map(\.rawValue)) {
                    let limitPath = "\(keyPath).\(name)"
                    guard let resource = ResourceLimit.Resource(rawValue: name) else { continue }
                    if case .mapping = limitValue {
                        var soft: UInt64?? = nil
                        var hard: UInt64?? = nil
                        for (bound, _, boundValue) in pairs(limitValue, limitPath, allowed: ["soft", "hard"]) {
                            let parsed = limitNumber(boundValue, "\(limitPath).\(bound)")
                            if bound == "soft" { soft = parsed } else { hard = parsed }
                        }
                        guard let soft, let hard else {
                            report(nameNode, limitPath, "give both soft and hard (or one number for both)")
                            continue
                        }
                        if let softValue = soft, let hardValue = hard, softValue > hardValue {
                            report(nameNode, limitPath, "soft \(softValue) is above hard \(hardValue)")
                            continue
                        }
                        if soft == nil, hard != nil {
                            report(nameNode, limitPath, "soft is unlimited but hard is not")
                            continue
                        }
                        limits.append(ResourceLimit(resource: resource, soft: soft, hard: hard))
                    } else if let parsed = limitNumber(limitValue, limitPath) {
                        limits.append(ResourceLimit(resource: resource, soft: parsed, hard: parsed))
                    }
                }
                settings.resourceLimits = limits
            case "command":
                if case .scalar = value {
                    report(value, keyPath, "expected a list such as [python3, bot.py], found a string")
                } else if let items = stringList(value, keyPath) {
                    if items.isEmpty { report(value, keyPath, "the command is empty") }
                    entry.command = items.map(\.0)
                }
            case "port":
                if case .sequence(let items) = value {
                    entry.ports = items.enumerated().compactMap { index, item in int(item, "\(keyPath)[\(index)]", 1...65535) }
                } else {
                    entry.port = int(value, keyPath, 1...65535)
                }
                entry.portLine = value.mark?.line
            case "replicas":
                entry.replicas = int(value, keyPath, 0...RosterLoader.maxReplicas)
            case "after":
                entry.after = dependencies(value, keyPath)
            case "profiles":
                for (index, item) in (stringList(value, keyPath) ?? []).enumerated() {
                    if RosterLoader.isValidProfile(item.0) { entry.profiles.append(item.0) } else {
                        report(value, "\(keyPath)[\(index)]", "`\(item.0.prefix(40))` is not a profile name (a letter or digit, then letters, digits, _ . -)")
                    }
                }
            case "working_dir":
                entry.workingDirectory = string(value, keyPath)
            case "run":
                entry.jobRun = choice(value, keyPath, JobRunMode.self)
            default:
                break
            }
        }
        if allowed.contains("schedule") { entry.schedule = jobSchedule(node, path, hasRun: entry.jobRun != nil) }
        return (settings, entry)
    }

    /// `schedule:` (5-field cron or a macro) or `every:`, with `timezone:`, `jitter:` and
    /// `catch_up:`; each option only where it means something.
    mutating func jobSchedule(_ node: Node, _ path: String, hasRun: Bool) -> JobSchedule? {
        guard case .mapping(let mapping) = node else { return nil }
        var values: [String: Node] = [:]
        for (keyNode, value) in mapping {
            if case .scalar(let key) = keyNode, ["schedule", "every", "timezone", "jitter", "catch_up"].contains(key.string) {
                values[key.string] = value
            }
        }
        var rule: JobSchedule.Rule?
        switch (values["schedule"], values["every"]) {
        case (let cron?, nil):
            if let text = string(cron, "\(path).schedule") {
                do {
                    let expression = try CronExpression(text)
                    if expression.next(after: CivilMinute(year: 2000, month: 1, day: 1, hour: 0, minute: 0)) == nil {
                        report(cron, "\(path).schedule", "`\(text.prefix(40))` never runs (no such day)")
                    } else {
                        rule = .cron(expression)
                    }
                } catch { report(cron, "\(path).schedule", error.description) }
            }
        case (nil, let every?):
            if let interval = duration(every, "\(path).every") {
                if interval < .seconds(1) { report(every, "\(path).every", "must be at least 1s") } else { rule = .every(interval) }
            }
        case (_?, let every?):
            report(every, "\(path).every", "give `schedule:` or `every:`, not both")
        case (nil, nil):
            for key in ["timezone", "jitter", "catch_up"] {
                if let value = values[key] { report(value, "\(path).\(key)", "only for a job with `schedule:` or `every:`") }
            }
            return nil
        }
        if hasRun, let first = values["schedule"] ?? values["every"] {
            report(first, path, "`run:` and `schedule:`/`every:` both say when the job runs: keep one")
        }
        var schedule = JobSchedule(rule: rule ?? .every(.seconds(3600)))
        if let zone = values["timezone"], let name = string(zone, "\(path).timezone") {
            if case .every = rule {
                report(zone, "\(path).timezone", "`every:` does not read the wall clock; timezone is for `schedule:`")
            } else if TimeZone(identifier: name) == nil {
                report(zone, "\(path).timezone", "unknown time zone `\(name.prefix(40))` (an IANA name such as Europe/Berlin or UTC)")
            } else {
                schedule.timeZone = name
            }
        }
        if let value = values["jitter"], let jitter = duration(value, "\(path).jitter") { schedule.jitter = jitter }
        if let value = values["catch_up"], let catchUp = flag(value, "\(path).catch_up") { schedule.catchUp = catchUp }
        return rule == nil ? nil : schedule
    }

    /// A ulimit value: a whole number, or `unlimited`/`-1`. `nil` is a reported problem;
    /// `.some(nil)` is unlimited.
    mutating func limitNumber(_ node: Node, _ path: String) -> UInt64?? {
        guard let text = string(node, path) else { return nil }
        if text == "unlimited" || text == "-1" || text == "infinity" { return .some(nil) }
        guard let value = UInt64(text) else {
            report(node, path, "`\(text.prefix(40))` is not a whole number or unlimited")
            return nil
        }
        return .some(value)
    }

    /// POSIX-ish user and group names (what useradd accepts).
    static func isValidAccountName(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, text.utf8.count <= 32 else { return false }
        let allowed = { (c: Unicode.Scalar) in c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || "_-.".unicodeScalars.contains(c)) }
        return (first.properties.isAlphabetic || first == "_") && first.isASCII && text.unicodeScalars.allSatisfy(allowed)
            || (text.hasSuffix("$") && isValidAccountName(String(text.dropLast())))
    }

    mutating func groupSpec(_ node: Node, _ path: String) -> GroupSpec? {
        guard let text = string(node, path) else { return nil }
        return groupSpec(text: text, node: node, path)
    }

    mutating func groupSpec(text: String, node: Node, _ path: String) -> GroupSpec? {
        if let id = UInt32(text) { return .id(id) }
        guard Self.isValidAccountName(text) else {
            report(node, path, "`\(text.prefix(40))` is not a group name or gid")
            return nil
        }
        return .named(text)
    }

    mutating func readSandbox(_ node: Node, _ path: String, _ settings: inout RosterSettings) {
        for (key, _, value) in pairs(node, path, allowed: ["filesystem", "read_paths", "write_paths", "bind_ports"]) {
            let keyPath = "\(path).\(key)"
            switch key {
            case "filesystem": settings.sandboxFilesystem = choice(value, keyPath, FilesystemSandbox.self)
            case "read_paths", "write_paths":
                guard let items = stringList(value, keyPath) else { continue }
                let paths = items.map(\.0)
                if let relative = paths.first(where: { $0.isEmpty }) {
                    report(value, keyPath, "`\(relative)` is empty")
                }
                if key == "read_paths" { settings.readPaths = paths } else { settings.writePaths = paths }
            default:
                guard case .sequence(let sequence) = value else {
                    report(value, keyPath, "expected a list of ports, found \(kind(of: value))")
                    continue
                }
                settings.bindPorts = sequence.enumerated().compactMap { index, item in int(item, "\(keyPath)[\(index)]", 1...65535) }
            }
        }
    }

    static let probeScheduleKeys = ["interval", "timeout", "retries", "start_period", "start_interval"]

    mutating func probeSchedule(_ key: String, _ value: Node, _ path: String, _ probe: inout ProbeSettings) {
        switch key {
        case "interval": probe.interval = duration(value, path)
        case "timeout": probe.timeout = duration(value, path)
        case "retries": probe.retries = int(value, path, 1...100)
        case "start_period": probe.startPeriod = duration(value, path)
        default: probe.startInterval = duration(value, path)
        }
    }

    /// Compose's healthcheck `test`: `[CMD, prog, arg…]`, `[CMD-SHELL, "cmd"]`, `"cmd"` (shell),
    /// `[NONE]` (no check: `nil`).
    mutating func healthTest(_ node: Node, _ path: String) -> [String]? {
        if case .scalar = node {
            guard let text = string(node, path), !text.isEmpty else {
                report(node, path, "is empty")
                return nil
            }
            return ["/bin/sh", "-c", text]
        }
        guard let items = stringList(node, path)?.map(\.0) else { return nil }
        switch items.first {
        case "CMD" where items.count >= 2: return Array(items.dropFirst())
        case "CMD-SHELL" where items.count == 2: return ["/bin/sh", "-c", items[1]]
        case "NONE": return nil
        default:
            report(node, path, "expected [CMD, program, args…], [CMD-SHELL, \"command\"], [NONE] or a shell command")
            return nil
        }
    }

    mutating func readHealth(_ node: Node, _ path: String, _ settings: inout RosterSettings) {
        let allowed = ["ready", "ready_timeout", "watchdog", "http", "exec", "tcp", "ready_log_line", "on_unhealthy"]
        for (key, _, value) in pairs(node, path, allowed: allowed) {
            let keyPath = "\(path).\(key)"
            switch key {
            case "ready": settings.ready = choice(value, keyPath, ReadinessMode.self)
            case "ready_timeout": settings.readyTimeout = duration(value, keyPath)
            case "watchdog":
                if case .scalar(let scalar) = value, ["off", "none", "false", "0"].contains(scalar.string.lowercased()) {
                    settings.watchdog = .some(nil)
                } else if let interval = duration(value, keyPath) {
                    settings.watchdog = .some(interval > .zero ? interval : nil)
                }
            case "on_unhealthy": settings.onUnhealthy = choice(value, keyPath, UnhealthyAction.self)
            case "ready_log_line":
                if let pattern = string(value, keyPath) {
                    if pattern.isEmpty || (try? Regex(pattern)) == nil {
                        report(value, keyPath, "`\(pattern.prefix(40))` is not a regular expression")
                    } else {
                        settings.readyLogLine = pattern
                    }
                }
            case "exec":
                settings.exec.isGiven = true
                for (execKey, _, execValue) in pairs(value, keyPath, allowed: ["test", "disable"] + Self.probeScheduleKeys) {
                    let execPath = "\(keyPath).\(execKey)"
                    switch execKey {
                    case "test": settings.execTest = .some(healthTest(execValue, execPath))
                    case "disable": if flag(execValue, execPath) == true { settings.execTest = .some(nil) }
                    default: probeSchedule(execKey, execValue, execPath, &settings.exec)
                    }
                }
            case "tcp":
                settings.tcp.isGiven = true
                for (tcpKey, _, tcpValue) in pairs(value, keyPath, allowed: ["port"] + Self.probeScheduleKeys) {
                    let tcpPath = "\(keyPath).\(tcpKey)"
                    if tcpKey == "port" { settings.tcpPort = int(tcpValue, tcpPath, 1...65535) } else {
                        probeSchedule(tcpKey, tcpValue, tcpPath, &settings.tcp)
                    }
                }
            default:
                let httpKeys = ["path", "interval", "timeout", "retries", "start_period"]
                for (httpKey, _, httpValue) in pairs(value, keyPath, allowed: httpKeys) {
                    let httpPath = "\(keyPath).\(httpKey)"
                    switch httpKey {
                    case "path":
                        if let text = string(httpValue, httpPath) {
                            if text.hasPrefix("/"), !text.contains(" "), !text.contains("\r"), !text.contains("\n") {
                                settings.httpPath = text
                            } else {
                                report(httpValue, httpPath, "must be a URL path starting with /")
                            }
                        }
                    case "interval": settings.httpInterval = duration(httpValue, httpPath)
                    case "timeout": settings.httpTimeout = duration(httpValue, httpPath)
                    case "retries": settings.httpRetries = int(httpValue, httpPath, 1...100)
                    default: settings.httpStartPeriod = duration(httpValue, httpPath)
                    }
                }
            }
        }
    }
}
