import Foundation
import Glibc
import Testing
import WhisperAPI
@testable import WhisperDaemon

/// `whisperctl why`'s file: one JSON line an incident, the last ten kept.
@Suite struct IncidentStoreTests {
    static func incident(_ index: Int, logLine: String = "a line") -> Incident {
        Incident(
            reason: "exit \(index)", kind: "Error", at: "2026-12-06T11:02:0\(index % 10)Z", uptimeSeconds: Double(index), restarts: index,
            stateAfter: "backoff", lastLogLines: [logLine])
    }

    @Test func appended_incidentsReadBack_oldestFirst() throws {
        let scratch = Scratch()
        let store = IncidentStore(stateDirectory: scratch.path)
        #expect(store.load("elena").isEmpty)
        var full = Incident.example
        full.reason = "with every field"
        try store.append("elena", full)
        try store.append("elena", Self.incident(1))
        #expect(store.load("elena") == [full, Self.incident(1)])
        #expect(store.load("marcus").isEmpty, "per character")
        #expect(scratch.mode("incidents") == 0o700)
        #expect(scratch.mode("incidents/elena.jsonl") == 0o600)
    }

    @Test func onlyTheLastTen_areRead() throws {
        let scratch = Scratch()
        let store = IncidentStore(stateDirectory: scratch.path)
        for index in 1...12 { try store.append("elena", Self.incident(index)) }
        #expect(store.load("elena").map(\.restarts) == Array(3...12))
    }

    /// A crash can cut the last line short: that line is skipped, the others (and the next) read.
    @Test func aLineCutShort_isSkipped() throws {
        let scratch = Scratch()
        let store = IncidentStore(stateDirectory: scratch.path)
        try store.append("elena", Self.incident(1))
        let fd = open(scratch.file("incidents/elena.jsonl"), O_WRONLY | O_APPEND)
        _ = Array(#"{"reason":"exit 2","kind":"Err"#.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        #expect(store.load("elena") == [Self.incident(1)])
        try store.append("elena", Self.incident(3))
        #expect(store.load("elena") == [Self.incident(1), Self.incident(3)], "the next incident starts on a line of its own")
    }

    /// Past a few dozen kilobytes the file is cut back to the last ten lines.
    @Test func aFileThatGrows_isCutBackToTheLastTen() throws {
        let scratch = Scratch()
        let store = IncidentStore(stateDirectory: scratch.path)
        let long = String(repeating: "x", count: 8 * 1024)
        for index in 1...9 { try store.append("elena", Self.incident(index, logLine: long)) }
        let lines = { (scratch.read("incidents/elena.jsonl") ?? "").split(separator: "\n").count }
        #expect(lines() == 9, "not cut back yet")
        try store.append("elena", Self.incident(10, logLine: long))
        #expect(lines() == 9 || lines() == 10)
        for index in 11...14 { try store.append("elena", Self.incident(index, logLine: long)) }
        #expect(lines() <= 10)
        #expect(store.load("elena").map(\.restarts) == Array(5...14))
        #expect(!scratch.exists("incidents/elena.jsonl.tmp"))
    }
}
