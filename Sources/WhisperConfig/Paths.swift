/// Lexical path handling: no file system access, no symlink resolution (which Foundation's
/// `standardizingPath` does, at a readlink per component — too slow for hundreds of services).
public enum Paths {
    /// `base/../x/./y` → `x/y` joined onto `directory` when relative; `.` and `..` folded.
    public static func absolute(_ path: String, from directory: String) -> String {
        normalize(path.hasPrefix("/") ? path : directory + "/" + path)
    }

    public static func normalize(_ path: String) -> String {
        // Most paths are already normal (a roster of hundreds resolves several per character).
        if isNormal(path) { return path }
        var parts: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." {
                if !parts.isEmpty { parts.removeLast() }
                continue
            }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// Absolute, with no `//`, no `/.` (so no `.` or `..` part) and no trailing slash: one pass
    /// over the bytes (`String.contains` of a string goes through the generic searcher).
    private static func isNormal(_ path: String) -> Bool {
        var previous: UInt8 = 0
        var count = 0
        for byte in path.utf8 {
            if count == 0, byte != UInt8(ascii: "/") { return false }
            if previous == UInt8(ascii: "/"), byte == UInt8(ascii: "/") || byte == UInt8(ascii: ".") { return false }
            previous = byte
            count += 1
        }
        return count == 1 || (count > 1 && previous != UInt8(ascii: "/"))
    }

    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    public static func lastComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}
