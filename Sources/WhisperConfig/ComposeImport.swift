import WhisperCore

/// One Compose file's text, with the absolute path it was read from (relative `env_file`
/// paths resolve from its directory, as Compose does).
public struct ComposeSource: Sendable {
    public var path: String
    public var text: String

    public init(path: String, text: String) {
        self.path = path
        self.text = text
    }
}

public struct ComposeImportOptions: Sendable {
    /// `--profile`: when not empty, only services without profiles or with one of these are imported.
    public var profiles: Set<String> = []
    /// `--worker-image`: services whose `image:` is this (any tag when none is given) become the
    /// built-in worker.
    public var workerImage: String?

    public init(profiles: Set<String> = [], workerImage: String? = nil) {
        self.profiles = profiles
        self.workerImage = workerImage
    }
}

/// What became of one Compose key (or service), and where it was written.
public struct ComposeFinding: Sendable, Hashable, CustomStringConvertible {
    public enum Outcome: Sendable, Hashable {
        /// Translated; the text names the roster key(s) and any change of meaning.
        case mapped(String)
        /// Left out on purpose: it has no meaning for processes on one host.
        case ignored(String)
        /// Left out although it matters: whisperd has nothing to express it.
        case notMappable(String)
        /// Translated or left out, with something the operator should check.
        case warning(String)
    }

    public var file: String
    public var line: Int?
    /// `services.db.healthcheck`, or `` for the file.
    public var key: String
    public var outcome: Outcome

    public var label: String {
        switch outcome {
        case .mapped: return "mapped"
        case .ignored: return "ignored"
        case .notMappable: return "not mappable"
        case .warning: return "warning"
        }
    }

    public var detail: String {
        switch outcome {
        case .mapped(let text), .ignored(let text), .notMappable(let text), .warning(let text): return text
        }
    }

    public var description: String {
        let location = line.map { "\(file):\($0)" } ?? file
        return "\(location): \(key.isEmpty ? "" : key + ": ")\(label): \(detail)"
    }
}

public struct ComposeImportResult: Sendable {
    /// A roster (README's "Roster reference"), ready for `whisperd --check`.
    public var roster: String
    public var findings: [ComposeFinding]
    /// Compose service → roster name, for the services imported.
    public var names: [String: String]
}

public struct ComposeImportError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String
    public var description: String { "\(line.map { "\(file):\($0)" } ?? file): \(message)" }
}

/// Compose files → a roster. Pure: the files' texts, the environment for interpolation (the
/// process's over `.env`'s, merged by the caller) and options in; roster text and report out.
public enum ComposeImport {
    public static func translate(
        _ sources: [ComposeSource], extendedFiles: [String: String] = [:], environment: [String: String],
        options: ComposeImportOptions = .init()
    ) -> Result<ComposeImportResult, ComposeImportError> {
        do {
            var translator = ComposeTranslator(environment: environment, options: options)
            translator.extendedFiles = extendedFiles
            return .success(try translator.run(sources))
        } catch {
            return .failure(ComposeImportError(file: error.file, line: error.line, message: error.message))
        }
    }
}

/// The file name a finding shows: the last path component.
func displayName(_ path: String) -> String { Paths.lastComponent(path) }

struct ComposeTranslator {
    var options: ComposeImportOptions
    var findings: [ComposeFinding] = []
    /// Absolute path → text of the files `extends: {file: …}` names.
    var extendedFiles: [String: String] = [:]
    var interpolator: ComposeInterpolator

    init(environment: [String: String], options: ComposeImportOptions) {
        self.options = options
        self.interpolator = ComposeInterpolator(environment: environment)
    }

    mutating func note(_ node: ComposeNode?, line: Int? = nil, _ key: String, _ outcome: ComposeFinding.Outcome) {
        findings.append(ComposeFinding(file: displayName(node?.file ?? ""), line: line ?? node?.line, key: key, outcome: outcome))
    }

    mutating func note(_ entry: ComposeEntry, _ key: String, _ outcome: ComposeFinding.Outcome) {
        findings.append(ComposeFinding(file: displayName(entry.value.file), line: entry.line, key: key, outcome: outcome))
    }

    static let ignoredTopKeys: [String: String] = [
        "version": "obsolete in Compose; not needed",
        "name": "the project name; whisperd runs one roster",
        "networks": "no network namespaces: every service shares the host's network",
        "volumes": "no volumes: a service's data lives in its own state dir (STATE_DIRECTORY)",
        "configs": "no configs: give the files' host paths to the command",
        "secrets": "no secrets mounts: use env_file (root-owned, not world-readable)",
    ]

    mutating func run(_ sources: [ComposeSource]) throws(ComposeFailure) -> ComposeImportResult {
        guard !sources.isEmpty else { throw ComposeFailure(file: "", line: nil, message: "no Compose file given") }
        var merged: ComposeNode?
        for source in sources {
            let root = try ComposeReader.read(source.text, file: source.path)
            guard let entries = root.entries else {
                throw ComposeFailure(file: source.path, line: root.line, message: "not a Compose file: expected a mapping with `services:`, found \(root.kindName)")
            }
            guard let services = root["services"], services.entries != nil || services.isNull else {
                throw ComposeFailure(file: source.path, line: root.line, message: "not a Compose file: no `services:` mapping")
            }
            for entry in entries where entry.key != "services" {
                if entry.key.hasPrefix("x-") {
                    note(entry, entry.key, .ignored("extension field (x-): used only through anchors"))
                } else if let reason = Self.ignoredTopKeys[entry.key] {
                    note(entry, entry.key, .ignored(reason))
                } else if entry.key == "include" {
                    throw ComposeFailure(file: source.path, line: entry.line, message: "`include:` is not supported; pass the included files as more FILE arguments")
                } else {
                    note(entry, entry.key, .notMappable("unknown top-level key"))
                }
            }
            merged = merged.map { ComposeReader.overlay($0, root) } ?? root
        }
        let document = try interpolator.interpolate(merged!)
        var translated = try translate(document)
        for variable in interpolator.unset {
            translated.findings.append(ComposeFinding(
                file: displayName(variable.file), line: variable.line, key: "",
                outcome: .warning("variable \(variable.name) is not set; an empty string is used (as Compose does)")))
        }
        return translated
    }

    mutating func translate(_ document: ComposeNode) throws(ComposeFailure) -> ComposeImportResult {
        let serviceEntries = try resolveExtends(document["services"]?.entries ?? [])
        // Services some other service waits for with service_completed_successfully are jobs.
        var jobs: Set<String> = []
        for service in serviceEntries {
            for dependency in service.value["depends_on"]?.entries ?? [] where dependency.value["condition"]?.scalar == "service_completed_successfully" {
                jobs.insert(dependency.key)
            }
        }
        var translated: [ComposeServiceTranslation] = []
        var leftOut: [String: String] = [:]
        for service in serviceEntries {
            let path = "services.\(service.key)"
            if service.key.hasPrefix("x-") {
                note(service.value, line: service.line, path, .ignored("extension field (x-)"))
                continue
            }
            guard service.value.entries != nil else {
                throw ComposeFailure(file: service.value.file, line: service.line, message: "\(path): expected a mapping, found \(service.value.kindName)")
            }
            let profiles = service.value["profiles"]?.items?.compactMap(\.scalar) ?? []
            if !options.profiles.isEmpty, !profiles.isEmpty, options.profiles.isDisjoint(with: profiles) {
                note(service, path, .ignored("not in the profiles given (\(profiles.joined(separator: ", ")))"))
                leftOut[service.key] = "not in the profiles given"
                continue
            }
            var service = ComposeServiceTranslation(name: service.key, node: service.value, line: service.line, isJob: jobs.contains(service.key))
            service.translate(options: options)
            if let reason = service.unmappable {
                leftOut[service.name] = reason
            } else {
                translated.append(service)
            }
            findings += service.findings
        }
        // Roster names: the Compose name made valid, or the character for the built-in worker.
        var names: [String: String] = [:]
        var taken: [String: String] = [:]
        for service in translated {
            let rosterName = service.rosterName
            guard ServiceName.isValid(rosterName) else {
                throw ComposeFailure(file: service.node.file, line: service.line, message: "services.\(service.name): no valid roster name can be made from `\(rosterName.prefix(63))` (1-63 of a-z 0-9 _ -)")
            }
            if let other = taken[rosterName] {
                throw ComposeFailure(file: service.node.file, line: service.line, message: "services.\(service.name) and services.\(other) would both be `\(rosterName)` in the roster")
            }
            taken[rosterName] = service.name
            names[service.name] = rosterName
            if rosterName != service.name {
                note(service.node, line: service.line, "services.\(service.name)", .mapped("named `\(rosterName)` in the roster"))
            }
        }
        var characters: [(String, RosterValue)] = []
        var jobEntries: [(String, RosterValue)] = []
        for service in translated {
            var keys = service.keys
            if !service.dependencies.isEmpty {
                var after: [(String, RosterValue)] = []
                for dependency in service.dependencies {
                    let path = "services.\(service.name).depends_on.\(dependency.name)"
                    guard let target = names[dependency.name] else {
                        let reason = leftOut[dependency.name] ?? "no such service"
                        note(service.node, line: dependency.line, path, .notMappable("dropped: `\(dependency.name)` is not imported (\(reason))"))
                        continue
                    }
                    after.append((target, dependency.value))
                }
                if !after.isEmpty { keys.insert(("after", .map(after)), at: min(keys.count, service.afterPosition)) }
            }
            if service.isJob { jobEntries.append((names[service.name]!, .map(keys))) } else { characters.append((names[service.name]!, .map(keys))) }
        }
        var roster = "# Written by `whisperd import compose`; see its report for what was not carried over.\nversion: 1\n"
        if !jobEntries.isEmpty { roster += "jobs:\n" + RosterValue.render(entries: jobEntries, indent: 1) }
        roster += characters.isEmpty ? "characters: {}\n" : "characters:\n" + RosterValue.render(entries: characters, indent: 1)
        return ComposeImportResult(roster: roster, findings: findings, names: names)
    }

    /// `extends: base`, `{service: base}` or `{service: base, file: other.yaml}`: the base's
    /// keys under the service's own (mappings merged), chained, in this file or others. Another
    /// file's text comes from `extendedFiles` (read by the caller, see `filesToRead`); its
    /// relative paths (`env_file`) resolve from its own directory, as in Compose.
    mutating func resolveExtends(_ services: [ComposeEntry]) throws(ComposeFailure) -> [ComposeEntry] {
        // File → its services; "" is the files given, layered.
        var tables: [String: [ComposeEntry]] = ["": services]
        var resolved: [String: ComposeNode] = [:]
        func table(for file: String, from node: ComposeNode) throws(ComposeFailure) -> String {
            let path = Paths.absolute(file, from: Paths.directory(of: node.file))
            if tables[path] != nil { return path }
            guard let text = extendedFiles[path] else {
                throw ComposeFailure(file: node.file, line: node.line, message: "extends.file: \(path) was not read")
            }
            let root = try interpolator.interpolate(try ComposeReader.read(text, file: path))
            tables[path] = root["services"]?.entries ?? []
            return path
        }
        func resolve(_ file: String, _ name: String, _ chain: [String]) throws(ComposeFailure) -> ComposeNode? {
            let id = file + "#" + name
            if let done = resolved[id] { return done }
            guard let entry = tables[file]?.first(where: { $0.key == name }) else { return nil }
            guard let extends = entry.value["extends"] else {
                resolved[id] = entry.value
                return entry.value
            }
            guard let baseName = extends.scalar ?? extends["service"]?.scalar else {
                throw ComposeFailure(file: extends.file, line: extends.line, message: "services.\(name).extends: expected a service name or {service: NAME, file: PATH}")
            }
            let baseFile = try extends["file"]?.scalar.map { path throws(ComposeFailure) in try table(for: path, from: extends) } ?? file
            let baseID = baseFile + "#" + baseName
            guard !chain.contains(baseID) else {
                throw ComposeFailure(file: extends.file, line: extends.line, message: "services.\(name).extends: a cycle through \((chain + [baseID]).map { $0.split(separator: "#").last.map(String.init) ?? $0 }.joined(separator: " → "))")
            }
            guard let base = try resolve(baseFile, baseName, chain + [id]) else {
                throw ComposeFailure(file: extends.file, line: extends.line, message: "services.\(name).extends: no service `\(baseName)`" + (baseFile.isEmpty ? "" : " in \(baseFile)"))
            }
            var own = entry.value
            own.kind = .map((entry.value.entries ?? []).filter { $0.key != "extends" })
            let result = ComposeReader.overlayService(base, own)
            resolved[id] = ComposeNode(kind: result.kind, file: entry.value.file, line: entry.value.line)
            return resolved[id]
        }
        var result: [ComposeEntry] = []
        for entry in services {
            if let extends = entry.value["extends"] {
                let from = extends["file"]?.scalar.map { " of \($0)" } ?? ""
                note(extends, "services.\(entry.key).extends", .mapped("the keys of the base service\(from) are merged in"))
            }
            result.append(ComposeEntry(key: entry.key, line: entry.line, value: try resolve("", entry.key, []) ?? entry.value))
        }
        return result
    }
}

extension ComposeImport {
    /// The files that `extends: {file: …}` in these texts names and that are not in `alreadyRead`
    /// (absolute paths). The caller reads them and asks again until none is left, then passes
    /// them all to `translate` as `extendedFiles`. A text that does not parse names none
    /// (`translate` reports it).
    public static func filesToRead(_ sources: [ComposeSource], alreadyRead: [String: String]) -> [String] {
        var wanted: [String] = []
        let texts = sources.map { ($0.path, $0.text) } + alreadyRead.map { ($0.key, $0.value) }
        for (path, text) in texts {
            guard let root = try? ComposeReader.read(text, file: path) else { continue }
            for service in root["services"]?.entries ?? [] {
                guard let file = service.value["extends"]?["file"]?.scalar else { continue }
                let absolute = Paths.absolute(file, from: Paths.directory(of: path))
                if alreadyRead[absolute] == nil, !sources.contains(where: { $0.path == absolute }), !wanted.contains(absolute) {
                    wanted.append(absolute)
                }
            }
        }
        return wanted
    }
}

// MARK: - Roster YAML

/// A value of the emitted roster: rendered as YAML, every scalar quoted when it could be read
/// as anything but itself.
indirect enum RosterValue {
    case scalar(String)
    case list([String])
    case map([(String, RosterValue)])

    static func quoted(_ text: String) -> String {
        let safe = !text.isEmpty && text.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || "_./@%+-".unicodeScalars.contains(scalar))
        } && !"-.%@".contains(text.first!) && !["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"].contains(text.lowercased())
        return safe ? text : YAMLEncoder.doubleQuoted(text)
    }

    static func render(entries: [(String, RosterValue)], indent: Int) -> String {
        let pad = String(repeating: "  ", count: indent)
        var output = ""
        for (key, value) in entries {
            switch value {
            case .scalar(let text): output += "\(pad)\(quoted(key)): \(quoted(text))\n"
            case .list(let items): output += "\(pad)\(quoted(key)): [\(items.map(quoted).joined(separator: ", "))]\n"
            case .map(let inner):
                output += inner.isEmpty ? "\(pad)\(quoted(key)): {}\n" : "\(pad)\(quoted(key)):\n" + render(entries: inner, indent: indent + 1)
            }
        }
        return output
    }
}
