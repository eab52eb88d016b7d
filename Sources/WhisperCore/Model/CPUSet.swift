/// The CPUs a character may run on (roster `cpuset:`, Compose's `cpuset`), in the kernel's
/// list format: `0-3,6`. Kept as a sorted set so that two spellings of the same CPUs compare
/// equal and a reload that only re-spells it changes nothing.
public struct CPUSet: Hashable, Sendable, CustomStringConvertible {
    /// Linux's largest `NR_CPUS` is 8192; a larger number is a typo, not a machine.
    public static let maximumCPU = 8191

    public let cpus: [Int]

    public init?(cpus: some Sequence<Int>) {
        let sorted = Set(cpus).sorted()
        guard let first = sorted.first, first >= 0, sorted.last! <= Self.maximumCPU else { return nil }
        self.cpus = sorted
    }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case empty
        case notANumber(String)
        case reversedRange(String)
        case tooLarge(Int)

        public var description: String {
            switch self {
            case .empty: "is empty; give CPU numbers such as 0-3 or 1,3"
            case .notANumber(let part): "`\(part.prefix(20))` is not a CPU number or range (such as 0-3 or 1,3)"
            case .reversedRange(let part): "`\(part)` runs backwards"
            case .tooLarge(let cpu): "CPU \(cpu) is above \(CPUSet.maximumCPU)"
            }
        }
    }

    /// Parses the kernel's list format: comma-separated CPU numbers and `a-b` ranges.
    public static func parse(_ text: String) throws(ParseError) -> CPUSet {
        var cpus: [Int] = []
        for rawPart in text.split(separator: ",", omittingEmptySubsequences: false) {
            let part = rawPart.trimmingSpaces
            guard !part.isEmpty else { throw text.allSatisfy({ $0 == " " || $0 == "," }) ? .empty : .notANumber(String(rawPart)) }
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard bounds.count <= 2, let low = Self.number(bounds[0]), let high = Self.number(bounds.last!) else {
                throw .notANumber(String(part))
            }
            guard low <= high else { throw .reversedRange(String(part)) }
            guard high <= maximumCPU else { throw .tooLarge(high) }
            cpus.append(contentsOf: low...high)
        }
        guard let set = CPUSet(cpus: cpus) else { throw .empty }
        return set
    }

    private static func number(_ text: Substring) -> Int? {
        guard !text.isEmpty, text.count <= 5, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(text)
    }

    /// The kernel's list format, ranges folded: `0-3,6`.
    public var description: String {
        var parts: [String] = []
        var index = 0
        while index < cpus.count {
            var end = index
            while end + 1 < cpus.count, cpus[end + 1] == cpus[end] + 1 { end += 1 }
            parts.append(end == index ? String(cpus[index]) : "\(cpus[index])-\(cpus[end])")
            index = end + 1
        }
        return parts.joined(separator: ",")
    }

    public func isSubset(of other: CPUSet) -> Bool { Set(cpus).isSubset(of: other.cpus) }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var text = self
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return text
    }
}
