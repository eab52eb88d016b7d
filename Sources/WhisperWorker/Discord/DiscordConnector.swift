import Foundation
import Logging
import NIOWebSocket
import Synchronization
import WSClient
import WhisperChat
import WhisperSystem
import WhisperConcurrency
import WhisperJSON

/// The character as a Discord bot: one gateway session (WebSocket, driven by the pure
/// `GatewaySession`), messages answered through the same `ChatService` as `/api/chat` (so
/// memory and trust are shared per user id), replies sent over REST (`DiscordREST`).
/// Reports the `discord` facet; `lastProgress` lets the worker tell a wedged connector
/// (restart) from a Discord that is merely unreachable (report, keep retrying).
final class DiscordConnector: Sendable {
    let settings: DiscordSettings
    let service: ChatService
    let pool: WorkerPool
    let rest: DiscordREST
    let metrics: WorkerMetrics
    /// Tells whisperd the facet's new value (`ok`, `degraded:…`, `down:…`).
    let reportFacet: @Sendable (String) -> Void
    let log: @Sendable (String) -> Void

    private let session: Locked<GatewaySession>
    private let channels = Locked(DiscordChannelDirectory())
    private let lastFacet = Locked<String?>(nil)
    /// Monotonic nanoseconds of the connector loop's last turn.
    let lastProgress = Atomic<Int64>(Clock.monotonicNanoseconds())
    /// Replies being made (the worker's drain waits for them).
    let answering = Atomic<Int>(0)
    private let takingMessages = Atomic<Bool>(true)
    /// Rolling restarts: where the session is handed over, and whether this process is the
    /// new one (it waits for the old one's session before connecting).
    let handOffFiles: DiscordHandOffFiles?
    let waitsForHandOff: Bool
    /// When this process announced that it waits (monotonic seconds).
    let handOffAnnouncedAt: Double
    /// Set while a connection is open: asks its loop to hand the session over.
    private let handOffTrigger = Locked<(@Sendable () -> Void)?>(nil)
    /// The longest the loop ever waits between turns.
    static let maximumIdle: Duration = .seconds(5)

    init(
        settings: DiscordSettings, service: ChatService, pool: WorkerPool, metrics: WorkerMetrics,
        reportFacet: @escaping @Sendable (String) -> Void, log: @escaping @Sendable (String) -> Void,
        handOffFiles: DiscordHandOffFiles? = nil, waitsForHandOff: Bool = false, handOffAnnouncedAt: Double = 0
    ) {
        self.handOffAnnouncedAt = handOffAnnouncedAt
        self.handOffFiles = handOffFiles
        self.waitsForHandOff = waitsForHandOff
        self.settings = settings
        self.service = service
        self.pool = pool
        self.metrics = metrics
        self.rest = DiscordREST(settings: settings, pool: pool)
        self.reportFacet = reportFacet
        self.log = log
        self.session = Locked(GatewaySession(
                token: settings.token, intents: settings.intents, shard: settings.shard, seed: UInt64.random(in: 0...UInt64.max)))
    }

    private func now() -> Double { DiscordREST.now() }

    private func markProgress() { lastProgress.store(Clock.monotonicNanoseconds(), ordering: .relaxed) }

    private func facet(_ value: GatewaySession.Facet) {
        let text = value.notifyValue
        let changed = lastFacet.withLock { last in
            defer { last = text }
            return last != text
        }
        guard changed else { return }
        reportFacet(text)
        log("discord: \(text)")
    }

    /// Sleeps `seconds`, turning at least every `maximumIdle` (so progress is visible).
    private func pause(_ seconds: Double) async {
        var left = seconds
        while left > 0 {
            let step = min(left, 5)
            try? await Task.sleep(for: .milliseconds(Int64(step * 1000)))
            left -= step
            markProgress()
        }
    }

    /// Runs until a fatal close (bad token, intents) or a fatal REST answer; otherwise forever.
    func run() async {
        if waitsForHandOff, let handOff = await awaitHandOff() {
            session.withLock { $0.adopt(handOff) }
            log("discord: resuming the session handed over by the process this one replaces (seq \(handOff.sequence))")
        }
        guard let gatewayURL = await discoverGateway() else { return }
        var actions = session.withLock { $0.start(gatewayURL: gatewayURL) }
        while true {
            markProgress()
            var next: (url: String, delay: Double)?
            for action in actions {
                switch action {
                case .facet(let value): facet(value)
                case .stop(let reason):
                    log("discord: gave up: \(reason)")
                    return
                case .connect(let url, let delay): next = (url, delay)
                default: break
                }
            }
            guard let next else { return }
            if next.delay > 0 { await pause(next.delay) }
            actions = await connect(to: next.url)
        }
    }

    /// The new process of a rolling restart: waits (bounded) for the old one's session, so the
    /// bot never runs twice on one token and Discord replays to it what the old one left.
    private func awaitHandOff() async -> GatewaySession.HandOff? {
        guard let files = handOffFiles else { return nil }
        // Announced (`discord-handoff.wanted`) before READY=1; a hand-over written since is ours.
        let since = now()
        defer { files.withdraw() }
        facet(.degraded("waiting for the session of the process it replaces"))
        while now() - since < Self.handOffWait {
            markProgress()
            if let handOff = files.take(notBefore: handOffAnnouncedAt) { return handOff }
            try? await Task.sleep(for: .milliseconds(50))
        }
        log("discord: no session was handed over within \(Int(Self.handOffWait)) s: identifying anew")
        return nil
    }

    /// How long a new process waits for the old one's session (the old one hands it over when
    /// whisperd stops it, right after the new one is ready).
    static let handOffWait: Double = 30

    /// The old process of a rolling restart, draining: when a new one waits for the session,
    /// hands it over (no message is taken after the moment the session is captured); else only
    /// stops taking messages. Returns the replies in flight.
    func stopTakingMessagesOrHandOff() -> Int {
        if let files = handOffFiles, files.isWanted(), let trigger = handOffTrigger.withLock({ $0 }) {
            trigger()
        } else {
            takingMessages.store(false, ordering: .relaxed)
        }
        return answering.load(ordering: .relaxed)
    }

    /// `DISCORD_GATEWAY_URL`, else `GET /gateway/bot` (retried with backoff; a 401 is fatal).
    private func discoverGateway() async -> String? {
        if let url = settings.gatewayURL { return url }
        facet(.degraded("connecting"))
        var failures = 0
        while true {
            markProgress()
            switch await rest.gateway() {
            case .success(let gateway):
                guard let wait = gateway.identifyBudgetResetsIn else { return gateway.url }
                // Discord allows so many Identifies a day per token; spent, it must wait.
                facet(.down("the token's daily session starts are used up; waiting \(Int(wait.rounded(.up))) s"))
                await pause(max(1, wait))
            case .failure(let failure) where failure.status == 401:
                facet(.down("authentication failed (GET /gateway/bot: 401; DISCORD_TOKEN is wrong or was reset)"))
                log("discord: gave up: the token was refused")
                return nil
            case .failure(let failure):
                failures += 1
                let delay = min(60, Double(1 << min(failures - 1, 6))) * Double.random(in: 0.9...1.1)
                facet(.down("\(failure.description); retrying in \(Int(delay.rounded(.up))) s"))
                await pause(delay)
            }
        }
    }

    /// One WebSocket connection, from open to close; what the session says to do next.
    private func connect(to url: String) async -> [GatewaySession.Action] {
        // swift-websocket takes a swift-log `Logger`; the worker's log is `log` (one line format on
        // stderr). What the library would say (frames at trace, connects at debug, nothing at
        // warning or above on Linux) the connector reports itself: close codes, errors.
        let logger = Logger(label: "whisperd.discord", factory: { _ in SwiftLogNoOpLogHandler() })
        let configuration = WebSocketClientConfiguration(maxFrameSize: 1 << 24, closeTimeout: .seconds(2))
        var serverCode: Int?
        var reason = "connection closed"
        do {
            let closeFrame = try await WebSocketClient.connect(url: url, configuration: configuration, logger: logger) {
                inbound, outbound, _ in
                try await self.drive(inbound: inbound, outbound: outbound)
            }
            if let closeFrame {
                serverCode = Int(UInt16(webSocketErrorCode: closeFrame.closeCode))
                reason = closeFrame.reason ?? "closed"
            }
        } catch {
            reason = "\(error)"
        }
        if let serverCode, serverCode != GatewaySession.resumableCloseCode {
            log("discord: gateway closed \(serverCode)\(reason.isEmpty ? "" : " (\(reason))")")
        }
        return session.withLock { $0.connectionClosed(code: serverCode, reason: reason, now: now()) }
    }

    private enum LinkEvent: Sendable {
        case text(String)
        case tick
        case ended
        case handOff
    }

    /// The open connection: payloads and timer turns go through the session; its actions are
    /// done here. Returns when the server closes or the session asks to close.
    private func drive(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        let (events, feed) = AsyncStream.makeStream(of: LinkEvent.self)
        var pending = session.withLock { $0.connectionOpened(now: now()) }
        handOffTrigger.withLock { $0 = { feed.yield(.handOff) } }
        defer { handOffTrigger.withLock { $0 = nil } }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await message in inbound.messages(maxSize: 1 << 24) {
                        if case .text(let text) = message { feed.yield(.text(text)) }
                    }
                } catch {}
                feed.yield(.ended)
            }
            var timer: Task<Void, Never>?
            defer { timer?.cancel() }
            func arm() {
                timer?.cancel()
                let wake = session.withLock { $0.nextWake }
                let seconds = min(max(0, (wake ?? .infinity) - now()), 5)
                timer = Task {
                    try? await Task.sleep(for: .milliseconds(Int64((seconds * 1000).rounded(.up))))
                    if !Task.isCancelled { feed.yield(.tick) }
                }
            }
            arm()
            for await event in events {
                markProgress()
                switch event {
                case .text(let text):
                    switch GatewayEvent.decode(text) {
                    case .success(let payload): pending += session.withLock { $0.received(payload, now: now()) }
                    case .failure(let problem): log("discord: ignored a gateway payload: \(problem)")
                    }
                case .tick:
                    pending += session.withLock { $0.tick(now: now()) }
                case .handOff:
                    // In the loop's order: every event before this one was taken, none after.
                    takingMessages.store(false, ordering: .relaxed)
                    let (handOff, actions) = session.withLock { $0.handOff(now: now()) }
                    if let handOff, let files = handOffFiles {
                        if files.give(handOff) {
                            log("discord: session handed over to the new process (seq \(handOff.sequence))")
                        } else {
                            log("discord: could not write the session for the new process")
                        }
                    }
                    pending += actions
                case .ended:
                    group.cancelAll()
                    return
                }
                for action in pending {
                    switch action {
                    case .send(let command):
                        try await outbound.write(.text(command.jsonText))
                    case .close(let code, let reason):
                        try await outbound.close(.init(codeNumber: code), reason: reason)
                        group.cancelAll()
                        return
                    case .dispatch(let name, let data):
                        dispatch(name, data)
                    case .facet(let value):
                        facet(value)
                    case .connect, .stop:
                        break
                    }
                }
                pending = []
                arm()
            }
        }
    }

    // MARK: - Events

    private func dispatch(_ name: String, _ data: JSONValue) {
        switch name {
        case "READY":
            let user = data["user"]
            let guilds = data["guilds"].arrayValue.count
            log("discord: connected as \(user["username"].stringValue ?? "?") (id \(user["id"].stringValue ?? "?"), \(guilds) guild(s))")
        case "RESUMED":
            log("discord: session resumed")
        case "MESSAGE_CREATE":
            guard let botID = session.withLock({ $0.botUserID }) else { return }
            switch DiscordMessagePolicy.decide(data, botUserID: botID, settings: settings) {
            case .ignore(let why):
                if why != "not addressed to the bot", why != "own message" { metrics.discord(outcome: "ignored") }
            case .answer(let message):
                guard takingMessages.load(ordering: .relaxed) else { return }
                answering.add(1, ordering: .relaxed)
                Task {
                    await self.answer(message)
                    self.answering.subtract(1, ordering: .relaxed)
                }
            }
        default:
            channels.withLock { $0.learn(event: name, data: data) }
        }
    }

    /// Typing while the reply is made, then the reply (split to Discord's size, the first part
    /// replying to the message). A failure is said in the character's words (`ux.yaml`), never
    /// passed off as an answer; the user's message stays remembered either way.
    private func answer(_ message: IncomingDiscordMessage) async {
        let rest = rest
        let firstTyping = Task { await rest.triggerTyping(channel: message.channelID) }
        let refresher = Task {
            while true {
                try await Task.sleep(for: .seconds(8))
                await rest.triggerTyping(channel: message.channelID)
            }
        }
        var context = ["user_name": message.userName, "channel_id": message.channelID]
        if let guild = message.guildID { context["guild_id"] = guild }
        context["channel_name"] = message.isDirect ? "direct message" : channels.withLock { $0.names[message.channelID] } ?? ""
        let service = service
        let chatContext = context
        // As `/api/chat`: the store's and the LLM client's threads carry it; no thread waits.
        let result = await withCheckedContinuation { (done: CheckedContinuation<Result<ChatService.Turn, ChatService.Failure>, Never>) in
            service.chat(userID: message.userID, message: message.text, context: chatContext) { done.resume(returning: $0) }
        }
        refresher.cancel()
        await firstTyping.value

        let reply: String
        switch result {
        case .success(let turn):
            reply = turn.reply
            metrics.discord(outcome: "answered")
        case .failure(let failure):
            log("discord: could not answer message \(message.messageID) from user \(message.userID): \(failure)")
            metrics.discord(outcome: "failed")
            reply = service.profile.ux.errorMessages.randomElement() ?? "Sorry, I can't answer right now. Please try again in a moment."
        }
        for (index, part) in DiscordReplySplitter.split(reply).enumerated() {
            if case .failure(let failure) = await rest.createMessage(
                channel: message.channelID, content: part, replyingTo: index == 0 ? message.messageID : nil)
            {
                log("discord: could not send a reply in channel \(message.channelID): \(failure)")
                metrics.discord(outcome: "send_failed")
                return
            }
        }
    }
}
