import Glibc
import WhisperCore
import WhisperSystem

/// whisperd's own log: one line per event on stderr,
/// `<time> <level> <subject>: <message>` — greppable, and what the integration tests wait for.
/// When stderr is systemd's journal stream, native entries instead: the level as PRIORITY
/// (so `journalctl -p warning` works) and `CHARACTER=` on lines about a character, so
/// `journalctl CHARACTER=elena` shows whisperd's events about elena beside elena's output.
public struct DaemonLog: Sendable {
    public enum Level: String, Sendable {
        case debug, info, warning, error

        var syslogPriority: Int {
            switch self {
            case .debug: 7
            case .info: 6
            case .warning: 4
            case .error: 3
            }
        }
    }

    public var minimumLevel: Level = .info
    public var writesToJournal: Bool

    public init(writesToJournal: Bool = false) {
        self.writesToJournal = writesToJournal
    }

    public func log(_ level: Level, _ subject: String, _ message: String) {
        write(level, subject, message, character: nil)
    }

    public func log(_ level: Level, character name: ServiceName, _ message: String) {
        write(level, name.rawValue, message, character: name.rawValue)
    }

    private func write(_ level: Level, _ subject: String, _ message: String, character: String?) {
        if level == .debug, minimumLevel != .debug { return }
        if writesToJournal {
            var fields = [
                Journal.field("MESSAGE", "\(subject): \(message)"), Journal.field("PRIORITY", String(level.syslogPriority)),
                Journal.field("SYSLOG_IDENTIFIER", "whisperd"),
            ]
            if let character { fields.append(Journal.field("CHARACTER", character)) }
            if Journal.send(fields) { return }
        }
        let line = "\(Clock.iso8601(realtimeNanoseconds: Clock.realtimeNanoseconds())) \(level.rawValue) \(subject): \(message)\n"
        // One write(2) per line: lines from whisperd never interleave, and nothing is buffered.
        _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
    }
}
