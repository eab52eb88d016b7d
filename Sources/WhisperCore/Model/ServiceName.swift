/// The name of a character or job.
///
/// Names become paths, cgroup names, socket names and metric labels, so they are
/// restricted to `^[a-z0-9][a-z0-9_-]{0,62}$` and checked once, at the boundary.
public struct ServiceName: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init?(_ rawValue: String) {
        guard ServiceName.isValid(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    public static func isValid(_ candidate: String) -> Bool {
        let bytes = Array(candidate.utf8)
        guard let first = bytes.first, bytes.count <= 63 else { return false }
        func isLowerAlnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) }
        guard isLowerAlnum(first) else { return false }
        return bytes.dropFirst().allSatisfy { isLowerAlnum($0) || $0 == 0x5f || $0 == 0x2d }
    }

    public var description: String { rawValue }
    public static func < (lhs: ServiceName, rhs: ServiceName) -> Bool { lhs.rawValue < rhs.rawValue }
}
