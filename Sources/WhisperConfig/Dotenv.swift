/// Parses `.env` files as Docker Compose users write them: `KEY=VALUE`, `export KEY=VALUE`,
/// `#` comments, single quotes (literal), double quotes (with `\n`, `\t`, `\"`, `\\` escapes),
/// and ` #` comments after unquoted values. No variable expansion.
public enum Dotenv {
    public struct Entry: Equatable, Sendable {
        public var key: String
        public var value: String
        public var line: Int
    }

    public struct Problem: Error, Equatable, Sendable, CustomStringConvertible {
        public var line: Int
        public var message: String
        public var description: String { "line \(line): \(message)" }
    }

    public static func parse(_ text: String) -> Result<[Entry], Problem> {
        var entries: [Entry] = []
        var lineNumber = 0
        // "\r\n" is one Character in Swift: split on both.
        for rawLine in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            var line = rawLine[...]
            if line.last == "\r" { line = line.dropLast() }
            line = line.drop { $0 == " " || $0 == "\t" }
            if line.isEmpty || line.first == "#" { continue }
            if line.hasPrefix("export ") || line.hasPrefix("export\t") {
                line = line.dropFirst(7).drop { $0 == " " || $0 == "\t" }
            }
            guard let equals = line.firstIndex(of: "=") else {
                return .failure(Problem(line: lineNumber, message: "expected KEY=VALUE"))
            }
            let key = String(line[..<equals]).trimmingCharacters(in: " ")
            guard isValidKey(key) else {
                return .failure(Problem(line: lineNumber, message: "invalid variable name \(key.debugDescription)"))
            }
            var valuePart = line[line.index(after: equals)...].drop { $0 == " " || $0 == "\t" }
            let value: String
            switch valuePart.first {
            case "'":
                valuePart = valuePart.dropFirst()
                guard let close = valuePart.firstIndex(of: "'") else {
                    return .failure(Problem(line: lineNumber, message: "unterminated single quote"))
                }
                value = String(valuePart[..<close])
                guard isOnlyComment(valuePart[valuePart.index(after: close)...]) else {
                    return .failure(Problem(line: lineNumber, message: "unexpected text after closing quote"))
                }
            case "\"":
                valuePart = valuePart.dropFirst()
                var result = ""
                var closed = false
                var iterator = valuePart.indices.makeIterator()
                var closeIndex = valuePart.endIndex
                while let index = iterator.next() {
                    let character = valuePart[index]
                    if character == "\\" {
                        guard let next = iterator.next() else { break }
                        switch valuePart[next] {
                        case "n": result.append("\n")
                        case "t": result.append("\t")
                        case "r": result.append("\r")
                        case "\"": result.append("\"")
                        case "\\": result.append("\\")
                        case "$": result.append("$")
                        default:
                            result.append("\\")
                            result.append(valuePart[next])
                        }
                    } else if character == "\"" {
                        closed = true
                        closeIndex = index
                        break
                    } else {
                        result.append(character)
                    }
                }
                guard closed else { return .failure(Problem(line: lineNumber, message: "unterminated double quote")) }
                guard isOnlyComment(valuePart[valuePart.index(after: closeIndex)...]) else {
                    return .failure(Problem(line: lineNumber, message: "unexpected text after closing quote"))
                }
                value = result
            default:
                var unquoted = valuePart
                if let comment = unquoted.indices.first(where: {
                    unquoted[$0] == "#" && $0 > unquoted.startIndex
                        && (unquoted[unquoted.index(before: $0)] == " " || unquoted[unquoted.index(before: $0)] == "\t")
                }) {
                    unquoted = unquoted[..<comment]
                }
                value = String(unquoted).trimmingCharacters(in: " ")
            }
            entries.append(Entry(key: key, value: value, line: lineNumber))
        }
        return .success(entries)
    }

    static func isValidKey(_ key: String) -> Bool {
        guard let first = key.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic)
        else { return false }
        return key.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    private static func isOnlyComment(_ rest: Substring) -> Bool {
        let trimmed = rest.drop { $0 == " " || $0 == "\t" }
        return trimmed.isEmpty || trimmed.first == "#"
    }
}

/// Keys whose values must never be shown: they contain TOKEN, KEY, SECRET or PASSWORD.
public enum Secrets {
    /// Keys naming a secret: one of their words holds TOKEN, KEY, SECRET, PASSWORD, PASSWD or
    /// CREDENTIAL — except the word TOKENS, a count (`LLM_MAX_TOKENS`), not a credential.
    public static func isSecret(_ key: String) -> Bool {
        key.uppercased().split(whereSeparator: { !$0.isLetter && !$0.isNumber }).contains { word in
            word != "TOKENS" && ["TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"].contains { word.contains($0) }
        }
    }

    /// Secrets that identify one bot: two characters sharing one is two bots on one account.
    public static func isIdentitySecret(_ key: String) -> Bool {
        let upper = key.uppercased()
        return upper == "DISCORD_TOKEN" || upper == "DISCORD_BOT_TOKEN" || upper.hasSuffix("_BOT_TOKEN")
    }

    public static let redacted = "<redacted>"

    /// What may be shown of a variable: nothing of a secret key's value, and no password of a
    /// URL with credentials (`postgres://user:pass@host/db` → `postgres://user:<redacted>@host/db`)
    /// whatever its key (`DATABASE_URL`, `POSTGRES_URL`, …).
    public static func displayed(_ key: String, _ value: String) -> (value: String, isSecret: Bool) {
        if isSecret(key) { return (redacted, true) }
        if let masked = maskingURLCredentials(value) { return (masked, true) }
        return (value, false)
    }

    /// `scheme://user:password@rest` with the password replaced; nil when there is none.
    static func maskingURLCredentials(_ value: String) -> String? {
        guard let colonSlash = value.firstIndex(of: ":"), value[colonSlash...].hasPrefix("://") else { return nil }
        let scheme = value[..<colonSlash]
        guard !scheme.isEmpty, scheme.allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) }) else { return nil }
        let rest = value[value.index(colonSlash, offsetBy: 3)...]
        let authorityEnd = rest.firstIndex { "/?#".contains($0) } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard let at = authority.lastIndex(of: "@") else { return nil }
        let userInfo = authority[..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return nil }
        return String(value[..<colon]) + ":" + redacted + String(value[at...])
    }
}
