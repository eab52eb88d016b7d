import Foundation
import Glibc
import Testing

/// A process the test started, its output read into lines on a thread; killed (SIGKILL, by
/// pid) and reaped when the test lets go of it.
final class ChildProcess {
    let process = Process()
    private let received = OutputLines()

    /// The lines read so far. A class of its own so the reading thread holds it, not the
    /// ChildProcess — otherwise a child that never exits would keep its owner alive forever
    /// (and never be killed).
    private final class OutputLines: @unchecked Sendable {
        // @unchecked: `lines` and `finished` are only touched with `condition` locked.
        let condition = NSCondition()
        var lines: [String] = []
        var finished = false
    }

    init(_ executable: String, _ arguments: [String], environment: [String: String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = childEnvironment(environment)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        readLines(from: pipe.fileHandleForReading) { [received] line in
            received.condition.lock()
            if let line { received.lines.append(line) } else { received.finished = true }
            received.condition.broadcast()
            received.condition.unlock()
        }
    }

    var pid: Int32 { process.processIdentifier }
    var output: String {
        received.condition.lock()
        defer { received.condition.unlock() }
        return received.lines.joined(separator: "\n")
    }

    /// The first line containing `fragment` (any line if empty), waiting for it (bounded) — or nil.
    func waitFor(_ fragment: String, timeout: TimeInterval = 10) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        let state = received
        func match() -> String? { state.lines.first { fragment.isEmpty || $0.contains(fragment) } }
        state.condition.lock()
        defer { state.condition.unlock() }
        while true {
            if let line = match() { return line }
            if state.finished || !state.condition.wait(until: deadline) { return match() }
        }
    }

    /// Waits for the output to end (the process exited); returns the exit status.
    func waitForExit(timeout: TimeInterval = 10) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        let state = received
        state.condition.lock()
        while !state.finished, state.condition.wait(until: deadline) {}
        state.condition.unlock()
        let limit = Date().addingTimeInterval(2)
        while process.isRunning, Date() < limit { usleep(5_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    /// Children of the test process may inherit signals blocked in the test thread, so the
    /// polite signals are for programs that read them (whisperd's signalfd); cleanup is SIGKILL.
    func kill(_ signal: Int32 = SIGKILL) {
        if process.isRunning { Glibc.kill(pid, signal) }
    }

    deinit {
        if process.isRunning {
            Glibc.kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// The scripted OpenAI-compatible server (`test_llm_server.py`) on a loopback port.
final class TestLLM {
    let server: ChildProcess
    let port: Int

    init() throws {
        let script = repositoryRoot() + "/Tests/IntegrationTests/Support/test_llm_server.py"
        server = try ChildProcess("/usr/bin/python3", [script], environment: ["PATH": "/usr/bin:/bin"])
        guard let first = server.waitFor(""), let port = Int(first.trimmingCharacters(in: .whitespaces)) else {
            throw TestFailure("the test LLM server did not start: \(server.output)")
        }
        self.port = port
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    /// Queues answers for the next chat requests.
    func script(_ behaviours: [[String: Any]]) {
        _ = postJSON(port: port, path: "/script", behaviours)
    }

    /// Lets the oldest request scripted with `["hold": true]` be answered.
    func release() {
        _ = postJSON(port: port, path: "/release", [String: String]())
    }

    /// Every chat request received so far (the request bodies, in order).
    func requests() -> [[String: Any]] {
        guard let text = rawHTTP(port: port, "GET /requests HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            let body = text.range(of: "\r\n\r\n").map({ String(text[$0.upperBound...]) }),
            let list = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [[String: Any]]
        else { return [] }
        return list
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `POST path` with a JSON body (or raw text); the status and the decoded JSON answer.
@discardableResult
func postJSON(port: Int, path: String, _ body: Any, timeout: TimeInterval = 30, from source: String? = nil) -> (status: Int, json: [String: Any]) {
    let payload: String
    if let text = body as? String {
        payload = text
    } else {
        payload = String(decoding: (try? JSONSerialization.data(withJSONObject: body)) ?? Data(), as: UTF8.self)
    }
    let request =
        "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(payload.utf8.count)\r\n"
        + "Connection: close\r\n\r\n\(payload)"
    return parseResponse(rawHTTP(port: port, request, timeout: timeout, from: source))
}

func getJSON(port: Int, path: String) -> (status: Int, json: [String: Any]) {
    parseResponse(rawHTTP(port: port, "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
}

private func parseResponse(_ text: String?) -> (status: Int, json: [String: Any]) {
    guard let text, let statusLine = text.split(separator: "\r\n").first, statusLine.split(separator: " ").count >= 2,
        let status = Int(statusLine.split(separator: " ")[1])
    else { return (0, [:]) }
    let body = text.range(of: "\r\n\r\n").map { String(text[$0.upperBound...]) } ?? ""
    let json = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? ["raw": body]
    return (status, json)
}
