/// A POSIX signal number with the Linux numbering, named at the edges only.
public struct Signal: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32
    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let hup = Signal(rawValue: 1)
    public static let int = Signal(rawValue: 2)
    public static let quit = Signal(rawValue: 3)
    public static let abrt = Signal(rawValue: 6)
    public static let kill = Signal(rawValue: 9)
    public static let usr1 = Signal(rawValue: 10)
    public static let usr2 = Signal(rawValue: 12)
    public static let term = Signal(rawValue: 15)

    static let names: [(String, Int32)] = [
        ("HUP", 1), ("INT", 2), ("QUIT", 3), ("ILL", 4), ("TRAP", 5), ("ABRT", 6), ("BUS", 7), ("FPE", 8),
        ("KILL", 9), ("USR1", 10), ("SEGV", 11), ("USR2", 12), ("PIPE", 13), ("ALRM", 14), ("TERM", 15),
        ("STKFLT", 16), ("CHLD", 17), ("CONT", 18), ("STOP", 19), ("TSTP", 20), ("TTIN", 21), ("TTOU", 22),
        ("URG", 23), ("XCPU", 24), ("XFSZ", 25), ("VTALRM", 26), ("PROF", 27), ("WINCH", 28), ("IO", 29),
        ("PWR", 30), ("SYS", 31),
    ]

    /// Parses `SIGTERM`, `TERM` or `15`.
    public init?(name: String) {
        let upper = name.uppercased()
        let bare = upper.hasPrefix("SIG") ? String(upper.dropFirst(3)) : upper
        if let number = Int32(bare), number > 0, number < 65 {
            self.rawValue = number
            return
        }
        guard let match = Signal.names.first(where: { $0.0 == bare }) else { return nil }
        self.rawValue = match.1
    }

    public var name: String {
        Signal.names.first(where: { $0.1 == rawValue }).map { "SIG\($0.0)" } ?? "SIG\(rawValue)"
    }

    public var description: String { name }
}
