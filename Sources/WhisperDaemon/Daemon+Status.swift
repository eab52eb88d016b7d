import Foundation
import WhisperCore
import WhisperSystem

/// The read-only loopback endpoint: `/health` (503 while anything wanted up is not ready) and
/// `/v1/characters[/NAME]`. Anything but GET/HEAD is refused: control goes through the socket.
extension Daemon {
    func handleStatusRequest(_ request: HTTPServer.Request) -> HTTPServer.Response {
        guard request.method == "GET" || request.method == "HEAD" else {
            return json(403, ["error": "this port is read-only; use whisperctl (the control socket) to change anything"])
        }
        let now = Clock.monotonicNanoseconds()
        switch request.path {
        case "/health":
            let statuses = core.statuses()
            let unhealthy = statuses.filter(\.isUnhealthy)
            var body: [String: Any] = [
                "status": unhealthy.isEmpty ? "ok" : "degraded",
                "supervisor": [
                    "version": WhisperdVersion.current,
                    "pid": Int(getpid()),
                    "uptime_seconds": Double(now - startedAt) / 1e9,
                    "cgroup_backend": "none",
                    "shutting_down": core.isShuttingDown,
                    "summary": core.summary,
                ] as [String: Any],
                "characters": statuses.map { describe($0, now: now) },
            ]
            if !unhealthy.isEmpty { body["not_ready"] = unhealthy.map(\.name.rawValue) }
            return json(unhealthy.isEmpty ? 200 : 503, body)
        case "/v1/characters":
            return json(200, ["characters": core.statuses().map { describe($0, now: now) }])
        default:
            let prefix = "/v1/characters/"
            if request.path.hasPrefix(prefix), let name = ServiceName(String(request.path.dropFirst(prefix.count))),
                let status = core.status(of: name)
            {
                return json(200, describe(status, now: now))
            }
            return json(404, ["error": "not found: \(request.path)"])
        }
    }

    func describe(_ status: ServiceStatus, now: Int64) -> [String: Any] {
        var object: [String: Any] = [
            "name": status.name.rawValue,
            "kind": status.isJob ? "job" : "character",
            "state": status.state.rawValue,
            "desired": status.desired.rawValue,
            "ready": status.isReady,
            "restarts": status.restarts,
            "crash_loop": status.isCrashLooping,
            "log_lines_dropped": logWriter.droppedLines()[status.name.rawValue] ?? 0,
            "notify_rejected": rejectedDatagrams[status.name] ?? 0,
            "notify_malformed": malformedDatagrams[status.name] ?? 0,
        ]
        if let pid = status.pid { object["pid"] = Int(pid) }
        if let started = status.startedAt, status.pid != nil {
            object["uptime_seconds"] = Double(now - started.nanoseconds) / 1e9
        }
        if let exit = status.lastExit {
            object["last_exit"] = [
                "reason": exit.reason.description,
                "seconds_ago": Double(now - exit.at.nanoseconds) / 1e9,
                "uptime_seconds": exit.uptime.seconds,
            ] as [String: Any]
        }
        if !status.restartsByReason.isEmpty { object["restarts_by_reason"] = status.restartsByReason }
        if let text = status.statusText { object["status_text"] = text }
        if !status.facets.isEmpty {
            object["facets"] = Dictionary(
                status.facets.map { facet in (facet.name, facet.detail.map { "\(facet.level.rawValue):\($0)" } ?? facet.level.rawValue) },
                uniquingKeysWith: { _, last in last })
        }
        if let inflight = status.inflight { object["inflight"] = inflight }
        if let next = status.nextRestartAt { object["restart_in_seconds"] = max(0, Double(next.nanoseconds - now) / 1e9) }
        return object
    }

    private func json(_ status: Int, _ object: [String: Any]) -> HTTPServer.Response {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return HTTPServer.Response(status: status, body: String(decoding: data, as: UTF8.self))
    }
}

public enum WhisperdVersion {
    public static let current = "0.1.0"
}
