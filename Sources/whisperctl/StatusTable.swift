import Foundation
import WhisperCore

/// `whisperctl status`: one aligned row per character.
enum StatusTable {
    static let columns = ["NAME", "STATE", "READY", "PID", "USER", "SANDBOX", "UPTIME", "RESTARTS", "MEM/LIMIT", "CPU", "LAST-EXIT"]

    static func render(_ characters: [[String: Any]]) -> String {
        let rows = [columns] + characters.map(row)
        let widths = columns.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    /// `whisperd 0.1.0 (pid 812), up 3m05s; cgroups hybrid; not enforced: cpus`
    static func header(_ supervisor: [String: Any]) -> String {
        var line = "whisperd \(supervisor["version"] as? String ?? "?")"
        if let pid = supervisor["pid"] as? Int { line += " (pid \(pid))" }
        if let uptime = supervisor["uptime_seconds"] as? Double { line += ", up \(duration(uptime))" }
        line += "; cgroups \(supervisor["cgroup_backend"] as? String ?? "?")"
        let missing = (supervisor["cgroups"] as? [String: Any])?["not_enforced"] as? [String] ?? []
        if !missing.isEmpty { line += "; limits not enforced: \(missing.joined(separator: ", "))" }
        if let summary = supervisor["summary"] as? String { line += "; \(summary)" }
        return line
    }

    static func row(_ character: [String: Any]) -> [String] {
        let resources = character["resources"] as? [String: Any] ?? [:]
        let memory = (resources["memory_bytes"] as? Int).map { ByteCount.humanReadable(UInt64($0)) } ?? "-"
        let limit = (resources["memory_limit_bytes"] as? Int).map { ByteCount.humanReadable(UInt64($0)) } ?? "-"
        let cpu = (resources["cpu_seconds"] as? Double).map { duration($0) } ?? "-"
        var lastExit = (character["last_exit"] as? [String: Any]).flatMap { $0["reason"] as? String } ?? "-"
        if let ago = (character["last_exit"] as? [String: Any])?["seconds_ago"] as? Double { lastExit += " (\(duration(ago)) ago)" }
        // Who it runs as (its uid; 0 is root) and how much of its Landlock sandbox is enforced.
        let tenant = character["tenant"] as? [String: Any]
        let user = (tenant?["uid"] as? Int).map { $0 == 0 ? "root" : String($0) } ?? "-"
        let sandbox = tenant?["sandbox"] as? String ?? "-"
        var state = character["state"] as? String ?? "?"
        if character["crash_loop"] as? Bool == true, state != "crashloop" { state += "*" }
        return [
            character["name"] as? String ?? "?", state, (character["ready"] as? Bool ?? false) ? "yes" : "no",
            (character["pid"] as? Int).map(String.init) ?? "-", user, sandbox,
            (character["uptime_seconds"] as? Double).map(duration) ?? "-",
            String(character["restarts"] as? Int ?? 0), "\(memory)/\(limit)", cpu, lastExit,
        ]
    }

    /// Facets that are not `ok` (a Discord gateway refused, an LLM down), one line each:
    /// `elena  discord  down: gateway closed 4004: authentication failed …`.
    static func facetLines(_ characters: [[String: Any]]) -> [String] {
        var rows: [[String]] = []
        for character in characters {
            let name = character["name"] as? String ?? "?"
            for (facet, value) in (character["facets"] as? [String: String] ?? [:]).sorted(by: { $0.key < $1.key }) {
                guard !value.hasPrefix("ok") else { continue }
                let parts = value.split(separator: ":", maxSplits: 1).map(String.init)
                rows.append([name, facet, parts.count == 2 ? "\(parts[0]): \(parts[1])" : value])
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
    static func scheduleLines(_ characters: [[String: Any]], now: Double = Date().timeIntervalSince1970) -> [String] {
        var rows: [[String]] = []
        for character in characters {
            guard let schedule = character["schedule"] as? [String: Any] else { continue }
            var next = "next -"
            if let at = schedule["next_run"] as? String, let unix = schedule["next_run_unix"] as? Int {
                next = "next \(at) (in \(duration(max(0, Double(unix) - now))))"
            }
            var last = "never run"
            if let result = schedule["last_result"] as? String, let at = schedule["last_run"] as? String { last = "last \(result) at \(at)" }
            if let skipped = schedule["skipped_runs"] as? Int, skipped > 0 { last += ", \(skipped) skipped (still running)" }
            rows.append([character["name"] as? String ?? "?", schedule["rule"] as? String ?? "?", next, last])
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
