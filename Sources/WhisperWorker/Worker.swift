import Foundation
import Glibc
import WhisperSystem

/// The built-in character worker (`whisperd worker NAME`), minimal form: it loads the
/// character, serves `GET /health` on `API_HOST:API_PORT`, and speaks sd_notify to whisperd
/// (`READY=1`, watchdog pings, the `api` facet, `STOPPING=1`).
public final class Worker {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    let name: String
    let environment: [String: String]
    let loop: EventLoop
    var server: HTTPServer?
    var systemPrompt = ""
    let startedAt = Date()

    public init(name: String, environment: [String: String]) throws {
        self.name = name
        self.environment = environment
        self.loop = try EventLoop()
    }

    /// The character folder: `$WHISPERD_CHARACTERS_DIR/NAME`, else `./characters/NAME`.
    var characterDirectory: String {
        let base = environment["WHISPERD_CHARACTERS_DIR"] ?? FileManager.default.currentDirectoryPath + "/characters"
        return base + "/" + name
    }

    public func run() throws -> Int32 {
        let file = characterDirectory + "/character.md"
        guard let data = FileManager.default.contents(atPath: file) else {
            throw Failure(description: "cannot read \(file): \(String(cString: strerror(errno))) (a character needs character.md)")
        }
        guard let text = String(data: data, encoding: .utf8), !text.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
        else { throw Failure(description: "\(file) is empty or not UTF-8") }
        systemPrompt = text

        let host = environment["API_HOST"] ?? "127.0.0.1"
        guard let portText = environment["API_PORT"], let port = Int(portText), (1...65535).contains(port) else {
            throw Failure(description: "API_PORT is not set to a port number (give the character `port:` in the roster)")
        }
        do {
            server = try HTTPServer(loop: loop, host: host, port: port) { [unowned self] request in self.route(request) }
        } catch {
            throw Failure(description: "cannot listen on \(host):\(port): \(error)")
        }

        let signals = try SignalSource(signals: [SIGTERM, SIGINT])
        try loop.add(signals.fd, .readable) { [unowned self] _ in
            guard !signals.drain().isEmpty else { return }
            self.notify("STOPPING=1\nSTATUS=stopping")
            self.loop.stop()
        }
        var pingInterval: Int64?
        if let usec = environment["WATCHDOG_USEC"].flatMap(Int64.init), usec > 0 { pingInterval = usec * 1000 / 2 }
        scheduleWatchdog(pingInterval)

        log("serving \(name) on http://\(host):\(port) (\(systemPrompt.count) characters of persona)")
        notify("READY=1\nSTATUS=serving on \(host):\(port)\nX_WHISPERD_FACET=api:ok\nX_WHISPERD_INFLIGHT=0")
        loop.run()
        server?.close()
        return 0
    }

    private func scheduleWatchdog(_ interval: Int64?) {
        guard let interval else { return }
        loop.setDeadline(Clock.monotonicNanoseconds() + interval) { [unowned self] in
            self.notify("WATCHDOG=1")
            self.scheduleWatchdog(interval)
        }
    }

    func route(_ request: HTTPServer.Request) -> HTTPServer.Response {
        switch (request.method, request.path) {
        case ("GET", "/health"), ("HEAD", "/health"):
            let timestamp = ISO8601DateFormatter().string(from: Date())
            return HTTPServer.Response(status: 200, body: #"{"status":"healthy","timestamp":"\#(timestamp)"}"#)
        default:
            return HTTPServer.Response(status: 404, body: #"{"detail":"Not Found"}"#)
        }
    }

    func notify(_ message: String) {
        guard let socket = environment["NOTIFY_SOCKET"], !socket.isEmpty else { return }
        _ = NotifySocket.send(message, to: socket)
    }

    func log(_ message: String) {
        FileHandle.standardError.write(Data("worker \(name): \(message)\n".utf8))
    }
}
