/// What changes between two rosters, and so what a reload must do.
public struct RosterDiff: Hashable, Sendable {
    /// New names: start them.
    public var added: [ServiceName] = []
    /// Gone names: stop them.
    public var removed: [ServiceName] = []
    /// Command, environment, working directory or port changed: restart.
    public var relaunched: [ServiceName] = []
    /// Only `limits:` changed (maybe with in-place settings): write them live, no restart.
    public var limitsChanged: [ServiceName] = []
    /// Only settings that apply in place changed (restart policy, health, stop, logs, after).
    public var updatedInPlace: [ServiceName] = []

    public init(old: Roster, new: Roster) {
        let oldByName = Dictionary(old.services.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        let newNames = Set(new.names)
        for spec in new.services {
            guard let previous = oldByName[spec.name] else {
                added.append(spec.name)
                continue
            }
            if previous == spec { continue }
            if previous.launch != spec.launch || previous.port != spec.port || previous.kind != spec.kind {
                relaunched.append(spec.name)
            } else if previous.limits != spec.limits {
                limitsChanged.append(spec.name)
            } else {
                updatedInPlace.append(spec.name)
            }
        }
        removed = old.names.filter { !newNames.contains($0) }
    }

    public var isEmpty: Bool {
        added.isEmpty && removed.isEmpty && relaunched.isEmpty && limitsChanged.isEmpty && updatedInPlace.isEmpty
    }

    /// One line per change, for `reload --dry-run` and the log.
    public var plan: [String] {
        added.map { "start \($0) (added)" } + removed.map { "stop \($0) (removed)" }
            + relaunched.map { "restart \($0) (command, environment or port changed)" }
            + limitsChanged.map { "update limits of \($0) live (no restart)" }
            + updatedInPlace.map { "update settings of \($0) (no restart)" }
    }
}
