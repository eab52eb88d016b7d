import Foundation
import Glibc
import WhisperAPI
import WhisperSystem
import WhisperFiles
import WhisperJSON

/// The last abnormal exits per character (`whisperctl why`), kept in
/// `<state>/incidents/<name>.jsonl`, one JSON object per line. Recording is one append
/// (it happens on every crash, right after the restart was started, so it must be cheap and
/// must not pull in Foundation's JSON machinery); the file is cut back to the last ``limit``
/// entries when it grows past a few dozen. No fsync: losing the newest incident in a power
/// cut is acceptable, slowing every crash-restart is not.
struct IncidentStore {
    let directory: String
    let limit = 10

    init(stateDirectory: String) {
        directory = stateDirectory + "/incidents"
    }

    /// Oldest first, at most ``limit``. A line that is not an incident (cut short by a crash) is skipped.
    func load(_ name: String) -> [Incident] {
        guard let data = readFileContents(path(name)) else { return [] }
        let decoder = JSONDecoder()
        let entries = data.split(separator: UInt8(ascii: "\n")).compactMap { try? decoder.decode(Incident.self, from: Data($0)) }
        return Array(entries.suffix(limit))
    }

    func append(_ name: String, _ incident: Incident) throws {
        if mkdir(directory, 0o700) != 0, errno != EEXIST { throw SystemError("mkdir \(directory)") }
        let file = path(name)
        let fd = open(file, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SystemError("open \(file)") }
        var line = try JSONText.encode(incident) + [UInt8(ascii: "\n")]
        // A line cut short (a crash mid-write) is ended first, so it does not swallow this one.
        var last: UInt8 = UInt8(ascii: "\n")
        let end = lseek(fd, 0, SEEK_END)
        if end > 0, pread(fd, &last, 1, end - 1) == 1, last != UInt8(ascii: "\n") { line.insert(UInt8(ascii: "\n"), at: 0) }
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let size = lseek(fd, 0, SEEK_END)
        close(fd)
        guard written == line.count else { throw SystemError("write \(file)") }
        if size > 64 * 1024 { try compact(name) }
    }

    /// Keeps the last ``limit`` lines (write a new file, rename over the old one).
    private func compact(_ name: String) throws {
        guard let data = readFileContents(path(name)) else { return }
        let lines = data.split(separator: UInt8(ascii: "\n")).suffix(limit)
        var kept = Data()
        for line in lines { kept.append(contentsOf: line + [UInt8(ascii: "\n")]) }
        let temporary = path(name) + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: kept, attributes: [.posixPermissions: 0o600]) else {
            throw SystemError("write \(temporary)")
        }
        guard rename(temporary, path(name)) == 0 else { throw SystemError("rename \(temporary)") }
    }

    private func path(_ name: String) -> String { "\(directory)/\(name).jsonl" }
}
