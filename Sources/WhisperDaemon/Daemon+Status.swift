import Foundation
import Glibc
import Synchronization
import WhisperAPI
import WhisperConfig
import WhisperCore
import WhisperConcurrency
import WhisperSystem

/// The read-only loopback endpoint: `/health` (503 while anything wanted up is not ready) and
/// `/v1/characters[/NAME]`. Anything but GET/HEAD is refused (405): control goes through the socket.
extension Daemon {
    func handleStatusRequest(_ request: HTTPServer.Request) -> HTTPServer.Response {
        guard request.method == "GET" || request.method == "HEAD" else {
            return methodNotAllowed(
                request.method, allowed: ["GET", "HEAD"], "this port is read-only; use whisperctl (the control socket) to change anything")
        }
        let now = Clock.monotonicNanoseconds()
        // Monitoring polls these hard; between events nothing in them changes but clocks and
        // cgroup counters, so a rendering is reused for up to a second.
        if request.path == "/metrics" {
            let gzip = request.header("Accept-Encoding")?.split(separator: ",").contains {
                $0.trimmingCharacters(in: .whitespaces).lowercased().hasPrefix("gzip")
            } ?? false
            return metricsResponse(now: now, gzip: gzip)
        }
        if request.path == "/openapi.json" { return openAPIResponse(for: .loopback) }
        let cacheable = ["/health", "/v1/characters"].contains(request.path)
        if cacheable, let cached = renderedStatus[request.path], now - cached.at < 1_000_000_000 { return cached.response }
        let response = renderStatus(request.path, now: now)
        if cacheable { renderedStatus[request.path] = (now, response) }
        return response
    }

    private func renderStatus(_ path: String, now: Int64) -> HTTPServer.Response {
        switch path {
        case "/health":
            let statuses = core.statuses()
            let limits = limitsByName
            let unhealthy = statuses.filter(\.isUnhealthy)
            var supervisor = HealthReport.Supervisor(
                version: WhisperdVersion.current, pid: Int(getpid()), uptimeSeconds: Double(now - startedAt) / 1e9,
                cgroupBackend: cgroups.backend.name, cgroups: cgroups.report, shuttingDown: core.isShuttingDown, summary: core.summary,
                reexecs: completedReexecs)
            supervisor.reexecError = lastReexecError
            let report = HealthReport(
                status: unhealthy.isEmpty ? "ok" : "degraded", supervisor: supervisor,
                characters: statuses.map { describe($0, now: now, limits: limits, detail: .brief) },
                notReady: unhealthy.isEmpty ? nil : unhealthy.map(\.name.rawValue))
            return jsonResponse(unhealthy.isEmpty ? 200 : 503, report)
        case "/v1/characters":
            let limits = limitsByName
            let dropped = logWriter.droppedLines()
            return jsonResponse(
                200, CharacterList(characters: core.statuses().map { describe($0, now: now, limits: limits, dropped: dropped) }))
        default:
            let prefix = "/v1/characters/"
            if path.hasPrefix(prefix), let name = ServiceName(String(path.dropFirst(prefix.count))),
                let status = core.status(of: name)
            {
                return jsonResponse(200, describe(status, now: now, limits: limitsByName, detail: .fresh))
            }
            return errorResponse(404, "not found: \(path)")
        }
    }

    /// `/metrics`: after an event, rendered on the spot (with the cgroup figures last read);
    /// when only time has passed since the last rendering (counters and clocks drift), that
    /// rendering is served while a fresh one — cgroup reads included (docs/bench/history.md,
    /// "/health and /metrics under load") — is made on another thread, so a busy scraper never
    /// waits for it.
    private func metricsResponse(now: Int64, gzip: Bool) -> HTTPServer.Response {
        if renderedStatus["/metrics"] == nil {
            // The very first scrape: no figures read yet, so read them here, once.
            if cgroups.usageReadAt == 0 { cgroups.readEveryUsage(now: now) }
            let response = Self.metricsHTTPResponse(makeMetricsExporter().render(metricsSnapshots()))
            renderedStatus["/metrics"] = (now, response)
        }
        guard let cached = renderedStatus["/metrics"] else { return Self.metricsHTTPResponse([]) }
        if now - cached.at >= 1_000_000_000 || now - cgroups.usageReadAt >= 1_000_000_000 { refreshMetricsInBackground(now: now) }
        guard gzip else { return cached.response }
        // Compressed once per rendering (about a tenth of the bytes), for scrapers that ask.
        if let compressed = renderedStatus["/metrics.gz"], compressed.at == cached.at { return compressed.response }
        guard let plain = cached.response.file?.bytes() ?? Optional(cached.response.body), let bytes = Gzip.compress(plain) else {
            return cached.response
        }
        let response = Self.metricsHTTPResponse(bytes, gzip: true)
        renderedStatus["/metrics.gz"] = (cached.at, response)
        return response
    }

    static func metricsHTTPResponse(_ bytes: [UInt8], gzip: Bool = false) -> HTTPServer.Response {
        metricsHTTPResponse(bytes, file: gzip ? nil : metricsFile(bytes), gzip: gzip)
    }

    /// A large plain rendering goes out by sendfile from a memory file (see `HTTPServer.FileBody`).
    static func metricsFile(_ bytes: [UInt8]) -> HTTPServer.FileBody? {
        bytes.count >= 64 << 10 ? HTTPServer.FileBody(bytes, name: "whisperd-metrics") : nil
    }

    static func metricsHTTPResponse(_ bytes: [UInt8], file: HTTPServer.FileBody?, gzip: Bool = false) -> HTTPServer.Response {
        let contentType = "text/plain; version=0.0.4; charset=utf-8"
        var response =
            if let file { HTTPServer.Response(status: 200, contentType: contentType, file: file) } else {
                HTTPServer.Response(status: 200, contentType: contentType, bytes: bytes)
            }
        response.extraHeaders = gzip ? [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")] : [("Vary", "Accept-Encoding")]
        return response
    }

    /// Everything but fresh cgroup figures (those are read off the loop): the last ones read.
    private func metricsSnapshots() -> [MetricsExporter.Snapshot] {
        let limits = limitsByName
        let dropped = logWriter.droppedLines()
        return core.statuses().map { status in
            MetricsExporter.Snapshot(
                status: status, limits: limits[status.name],
                usage: cgroups.lastUsage(of: status.name),
                logLinesDropped: dropped[status.name.rawValue] ?? 0, notifyRejected: rejectedDatagrams[status.name] ?? 0,
                notifyMalformed: malformedDatagrams[status.name] ?? 0,
                schedule: timetable.entry(status.name).map { entry in
                    (entry.nextDue, jobRunStartedAt[status.name], status.lastExit.map { $0.reason.isSuccess })
                })
        }
    }

    private func refreshMetricsInBackground(now: Int64) {
        guard !metricsRefreshInFlight else { return }
        do {
            try startMetricsRefreshWakeup()
        } catch {
            return
        }
        metricsRefreshInFlight = true
        let exporter = makeMetricsExporter()
        let snapshotsWithoutUsage = metricsSnapshots()
        let probes = snapshotsWithoutUsage.indices.compactMap { index in
            cgroups.usageProbe(of: snapshotsWithoutUsage[index].status.name).map { (index, $0) }
        }
        let generation = statusGeneration
        let mailbox = metricsMailbox
        let wakeFD = metricsWakeFD
        Thread {
            // Lowest priority: on a busy host this work waits, the event loop does not.
            lowerCurrentThreadPriority()
            var snapshots = snapshotsWithoutUsage
            var usages: [(ServiceName, CgroupUsage)] = []
            for (offset, (index, probe)) in probes.enumerated() {
                // Sharing a core with the loop (taskset), hand it back often: the kernel wakes
                // the loop at once over an idle-class thread, but not at a timer tick.
                if offset % 16 == 15 { sched_yield() }
                let usage = probe.read()
                snapshots[index].usage = usage
                usages.append((snapshots[index].status.name, usage))
            }
            let bytes = exporter.render(snapshots)
            let compressed = Gzip.compress(bytes)
            // The memory file is written here too, off the loop.
            let file = Self.metricsFile(bytes)
            mailbox.slot.withLock { $0 = MetricsMailbox.Result(generation, now, file == nil ? bytes : [], file, compressed, usages) }
            EventFD.signal(wakeFD)
        }.start()
    }

    /// The loop side of a background rendering: keep it unless an event happened meanwhile.
    private func startMetricsRefreshWakeup() throws {
        guard metricsWakeFD < 0 else { return }
        let fd = EventFD.make()
        guard fd >= 0 else { throw SystemError("eventfd") }
        metricsWakeFD = fd
        try loop.add(fd, .readable) { [unowned self] _ in
            EventFD.drain(fd)
            self.metricsRefreshInFlight = false
            guard let result = self.metricsMailbox.slot.withLock({ slot in defer { slot = nil }; return slot }) else { return }
            // Cgroup figures hold whatever happened meanwhile; the rendering only if nothing did.
            self.cgroups.store(result.usages, readAt: result.at)
            if result.generation == self.statusGeneration {
                self.renderedStatus["/metrics"] = (result.at, Self.metricsHTTPResponse(result.bytes, file: result.file))
                if let compressed = result.compressed {
                    self.renderedStatus["/metrics.gz"] = (result.at, Self.metricsHTTPResponse(compressed, gzip: true))
                }
            }
        }
    }

    private func makeMetricsExporter() -> MetricsExporter {
        if let metricsExporter { return metricsExporter }
        let exporter = MetricsExporter(version: WhisperdVersion.current)
        for (name, times) in pendingTimesToReady { for seconds in times { exporter.recordTimeToReady(name, seconds: seconds) } }
        pendingTimesToReady = [:]
        metricsExporter = exporter
        return exporter
    }

    private var limitsByName: [ServiceName: Limits] {
        Dictionary(loaded.roster.services.map { ($0.name, $0.limits) }, uniquingKeysWith: { first, _ in first })
    }

    enum Detail {
        /// `/health`: what a health check needs (DESIGN section 6), kept small for frequent polls.
        case brief
        /// Everything, with cgroup figures up to a second old (lists).
        case full
        /// Everything, with cgroup figures read now (one character).
        case fresh
    }

    func describe(
        _ status: ServiceStatus, now: Int64, limits: [ServiceName: Limits], detail: Detail = .full, dropped: [String: Int]? = nil
    ) -> CharacterStatus {
        var object = CharacterStatus(
            name: status.name.rawValue, kind: status.isJob ? "job" : "character", state: status.state.rawValue,
            desired: status.desired.rawValue, ready: status.isReady, restarts: status.restarts, crashLoop: status.isCrashLooping)
        if detail != .brief {
            object.logLinesDropped = (dropped ?? logWriter.droppedLines())[status.name.rawValue] ?? 0
            object.notifyRejected = rejectedDatagrams[status.name] ?? 0
            object.notifyMalformed = malformedDatagrams[status.name] ?? 0
        }
        object.pid = status.pid.map { Int($0) }
        if let started = status.startedAt, status.pid != nil {
            object.uptimeSeconds = Double(now - started.nanoseconds) / 1e9
        }
        if let exit = status.lastExit {
            object.lastExit = CharacterStatus.LastExit(
                reason: exit.reason.description, secondsAgo: Double(now - exit.at.nanoseconds) / 1e9, uptimeSeconds: exit.uptime.seconds,
                peakMemoryBytes: exit.peakMemoryBytes)
        }
        if status.oomKills > 0 { object.oomKills = status.oomKills }
        object.schedule = scheduleDescription(status)
        if let environment = loaded.roster[status.name]?.launch.environment, let of = environment["WHISPERD_CHARACTER"],
            let index = environment["REPLICA_INDEX"].flatMap(Int.init), let count = environment["REPLICA_COUNT"].flatMap(Int.init)
        {
            object.replica = CharacterStatus.Replica(of: of, index: index, count: count)
        }
        if let tenant = tenants.reports[status.name] {
            object.tenant = CharacterStatus.Tenant(
                uid: Int(tenant.uid), gid: Int(tenant.gid), sandbox: tenant.coverage.level.rawValue, notEnforced: tenant.coverage.missing)
        }
        if detail != .brief, let limit = limits[status.name] {
            var resources = CharacterStatus.Resources()
            resources.memoryLimitBytes = limit.memoryBytes
            resources.cpusLimit = limit.cpus
            resources.pidsLimit = limit.pids
            resources.cpuset = limit.cpuset?.description
            let usage = detail == .fresh ? cgroups.freshUsage(of: status.name) : cgroups.usage(of: status.name, now: now)
            // A character with no process (crash-looping, stopped) has nothing to measure: what
            // its cgroup still counts is page cache, not the character.
            if let usage, status.pid != nil || (usage.pids ?? 0) > 0 {
                resources.memoryBytes = usage.memoryBytes
                resources.memoryPeakBytes = usage.memoryPeakBytes
                resources.cpuSeconds = usage.cpuMicroseconds.map { Double($0) / 1e6 }
                resources.pids = usage.pids
            }
            if !resources.isEmpty { object.resources = resources }
        }
        if !status.restartsByReason.isEmpty { object.restartsByReason = status.restartsByReason }
        object.statusText = status.statusText
        if !status.facets.isEmpty { object.facets = Self.facetLevels(status.facets) }
        object.inflight = status.inflight
        object.llmTokens = status.llmTokens
        object.llmBudgetRemaining = status.llmBudgetRemaining
        if let next = status.nextRestartAt { object.restartInSeconds = max(0, Double(next.nanoseconds - now) / 1e9) }
        return object
    }

    /// Facet name -> `level` or `level:detail`, as status and incidents show them.
    static func facetLevels(_ facets: [Facet]) -> [String: String] {
        Dictionary(
            facets.map { facet in (facet.name, facet.detail.map { "\(facet.level.rawValue):\($0)" } ?? facet.level.rawValue) },
            uniquingKeysWith: { _, last in last })
    }
}

public enum WhisperdVersion {
    public static let current = "0.1.0"
}
