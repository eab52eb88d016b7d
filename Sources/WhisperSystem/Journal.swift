import CSystemd
import CWhisperLinux  // owns struct iovec (sys/uio.h) for the importer
import Glibc

/// Native journal entries through libsystemd, with fields an operator can filter on
/// (`journalctl -u whisperd CHARACTER=elena`, `-p warning`).
public enum Journal {
    /// Whether the journal is there to take entries (its socket exists).
    public static var isRunning: Bool { access("/run/systemd/journal/socket", F_OK) == 0 }

    /// Whether systemd says this process runs as a service (`INVOCATION_ID`) or logs to the
    /// journal (`JOURNAL_STREAM`), the conditions under which whisperd also sends there.
    public static func isServiceEnvironment(_ environment: [String: String]) -> Bool {
        environment["JOURNAL_STREAM"].map { !$0.isEmpty } == true || environment["INVOCATION_ID"].map { !$0.isEmpty } == true
    }

    /// Whether our stderr is the journal stream systemd connected (`JOURNAL_STREAM=dev:inode`
    /// matches fd 2): then native entries replace stderr lines instead of doubling them.
    public static func standardErrorIsJournal() -> Bool {
        guard let value = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
        let parts = value.split(separator: ":")
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var info = stat()
        guard fstat(2, &info) == 0 else { return false }
        return UInt64(info.st_dev) == device && UInt64(info.st_ino) == inode
    }

    /// Sends one entry; `fields` are `NAME=value` byte strings (values may hold any byte).
    /// `false` if the journal refused it.
    @discardableResult
    public static func send(_ fields: [[UInt8]]) -> Bool {
        var joined: [UInt8] = []
        var lengths: [Int] = []
        for field in fields {
            joined += field
            lengths.append(field.count)
        }
        guard !joined.isEmpty else { return false }
        return joined.withUnsafeBufferPointer { bytes -> Bool in
            var offset = 0
            var vectors: [iovec] = []
            for length in lengths {
                vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress! + offset), iov_len: length))
                offset += length
            }
            return vectors.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) >= 0 }
        }
    }

    public static func field(_ name: String, _ value: String) -> [UInt8] { Array((name + "=" + value).utf8) }

    /// syslog priority of a character's line: a leading `<0>`…`<7>` (sd-daemon.h's `SD_ERR` and
    /// friends, as systemd honours them) wins and is cut off; otherwise stdout is info (6) and
    /// stderr err (3), as Docker's journald driver maps them.
    public static func priority(of line: ArraySlice<UInt8>, stream: String) -> (priority: Int, text: ArraySlice<UInt8>) {
        let start = line.startIndex
        if line.count >= 3, line[start] == UInt8(ascii: "<"), line[start + 2] == UInt8(ascii: ">"),
            (UInt8(ascii: "0")...UInt8(ascii: "7")).contains(line[start + 1])
        {
            return (Int(line[start + 1] - UInt8(ascii: "0")), line[(start + 3)...])
        }
        return (stream == "stderr" ? 3 : 6, line)
    }
}
