import WhisperCore

public struct KubernetesExportOptions: Sendable {
    /// The whisperd image every container runs (scripts/build-image.sh).
    public var image: String
    public var namespace: String?
    /// `--secrets-from NAME`: secret variables reference Secrets `NAME-<service>` the operator
    /// made; no value is written.
    public var secretsFrom: String?
    /// This binary: a roster's `command: [whisperd, …]` and the built-in worker name it.
    public var selfExecutable: String
    /// The image's non-root user (and group, and the volumes' group).
    public var imageUser: Int
    /// Each character's SQLite store volume.
    public var storageSize: String

    public init(
        image: String = "localhost/whisperd:latest", namespace: String? = nil, secretsFrom: String? = nil, selfExecutable: String,
        imageUser: Int = 10001, storageSize: String = "1Gi"
    ) {
        self.image = image
        self.namespace = namespace
        self.secretsFrom = secretsFrom
        self.selfExecutable = selfExecutable
        self.imageUser = imageUser
        self.storageSize = storageSize
    }

    /// Where the image has whisperd.
    public static let binary = "/usr/bin/whisperd"
    /// whisperd's /health (readiness), /v1/characters (liveness) and /metrics in every pod.
    public static let statusPort = 9464
    /// The pod's roster (ConfigMap NAME-config) is mounted here; each character's files
    /// (ConfigMap NAME-character) at `charactersDirectory/NAME`. Two mounts side by side, not one
    /// inside the other: a runtime cannot make a mount point inside a read-only ConfigMap volume.
    public static let rosterDirectory = "/etc/whisperd/roster"
    public static let charactersDirectory = "/etc/whisperd/characters"
}

/// One file of a character's folder, read by the caller; `text` nil when it is not UTF-8.
public struct CharacterFile: Sendable, Hashable {
    public var name: String
    public var text: String?

    public init(name: String, text: String?) {
        self.name = name
        self.text = text
    }
}

public struct KubernetesExportResult: Sendable {
    public var objects: [Kubernetes.Object]
    /// One per roster key of every service (and per service), in roster order.
    public var findings: [ComposeFinding]
    /// The manifests: a multi-document YAML stream.
    public var yaml: String
}

public struct KubernetesExportError: Error, Sendable, CustomStringConvertible {
    public var problems: [String]
    public var description: String { problems.joined(separator: "\n") }
}

/// A resolved roster → Kubernetes objects and a report of every key. Pure: the roster (as
/// `RosterLoader` resolved it, env files read), its text (for the keys as written and their
/// lines), the characters' files and the options in; objects, YAML and findings out.
public enum KubernetesExport {
    public static func translate(
        _ loaded: LoadedRoster, rosterText: String, characterFiles: [String: [CharacterFile]], options: KubernetesExportOptions
    ) -> Result<KubernetesExportResult, KubernetesExportError> {
        var exporter = KubernetesExporter(loaded: loaded, keys: RosterKeys.read(rosterText), files: characterFiles, options: options)
        do {
            let objects = try exporter.run()
            var yaml = "# Written by `whisperd export kubernetes` from \(Paths.lastComponent(loaded.path)); see its report for what was not carried over.\n"
            for object in objects {
                yaml += "---\n" + (try YAMLEncoder.encode(object))
            }
            return .success(KubernetesExportResult(objects: objects, findings: exporter.findings, yaml: yaml))
        } catch let error as KubernetesExportError {
            return .failure(error)
        } catch {
            return .failure(KubernetesExportError(problems: ["\(error)"]))
        }
    }

    /// RFC 1123 label (`a-z 0-9 -`, alphanumeric at both ends, at most `limit`); a Service's
    /// name must also start with a letter (RFC 1035).
    public static func isLabel(_ text: String, limit: Int = 63, startsWithLetter: Bool = false) -> Bool {
        let bytes = Array(text.utf8)
        guard let first = bytes.first, let last = bytes.last, bytes.count <= limit else { return false }
        func isLower(_ b: UInt8) -> Bool { b >= 0x61 && b <= 0x7a }
        func isAlnum(_ b: UInt8) -> Bool { isLower(b) || (b >= 0x30 && b <= 0x39) }
        guard startsWithLetter ? isLower(first) : isAlnum(first), isAlnum(last) else { return false }
        return bytes.allSatisfy { isAlnum($0) || $0 == 0x2d }
    }
}

/// One service of the roster as written: a character with `replicas:` once (its instance 0's
/// resolved spec, which has the base port).
struct ExportedService {
    var name: String
    var spec: ServiceSpec
    var replicas: Int?
    var origins: [String: String]
    var line: Int?
    var path: String { "\(spec.isJob ? "jobs" : "characters").\(name)" }
    var isJob: Bool { spec.isJob }
    /// Its memory is PostgreSQL: nothing of it lives in its pod.
    var usesPostgreSQL: Bool { ["DATABASE_URL", "POSTGRES_URL"].contains { !(spec.launch.environment[$0] ?? "").isEmpty } }
    /// A StatefulSet: a SQLite store on a volume claim, or replicas that need their ordinal.
    var isStateful: Bool { !isJob && (!usesPostgreSQL || replicas != nil) }
}

struct KubernetesExporter {
    let loaded: LoadedRoster
    let keys: RosterKeys
    let files: [String: [CharacterFile]]
    let options: KubernetesExportOptions
    var findings: [ComposeFinding] = []
    var services: [ExportedService] = []
    /// A character's `port:` → its name, to point loopback addresses at its Service.
    var portOwners: [Int: String] = [:]

    init(loaded: LoadedRoster, keys: RosterKeys, files: [String: [CharacterFile]], options: KubernetesExportOptions) {
        self.loaded = loaded
        self.keys = keys
        self.files = files
        self.options = options
    }

    var file: String { Paths.lastComponent(loaded.path) }

    mutating func note(_ line: Int?, _ key: String, _ outcome: ComposeFinding.Outcome) {
        findings.append(ComposeFinding(file: file, line: line, key: key, outcome: outcome))
    }

    // MARK: - Services as written

    mutating func gatherServices() {
        var seen: Set<String> = []
        for spec in loaded.roster.services {
            let environment = spec.launch.environment
            let origins = loaded.environmentOrigins[spec.name] ?? [:]
            let base = environment["WHISPERD_CHARACTER"].flatMap { origins["WHISPERD_CHARACTER"] == "whisperd" ? $0 : nil } ?? spec.name.rawValue
            let count = origins["REPLICA_COUNT"] == "whisperd" ? environment["REPLICA_COUNT"].flatMap { Int($0) } : nil
            guard seen.insert(base).inserted else { continue }
            let line = keys.services.first { $0.name == base }?.line
            services.append(ExportedService(name: base, spec: spec, replicas: count, origins: origins, line: line))
            if let port = spec.port, !spec.isJob { portOwners[port] = base }
        }
    }

    func service(named name: String) -> ExportedService? { services.first { $0.name == name } }

    /// `after:` by the names written (a replicated dependency's instances folded into it).
    func dependencies(of service: ExportedService) -> [Dependency] {
        var result: [Dependency] = []
        for dependency in service.spec.dependencies {
            let target = loaded.roster[dependency.name].flatMap { spec -> String? in
                let origins = loaded.environmentOrigins[spec.name] ?? [:]
                return origins["WHISPERD_CHARACTER"] == "whisperd" ? spec.launch.environment["WHISPERD_CHARACTER"] : nil
            } ?? dependency.name.rawValue
            guard let name = ServiceName(target), !result.contains(where: { $0.name == name }) else { continue }
            var folded = dependency
            folded.name = name
            result.append(folded)
        }
        return result
    }

    // MARK: - Names and options

    func checkNames() throws {
        var problems: [String] = []
        if let namespace = options.namespace, !KubernetesExport.isLabel(namespace) {
            problems.append("--namespace: `\(namespace.prefix(80))` is not a Kubernetes namespace (RFC 1123 label: a-z 0-9 -, at most 63, alphanumeric at both ends)")
        }
        if let source = options.secretsFrom, !KubernetesExport.isLabel(source, limit: 180) {
            problems.append("--secrets-from: `\(source.prefix(80))` cannot prefix a Secret's name (a-z 0-9 -, alphanumeric at both ends)")
        }
        if options.image.isEmpty || options.image.contains(where: { $0 == " " || $0 == "\n" || $0 == "\t" }) {
            problems.append("--image: `\(options.image.prefix(80))` is not an image reference")
        }
        let digits = options.storageSize.prefix { $0.isASCII && $0.isNumber }
        if digits.isEmpty || !["", "Ki", "Mi", "Gi", "Ti"].contains(String(options.storageSize.dropFirst(digits.count))) {
            problems.append("--storage: `\(options.storageSize.prefix(40))` is not a quantity such as 512Mi or 1Gi")
        }
        for service in services {
            let location = service.line.map { "\(file):\($0): " } ?? "\(file): "
            // Jobs are named NAME-<16 hex of the revision>; StatefulSet pods carry a label NAME-<hash>.
            // A CronJob's name is at most 52 (its Jobs get a suffix).
            let limit = service.spec.schedule != nil ? 52 : service.isJob ? 46 : (service.isStateful ? 52 : 63)
            if !KubernetesExport.isLabel(service.name, limit: limit, startsWithLetter: true) {
                problems.append(
                    "\(location)\(service.path): `\(service.name)` cannot name Kubernetes objects: use a-z 0-9 - only, start with a letter, end with a letter or digit, at most \(limit) characters (RFC 1123/1035; a \(service.isJob ? "Job's name gets a revision suffix" : service.isStateful ? "StatefulSet's pods get a suffix" : "Service's name")): rename it in the roster")
            }
        }
        if !problems.isEmpty { throw KubernetesExportError(problems: problems) }
    }

    // MARK: - The run

    mutating func run() throws -> [Kubernetes.Object] {
        gatherServices()
        try checkNames()
        for key in keys.top {
            switch key.path {
            case "version": note(key.line, key.path, .mapped("roster format 1 (the pods' rosters are written in it too)"))
            case "characters_dir":
                note(key.line, key.path, .mapped("each character's files go into its ConfigMap NAME-character, mounted at \(KubernetesExportOptions.charactersDirectory)/NAME"))
            default: note(key.line, key.path, .notMappable("unknown key"))
            }
        }
        for written in keys.services where service(named: written.name) == nil {
            let path = "\(written.isJob ? "jobs" : "characters").\(written.name)"
            let reason =
                loaded.inactive.contains(written.name)
                ? "not in the active profiles (--profile): not exported" : "replicas: 0: no instance, not exported"
            note(written.line, path, .ignored(reason))
        }
        var objects: [Kubernetes.Object] = []
        for service in services {
            objects += try translate(service)
        }
        return objects
    }

    func meta(_ name: String, component: String, of service: String) -> Kubernetes.ObjectMeta {
        Kubernetes.ObjectMeta(name: name, namespace: options.namespace, labels: labels(service, component: component), annotations: nil)
    }

    func labels(_ service: String, component: String) -> Kubernetes.OrderedStrings {
        Kubernetes.OrderedStrings([
            (key: "app.kubernetes.io/name", value: service), (key: "app.kubernetes.io/component", value: component),
            (key: "app.kubernetes.io/part-of", value: "whisperd"), (key: "app.kubernetes.io/managed-by", value: "whisperd-export"),
        ])
    }

    func selector(_ service: String) -> Kubernetes.OrderedStrings {
        Kubernetes.OrderedStrings([(key: "app.kubernetes.io/name", value: service), (key: "app.kubernetes.io/part-of", value: "whisperd")])
    }
}
