import Foundation
import Glibc
import WhisperSystem

/// The last abnormal exits per character (`whisperctl why`), kept in
/// `<state>/incidents/<name>.json`: at most ``limit`` each, so the state dir stays small.
/// Written after the restart has been started, and without fsync: losing the newest incident
/// in a power cut is acceptable, slowing every crash-restart is not.
struct IncidentStore {
    let directory: String
    let limit = 10

    init(stateDirectory: String) {
        directory = stateDirectory + "/incidents"
    }

    func load(_ name: String) -> [[String: Any]] {
        guard let data = FileManager.default.contents(atPath: path(name)),
            let list = try? JSONSerialization.jsonObject(with: data) as? [[String: Any]]
        else { return [] }
        return list
    }

    func append(_ name: String, _ incident: [String: Any]) throws {
        var list = load(name)
        list.append(incident)
        if list.count > limit { list.removeFirst(list.count - limit) }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let data = try JSONSerialization.data(withJSONObject: list, options: [.sortedKeys])
        let temporary = path(name) + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: data, attributes: [.posixPermissions: 0o600]) else {
            throw SystemError("write \(temporary)")
        }
        guard rename(temporary, path(name)) == 0 else { throw SystemError("rename \(temporary)") }
    }

    func remove(_ name: String) { unlink(path(name)) }

    private func path(_ name: String) -> String { "\(directory)/\(name).json" }
}
