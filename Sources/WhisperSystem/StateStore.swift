import Foundation
import Glibc
import WhisperFiles
import WhisperJSON

/// whisperd's memory across restarts: which services an operator stopped, and which
/// `once-per-revision` jobs succeeded at which revision. Small JSON files, replaced atomically.
public struct StateStore: Sendable {
    public let directory: String

    public init(directory: String) throws {
        self.directory = directory
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    private var intentsPath: String { directory + "/intents.json" }
    private var jobsPath: String { directory + "/jobs.json" }
    private var dynamicIDsPath: String { directory + "/dynamic-users.json" }
    private var profilesPath: String { directory + "/profiles.json" }
    private var scalePath: String { directory + "/scale.json" }
    private var schedulesPath: String { directory + "/schedules.json" }

    /// Names whose intent is `down`.
    public func stoppedServices() -> Set<String> {
        guard let object = readJSON(intentsPath) as? [String: String] else { return [] }
        return Set(object.filter { $0.value == "down" }.keys)
    }

    public func setIntent(_ name: String, down: Bool) throws {
        var object = (readJSON(intentsPath) as? [String: String]) ?? [:]
        object[name] = down ? "down" : nil
        try writeJSON(object, to: intentsPath)
    }

    public func completedJobs() -> [String: String] {
        (readJSON(jobsPath) as? [String: String]) ?? [:]
    }

    public func recordJobCompleted(_ name: String, revision: String) throws {
        var object = completedJobs()
        object[name] = revision
        try writeJSON(object, to: jobsPath)
    }

    /// Service name → the uid (and gid) `user: dynamic` gave it, kept so its files stay its own.
    public func dynamicIDs() -> [String: UInt32] {
        ((readJSON(dynamicIDsPath) as? [String: String]) ?? [:]).compactMapValues { UInt32($0) }
    }

    public func setDynamicIDs(_ assignments: [String: UInt32]) throws {
        try writeJSON(assignments.mapValues(String.init), to: dynamicIDsPath)
    }

    /// Profiles the operator switched on or off at run time (`whisperctl start|stop --profile`),
    /// over the `--profile` flags.
    public func profileSwitches() -> [String: Bool] {
        ((readJSON(profilesPath) as? [String: String]) ?? [:]).compactMapValues { $0 == "on" ? true : $0 == "off" ? false : nil }
    }

    public func setProfile(_ name: String, active: Bool) throws {
        var object = (readJSON(profilesPath) as? [String: String]) ?? [:]
        object[name] = active ? "on" : "off"
        try writeJSON(object, to: profilesPath)
    }

    /// `whisperctl scale NAME N`: character → replicas, over the roster's `replicas:`.
    public func replicaOverrides() -> [String: Int] {
        // A hand-edited or foreign value is ignored, not trusted (a negative count would trap).
        ((readJSON(scalePath) as? [String: String]) ?? [:]).compactMapValues { Int($0) }.filter { (0...64).contains($0.value) }
    }

    public func setReplicas(_ name: String, _ count: Int) throws {
        var object = (readJSON(scalePath) as? [String: String]) ?? [:]
        object[name] = String(count)
        try writeJSON(object, to: scalePath)
    }

    /// Scheduled job → the scheduled time (Unix seconds) of its last run, for `catch_up:`.
    public func lastScheduledRuns() -> [String: Int64] {
        ((readJSON(schedulesPath) as? [String: String]) ?? [:]).compactMapValues { Int64($0) }
    }

    public func setLastScheduledRuns(_ runs: [String: Int64]) throws {
        try writeJSON(runs.mapValues(String.init), to: schedulesPath)
    }

    /// `--profile` flags with the run-time switches applied.
    public func activeProfiles(flags: Set<String>) -> Set<String> {
        var active = flags
        for (name, on) in profileSwitches() {
            if on { active.insert(name) } else { active.remove(name) }
        }
        return active
    }

    private func readJSON(_ path: String) -> Any? {
        guard let data = readFileContents(path) else { return nil }
        return try? JSONSerialization.jsonObject(with: data)
    }

    /// Write to a temp file, fsync, rename: a crash leaves the old or the new file, never half.
    /// Sorted keys, one per line, for an operator who reads them (Foundation's JSONSerialization
    /// took a visible share of a 300-character cold start for the dynamic-uid file).
    private func writeJSON(_ object: [String: String], to path: String) throws {
        var bytes: [UInt8] = Array("{".utf8)
        for (index, key) in object.keys.sorted().enumerated() {
            bytes += Array((index == 0 ? "\n  " : ",\n  ").utf8)
            JSONText.appendString(key, to: &bytes)
            bytes += Array(" : ".utf8)
            JSONText.appendString(object[key]!, to: &bytes)
        }
        bytes += Array((object.isEmpty ? "}\n" : "\n}\n").utf8)
        if let failure = replaceFile(path, with: bytes) { throw SystemError("write \(path)", errno: failure) }
    }
}
