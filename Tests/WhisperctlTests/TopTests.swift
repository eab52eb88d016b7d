import Foundation
import Testing
import WhisperAPI

@testable import whisperctl

@Suite struct TopTests {
    static func character(_ name: String, memory: UInt64?, cpu: Double?, restarts: Int = 0) -> CharacterStatus {
        var character = CharacterStatus(name: name, kind: "character", state: "running", desired: "up", ready: true, restarts: restarts, crashLoop: false)
        character.pid = 100
        character.uptimeSeconds = 65
        var resources = CharacterStatus.Resources()
        resources.memoryBytes = memory
        resources.memoryLimitBytes = 256 << 20
        resources.cpuSeconds = cpu
        character.resources = resources
        return character
    }

    @Test func keysInOneRead_areEachSeen() {
        #expect(Terminal.keys(in: Array("\u{1B}[A\u{1B}[Ak".utf8)) == [.up, .up, .character("k")])
        #expect(Terminal.keys(in: Array("\u{1B}OB\r".utf8)) == [.down, .enter])
        #expect(Terminal.keys(in: [27]) == [.escape])
        #expect(Terminal.keys(in: [3]) == [.character("q")])
        // Other sequences (a function key, a mouse report) are skipped whole.
        #expect(Terminal.keys(in: Array("\u{1B}[15~m\u{1B}[1;5Cq".utf8)) == [.character("m"), .character("q")])
        #expect(Terminal.keys(in: [0xC3, 0xA9]).isEmpty)
    }

    @Test func cpuIsTheShareBetweenTwoAnswers_andSortingFollowsTheKeys() {
        var screen = TopScreen()
        screen.update([Self.character("a", memory: 10, cpu: 1), Self.character("b", memory: 30, cpu: 1), Self.character("c", memory: 20, cpu: 1, restarts: 5)], now: 0)
        #expect(screen.rows.map(\.character.name) == ["b", "c", "a"])
        #expect(screen.rows.allSatisfy { $0.cpuPercent == nil })
        screen.update([Self.character("a", memory: 10, cpu: 1.5), Self.character("b", memory: 30, cpu: 1.1), Self.character("c", memory: 20, cpu: 1, restarts: 5)], now: 1)
        #expect(screen.rows.first { $0.character.name == "a" }?.cpuPercent == 50)
        _ = screen.handle(.character("c"))
        #expect(screen.rows.map(\.character.name) == ["a", "b", "c"])
        _ = screen.handle(.character("c"))
        #expect(screen.rows.map(\.character.name) == ["c", "b", "a"], "the same key again reverses")
        _ = screen.handle(.character("n"))
        #expect(screen.rows.map(\.character.name) == ["a", "b", "c"])
        _ = screen.handle(.character("r"))
        #expect(screen.rows.first?.character.name == "c")
    }

    @Test func selection_restart_andTheLogView() {
        var screen = TopScreen()
        screen.update([Self.character("a", memory: 10, cpu: nil), Self.character("b", memory: 30, cpu: nil)], now: 0)
        #expect(screen.selected == "b")
        #expect(screen.handle(.down) == .none && screen.selected == "a")
        #expect(screen.handle(.down) == .none && screen.selected == "a", "stays on the last row")
        #expect(screen.handle(.character("k")) == .none && screen.selected == "b")
        #expect(screen.handle(.character("R")) == .restart("b"))
        #expect(screen.handle(.enter) == .refresh && screen.following == "b")
        #expect(screen.handle(.character("m")) == .none, "sort keys do nothing in the log view")
        #expect(screen.handle(.escape) == .refresh && screen.following == nil)
        #expect(screen.handle(.character("q")) == .quit)
    }

    @Test func everyLineFitsTheTerminal_andNameAndStateStay() {
        var screen = TopScreen()
        screen.update((0..<40).map { Self.character("character-with-a-long-name-\($0)", memory: UInt64($0) << 20, cpu: 1) }, now: 0)
        screen.message = String(repeating: "x", count: 300)
        for width in [10, 20, 36, 60, 80, 120, 200] {
            for height in [5, 12, 50] {
                let frame = screen.frame(width: width, height: height)
                #expect(frame.allSatisfy { $0.count <= width }, "width \(width)")
                #expect(frame.count <= max(height, 4), "height \(height): \(frame.count) lines")
            }
            let titles = TopScreen.columns(forWidth: width).map { $0.title.trimmingCharacters(in: .whitespaces) }
            #expect(titles.prefix(2) == ["NAME", "STATE"] || width < 30, "\(width): \(titles)")
        }
        #expect(TopScreen.columns(forWidth: 120).count == 9)
        screen.problem = "connection refused"
        #expect(screen.frame(width: 80, height: 10).first?.hasPrefix("whisperd not reachable — retrying") == true)
    }
}
