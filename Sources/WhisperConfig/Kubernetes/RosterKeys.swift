import Yams

/// Every key a roster writes, with its line: what an export reports on, one by one. Leaves
/// are settings (`limits.memory`, `health.http.path`, `env.NAME`, `after.NAME`,
/// `ulimits.nofile`), not the blocks that hold them.
public struct RosterKeys: Sendable {
    public struct Key: Hashable, Sendable {
        /// Relative to its block: `limits.memory`.
        public var path: String
        public var line: Int?
    }

    /// `version`, `characters_dir`.
    public var top: [Key] = []
    public var defaults: [Key] = []
    /// Per service as written (a character with `replicas:` once), in file order.
    public var services: [(name: String, isJob: Bool, line: Int?, keys: [Key])] = []

    /// The keys that apply to a service: its own, and those of `defaults:` it does not set
    /// itself (settings merge field by field, so a leaf it writes replaces the default's).
    public func effective(for name: String) -> [(key: Key, fromDefaults: Bool)] {
        guard let service = services.first(where: { $0.name == name }) else { return [] }
        let own = Set(service.keys.map(\.path))
        // `env_file` and `env.X` from defaults, other leaves unless overridden.
        let inherited = defaults.filter { !own.contains($0.path) }
        return inherited.map { ($0, true) } + service.keys.map { ($0, false) }
    }

    /// Blocks whose keys are reported one by one.
    static let blocks: Set<String> = ["limits", "health", "restart_budget", "logs", "sandbox", "ulimits", "env", "after"]
    static let healthBlocks: Set<String> = ["http", "exec", "tcp"]

    /// Reads the keys of roster text that `RosterLoader` accepted (so no problem is reported here).
    public static func read(_ text: String) -> RosterKeys {
        var keys = RosterKeys()
        guard let root = try? Yams.compose(yaml: text, .basic), case .mapping(let top) = root else { return keys }
        for (keyNode, value) in top {
            guard case .scalar(let key) = keyNode else { continue }
            switch key.string {
            case "defaults":
                keys.defaults = leaves(value, [])
            case "jobs", "characters":
                guard case .mapping(let entries) = value else { continue }
                for (nameNode, body) in entries {
                    guard case .scalar(let name) = nameNode else { continue }
                    keys.services.append((name.string, key.string == "jobs", nameNode.mark?.line, leaves(body, [])))
                }
            default:
                keys.top.append(Key(path: key.string, line: keyNode.mark?.line))
            }
        }
        return keys
    }

    private static func leaves(_ node: Node, _ path: [String]) -> [Key] {
        guard case .mapping(let mapping) = node else { return [] }
        var result: [Key] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let key) = keyNode else { continue }
            let keyPath = path + [key.string]
            let line = keyNode.mark?.line
            if keyPath == ["after"], case .sequence(let items) = value, !items.isEmpty {
                for item in items { if case .scalar(let name) = item { result.append(Key(path: "after.\(name.string)", line: item.mark?.line ?? line)) } }
                continue
            }
            let descends =
                (keyPath.count == 1 && blocks.contains(key.string)) || (keyPath.count == 2 && keyPath[0] == "health" && healthBlocks.contains(key.string))
            if descends, case .mapping(let inner) = value, !inner.isEmpty {
                result += leaves(value, keyPath)
            } else {
                result.append(Key(path: keyPath.joined(separator: "."), line: line))
            }
        }
        return result
    }
}
