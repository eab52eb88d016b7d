/// Picks a stable uid (and the same gid) per service from the dynamic range, the way systemd's
/// `DynamicUser=` does: a hash of the name chooses where to start, and the first id neither in
/// the passwd/group databases nor held by another service is taken. What was given once is
/// kept (the caller persists ``assignments``), so a character keeps its files across restarts.
public struct DynamicIDAllocator: Hashable, Sendable {
    /// systemd's DynamicUser range.
    public static let defaultRange: ClosedRange<UInt32> = 61184...65519

    public let range: ClosedRange<UInt32>
    public private(set) var assignments: [String: UInt32]

    public init(range: ClosedRange<UInt32> = Self.defaultRange, assignments: [String: UInt32] = [:]) {
        self.range = range
        self.assignments = assignments
    }

    public enum Failure: Error, Hashable, Sendable, CustomStringConvertible {
        case exhausted(ClosedRange<UInt32>)
        public var description: String {
            switch self {
            case .exhausted(let range): "no free id left in \(range.lowerBound)...\(range.upperBound)"
            }
        }
    }

    /// The id of `name`: the one it had, unless the system databases now use it (`isTaken`), in
    /// which case a new one is chosen and the change is reported by `changed`.
    public mutating func id(for name: String, isTaken: (UInt32) -> Bool) -> Result<(id: UInt32, changed: Bool), Failure> {
        let held = Set(assignments.filter { $0.key != name }.values)
        if let existing = assignments[name], range.contains(existing), !isTaken(existing), !held.contains(existing) {
            return .success((existing, false))
        }
        let size = UInt64(range.upperBound - range.lowerBound) + 1
        let start = stableHash(name) % size
        for step in 0..<size {
            let candidate = range.lowerBound + UInt32((start + step) % size)
            if held.contains(candidate) || isTaken(candidate) { continue }
            let changed = assignments[name] != nil
            assignments[name] = candidate
            return .success((candidate, changed))
        }
        return .failure(.exhausted(range))
    }
}
