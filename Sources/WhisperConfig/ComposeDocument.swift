import Yams

/// A Compose file's YAML as a plain tree: aliases expanded, merge keys (`<<:`) applied, every
/// node with its file and line. Yams' `compose` expands aliases but leaves `<<` as an ordinary
/// key, so the merge is done here (YAML 1.1's merge: the mapping's own keys win, then the
/// merged mappings in order, the first one listed winning).
struct ComposeNode {
    enum Kind {
        case scalar(String)
        case list([ComposeNode])
        case map([ComposeEntry])
    }

    var kind: Kind
    var file: String
    var line: Int?
    /// A plain `key:`, `~` or `null` (not `""`, which is an empty string).
    var isNull = false

    var scalar: String? {
        if case .scalar(let text) = kind { return text }
        return nil
    }

    var entries: [ComposeEntry]? {
        if case .map(let entries) = kind { return entries }
        return nil
    }

    var items: [ComposeNode]? {
        if case .list(let items) = kind { return items }
        return nil
    }

    subscript(key: String) -> ComposeNode? {
        entries?.first { $0.key == key }?.value
    }

    var kindName: String {
        switch kind {
        case .scalar(let text): return "`\(text.prefix(40))`"
        case .list: return "a list"
        case .map: return "a mapping"
        }
    }
}

struct ComposeEntry {
    var key: String
    var line: Int?
    var value: ComposeNode
}

/// A problem that stops the import: the file is not a Compose file, or a `${VAR:?message}` fired.
struct ComposeFailure: Error {
    var file: String
    var line: Int?
    var message: String
}

enum ComposeReader {
    /// More nodes than this after alias expansion is an alias bomb, not a Compose file.
    static let maxNodes = 200_000

    static func read(_ text: String, file: String) throws(ComposeFailure) -> ComposeNode {
        if text.utf8.contains(0) { throw ComposeFailure(file: file, line: nil, message: "file contains a NUL byte") }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text, .basic)
        } catch let error as YamlError {
            throw ComposeFailure(file: file, line: nil, message: "not valid YAML: \(RosterLoader.describe(error, in: text))")
        } catch {
            throw ComposeFailure(file: file, line: nil, message: "not valid YAML: \(error)")
        }
        guard let root else { throw ComposeFailure(file: file, line: nil, message: "the file is empty") }
        var budget = maxNodes
        return try convert(root, file: file, budget: &budget)
    }

    private static func convert(_ node: Node, file: String, budget: inout Int) throws(ComposeFailure) -> ComposeNode {
        budget -= 1
        guard budget >= 0 else {
            throw ComposeFailure(file: file, line: node.mark?.line, message: "more than \(maxNodes) YAML nodes once aliases are expanded")
        }
        let line = node.mark?.line
        switch node {
        case .scalar(let scalar):
            let isNull = scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string)
            return ComposeNode(kind: .scalar(scalar.string), file: file, line: line, isNull: isNull)
        case .alias:
            throw ComposeFailure(file: file, line: line, message: "an unresolved alias")
        case .sequence(let sequence):
            var items: [ComposeNode] = []
            for item in sequence { items.append(try convert(item, file: file, budget: &budget)) }
            return ComposeNode(kind: .list(items), file: file, line: line)
        case .mapping(let mapping):
            var own: [ComposeEntry] = []
            var merged: [ComposeEntry] = []
            for (keyNode, value) in mapping {
                guard case .scalar(let key) = keyNode else {
                    throw ComposeFailure(file: file, line: keyNode.mark?.line, message: "mapping keys must be plain strings")
                }
                let converted = try convert(value, file: file, budget: &budget)
                guard key.string == "<<" else {
                    if own.contains(where: { $0.key == key.string }) {
                        throw ComposeFailure(file: file, line: keyNode.mark?.line, message: "duplicate key `\(key.string.prefix(40))`")
                    }
                    own.append(ComposeEntry(key: key.string, line: keyNode.mark?.line, value: converted))
                    continue
                }
                // `<<: *base` or `<<: [*a, *b]`: earlier sources win over later ones.
                let sources = converted.items ?? [converted]
                for source in sources {
                    guard let sourceEntries = source.entries else {
                        throw ComposeFailure(file: file, line: source.line, message: "`<<` merges mappings, found \(source.kindName)")
                    }
                    for entry in sourceEntries where !merged.contains(where: { $0.key == entry.key }) {
                        merged.append(entry)
                    }
                }
            }
            let entries = own + merged.filter { entry in !own.contains { $0.key == entry.key } }
            return ComposeNode(kind: .map(entries), file: file, line: line)
        }
    }

    /// Compose's override of one file by the next: mappings merge key by key, anything else is
    /// replaced, except in a service: `environment` and `labels` merge by name whichever form
    /// each file uses, and the lists of `appendedServiceKeys` are concatenated.
    static func overlay(_ base: ComposeNode, _ top: ComposeNode) -> ComposeNode {
        guard var entries = base.entries, let topEntries = top.entries else { return top }
        for entry in topEntries {
            if let index = entries.firstIndex(where: { $0.key == entry.key }) {
                entries[index].value = entry.key == "services"
                    ? overlayServices(entries[index].value, entry.value) : overlay(entries[index].value, entry.value)
            } else {
                entries.append(entry)
            }
        }
        return ComposeNode(kind: .map(entries), file: base.file, line: base.line)
    }

    /// Lists Compose concatenates when one file (or `extends`) overrides another.
    static let appendedServiceKeys: Set<String> = ["ports", "expose", "volumes", "dns", "dns_search", "extra_hosts", "cap_add", "cap_drop", "devices", "tmpfs"]

    static func overlayServices(_ base: ComposeNode, _ top: ComposeNode) -> ComposeNode {
        guard var entries = base.entries, let topEntries = top.entries else { return top }
        for entry in topEntries {
            if let index = entries.firstIndex(where: { $0.key == entry.key }) {
                entries[index].value = overlayService(entries[index].value, entry.value)
            } else {
                entries.append(entry)
            }
        }
        return ComposeNode(kind: .map(entries), file: base.file, line: base.line)
    }

    /// One service over another (a later file's, or a service over the one it extends).
    static func overlayService(_ base: ComposeNode, _ top: ComposeNode) -> ComposeNode {
        guard var entries = base.entries, let topEntries = top.entries else { return top }
        for entry in topEntries {
            guard let index = entries.firstIndex(where: { $0.key == entry.key }) else {
                entries.append(entry)
                continue
            }
            let current = entries[index].value
            if ["environment", "labels"].contains(entry.key) {
                entries[index].value = overlay(namedValues(current), namedValues(entry.value))
            } else if appendedServiceKeys.contains(entry.key), let old = current.items, let new = entry.value.items {
                entries[index].value = ComposeNode(kind: .list(old + new), file: current.file, line: current.line)
            } else {
                entries[index].value = overlay(current, entry.value)
            }
        }
        return ComposeNode(kind: .map(entries), file: base.file, line: base.line)
    }

    /// `[A=1, B]` → `{A: "1", B: null}`, so two forms merge by name; a mapping is kept.
    static func namedValues(_ node: ComposeNode) -> ComposeNode {
        guard let items = node.items else { return node }
        let entries = items.compactMap { item -> ComposeEntry? in
            guard let text = item.scalar else { return nil }
            guard let equals = text.firstIndex(of: "=") else {
                return ComposeEntry(key: text, line: item.line, value: ComposeNode(kind: .scalar(""), file: item.file, line: item.line, isNull: true))
            }
            let value = ComposeNode(kind: .scalar(String(text[text.index(after: equals)...])), file: item.file, line: item.line)
            return ComposeEntry(key: String(text[..<equals]), line: item.line, value: value)
        }
        return ComposeNode(kind: .map(entries), file: node.file, line: node.line)
    }
}

// MARK: - Interpolation

/// Compose's variable substitution in values: `$VAR`, `${VAR}`, `${VAR:-default}` (unset or
/// empty), `${VAR-default}` (unset), `${VAR:?error}`, `${VAR?error}`, `${VAR:+alternative}`,
/// `${VAR+alternative}`, `$$` for a literal `$`; defaults may nest (`${A:-${B:-x}}`).
struct ComposeInterpolator {
    var environment: [String: String]
    /// Variables used but not set (Compose warns and substitutes an empty string).
    var unset: [(name: String, file: String, line: Int?)] = []

    mutating func interpolate(_ node: ComposeNode) throws(ComposeFailure) -> ComposeNode {
        var result = node
        switch node.kind {
        case .scalar(let text):
            result.kind = .scalar(try substitute(text, file: node.file, line: node.line))
        case .list(let items):
            var converted: [ComposeNode] = []
            for item in items { converted.append(try interpolate(item)) }
            result.kind = .list(converted)
        case .map(let entries):
            var converted: [ComposeEntry] = []
            for entry in entries {
                converted.append(ComposeEntry(key: entry.key, line: entry.line, value: try interpolate(entry.value)))
            }
            result.kind = .map(converted)
        }
        return result
    }

    mutating func substitute(_ text: String, file: String, line: Int?) throws(ComposeFailure) -> String {
        guard text.contains("$") else { return text }
        let characters = Array(text)
        var index = 0
        return try expand(characters, &index, until: nil, file: file, line: line)
    }

    private static func isNameStart(_ character: Character) -> Bool {
        character == "_" || (character.isASCII && character.isLetter)
    }

    private static func isNameCharacter(_ character: Character) -> Bool {
        isNameStart(character) || (character.isASCII && character.isNumber)
    }

    /// Expands from `index` to the end, or to the `}` that closes an enclosing `${…}`.
    private mutating func expand(
        _ characters: [Character], _ index: inout Int, until closing: Character?, file: String, line: Int?
    ) throws(ComposeFailure) -> String {
        var output = ""
        while index < characters.count {
            let character = characters[index]
            if let closing, character == closing { return output }
            guard character == "$", index + 1 < characters.count else {
                output.append(character)
                index += 1
                continue
            }
            let next = characters[index + 1]
            if next == "$" {
                output.append("$")
                index += 2
            } else if next == "{" {
                index += 2
                output += try braced(characters, &index, file: file, line: line)
            } else if Self.isNameStart(next) {
                index += 1
                var name = ""
                while index < characters.count, Self.isNameCharacter(characters[index]) {
                    name.append(characters[index])
                    index += 1
                }
                output += value(of: name, file: file, line: line) ?? ""
            } else {
                output.append("$")
                index += 1
            }
        }
        if closing != nil {
            throw ComposeFailure(file: file, line: line, message: "`${` without its closing `}`")
        }
        return output
    }

    private mutating func value(of name: String, file: String, line: Int?) -> String? {
        if let value = environment[name] { return value }
        if !unset.contains(where: { $0.name == name && $0.file == file && $0.line == line }) {
            unset.append((name, file, line))
        }
        return nil
    }

    private mutating func braced(_ characters: [Character], _ index: inout Int, file: String, line: Int?) throws(ComposeFailure) -> String {
        var name = ""
        while index < characters.count, Self.isNameCharacter(characters[index]) {
            name.append(characters[index])
            index += 1
        }
        guard !name.isEmpty, Self.isNameStart(name.first!), index < characters.count else {
            throw ComposeFailure(file: file, line: line, message: "invalid interpolation: `${` must be followed by a variable name and `}`")
        }
        if characters[index] == "}" {
            index += 1
            return value(of: name, file: file, line: line) ?? ""
        }
        var colon = false
        if characters[index] == ":" {
            colon = true
            index += 1
        }
        guard index < characters.count, "-?+".contains(characters[index]) else {
            throw ComposeFailure(file: file, line: line, message: "invalid interpolation of `\(name)`: expected `}`, `:-`, `-`, `:?`, `?`, `:+` or `+`")
        }
        let operation = characters[index]
        index += 1
        let argument = try expand(characters, &index, until: "}", file: file, line: line)
        index += 1  // the closing brace
        let current = environment[name]
        let isSet = colon ? !(current ?? "").isEmpty : current != nil
        switch operation {
        case "-":
            return isSet ? current ?? "" : argument
        case "+":
            return isSet ? argument : ""
        default:
            guard isSet else {
                let reason = argument.isEmpty ? "required variable \(name) is \(colon ? "unset or empty" : "unset")" : "\(name): \(argument)"
                throw ComposeFailure(file: file, line: line, message: reason)
            }
            return current ?? ""
        }
    }
}

// MARK: - Shell words

/// Splits a string command as Compose does (its shell-words rules, no shell run): blanks
/// separate words; single quotes are literal; in double quotes `\` escapes `"`, `\`, `$` and
/// `` ` ``; elsewhere `\` escapes the next character.
enum ShellWords {
    struct UnterminatedQuote: Error {}

    static func split(_ text: String) throws(UnterminatedQuote) -> [String] {
        var words: [String] = []
        var current = ""
        var inWord = false
        var quote: Character?
        var escaped = false
        for character in text {
            if escaped {
                if quote == "\"", !"\"\\$`".contains(character) { current.append("\\") }
                current.append(character)
                escaped = false
                continue
            }
            switch (quote, character) {
            case (nil, "\\"), ("\"", "\\"):
                escaped = true
                inWord = true
            case (nil, "'"), (nil, "\""):
                quote = character
                inWord = true
            case ("'", "'"), ("\"", "\""):
                quote = nil
            case (nil, " "), (nil, "\t"), (nil, "\n"), (nil, "\r"):
                if inWord { words.append(current) }
                current = ""
                inWord = false
            default:
                current.append(character)
                inWord = true
            }
        }
        guard quote == nil, !escaped else { throw UnterminatedQuote() }
        if inWord { words.append(current) }
        return words
    }
}
