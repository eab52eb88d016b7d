import Foundation
import WhisperAPI
import WhisperCore

/// `whisperctl status`: one aligned row per character.
enum StatusTable {
    static let columns = ["NAME", "STATE", "READY", "PID", "USER", "SANDBOX", "UPTIME", "RESTARTS", "MEM/LIMIT", "CPU", "LAST-EXIT"]

    static func render(_ characters: [CharacterStatus]) -> String {
        let rows = [columns] + characters.map(row)
        let widths = columns.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// `whisperd 0.1.0 (pid 812), up 3m05s; cgroups hybrid; not enforced: cpus`
    static func header(_ supervisor: HealthReport.Supervisor) -> String {
        var line = "whisperd \(supervisor.version) (pid \(supervisor.pid)), up \(duration(supervisor.uptimeSeconds))"
        line += "; cgroups \(supervisor.cgroupBackend)"
        let missing = supervisor.cgroups.notEnforced
        if !missing.isEmpty { line += "; limits not enforced: \(missing.joined(separator: ", "))" }
        line += "; \(supervisor.summary)"
        return line
    }

    /// A field a character does not have (no process, no limit) is `-`.
    static func row(_ character: CharacterStatus) -> [String] {
        let resources = character.resources
        let memory = resources?.memoryBytes.map(ByteCount.humanReadable) ?? "-"
        let limit = resources?.memoryLimitBytes.map(ByteCount.humanReadable) ?? "-"
        let cpu = resources?.cpuSeconds.map(duration) ?? "-"
        let lastExit = character.lastExit.map { "\($0.reason) (\(duration($0.secondsAgo)) ago)" } ?? "-"
        // Who it runs as (its uid; 0 is root) and how much of its Landlock sandbox is enforced.
        let user = character.tenant.map { $0.uid == 0 ? "root" : String($0.uid) } ?? "-"
        let sandbox = character.tenant?.sandbox ?? "-"
        var state = character.state
        if character.crashLoop, state != "crashloop" { state += "*" }
        return [
            character.name, state, character.ready ? "yes" : "no", character.pid.map(String.init) ?? "-", user, sandbox,
            character.uptimeSeconds.map(duration) ?? "-", String(character.restarts), "\(memory)/\(limit)", cpu, lastExit,
        ]
    }

    /// Facets that are not `ok` (a Discord gateway refused, an LLM down), one line each:
    /// `elena  discord  down: gateway closed 4004: authentication failed …`.
    static func facetLines(_ characters: [CharacterStatus]) -> [String] {
        var rows: [[String]] = []
        for character in characters {
            for (facet, value) in (character.facets ?? [:]).sorted(by: { $0.key < $1.key }) {
                guard !value.hasPrefix("ok") else { continue }
                let parts = value.split(separator: ":", maxSplits: 1).map(String.init)
                rows.append([character.name, facet, parts.count == 2 ? "\(parts[0]): \(parts[1])" : value])
            }
        }
        guard !rows.isEmpty else { return [] }
        let widths = (0..<2).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row[0].padding(toLength: widths[0], withPad: " ", startingAt: 0) + "  "
                + row[1].padding(toLength: widths[1], withPad: " ", startingAt: 0) + "  " + row[2]
        }
    }

    /// Scheduled jobs, one line each: `nightly-backup  30 3 * * *  next 2026-12-07T02:30:00Z (in 15h04m)  last ok at …`.
    static func scheduleLines(_ characters: [CharacterStatus], now: Double = Date().timeIntervalSince1970) -> [String] {
        var rows: [[String]] = []
        for character in characters {
            guard let schedule = character.schedule else { continue }
            var next = "next -"
            if let at = schedule.nextRun, let unix = schedule.nextRunUnix {
                next = "next \(at) (in \(duration(max(0, Double(unix) - now))))"
            }
            var last = "never run"
            if let result = schedule.lastResult, let at = schedule.lastRun { last = "last \(result) at \(at)" }
            if schedule.skippedRuns > 0 { last += ", \(schedule.skippedRuns) skipped (still running)" }
            rows.append([character.name, schedule.rule, next, last])
        }
        guard !rows.isEmpty else { return [] }
        let widths = (0..<3).map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            (0..<3).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ") + "  " + row[3]
        }
    }

    /// 0.4s, 12s, 3m05s, 2h07m, 3d04h.
    static func duration(_ seconds: Double) -> String {
        if seconds < 10 { return String(format1(seconds)) + "s" }
        let total = Int(seconds)
        if total < 60 { return "\(total)s" }
        if total < 3600 { return "\(total / 60)m\(pad(total % 60))s" }
        if total < 86400 { return "\(total / 3600)h\(pad(total / 60 % 60))m" }
        return "\(total / 86400)d\(pad(total / 3600 % 24))h"
    }

    private static func pad(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }

    private static func format1(_ value: Double) -> String {
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}
