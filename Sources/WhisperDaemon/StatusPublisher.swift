import Foundation
import Glibc
import Synchronization
import WhisperAPI
import WhisperConfig
import WhisperCore
import WhisperConcurrency
import WhisperJSON
import WhisperSystem

/// What the status endpoints read from the fleet when they render: the publisher keeps no
/// fleet state of its own. ``Daemon`` is one (the publisher's methods are generic over it, so
/// nothing is boxed); tests give a fixed fleet.
protocol FleetFacts {
    func statuses() -> [ServiceStatus]
    func status(of name: ServiceName) -> ServiceStatus?
    /// `/health`'s `supervisor` section.
    func supervisorReport(now: Int64) -> HealthReport.Supervisor
    /// Each service's limits, from the roster.
    func limitsByName() -> [ServiceName: Limits]
    /// Log lines dropped, per character name.
    func droppedLines() -> [String: Int]
    /// A scheduled job's rule, next run, last run and its result.
    func schedule(of status: ServiceStatus) -> CharacterStatus.Schedule?
    /// A scheduled job's next run and last run start (Unix seconds), for `/metrics`; nil: not scheduled.
    func jobTimes(of name: ServiceName) -> (next: Int64?, lastRun: Int64?)?
    func replica(of name: ServiceName) -> CharacterStatus.Replica?
    func tenant(of name: ServiceName) -> CharacterStatus.Tenant?
}

/// Where a background `/metrics` rendering leaves its result for the loop.
final class MetricsMailbox: Sendable {
    /// A background rendering of `/metrics`, and the cgroup figures it read.
    struct Result: Sendable {
        var generation: Int
        var at: Int64
        /// The plain rendering: in `file` when it is large (then `bytes` is empty).
        var bytes: [UInt8]
        var file: HTTPServer.FileBody?
        var compressed: [UInt8]?
        var usages: [(ServiceName, CgroupUsage)]

        init(
            _ generation: Int, _ at: Int64, _ bytes: [UInt8], _ file: HTTPServer.FileBody?, _ compressed: [UInt8]?,
            _ usages: [(ServiceName, CgroupUsage)]
        ) {
            self.generation = generation
            self.at = at
            self.bytes = bytes
            self.file = file
            self.compressed = compressed
            self.usages = usages
        }
    }

    let slot = Locked<Result?>(nil)
}

/// The read-only status of the fleet as HTTP answers: `/health` (503 while anything wanted up
/// is not ready), `/v1/characters[/NAME]`, `/metrics`, `/openapi.json`, rendered from the
/// ``FleetFacts`` it is given, with the cgroup figures of ``CgroupKeeper``; it owns their
/// caches, the metrics exporter and its background rendering, and the per-character notify
/// datagram counters. Anything but GET/HEAD is refused (405): control goes through the socket.
///
/// Not `Sendable`: runs on the loop thread (a background `/metrics` rendering gets copies).
final class StatusPublisher {
    private let loop: EventLoop
    private let log: DaemonLog
    private let cgroups: CgroupKeeper
    /// The last rendering of `/health`, `/metrics` and `/v1/characters`; dropped at every event.
    private var rendered: [String: (at: Int64, response: HTTPServer.Response)] = [:]
    /// `GET /openapi.json` of each endpoint, made at its first request.
    private var openAPIDocuments: [Endpoint: HTTPServer.Response] = [:]
    /// Counts handled batches of events; a background `/metrics` rendering from an older count is dropped.
    private(set) var generation = 0
    /// Made at the first scrape: a whisperd nobody scrapes does not carry the registry.
    private var metricsExporter: MetricsExporter?
    /// Times to ready seen before the first scrape, replayed into the histogram then.
    private var pendingTimesToReady: [ServiceName: [Double]] = [:]
    private var metricsRefreshInFlight = false
    private var metricsWakeFD: Int32 = -1
    private let metricsMailbox = MetricsMailbox()
    private var rejectedDatagrams: [ServiceName: Int] = [:]
    private var malformedDatagrams: [ServiceName: Int] = [:]

    init(loop: EventLoop, log: DaemonLog, cgroups: CgroupKeeper) {
        self.loop = loop
        self.log = log
        self.cgroups = cgroups
    }

    // MARK: - What the fleet tells it

    /// After every batch of events: every rendering is stale.
    func fleetChanged() {
        rendered.removeAll(keepingCapacity: true)
        generation += 1
    }

    /// Something outside the events changed (a re-exec's outcome): rendered anew.
    func dropRenderings() { rendered.removeAll() }

    /// A notify datagram from a process that is not the character's.
    func countRejectedDatagram(_ name: ServiceName) { rejectedDatagrams[name, default: 0] += 1 }

    /// A notify datagram that is truncated or does not parse.
    func countMalformedDatagram(_ name: ServiceName) { malformedDatagrams[name, default: 0] += 1 }

    /// A character went from starting to running in `seconds`.
    func recordTimeToReady(_ name: ServiceName, seconds: Double) {
        if let metricsExporter {
            metricsExporter.recordTimeToReady(name, seconds: seconds)
        } else {
            pendingTimesToReady[name, default: []].append(seconds)
            if pendingTimesToReady[name]!.count > 64 { pendingTimesToReady[name]!.removeFirst() }
        }
    }

    /// A character left the roster: its counters and series go with it.
    func forget(_ name: ServiceName) {
        rejectedDatagrams[name] = nil
        malformedDatagrams[name] = nil
        metricsExporter?.forget(name)
        pendingTimesToReady[name] = nil
    }

    // MARK: - Answers

    func response(to request: HTTPServer.Request, now: Int64, facts: some FleetFacts) -> HTTPServer.Response {
        guard request.method == "GET" || request.method == "HEAD" else {
            return methodNotAllowed(
                request.method, allowed: ["GET", "HEAD"], "this port is read-only; use whisperctl (the control socket) to change anything")
        }
        // Monitoring polls these hard; between events nothing in them changes but clocks and
        // cgroup counters, so a rendering is reused for up to a second.
        if request.path == "/metrics" {
            let gzip = request.header("Accept-Encoding")?.split(separator: ",").contains {
                $0.trimmingCharacters(in: .whitespaces).lowercased().hasPrefix("gzip")
            } ?? false
            return metricsResponse(now: now, gzip: gzip, facts: facts)
        }
        if request.path == "/openapi.json" { return openAPIResponse(for: .loopback) }
        let cacheable = ["/health", "/v1/characters"].contains(request.path)
        if cacheable, let cached = rendered[request.path], now - cached.at < 1_000_000_000 { return cached.response }
        let response = render(request.path, now: now, facts: facts)
        if cacheable { rendered[request.path] = (now, response) }
        return response
    }

    private func render(_ path: String, now: Int64, facts: some FleetFacts) -> HTTPServer.Response {
        switch path {
        case "/health":
            let statuses = facts.statuses()
            let limits = facts.limitsByName()
            let unhealthy = statuses.filter(\.isUnhealthy)
            let report = HealthReport(
                status: unhealthy.isEmpty ? "ok" : "degraded", supervisor: facts.supervisorReport(now: now),
                characters: statuses.map { describe($0, now: now, limits: limits, detail: .brief, facts: facts) },
                notReady: unhealthy.isEmpty ? nil : unhealthy.map(\.name.rawValue))
            return jsonResponse(unhealthy.isEmpty ? 200 : 503, report)
        case "/v1/characters":
            let limits = facts.limitsByName()
            let dropped = facts.droppedLines()
            return jsonResponse(
                200,
                CharacterList(characters: facts.statuses().map { describe($0, now: now, limits: limits, dropped: dropped, facts: facts) }))
        default:
            let prefix = "/v1/characters/"
            if path.hasPrefix(prefix), let name = ServiceName(String(path.dropFirst(prefix.count))),
                let status = facts.status(of: name)
            {
                return jsonResponse(200, describe(status, now: now, limits: facts.limitsByName(), detail: .fresh, facts: facts))
            }
            return errorResponse(404, "not found: \(path)")
        }
    }

    /// `/metrics`: after an event, rendered on the spot (with the cgroup figures last read);
    /// when only time has passed since the last rendering (counters and clocks drift), that
    /// rendering is served while a fresh one — cgroup reads included (docs/bench/history.md,
    /// "/health and /metrics under load") — is made on another thread, so a busy scraper never
    /// waits for it.
    private func metricsResponse(now: Int64, gzip: Bool, facts: some FleetFacts) -> HTTPServer.Response {
        if rendered["/metrics"] == nil {
            // The very first scrape: no figures read yet, so read them here, once.
            if cgroups.usageReadAt == 0 { cgroups.readEveryUsage(now: now) }
            let response = Self.metricsHTTPResponse(makeMetricsExporter().render(metricsSnapshots(facts)))
            rendered["/metrics"] = (now, response)
        }
        guard let cached = rendered["/metrics"] else { return Self.metricsHTTPResponse([]) }
        if now - cached.at >= 1_000_000_000 || now - cgroups.usageReadAt >= 1_000_000_000 { refreshMetricsInBackground(now: now, facts: facts) }
        guard gzip else { return cached.response }
        // Compressed once per rendering (about a tenth of the bytes), for scrapers that ask.
        if let compressed = rendered["/metrics.gz"], compressed.at == cached.at { return compressed.response }
        guard let plain = cached.response.file?.bytes() ?? Optional(cached.response.body), let bytes = Gzip.compress(plain) else {
            return cached.response
        }
        let response = Self.metricsHTTPResponse(bytes, gzip: true)
        rendered["/metrics.gz"] = (cached.at, response)
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
    private func metricsSnapshots(_ facts: some FleetFacts) -> [MetricsExporter.Snapshot] {
        let limits = facts.limitsByName()
        let dropped = facts.droppedLines()
        return facts.statuses().map { status in
            MetricsExporter.Snapshot(
                status: status, limits: limits[status.name],
                usage: cgroups.lastUsage(of: status.name),
                logLinesDropped: dropped[status.name.rawValue] ?? 0, notifyRejected: rejectedDatagrams[status.name] ?? 0,
                notifyMalformed: malformedDatagrams[status.name] ?? 0,
                schedule: facts.jobTimes(of: status.name).map { times in
                    (times.next, times.lastRun, status.lastExit.map { $0.reason.isSuccess })
                })
        }
    }

    private func refreshMetricsInBackground(now: Int64, facts: some FleetFacts) {
        guard !metricsRefreshInFlight else { return }
        do {
            try startMetricsRefreshWakeup()
        } catch {
            return
        }
        metricsRefreshInFlight = true
        let exporter = makeMetricsExporter()
        let snapshotsWithoutUsage = metricsSnapshots(facts)
        let probes = snapshotsWithoutUsage.indices.compactMap { index in
            cgroups.usageProbe(of: snapshotsWithoutUsage[index].status.name).map { (index, $0) }
        }
        let generation = self.generation
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
            if result.generation == self.generation {
                self.rendered["/metrics"] = (result.at, Self.metricsHTTPResponse(result.bytes, file: result.file))
                if let compressed = result.compressed {
                    self.rendered["/metrics.gz"] = (result.at, Self.metricsHTTPResponse(compressed, gzip: true))
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

    enum Detail {
        /// `/health`: what a health check needs (DESIGN section 6), kept small for frequent polls.
        case brief
        /// Everything, with cgroup figures up to a second old (lists).
        case full
        /// Everything, with cgroup figures read now (one character).
        case fresh
    }

    func describe(
        _ status: ServiceStatus, now: Int64, limits: [ServiceName: Limits], detail: Detail = .full, dropped: [String: Int]? = nil,
        facts: some FleetFacts
    ) -> CharacterStatus {
        var object = CharacterStatus(
            name: status.name.rawValue, kind: status.isJob ? "job" : "character", state: status.state.rawValue,
            desired: status.desired.rawValue, ready: status.isReady, restarts: status.restarts, crashLoop: status.isCrashLooping)
        if detail != .brief {
            object.logLinesDropped = (dropped ?? facts.droppedLines())[status.name.rawValue] ?? 0
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
        object.schedule = facts.schedule(of: status)
        object.replica = facts.replica(of: status.name)
        object.tenant = facts.tenant(of: status.name)
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

    // MARK: - Responses

    /// Every JSON answer of both endpoints: a type of the API contract (WhisperAPI).
    func jsonResponse(_ status: Int, _ value: some APIModel) -> HTTPServer.Response { encodedResponse(status, value) }

    private func encodedResponse(_ status: Int, _ value: some Encodable) -> HTTPServer.Response {
        do {
            return HTTPServer.Response(status: status, contentType: "application/json", bytes: try JSONText.encode(value))
        } catch {
            log.log(.error, "whisperd", "cannot encode \(type(of: value)): \(error)")
            return HTTPServer.Response(status: 500, body: #"{"error":"internal error: cannot encode the answer"}"#)
        }
    }

    func errorResponse(_ status: Int, _ message: String) -> HTTPServer.Response { jsonResponse(status, APIError(message)) }

    /// 405, with the `Allow` header HTTP asks for.
    func methodNotAllowed(_ method: String, allowed: [String], _ message: String) -> HTTPServer.Response {
        var response = errorResponse(405, message)
        response.extraHeaders = [("Allow", allowed.joined(separator: ", "))]
        return response
    }

    /// The OpenAPI document of an endpoint, made once.
    func openAPIResponse(for endpoint: Endpoint) -> HTTPServer.Response {
        if let cached = openAPIDocuments[endpoint] { return cached }
        let response = encodedResponse(200, OpenAPIDocument(for: endpoint, version: WhisperdVersion.current))
        openAPIDocuments[endpoint] = response
        return response
    }
}

public enum WhisperdVersion {
    public static let current = "0.1.0"
}
