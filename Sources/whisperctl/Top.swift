import ArgumentParser
import Foundation
import Glibc
import Synchronization
import WhisperAPI
import WhisperCore

/// `whisperctl top`: the fleet live in the terminal, like `docker stats`. The frame is a pure
/// function of what whisperd said, the keys pressed and the terminal's size (``TopScreen``);
/// ``Terminal`` owns raw mode and the alternate screen and gives both back however top ends.
extension Whisperctl {
    struct Top: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Live view of the fleet: memory, CPU, restarts; keys sort, restart, follow logs.",
            discussion: """
                Keys: m memory, c CPU, r restarts, n name (sort; again reverses) · ↑/↓ or k/j select · \
                R restart the selected character · l or Enter follow its log (Esc or l back) · q quit.
                When whisperd goes away top says so and keeps retrying.
                """)

        @OptionGroup var connection: Connection
        @Option(name: .long, help: "Seconds between refreshes.")
        var interval: Double = 1
        @Flag(name: .long, help: "Print one frame (no keys, no escape sequences) and exit.")
        var once = false

        func validate() throws {
            guard interval >= 0.1, interval <= 60 else { throw ValidationError("--interval must be in 0.1...60 seconds") }
        }

        func run() throws {
            let client = connection.client
            var screen = TopScreen()
            if once {
                try screen.refresh(client, now: monotonicSeconds())
                print(screen.frame(width: 120, height: screen.rows.count + 3).joined(separator: "\n"))
                return
            }
            guard isatty(STDIN_FILENO) == 1, isatty(STDOUT_FILENO) == 1 else {
                throw ValidationError("top needs a terminal (use --once, or status --json)")
            }
            let terminal = Terminal()
            terminal.enter()
            defer { terminal.leave() }
            var nextRefresh = 0.0
            while !Terminal.stopRequested {
                let now = monotonicSeconds()
                if now >= nextRefresh {
                    try? screen.refresh(client, now: now)
                    nextRefresh = now + interval
                }
                let size = terminal.size()
                terminal.draw(screen.frame(width: size.columns, height: size.rows))
                for key in terminal.readKeys(timeout: max(0, nextRefresh - monotonicSeconds())) {
                    switch screen.handle(key) {
                    case .quit: return
                    case .refresh: nextRefresh = 0
                    case .restart(let name): screen.restart(name, client)
                    case .none: break
                    }
                }
            }
        }

        private func monotonicSeconds() -> Double {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
        }
    }
}

enum TopKey: Equatable {
    case character(Character)
    case up, down, enter, escape
}

/// What top shows: the last answer, CPU rates between answers, the sort, the selection and
/// the log view. No I/O but through the client handed in.
struct TopScreen {
    enum Sort: String { case memory, cpu, restarts, name }
    enum Outcome: Equatable { case none, quit, refresh, restart(String) }

    struct Row {
        var character: CharacterStatus
        var cpuPercent: Double?
    }

    private(set) var rows: [Row] = []
    var sort = Sort.memory
    var descending = true
    var selected: String?
    /// The character whose log is shown instead of the table.
    var following: String?
    var logLines: [String] = []
    /// whisperd's last failure to answer; nil while it answers.
    var problem: String?
    var message = ""
    private var lastCPU: [String: (seconds: Double, at: Double)] = [:]

    mutating func refresh(_ client: ControlClient, now: Double) throws {
        do {
            update(try client.characters(), now: now)
            if let following {
                let logs = try client.get("/v1/characters/\(following)/logs?lines=200")
                logLines = logs.status == 200 ? logs.text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) : []
                if logLines.last == "" { logLines.removeLast() }
            }
            problem = nil
        } catch {
            problem = "\(error)"
            throw error
        }
    }

    mutating func update(_ characters: [CharacterStatus], now: Double) {
        rows = characters.map { character in
            var cpu: Double?
            if let seconds = character.resources?.cpuSeconds {
                if let before = lastCPU[character.name], now > before.at, seconds >= before.seconds {
                    cpu = (seconds - before.seconds) / (now - before.at) * 100
                }
                lastCPU[character.name] = (seconds, now)
            }
            return Row(character: character, cpuPercent: cpu)
        }
        sortRows()
        if selected == nil || !rows.contains(where: { $0.character.name == selected }) { selected = rows.first?.character.name }
    }

    private mutating func sortRows() {
        let key: (Row) -> Double = switch sort {
        case .memory: { Double($0.character.resources?.memoryBytes ?? 0) }
        case .cpu: { $0.cpuPercent ?? -1 }
        case .restarts: { Double($0.character.restarts) }
        case .name: { _ in 0 }
        }
        rows.sort { left, right in
            if sort == .name { return descending == (left.character.name > right.character.name) }
            let (a, b) = (key(left), key(right))
            if a != b { return descending ? a > b : a < b }
            return left.character.name < right.character.name
        }
    }

    mutating func handle(_ key: TopKey) -> Outcome {
        if following != nil {
            switch key {
            case .character("q"): return .quit
            case .escape, .character("l"), .enter:
                following = nil
                logLines = []
                return .refresh
            default: return .none
            }
        }
        let sorts: [Character: Sort] = ["m": .memory, "c": .cpu, "r": .restarts, "n": .name]
        switch key {
        case .character("q"): return .quit
        case .character(let letter) where sorts[letter] != nil:
            let chosen = sorts[letter]!
            descending = chosen == sort ? !descending : chosen != .name
            sort = chosen
            sortRows()
        case .up, .character("k"): moveSelection(-1)
        case .down, .character("j"): moveSelection(1)
        case .character("R"):
            if let selected { return .restart(selected) }
        case .character("l"), .enter:
            guard let selected else { return .none }
            following = selected
            return .refresh
        default: break
        }
        return .none
    }

    private mutating func moveSelection(_ step: Int) {
        guard !rows.isEmpty else { return }
        let index = rows.firstIndex { $0.character.name == selected } ?? 0
        selected = rows[max(0, min(rows.count - 1, index + step))].character.name
    }

    mutating func restart(_ name: String, _ client: ControlClient) {
        do {
            let response = try client.post("/v1/characters/\(name)/restart")
            message = response.status == 202 ? "restarting \(name)" : "restart \(name): whisperd answered \(response.status)"
        } catch {
            message = "restart \(name): \(error)"
        }
    }

    /// The frame for a terminal of `width` × `height`: every line at most `width` columns.
    func frame(width: Int, height: Int) -> [String] {
        let width = max(width, 10)
        var lines: [String] = []
        let order = "sorted by \(sort.rawValue) \(descending ? "↓" : "↑")"
        if let problem {
            lines.append("whisperd not reachable — retrying: \(problem)")
        } else {
            let running = rows.filter { $0.character.state == "running" }.count
            lines.append("whisperd: \(rows.count) characters, \(running) running · \(order)")
        }
        if let following {
            lines.append("log of \(following) (Esc or l: back, q: quit)")
            let room = max(0, height - lines.count)
            lines += logLines.suffix(room)
            return lines.map { Self.clip($0, width) }
        }
        lines.append(width >= 40 ? "keys: m c r n sort · ↑↓ select · R restart · l log · q quit" : "m c r n · ↑↓ · R · l · q")
        if !message.isEmpty { lines.append(message) }
        let columns = Self.columns(forWidth: width)
        lines.append(Self.render(columns.map(\.title), columns))
        for row in rows.prefix(max(0, height - lines.count)) {
            let marker = row.character.name == selected ? ">" : " "
            lines.append(marker + Self.render(columns.map { $0.value(row) }, columns).dropFirst())
        }
        return lines.map { Self.clip($0, width) }
    }

    struct Column {
        var title: String
        var width: Int
        var value: (Row) -> String
    }

    /// The widest set of columns that fits: on a narrow terminal the less important go first.
    static func columns(forWidth width: Int) -> [Column] {
        let all: [(priority: Int, column: Column)] = [
            (0, Column(title: "  NAME", width: 18) { "  " + $0.character.name }),
            (1, Column(title: "STATE", width: 10) { $0.character.state }),
            (5, Column(title: "READY", width: 5) { $0.character.ready ? "yes" : "no" }),
            (4, Column(title: "PID", width: 8) { $0.character.pid.map(String.init) ?? "-" }),
            (2, Column(title: "MEM", width: 9) { row in row.character.resources?.memoryBytes.map(ByteCount.humanReadable) ?? "-" }),
            (6, Column(title: "LIMIT", width: 9) { row in row.character.resources?.memoryLimitBytes.map(ByteCount.humanReadable) ?? "-" }),
            (3, Column(title: "CPU%", width: 6) { row in row.cpuPercent.map { String(format: "%.1f", $0) } ?? "-" }),
            (3, Column(title: "RESTARTS", width: 8) { String($0.character.restarts) }),
            (7, Column(title: "UPTIME", width: 8) { row in row.character.uptimeSeconds.map(Self.duration) ?? "-" }),
        ]
        var chosen = all
        while chosen.count > 1, chosen.reduce(0, { $0 + $1.column.width + 1 }) > width {
            let drop = chosen.indices.max { chosen[$0].priority < chosen[$1].priority }!
            chosen.remove(at: drop)
        }
        var columns = chosen.map(\.column)
        let used = columns.reduce(0) { $0 + $1.width + 1 }
        if used < width, let first = columns.indices.first { columns[first].width += min(14, width - used) }
        return columns
    }

    static func render(_ cells: [String], _ columns: [Column]) -> String {
        zip(cells, columns).map { cell, column in
            let clipped = String(cell.prefix(column.width))
            return clipped + String(repeating: " ", count: column.width - clipped.count)
        }.joined(separator: " ")
    }

    static func clip(_ line: String, _ width: Int) -> String { String(line.prefix(width)) }

    static func duration(_ seconds: Double) -> String {
        let whole = Int(seconds)
        if whole < 60 { return "\(whole)s" }
        if whole < 3600 { return "\(whole / 60)m\(whole % 60)s" }
        if whole < 86400 { return "\(whole / 3600)h\(whole % 3600 / 60)m" }
        return "\(whole / 86400)d\(whole % 86400 / 3600)h"
    }
}

/// Raw mode and the alternate screen, given back on every way out (return, error, SIGINT,
/// SIGTERM, SIGHUP): the signal only sets a flag the key wait sees.
final class Terminal {
    private var saved = termios()
    private var isRaw = false
    /// Set by the signal handler (an atomic store is async-signal-safe), read by the loop.
    static let stopFlag = Atomic<Bool>(false)
    static var stopRequested: Bool { stopFlag.load(ordering: .relaxed) }
    private var lastFrame: [String] = []

    func enter() {
        tcgetattr(STDIN_FILENO, &saved)
        var raw = saved
        raw.c_lflag &= ~tcflag_t(ICANON | ECHO | ISIG | IEXTEN)
        raw.c_iflag &= ~tcflag_t(IXON | ICRNL)
        tcsetattr(STDIN_FILENO, TCSANOW, &raw)
        isRaw = true
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            Glibc.signal(signal) { _ in Terminal.stopFlag.store(true, ordering: .relaxed) }
        }
        write("\u{1B}[?1049h\u{1B}[?25l\u{1B}[2J")
    }

    func leave() {
        guard isRaw else { return }
        write("\u{1B}[0m\u{1B}[?25h\u{1B}[?1049l")
        tcsetattr(STDIN_FILENO, TCSANOW, &saved)
        isRaw = false
    }

    deinit { leave() }

    func size() -> (columns: Int, rows: Int) {
        var size = winsize()
        guard ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return (80, 24) }
        return (Int(size.ws_col), Int(size.ws_row))
    }

    /// In place: cursor home, each line rewritten and cleared to its end, the rest cleared.
    func draw(_ frame: [String]) {
        guard frame != lastFrame else { return }
        lastFrame = frame
        var text = "\u{1B}[H"
        for (index, line) in frame.enumerated() {
            text += (index == 0 ? "\u{1B}[7m" : "") + line + (index == 0 ? "\u{1B}[0m" : "") + "\u{1B}[K\r\n"
        }
        text += "\u{1B}[J"
        write(text)
    }

    /// The keys typed, or none when `timeout` passes (or a signal arrives) first. One read may
    /// hold several (a paste, keys typed while top drew).
    func readKeys(timeout: Double) -> [TopKey] {
        var descriptor = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, Int32(min(timeout, 60) * 1000)) > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = read(STDIN_FILENO, &buffer, buffer.count)
        guard count > 0 else {
            if count == 0 { Terminal.stopFlag.store(true, ordering: .relaxed) }
            return []
        }
        return Self.keys(in: Array(buffer[0..<count]))
    }

    /// `ESC [ A` / `ESC O A` (up, and B down; other sequences skipped), a lone ESC, Enter,
    /// Ctrl-C (as q), printable ASCII.
    static func keys(in bytes: [UInt8]) -> [TopKey] {
        var keys: [TopKey] = []
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            index += 1
            switch byte {
            case 27:
                guard index < bytes.count, bytes[index] == 91 || bytes[index] == 79 else {
                    keys.append(.escape)
                    continue
                }
                // A control sequence: parameters, then its final byte (0x40…0x7E).
                var end = index + 1
                while end < bytes.count, !(64...126).contains(bytes[end]) { end += 1 }
                if end < bytes.count {
                    if bytes[end] == 65 { keys.append(.up) } else if bytes[end] == 66 { keys.append(.down) }
                }
                index = end + 1
            case 13, 10: keys.append(.enter)
            case 3: keys.append(.character("q"))
            case 32...126: keys.append(.character(Character(UnicodeScalar(byte))))
            default: break
            }
        }
        return keys
    }

    private func write(_ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { Glibc.write(STDOUT_FILENO, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0, errno == EINTR { continue }
            guard written > 0 else { return }
            offset += written
        }
    }
}
