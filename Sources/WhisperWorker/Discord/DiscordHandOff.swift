import Foundation
import Glibc
import WhisperChat
import WhisperFiles
import WhisperJSON

/// The files in the character's `STATE_DIRECTORY` through which a rolling restart hands the
/// gateway session from the old process to the new one: the new one says it waits
/// (`discord-handoff.wanted`, its pid); the old one, draining, writes the session
/// (`discord-session.json`, 0600) instead of ending it; the new one resumes it.
struct DiscordHandOffFiles: Sendable {
    let directory: String

    var wantedPath: String { directory + "/discord-handoff.wanted" }
    var sessionPath: String { directory + "/discord-session.json" }

    /// The new process: it waits for a session.
    func announceWaiting() {
        write(Array("\(getpid())\n".utf8), to: wantedPath)
    }

    func withdraw() { unlink(wantedPath) }

    /// The old process: whether a live process waits for its session.
    func isWanted() -> Bool {
        guard let bytes = readFileContents(wantedPath),
            let pid = Int32(String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)), pid != getpid()
        else { return false }
        // EPERM: it exists (Landlock scopes signals to a process's own domain, which the new
        // process is not in); ESRCH: it is gone.
        return kill(pid, 0) == 0 || errno == EPERM
    }

    func give(_ handOff: GatewaySession.HandOff) -> Bool {
        write(handOff.json.jsonBytes, to: sessionPath)
    }

    /// The session handed over since `notBefore` (monotonic seconds), taken (the file is removed).
    func take(notBefore: Double) -> GatewaySession.HandOff? {
        guard let bytes = readFileContents(sessionPath), let json = try? JSONValue.parse(Array(bytes)),
            let handOff = GatewaySession.HandOff(json: json), handOff.writtenAt >= notBefore
        else { return nil }
        unlink(sessionPath)
        return handOff
    }

    @discardableResult
    private func write(_ bytes: [UInt8], to path: String) -> Bool { replaceFile(path, with: bytes) == nil }
}
