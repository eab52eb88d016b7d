import WhisperCore

/// The roster's notations for sizes and durations.
public enum Units {
    /// `512M`, `1G`, `1.5G`, `64K`, `1048576` (binary multiples; a trailing `B`/`iB` is allowed).
    public static func parseSize(_ text: String) -> UInt64? {
        var body = text.trimmingCharacters(in: " ").uppercased()
        if body.hasSuffix("IB") { body.removeLast(2) } else if body.hasSuffix("B"), body.count > 1,
            body.dropLast().last?.isLetter == true
        {
            body.removeLast()
        }
        var multiplier: Double = 1
        if let unit = body.last, unit.isLetter {
            switch unit {
            case "K": multiplier = 1024
            case "M": multiplier = 1024 * 1024
            case "G": multiplier = 1024 * 1024 * 1024
            case "T": multiplier = 1024 * 1024 * 1024 * 1024
            default: return nil
            }
            body.removeLast()
        }
        guard !body.isEmpty, body.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ".") }),
            body.filter({ $0 == "." }).count <= 1, let number = Double(body), number.isFinite, number >= 0
        else { return nil }
        let bytes = number * multiplier
        guard bytes < 9.0e18 else { return nil }
        return UInt64(bytes.rounded())
    }

    /// `250ms`, `10s`, `5m`, `1h`, `1.5s`, `1m30s`, `0`.
    public static func parseDuration(_ text: String) -> Duration? {
        let body = text.trimmingCharacters(in: " ").lowercased()
        if body == "0" { return .zero }
        guard !body.isEmpty else { return nil }
        var total: Double = 0
        var rest = Substring(body)
        while !rest.isEmpty {
            let numberPart = rest.prefix { $0.isNumber || $0 == "." }
            guard !numberPart.isEmpty, numberPart.filter({ $0 == "." }).count <= 1, let value = Double(numberPart)
            else { return nil }
            rest = rest.dropFirst(numberPart.count)
            let unitPart = rest.prefix { $0.isLetter }
            rest = rest.dropFirst(unitPart.count)
            let scale: Double
            switch unitPart {
            case "ns": scale = 1
            case "us", "µs": scale = 1e3
            case "ms": scale = 1e6
            case "s": scale = 1e9
            case "m": scale = 60e9
            case "h": scale = 3600e9
            case "d": scale = 86400e9
            default: return nil
            }
            total += value * scale
        }
        guard total.isFinite, total < 3.15e17 else { return nil }  // under ten years
        return .nanoseconds(Int64(total.rounded()))
    }

    public static func formatSize(_ bytes: UInt64) -> String {
        let units: [(UInt64, String)] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
        for (scale, suffix) in units where bytes >= scale {
            let value = Double(bytes) / Double(scale)
            return value == value.rounded() ? "\(Int(value))\(suffix)" : "\((value * 10).rounded() / 10)\(suffix)"
        }
        return "\(bytes)"
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var text = self[...]
        while text.first == set || text.first == "\t" || text.first == "\n" || text.first == "\r" { text = text.dropFirst() }
        while text.last == set || text.last == "\t" || text.last == "\n" || text.last == "\r" { text = text.dropLast() }
        return String(text)
    }
}
