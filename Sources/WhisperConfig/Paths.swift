/// Lexical path handling: no file system access, no symlink resolution (which Foundation's
/// `standardizingPath` does, at a readlink per component — too slow for hundreds of services).
public enum Paths {
    /// `base/../x/./y` → `x/y` joined onto `directory` when relative; `.` and `..` folded.
    public static func absolute(_ path: String, from directory: String) -> String {
        normalize(path.hasPrefix("/") ? path : directory + "/" + path)
    }

    public static func normalize(_ path: String) -> String {
        // Most paths are already normal (a roster of hundreds resolves several per character).
        if path.hasPrefix("/"), !path.contains("//"), !path.contains("/."), path == "/" || !path.hasSuffix("/") { return path }
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

    public static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    public static func lastComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}
