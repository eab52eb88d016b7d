import Foundation
import Yams

/// A character folder in WhisperEngine v2's format, parsed: `character.md` (the system
/// prompt) and the optional `core.yaml`, `goals.yaml`, `evolution.yaml`, `ux.yaml`,
/// `background.yaml`. Keys this worker does not use are ignored (other tools write these
/// files); a file that is not valid YAML, or a used key of the wrong shape, is an error that
/// names the file and line.
public struct CharacterProfile: Sendable, Equatable {
    public struct Core: Sendable, Equatable {
        public var purpose: String
        public var timezone: TimeZone?
        /// Drive name → strength in 0…1, in file order.
        public var drives: [(name: String, strength: Double)]
        public var constitution: [String]

        public init(purpose: String, timezone: TimeZone?, drives: [(name: String, strength: Double)], constitution: [String]) {
            self.purpose = purpose
            self.timezone = timezone
            self.drives = drives
            self.constitution = constitution
        }

        public static func == (a: Core, b: Core) -> Bool {
            a.purpose == b.purpose && a.timezone == b.timezone && a.constitution == b.constitution
                && a.drives.map(\.name) == b.drives.map(\.name) && a.drives.map(\.strength) == b.drives.map(\.strength)
        }
    }

    public struct Goal: Sendable, Equatable {
        public var slug: String
        public var description: String
        public var successCriteria: String?
        public var priority: Double?

        public init(slug: String, description: String, successCriteria: String?, priority: Double?) {
            self.slug = slug
            self.description = description
            self.successCriteria = successCriteria
            self.priority = priority
        }
    }

    public struct EvolutionStage: Sendable, Equatable {
        public var name: String
        public var trustRange: ClosedRange<Int>
        public var behavior: String?

        public init(name: String, trustRange: ClosedRange<Int>, behavior: String?) {
            self.name = name
            self.trustRange = trustRange
            self.behavior = behavior
        }
    }

    public struct BackgroundFact: Sendable, Equatable {
        public var predicate: String
        public var object: String

        public init(predicate: String, object: String) {
            self.predicate = predicate
            self.object = object
        }
    }

    public struct UX: Sendable, Equatable {
        public var errorMessages: [String] = []
        public var coldResponses: [String] = []
        public var emojiSets: [String: [String]] = [:]
    }

    /// The folder name: the character's `bot_name`.
    public var name: String
    /// `character.md`, whole.
    public var prompt: String
    public var core: Core?
    public var goals: [Goal] = []
    public var evolution: [EvolutionStage] = []
    public var ux = UX()
    public var background: [BackgroundFact] = []

    public init(name: String, prompt: String) {
        self.name = name
        self.prompt = prompt
    }

    /// The optional files, by name.
    public static let optionalFiles = ["core.yaml", "goals.yaml", "evolution.yaml", "ux.yaml", "background.yaml"]

    /// Parses a folder's files (`file name → contents`; `character.md` required).
    public static func parse(name: String, files: [String: String]) -> Result<CharacterProfile, CharacterFileError> {
        guard let prompt = files["character.md"] else {
            return .failure(CharacterFileError(file: "character.md", line: nil, message: "missing (a character needs its system prompt)"))
        }
        guard !prompt.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            return .failure(CharacterFileError(file: "character.md", line: nil, message: "is empty"))
        }
        var profile = CharacterProfile(name: name, prompt: prompt)
        do {
            if let text = files["core.yaml"] { profile.core = try parseCore(try document(text, "core.yaml")) }
            if let text = files["goals.yaml"] { profile.goals = try parseGoals(try document(text, "goals.yaml")) }
            if let text = files["evolution.yaml"] { profile.evolution = try parseEvolution(try document(text, "evolution.yaml")) }
            if let text = files["ux.yaml"] { profile.ux = try parseUX(try document(text, "ux.yaml")) }
            if let text = files["background.yaml"] { profile.background = try parseBackground(try document(text, "background.yaml")) }
        } catch let error as CharacterFileError {
            return .failure(error)
        } catch {
            return .failure(CharacterFileError(file: "?", line: nil, message: "\(error)"))
        }
        return .success(profile)
    }

    /// The evolution stage for a trust score ("Stranger" when none matches or none is defined).
    public func trustLevel(for score: Int) -> String {
        evolution.first { $0.trustRange.contains(score) }?.name ?? "Stranger"
    }

    // MARK: - Files

    private static func document(_ text: String, _ file: String) throws -> YAMLField {
        do {
            guard let node = try Yams.compose(yaml: text) else { return YAMLField(node: nil, file: file, path: "") }
            return YAMLField(node: node, file: file, path: "")
        } catch let error as YamlError {
            throw CharacterFileError(file: file, line: error.line, message: "not valid YAML: \(error.summary)")
        }
    }

    private static func parseCore(_ root: YAMLField) throws -> Core {
        let purpose = try root["purpose"].requiredString()
        var timezone: TimeZone?
        if let identifier = try root["timezone"].string() {
            guard let zone = TimeZone(identifier: identifier) else {
                throw root["timezone"].error("\(identifier) is not an IANA time zone (e.g. Europe/Berlin)")
            }
            timezone = zone
        }
        var drives: [(String, Double)] = []
        for (key, value) in try root["drives"].mapping() {
            guard let strength = try value.number(), (0...1).contains(strength) else {
                throw value.error("a drive is a number from 0 to 1")
            }
            drives.append((key, strength))
        }
        let constitution = try root["constitution"].sequence().map { try $0.requiredString() }
        return Core(purpose: purpose, timezone: timezone, drives: drives, constitution: constitution)
    }

    private static func parseGoals(_ root: YAMLField) throws -> [Goal] {
        try root["goals"].sequence().map { goal in
            Goal(
                slug: try goal["slug"].requiredString(), description: try goal["description"].string() ?? "",
                successCriteria: try goal["success_criteria"].string(), priority: try goal["priority"].number())
        }
    }

    private static func parseEvolution(_ root: YAMLField) throws -> [EvolutionStage] {
        try root["evolution_stages"].sequence().map { stage in
            let bounds = try stage["trust_range"].sequence()
            guard bounds.count == 2, let low = try bounds[0].number(), let high = try bounds[1].number(), low <= high else {
                throw stage["trust_range"].error("expected [min, max] with min <= max")
            }
            return EvolutionStage(
                name: try stage["name"].requiredString(), trustRange: Int(low.rounded(.down))...Int(high.rounded(.up)),
                behavior: try stage["behavior"].string())
        }
    }

    private static func parseUX(_ root: YAMLField) throws -> UX {
        var ux = UX()
        ux.errorMessages = try root["error_messages"].strings()
        ux.coldResponses = try root["cold_responses"].strings()
        for (key, value) in try root["emoji_sets"].mapping() { ux.emojiSets[key] = try value.strings() }
        return ux
    }

    private static func parseBackground(_ root: YAMLField) throws -> [BackgroundFact] {
        try root["facts"].sequence().map { fact in
            BackgroundFact(predicate: try fact["predicate"].requiredString(), object: try fact["object"].requiredString())
        }
    }
}

public struct CharacterFileError: Error, Equatable, Sendable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String { "\(file)\(line.map { ":\($0)" } ?? ""): \(message)" }
}

/// A YAML node with where it came from, for errors that name file, line and key.
struct YAMLField {
    let node: Node?
    let file: String
    let path: String

    var line: Int? { node?.mark.map { $0.line } }

    func error(_ message: String) -> CharacterFileError {
        CharacterFileError(file: file, line: line, message: (path.isEmpty ? "" : "\(path): ") + message)
    }

    subscript(key: String) -> YAMLField {
        let child = node?.mapping?[Node.scalar(.init(key))]
        return YAMLField(node: child, file: file, path: path.isEmpty ? key : "\(path).\(key)")
    }

    /// A scalar as text; `nil` when absent or null.
    func string() throws -> String? {
        guard let node, !isNull else { return nil }
        guard let scalar = node.scalar else { throw error("expected text") }
        return scalar.string
    }

    func requiredString() throws -> String {
        guard let text = try string(), !text.isEmpty else {
            throw CharacterFileError(file: file, line: line, message: "\(path): required")
        }
        return text
    }

    func number() throws -> Double? {
        guard let text = try string() else { return nil }
        guard let value = Double(text) else { throw error("expected a number, got \(text)") }
        return value
    }

    /// Items of a sequence; none when absent.
    func sequence() throws -> [YAMLField] {
        guard let node, !isNull else { return [] }
        guard let items = node.sequence else { throw error("expected a list") }
        return items.enumerated().map { YAMLField(node: $0.element, file: file, path: "\(path)[\($0.offset)]") }
    }

    /// Entries of a mapping in file order; none when absent.
    func mapping() throws -> [(String, YAMLField)] {
        guard let node, !isNull else { return [] }
        guard let pairs = node.mapping else { throw error("expected a mapping") }
        return try pairs.map { key, value in
            guard let name = key.scalar?.string else { throw error("expected text keys") }
            return (name, YAMLField(node: value, file: file, path: path.isEmpty ? name : "\(path).\(name)"))
        }
    }

    /// A list of texts, or the values of a mapping of texts (both shapes exist in the wild).
    func strings() throws -> [String] {
        guard let node, !isNull else { return [] }
        if node.mapping != nil { return try mapping().compactMap { try $0.1.string() } }
        return try sequence().compactMap { try $0.string() }
    }

    private var isNull: Bool {
        guard let scalar = node?.scalar else { return false }
        return scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string)
    }
}

extension YamlError {
    var line: Int? {
        switch self {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _): mark.line
        default: nil
        }
    }

    var summary: String {
        switch self {
        case .scanner(_, let problem, _, _), .parser(_, let problem, _, _), .composer(_, let problem, _, _): problem
        default: "\(self)"
        }
    }
}
