import Foundation
import Glibc
import Synchronization
import WhisperChat
import WhisperCore
import WhisperSystem
import WhisperFiles
import WhisperJSON

/// The built-in character worker (`whisperd worker NAME`): WhisperEngine v2's HTTP API on
/// `API_HOST:API_PORT`, answered through an OpenAI-compatible LLM with per-character memory.
/// The event loop parses and validates requests. A chat is carried by threads that never wait
/// for one request — the store's (`StoreQueue`, batched transactions) and the LLM client's
/// (`CurlMulti`); the store calls outside a chat (user state, clearing, diagnostics) and
/// Discord's REST calls run on a pool of threads; either comes back to the loop through a
/// mailbox (`docs/internals.md`, "Concurrency in the worker"). It speaks sd_notify
/// to whisperd: `READY=1`, watchdog pings, the facets `api`, `llm`, `store` and (with a
/// `DISCORD_TOKEN`, when it is also a Discord bot) `discord`, in-flight
/// requests, and `STOPPING=1` before draining on SIGTERM.
public final class Worker {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// A finished piece of pool work, for the loop.
    struct Completion: Sendable {
        var ticket: Int
        var status: Int
        var body: [UInt8]
        var contentType = "application/json"
        /// Facets this work learned about (`llm`, `store`), as `level[:detail]`.
        var facets: [String: String] = [:]
        /// More header lines (`Retry-After`).
        var headers: [(String, String)] = []
    }

    public static let version = "0.1.0"

    let name: String
    let environment: [String: String]
    let loop: EventLoop
    let startedAt = Date()
    var server: HTTPServer?
    var service: ChatService!
    let metrics: WorkerMetrics
    let pool: WorkerPool
    let mailbox: LoopMailbox<Completion>
    var answers: [Int: (HTTPServer.Response) -> Void] = [:]
    var nextTicket = 0
    var inflight = 0
    /// What whisperd last heard of `inflight`, and when. A busy API changes the count twice a
    /// request; whisperd hears it at most once a second (the latest value, at the end of that
    /// second), so neither it nor this loop pays a datagram per request.
    /// The count moved since the last report, even if back to what was reported: chats ended
    /// meanwhile and the LLM spending that rides along changed.
    var inflightMovedSinceReport = false
    var lastInflightReport: Int64?
    var nextInflightReport: Int64?
    static let inflightReportInterval: Int64 = 1_000_000_000
    /// What whisperd was last told, per facet.
    var facets: [String: String] = [:]
    /// whisperd, through `NOTIFY_SOCKET` (and the watchdog interval it asked for).
    let supervisor: SystemdNotifier
    var nextWatchdog: Int64?
    /// Set on SIGTERM: when in-flight work must be done by.
    var drainDeadline: Int64?
    var nextDrainCheck: Int64?

    /// Draining is over: nothing in flight, no Discord reply being made, no connection open.
    var isDrained: Bool {
        inflight == 0 && (discord?.answering.load(ordering: .relaxed) ?? 0) == 0 && (server?.connectionCount ?? 0) == 0
    }
    /// The Discord bot, when the character has a token.
    var discord: DiscordConnector?
    var nextDiscordCheck: Int64?
    /// A connector loop that has not turned for this long is wedged: the worker asks whisperd
    /// for a restart (`WATCHDOG=trigger`). Discord being down is not this: the loop keeps turning.
    static let discordWedgeLimit: Int64 = 60_000_000_000
    var exitStatus: Int32 = 0

    public init(name: String, environment: [String: String]) throws {
        self.name = name
        self.environment = environment
        self.loop = try EventLoop()
        self.metrics = WorkerMetrics(character: name)
        self.supervisor = SystemdNotifier(environment: environment)
        self.pool = WorkerPool(threads: environment["WORKER_THREADS"].flatMap(Int.init) ?? 16, name: "worker-\(name)")
        self.mailbox = try LoopMailbox()
    }

    public func run() throws -> Int32 {
        // Its connections, held refusals, store and LLM sockets all live in one epoll loop (no
        // select()), and it starts no process: it may use every descriptor its hard limit allows
        // (whisperd gives children the conventional soft limit back).
        _ = raiseFileLimit()
        // Up front, so a missing library is a clear exit, not a failed first chat.
        let setup = Setup(name: name, environment: environment)
        let storeProblem: String?
        (service, storeProblem) = try setup.makeService(metrics: metrics)
        let store = service.store
        let llm = service.llm

        let host = environment["API_HOST"] ?? "127.0.0.1"
        guard let portText = environment["API_PORT"], let port = Int(portText), (1...65535).contains(port) else {
            throw Failure(description: "API_PORT is not set to a port number (give the character `port:` in the roster)")
        }
        let limits: HTTPLimits
        switch HTTPLimits.from(environment) {
        case .success(let valid): limits = valid
        case .failure(let error): throw Failure(description: error.description)
        }
        do {
            server = try HTTPServer(loop: loop, host: host, port: port, reusePort: true, limits: limits) { [unowned self] request in self.route(request) }
        } catch {
            throw Failure(description: "cannot listen on \(host):\(port): \(error)")
        }
        try loop.add(mailbox.fd, .readable) { [unowned self] _ in self.receiveCompletions() }

        let signals = try SignalSource(.worker)  // blocked in every thread since main
        try loop.add(signals.fd, .readable) { [unowned self] _ in
            guard !signals.drain().isEmpty else { return }
            self.beginDrain()
        }
        if let interval = supervisor.watchdogPingInterval { nextWatchdog = Clock.monotonicNanoseconds() + interval }
        armDeadline()

        let llmState: String
        switch llm {
        case .success(let client): llmState = "ok:\(client.configuration.model) (not called yet)"
        case .failure(let problem): llmState = "down:\(problem.description)"
        }
        let discordSettings: DiscordSettings?
        switch DiscordSettings.from(environment) {
        case nil: discordSettings = nil
        case .success(let settings)?: discordSettings = settings
        case .failure(let error)?: throw Failure(description: "Discord settings: \(error)")
        }
        let storeState = storeProblem.map { "down:\($0)" } ?? "ok"
        let storeName = store.kind == "sqlite" ? "sqlite \(setup.sqlitePath)" : "postgres"
        facets = ["api": "ok", "store": storeState, "llm": llmState]
        if discordSettings != nil { facets["discord"] = "degraded:connecting" }
        // The new process of a rolling restart says it waits for the Discord session before it
        // says it is ready: whisperd stops the old process at READY=1, which then hands it over.
        if discordSettings != nil, waitsForDiscordHandOff, let files = discordHandOffFiles {
            discordHandOffAnnouncedAt = Double(Clock.monotonicNanoseconds()) / 1e9
            files.announceWaiting()
        }
        log(
            "serving \(name) on http://\(host):\(port) (store \(storeName) \(storeState); LLM \(llmState); "
                + (discordSettings == nil ? "Discord off: no DISCORD_TOKEN)" : "Discord on)"))
        notify(
            "READY=1\nSTATUS=serving on \(host):\(port)\n"
                + facets.sorted { $0.key < $1.key }.map { Facet.notifyLine($0.key, $0.value) + "\n" }.joined()
                + "X_WHISPERD_INFLIGHT=0")
        // Loading the character and the libraries leaves freed heap and code pages that serving
        // does not touch again (the binary holds the supervisor too): give them back, as whisperd
        // does after its start-up — an idle worker stays idle for hours. Serving brings back
        // what it needs on first touch.
        releaseFreedMemory()
        releaseStartupCodePages()
        if let discordSettings { startDiscord(discordSettings) }
        loop.run()
        server?.close()
        return exitStatus
    }

    /// Where a rolling restart hands the gateway session over, and whether this is the new process.
    var discordHandOffFiles: DiscordHandOffFiles? { environment["STATE_DIRECTORY"].map { DiscordHandOffFiles(directory: $0) } }
    var waitsForDiscordHandOff: Bool { environment["WHISPERD_SUCCESSOR"] == "1" }
    var discordHandOffAnnouncedAt: Double = 0

    private func startDiscord(_ settings: DiscordSettings) {
        let supervisor = supervisor
        let name = name
        let connector = DiscordConnector(
            settings: settings, service: service, pool: pool, metrics: metrics,
            reportFacet: { value in supervisor.send(Facet.notifyLine("discord", value)) },
            log: Self.log(name),
            handOffFiles: discordHandOffFiles, waitsForHandOff: waitsForDiscordHandOff, handOffAnnouncedAt: discordHandOffAnnouncedAt)
        discord = connector
        Task.detached { await connector.run() }
        nextDiscordCheck = Clock.monotonicNanoseconds() + 5_000_000_000
        armDeadline()
    }

    /// A wedged connector (its loop stopped turning) is the one Discord problem a restart fixes.
    private func checkDiscord(now: Int64) {
        guard let discord else { return }
        if drainDeadline != nil {
            // Draining: replies still being made finish first (polled: they end on other threads).
            if isDrained { return loop.stop() }
            nextDiscordCheck = now + 50_000_000
            return
        }
        let idle = now - discord.lastProgress.load(ordering: .relaxed)
        if idle > Self.discordWedgeLimit {
            log("discord: the connector has made no progress for \(idle / 1_000_000_000) s: asking for a restart")
            notify("X_WHISPERD_FACET=discord:down:connector wedged\nWATCHDOG=trigger")
            exitStatus = 70
            nextDiscordCheck = nil
            beginDrain()
            return
        }
        nextDiscordCheck = now + 5_000_000_000
    }

    // MARK: - Timers and shutdown

    /// The loop has one deadline: the earlier of the next watchdog ping and the drain's end.
    private func armDeadline() {
        let next = [nextWatchdog, drainDeadline, nextDiscordCheck, nextInflightReport, nextDrainCheck].compactMap { $0 }.min()
        loop.setDeadline(next) { [unowned self] in
            let now = Clock.monotonicNanoseconds()
            if let drainDeadline = self.drainDeadline, now >= drainDeadline {
                self.log("stopping with \(self.inflight) request(s) still in flight (grace over)")
                self.answerUnfinished()
                self.loop.stop()
                return
            }
            if let due = self.nextDrainCheck, now >= due {
                if self.isDrained { return self.loop.stop() }
                self.nextDrainCheck = now + 20_000_000
            }
            if let due = self.nextDiscordCheck, now >= due { self.checkDiscord(now: now) }
            if let due = self.nextInflightReport, now >= due {
                self.nextInflightReport = nil
                if self.inflightMovedSinceReport { self.reportInflight(now: now) }
            }
            if let due = self.nextWatchdog, now >= due, let interval = self.supervisor.watchdogPingInterval {
                // Not waiting on a full queue: a ping that cannot go now is made up for by the next.
                self.notify("WATCHDOG=1\nX_WHISPERD_INFLIGHT=\(self.inflight)", waiting: false)
                self.nextWatchdog = now + interval
            }
            self.armDeadline()
        }
    }

    /// SIGTERM: say so, take no new connections, let in-flight requests finish within the
    /// grace whisperd gives (`WHISPERD_STOP_GRACE_MS`, minus a margin), then exit.
    private func beginDrain() {
        guard drainDeadline == nil else {
            loop.stop()  // A second signal: now.
            return
        }
        let answering = discord?.stopTakingMessagesOrHandOff() ?? 0
        notify("STOPPING=1\nSTATUS=stopping: \(inflight + answering) request(s) in flight")
        server?.stopAccepting()
        let grace = environment["WHISPERD_STOP_GRACE_MS"].flatMap(Int64.init) ?? 10_000
        drainDeadline = Clock.monotonicNanoseconds() + max(100, grace - 500) * 1_000_000
        if isDrained { return loop.stop() }
        // Open connections close on their own (answered, or idle past the grace): looked at until then.
        nextDrainCheck = Clock.monotonicNanoseconds() + 20_000_000
        log(
            discord == nil
                ? "draining \(inflight) request(s) in flight"
                : "draining \(inflight) request(s) and \(answering) Discord repl\(answering == 1 ? "y" : "ies") in flight")
        if discord != nil { nextDiscordCheck = Clock.monotonicNanoseconds() + 50_000_000 }
        armDeadline()
    }

    /// Past the grace, every request still waiting gets a 503 saying so, not a connection that
    /// just closes. Its work on other threads ends with the process; a user's message already
    /// stored stays without a reply, as the 503 tells the client.
    private func answerUnfinished() {
        let body = JSONText.serialize(
            [
                "success": false, "bot_name": name,
                "error": "\(name) is stopping and could not finish this request within its stop grace",
            ] as [String: Any])
        for answer in answers.values { answer(HTTPServer.Response(status: 503, contentType: "application/json", bytes: body)) }
        answers.removeAll()
    }

    // MARK: - Work off the loop

    /// Runs `work` on the pool; its completion answers the request.
    func later(_ work: @escaping @Sendable (Int) -> Completion) -> HTTPServer.Response {
        let pool = pool
        return later { ticket, answer in pool.submit { answer(work(ticket)) } }
    }

    /// Starts `work` here, on the loop; it must not block, and answers the request by calling
    /// its completion (from any thread).
    func later(starting work: @escaping (Int, @escaping @Sendable (Completion) -> Void) -> Void) -> HTTPServer.Response {
        .later { [unowned self] respond in
            let ticket = nextTicket
            nextTicket += 1
            answers[ticket] = respond
            inflight += 1
            inflightChanged()
            let mailbox = mailbox
            work(ticket) { mailbox.post($0) }
        }
    }

    private func receiveCompletions() {
        for completion in mailbox.drain() {
            inflight -= 1
            var changes: [String] = []
            for (facet, state) in completion.facets where facets[facet] != state {
                facets[facet] = state
                changes.append(Facet.notifyLine(facet, state))
            }
            if !changes.isEmpty { notify(changes.joined(separator: "\n")) }
            var response = HTTPServer.Response(status: completion.status, contentType: completion.contentType, bytes: completion.body)
            response.extraHeaders = completion.headers
            answers.removeValue(forKey: completion.ticket)?(response)
        }
        inflightChanged()
        if drainDeadline != nil, isDrained { loop.stop() }
    }

    // MARK: - sd_notify and log

    /// `waiting: false` for what may be dropped when whisperd is behind (its queue is full):
    /// this loop answers chats and must not wait on the supervisor.
    func notify(_ message: String, waiting: Bool = true) { supervisor.send(message, waiting: waiting) }

    /// Reports the in-flight count now if the last report is a second old, else once that
    /// second is over.
    private func inflightChanged() {
        inflightMovedSinceReport = true
        guard nextInflightReport == nil else { return }
        let now = Clock.monotonicNanoseconds()
        if let last = lastInflightReport, now - last < Self.inflightReportInterval {
            nextInflightReport = last + Self.inflightReportInterval
            armDeadline()
        } else {
            reportInflight(now: now)
        }
    }

    private func reportInflight(now: Int64) {
        // The LLM spending rides along (whisperd's status and /metrics): it changes with chats.
        var message = ""
        if let admission = service?.admission {
            message += "X_WHISPERD_LLM_TOKENS=\(admission.spentTokens)\n"
            if let remaining = admission.remainingTokens() { message += "X_WHISPERD_LLM_BUDGET_REMAINING=\(remaining)\n" }
        }
        notify(message + "X_WHISPERD_INFLIGHT=\(inflight)", waiting: false)
        inflightMovedSinceReport = false
        lastInflightReport = now
    }

    func log(_ message: String) { Self.log(name)(message) }

    /// The worker's log, the one way it logs: a line `worker NAME: …` on stderr, which whisperd
    /// keeps with the character's output. For the parts that run off the loop.
    static func log(_ name: String) -> @Sendable (String) -> Void {
        { message in FileHandle.standardError.write(Data("worker \(name): \(message)\n".utf8)) }
    }
}
