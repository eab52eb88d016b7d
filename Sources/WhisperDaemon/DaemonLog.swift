import Glibc
import WhisperSystem

/// whisperd's own log: one line per event on stderr (the journal, under systemd).
/// `<time> <level> <subject>: <message>` — greppable, and what the integration tests wait for.
public struct DaemonLog: Sendable {
    public enum Level: String, Sendable {
        case debug, info, warning, error
    }

    public var minimumLevel: Level = .info

    public init() {}

    public func log(_ level: Level, _ subject: String, _ message: String) {
        if level == .debug, minimumLevel != .debug { return }
        let line = "\(Clock.iso8601(realtimeNanoseconds: Clock.realtimeNanoseconds())) \(level.rawValue) \(subject): \(message)\n"
        // One write(2) per line: lines from whisperd never interleave, and nothing is buffered.
        _ = line.withCString { write(2, $0, strlen($0)) }
    }
}
