import Foundation
import Glibc
import Testing
import WhisperSystem
import WhisperFiles

/// The built `whisperd` binary next to the test bundle (or `$WHISPERD_BIN`).
/// The environment for a process a test starts: under scripts/sanitizers.sh its reports go where
/// the test runner's go, and its leaks are checked (the runner's own are not: Foundation's
/// Process and XCTest keep objects to the end).
func childEnvironment(_ base: [String: String]) -> [String: String] {
    var environment = base
    let own = ProcessInfo.processInfo.environment
    for key in ["TSAN_OPTIONS", "ASAN_OPTIONS", "LSAN_OPTIONS"] where environment[key] == nil { environment[key] = own[key] }
    if let options = own["WHISPERD_TEST_CHILD_ASAN_OPTIONS"] { environment["ASAN_OPTIONS"] = options }
    return environment
}

func whisperdBinary() -> String {
    let built = builtWhisperdBinary()
    return everyoneCanReach(built) ? built : reachableCopy(of: built)
}

/// Whether every directory above `path` lets any user pass (o+x): characters run as users of
/// their own and exec this binary as their built-in worker.
func everyoneCanReach(_ path: String) -> Bool {
    var directory = (path as NSString).deletingLastPathComponent
    while directory.count > 1 {
        var info = stat()
        guard stat(directory, &info) == 0, info.st_mode & 0o001 != 0 else { return false }
        directory = (directory as NSString).deletingLastPathComponent
    }
    return true
}

/// A checkout under a private directory (/root, say): the tests run a copy every user can reach.
private func reachableCopy(of binary: String) -> String {
    let directory = "/tmp/whisperd-test-binary-\(getuid())-\(binary.utf8.reduce(0) { ($0 &* 31 &+ Int($1)) & 0xFFFFFF })"
    let copy = directory + "/whisperd"
    var source = stat()
    var existing = stat()
    if stat(binary, &source) == 0, stat(copy, &existing) == 0, existing.st_size == source.st_size,
        existing.st_mtim.tv_sec >= source.st_mtim.tv_sec
    {
        return copy
    }
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    let temporary = copy + ".\(getpid())"
    try? FileManager.default.removeItem(atPath: temporary)
    _ = copyExecutable(binary, to: temporary)
    rename(temporary, copy)
    return copy
}

/// Copies a program through a close-on-exec descriptor. The test process starts children from
/// many threads at once: a child forked while a plain descriptor writing the copy is open keeps
/// it, and exec of the copy then fails with "Text file busy" (Foundation's copy opens without
/// O_CLOEXEC).
func copyExecutable(_ source: String, to destination: String, mode: mode_t = 0o755) -> Bool {
    guard let contents = FileManager.default.contents(atPath: source) else { return false }
    return writeExecutable(destination, contents, mode: mode)
}

/// Writes a file that will be executed, through a close-on-exec descriptor (see ``copyExecutable``).
@discardableResult
func writeExecutable(_ path: String, _ contents: Data, mode: mode_t = 0o755) -> Bool {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o700)
    guard fd >= 0 else { return false }
    var written = 0
    let ok = contents.withUnsafeBytes { bytes -> Bool in
        while written < bytes.count {
            let count = Glibc.write(fd, bytes.baseAddress! + written, bytes.count - written)
            if count < 0, errno == EINTR { continue }
            if count <= 0 { return false }
            written += count
        }
        return true
    }
    close(fd)
    return ok && chmod(path, mode) == 0
}

private func builtWhisperdBinary() -> String {
    if let explicit = ProcessInfo.processInfo.environment["WHISPERD_BIN"] { return explicit }
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    let exe = String(decoding: buffer[0..<max(0, count)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    var directory = (exe as NSString).deletingLastPathComponent
    // swift-testing may run from inside the .xctest bundle directory.
    while !FileManager.default.isExecutableFile(atPath: directory + "/whisperd"), directory.count > 1 {
        directory = (directory as NSString).deletingLastPathComponent
    }
    return directory + "/whisperd"
}

/// Reads `handle` on a thread of its own and hands over each line, then `nil` at the end.
func readLines(from handle: FileHandle, _ deliver: @escaping @Sendable (String?) -> Void) {
    Thread {
        var partial = Data()
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            partial.append(chunk)
            while let newline = partial.firstIndex(of: 0x0A) {
                deliver(String(decoding: partial[partial.startIndex..<newline], as: UTF8.self))
                partial.removeSubrange(partial.startIndex...newline)
            }
        }
        deliver(nil)
    }.start()
}

/// The checkout this test file belongs to (for files the tests check as shipped).
func repositoryRoot(file: String = #filePath) -> String {
    var directory = (file as NSString).deletingLastPathComponent
    while !FileManager.default.fileExists(atPath: directory + "/Package.swift"), directory.count > 1 {
        directory = (directory as NSString).deletingLastPathComponent
    }
    return directory
}

/// A scratch directory for one test: roster, scripts, state, runtime and logs. Removed at the end.
final class Scratch {
    let path: String

    init() {
        var template = Array("/tmp/wd-it-XXXXXX".utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: created!)
        // Characters run as users of their own (DESIGN §10): they must reach their scripts and
        // character files here, as they would under /etc/whisperd.
        chmod(path, 0o755)
    }

    /// Writes a file readable by every user (characters run as their own), executable if asked;
    /// env files (`.env`, `.env.NAME`, `NAME.env`) are root's alone, as install.sh leaves them.
    @discardableResult
    func write(_ relative: String, _ text: String, executable: Bool = false) -> String {
        let full = path + "/" + relative
        try? FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o755])
        let name = (relative as NSString).lastPathComponent
        let isEnvFile = name.hasPrefix(".env") || name.hasSuffix(".env")
        if executable {
            writeExecutable(full, Data(text.utf8))
        } else {
            _ = FileManager.default.createFile(atPath: full, contents: Data(text.utf8), attributes: [.posixPermissions: isEnvFile ? 0o600 : 0o644])
        }
        return full
    }

    func read(_ relative: String) -> String? {
        readFileContents(path + "/" + relative).map { String(decoding: $0, as: UTF8.self) }
    }

    deinit {
        // A process still finishing (a whisperd unlinking its sockets) can make one pass stop
        // halfway on a file that vanished under it: try again until the tree is gone.
        for _ in 0..<5 where FileManager.default.fileExists(atPath: path) {
            try? FileManager.default.removeItem(atPath: path)
        }
    }
}

/// A running whisperd under test. Its stderr (whisperd's event log) is read on a thread, and
/// tests wait for lines with a bounded timeout instead of sleeping.
final class WhisperdProcess: @unchecked Sendable {
    // @unchecked: `lines` and `isFinished` are only touched with `condition` locked.
    let scratch: Scratch
    let process = Process()
    let httpPort: Int
    private let condition = NSCondition()
    private var lines: [String] = []
    private var isFinished = false
    /// Every pid whisperd reported for a child, so cleanup can make sure none outlives the test.
    private(set) var childPIDs: Set<Int32> = []
    /// The cgroup base this whisperd manages (its own per test unless the test names one).
    let cgroupBase: String?

    /// - Parameters:
    ///   - asNobody: run whisperd as uid/gid 65534 (through `setpriv`), unprivileged.
    ///   - directoryFlags: pass --state-dir, --runtime-dir and --log-dir (under the scratch dir).
    ///   - subcommand: words before the flags (`run-one NAME`: no --cgroup, which it does not take).
    ///   - readsStandardOutput: whisperd's stdout lines count as log lines too (run-one mirrors
    ///     its character's output there).
    init(
        scratch: Scratch, extraArguments: [String] = [], httpPort: Int? = nil, environment extra: [String: String] = [:],
        asNobody: Bool = false, directoryFlags: Bool = true, binary: String? = nil, subcommand: [String] = [],
        readsStandardOutput: Bool = false
    ) throws {
        let binary = binary ?? whisperdBinary()
        self.scratch = scratch
        self.httpPort = httpPort ?? freePort()
        var extraArguments = extraArguments
        if !subcommand.isEmpty {
            cgroupBase = nil
        } else if let index = extraArguments.firstIndex(of: "--cgroup"), index + 1 < extraArguments.count {
            cgroupBase = extraArguments[index + 1]
        } else {
            // Tests must never share (or clear as "leftovers") another whisperd's cgroups.
            let base = "/" + (scratch.path as NSString).lastPathComponent
            extraArguments += ["--cgroup", base]
            cgroupBase = base
        }
        process.executableURL = URL(fileURLWithPath: asNobody ? "/usr/bin/setpriv" : binary)
        process.arguments =
            (asNobody ? ["--reuid=65534", "--regid=65534", "--clear-groups", "--", binary] : []) + subcommand
            + ["--roster", scratch.path + "/roster.yaml", "--http", "127.0.0.1:\(self.httpPort)"]
            + (directoryFlags
                ? ["--state-dir", scratch.path + "/state", "--runtime-dir", scratch.path + "/run", "--log-dir", scratch.path + "/logs"]
                : [])
            + extraArguments
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = (binary as NSString).deletingLastPathComponent + ":" + (environment["PATH"] ?? "/usr/bin:/bin")
        environment.removeValue(forKey: "NOTIFY_SOCKET")
        environment.removeValue(forKey: "WATCHDOG_USEC")
        environment["WHISPERD_TEST_LEAK"] = "must-not-reach-children"
        environment.merge(extra) { _, new in new }
        process.environment = childEnvironment(environment)
        let pipe = Pipe()
        process.standardError = pipe
        let output = Pipe()
        process.standardOutput = readsStandardOutput ? output : FileHandle.nullDevice
        try process.run()
        if readsStandardOutput {
            readLines(from: output.fileHandleForReading) { [self] line in if let line { self.append(line) } }
        }
        readLines(from: pipe.fileHandleForReading) { [self] line in
            if let line {
                self.append(line)
            } else {
                self.condition.lock()
                self.isFinished = true
                self.condition.broadcast()
                self.condition.unlock()
            }
        }
    }

    private func append(_ line: String) {
        condition.lock()
        lines.append(line)
        if let range = line.range(of: " pid=") {
            let digits = line[range.upperBound...].prefix { $0.isNumber }
            if let pid = Int32(digits) { childPIDs.insert(pid) }
        }
        condition.broadcast()
        condition.unlock()
    }

    var log: [String] {
        condition.lock()
        defer { condition.unlock() }
        return lines
    }

    var pid: Int32 { process.processIdentifier }

    /// Waits for the `occurrence`-th line (counting from the start) containing every fragment.
    @discardableResult
    func waitFor(
        _ fragments: String..., occurrence: Int = 1, timeout: TimeInterval = 10, sourceLocation: SourceLocation = #_sourceLocation
    ) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            let matches = lines.filter { line in fragments.allSatisfy { line.contains($0) } }
            if matches.count >= occurrence { return matches[occurrence - 1] }
            if isFinished || !condition.wait(until: deadline) {
                let matches = lines.filter { line in fragments.allSatisfy { line.contains($0) } }
                if matches.count >= occurrence { return matches[occurrence - 1] }
                let recent = lines.suffix(40).joined(separator: "\n")
                Issue.record(
                    "no line with \(fragments) (occurrence \(occurrence)) within \(timeout)s; log:\n\(recent)",
                    sourceLocation: sourceLocation)
                return nil
            }
        }
    }

    func count(_ fragments: String...) -> Int {
        log.filter { line in fragments.allSatisfy { line.contains($0) } }.count
    }

    /// The pid in a `... pid=N: ...` line.
    static func pid(in line: String?) -> Int32? {
        guard let line, let range = line.range(of: " pid=") else { return nil }
        return Int32(line[range.upperBound...].prefix { $0.isNumber })
    }

    func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits (bounded) for whisperd to exit; returns its status, or nil on timeout.
    func waitForExit(timeout: TimeInterval = 20) -> Int32? {
        condition.lock()
        let deadline = Date().addingTimeInterval(timeout)
        while !isFinished, condition.wait(until: deadline) {}
        condition.unlock()
        let limit = Date().addingTimeInterval(2)
        while process.isRunning, Date() < limit { usleep(5_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// GET on whisperd's status port: (status code, body).
    func get(_ path: String) -> (Int, String)? { httpGet(port: httpPort, path: path) }

    func healthJSON() -> [String: Any]? {
        guard let (_, body) = get("/health"), let data = body.data(using: .utf8) else { return nil }
        return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    }

    /// Everything whisperd says about one character (`GET /v1/characters/NAME`).
    func character(_ name: String) -> [String: Any]? {
        guard let (code, body) = get("/v1/characters/\(name)"), code == 200, let data = body.data(using: .utf8) else { return nil }
        return try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    }

    /// Stops whisperd if still running and makes sure no child it reported survives.
    func terminate() {
        if process.isRunning {
            kill(pid, SIGTERM)
            if waitForExit(timeout: 15) == nil {
                kill(pid, SIGKILL)
                _ = waitForExit(timeout: 5)
            }
        }
        for child in childPIDs where isAlive(child) { kill(child, SIGKILL) }
        if let cgroupBase { TestCgroups.sweep(base: cgroupBase) }
    }

    deinit { terminate() }
}

func isAlive(_ pid: Int32) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    // A zombie is dead for our purposes.
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Waits (bounded) until `body` is true; polls a cheap condition where the kernel offers no event.
@discardableResult
func eventually(timeout: TimeInterval = 10, _ body: () -> Bool) -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if body() { return true }
        usleep(10_000)
    }
    return body()
}

func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A free loopback port below the kernel's ephemeral range (32768–60999 here). For a server
/// that is down while clients keep connecting to its port (PostgreSQL in the outage tests): a
/// port from the ephemeral range can be taken by a client's own TCP self-connect (the kernel
/// picked the destination port as the source port), and the server then cannot bind it again.
func freePortBelowEphemeralRange() -> Int {
    for _ in 0..<500 {
        let candidate = Int.random(in: 20000..<32768)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(candidate).bigEndian)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        close(fd)
        if bound == 0 { return candidate }
    }
    return freePort()
}

/// A blocking HTTP/1.1 GET on loopback (test side only).
func httpGet(port: Int, path: String, timeout: TimeInterval = 5) -> (Int, String)? {
    guard let text = rawHTTP(port: port, "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout: timeout),
        let statusLine = text.split(separator: "\r\n").first, statusLine.split(separator: " ").count >= 2,
        let code = Int(statusLine.split(separator: " ")[1])
    else { return nil }
    let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
    return (code, body)
}

/// Sends `request` as is (one write, so several requests arrive pipelined) and returns every
/// byte the server sends until it closes the connection.
/// A TCP socket connected to 127.0.0.1:`port`, or nil (the caller closes it).
/// `source`: the client's own address (another of 127/8 is another peer to the server).
func connectLoopback(port: Int, from source: String? = nil) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    if let source {
        var local = sockaddr_in()
        local.sin_family = sa_family_t(AF_INET)
        local.sin_addr.s_addr = inet_addr(source)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0 else {
            close(fd)
            return nil
        }
    }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
        close(fd)
        return nil
    }
    return fd
}

func rawHTTP(port: Int, _ request: String, timeout: TimeInterval = 5, from source: String? = nil) -> String? {
    guard let fd = connectLoopback(port: port, from: source) else { return nil }
    defer { close(fd) }
    var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    var response = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = recv(fd, &buffer, buffer.count, 0)
        if count <= 0 { break }
        response.append(contentsOf: buffer[0..<count])
    }
    return String(decoding: response, as: UTF8.self)
}

/// Cgroup helpers for tests: find a character's cgroup directories and clean up a base.
enum TestCgroups {
    /// Every mounted cgroup hierarchy (v1 controllers and the v2 one), by mount point.
    static var mountPoints: [String] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), fields.count > dash + 1,
                fields[dash + 1] == "cgroup" || fields[dash + 1] == "cgroup2"
            else { return nil }
            return String(fields[4])
        }
    }

    static func mountPoint(controller: String) -> String? {
        mountPoints.first { ($0 as NSString).lastPathComponent.split(separator: ",").contains(Substring(controller)) }
    }

    static var unifiedMountPoint: String? {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if let dash = fields.firstIndex(of: "-"), fields.count > dash + 1, fields[dash + 1] == "cgroup2" { return String(fields[4]) }
        }
        return nil
    }

    static func read(_ path: String) -> String? { readFileContents(path).map { String(decoding: $0, as: UTF8.self) } }

    static func pids(_ directory: String) -> [Int32] {
        (read(directory + "/cgroup.procs") ?? "").split(separator: "\n").compactMap { Int32($0) }
    }

    /// Kills what whisperd under test left in `base` (processes this test started) and removes
    /// the cgroups, in every hierarchy. Safe to call when everything is already clean.
    static func sweep(base: String) {
        for mount in mountPoints {
            let directory = mount + base
            guard FileManager.default.fileExists(atPath: directory) else { continue }
            let children = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
            for child in children where child.hasPrefix("char-") || child == "supervisor" {
                let path = directory + "/" + child
                eventually(timeout: 5) {
                    let left = pids(path)
                    for pid in left { kill(pid, SIGKILL) }
                    return left.isEmpty
                }
                rmdir(path)
            }
            rmdir(directory)
        }
    }
}

/// A live process's environment (`/proc/PID/environ`); `nil` when it cannot be read.
func environment(of pid: Int32) -> [String: String]? {
    guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
    var pairs: [String: String] = [:]
    for entry in data.split(separator: 0) {
        let text = String(decoding: entry, as: UTF8.self)
        guard let equals = text.firstIndex(of: "=") else { continue }
        pairs[String(text[..<equals])] = String(text[text.index(after: equals)...])
    }
    return pairs
}

/// A process's (its main thread's) scheduling policy: field 41 of `/proc/PID/stat` (0 is
/// `SCHED_OTHER`, 3 `SCHED_BATCH`).
func schedulingPolicy(of pid: Int32) -> Int? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: " ")
    return fields.count > 38 ? Int(fields[38]) : nil
}
