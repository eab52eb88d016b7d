import Foundation
import Prometheus
import WhisperChat
import Synchronization
import WhisperConcurrency

/// One character's chat pipeline, run without a thread of its own: the user's message is
/// stored (durably, by the store's thread, batched with other chats') before the LLM is asked
/// (on the LLM client's thread), the reply after, with the trust it earns. An LLM failure is
/// returned as such — never a made-up reply — and leaves the user's message stored.
final class ChatService: Sendable {
    let profile: CharacterProfile
    let store: any ConversationStore
    let writes: StoreQueue
    let llm: Result<LLMClient, LLMNotConfigured>
    let metrics: WorkerMetrics
    /// Budget and concurrency bounds on LLM work (the per-user rate is the routes').
    let admission: ChatAdmission
    /// The prompt's character-only blocks, made once.
    private let identity: String

    init(
        profile: CharacterProfile, store: any ConversationStore, llm: Result<LLMClient, LLMNotConfigured>, metrics: WorkerMetrics,
        admission: ChatAdmission
    ) {
        self.profile = profile
        self.admission = admission
        self.identity = Conversation.identityBlocks(profile)
        self.store = store
        self.writes = StoreQueue(store: store, name: profile.name) { metrics.storeSeconds.record($0) }
        self.llm = llm
        self.metrics = metrics
    }

    struct Turn: Sendable {
        var userMessage: String
        var reply: String
        var processingMilliseconds: Double
        var model: String
        var memoryStored: Bool
        var trust: Int
    }

    enum Failure: Error {
        /// 503: nothing was stored.
        case notConfigured(String)
        /// 503: the store refused the user's message; nothing was acknowledged.
        case store(String)
        /// 502: the user's message is stored, no reply is.
        case llm(LLMError)
        /// 429: not taken (budget spent, too many in progress); nothing was stored.
        case refused(ChatAdmission.Refusal)
    }

    typealias Completion = @Sendable (Result<Turn, Failure>) -> Void

    /// One exchange; `completion` runs on one of the store's threads (or at once, when the LLM
    /// is not configured) and must not block.
    func chat(userID: String, message: String, context: [String: String], completion: @escaping Completion) {
        let started = Date()
        let client: LLMClient
        switch llm {
        case .failure(let problem): return completion(.failure(.notConfigured(problem.description)))
        case .success(let configured): client = configured
        }
        if let refusal = admission.begin() { return completion(.failure(.refused(refusal))) }
        let admission = admission
        let now = started.timeIntervalSince1970
        let userMessage = NewMessage(character: profile.name, userID: userID, role: .user, content: message, createdAt: now)
        writes.submit(.beginExchange(userMessage, recent: 2 * Conversation.historyExchanges + 2)) { [self] stored in
            let recent: [StoredMessage]
            switch stored {
            case .success(let outcome): recent = outcome.history
            case .failure(let error):
                metrics.errors(kind: "store")
                admission.finish(tokens: 0)
                return completion(.failure(.store("\(error)")))
            }
            var messages = [
                ChatMessage(role: "system", content: Conversation.systemPrompt(profile, userID: userID, context: context, now: started, identity: identity))
            ]
            for earlier in Conversation.history(from: recent, now: now) {
                messages.append(ChatMessage(role: earlier.role.rawValue, content: earlier.content))
            }
            messages.append(ChatMessage(role: "user", content: message))
            let asked = Date()
            let asking = messages
            client.complete(messages) { [self] answer in
                metrics.llmSeconds.record(Date().timeIntervalSince(asked))
                switch answer {
                case .failure(let error):
                    metrics.errors(kind: "llm_" + error.kind.rawValue)
                    admission.finish(tokens: 0)
                    completion(.failure(.llm(error)))
                case .success(let reply):
                    // What the provider reports, else an estimate from the texts (counted only then).
                    let prompt = reply.promptTokens ?? asking.reduce(0) { $0 + TokenBudget.estimatedTokens($1.content) }
                    admission.finish(tokens: prompt + (reply.completionTokens ?? TokenBudget.estimatedTokens(reply.content)))
                    finish(reply, userID: userID, message: message, client: client, started: started, completion: completion)
                }
            }
        }
    }

    private func finish(
        _ reply: LLMReply, userID: String, message: String, client: LLMClient, started: Date, completion: @escaping Completion
    ) {
        if let tokens = reply.promptTokens { metrics.promptTokens.increment(by: Int64(tokens)) }
        if let tokens = reply.completionTokens { metrics.completionTokens.increment(by: Int64(tokens)) }
        let answer = NewMessage(
            character: profile.name, userID: userID, role: .assistant, content: reply.content, createdAt: Date().timeIntervalSince1970)
        writes.submit(.completeExchange(answer, trustDelta: 1, facts: Conversation.facts(in: message))) { [self] stored in
            // The reply exists and is returned; that it is not remembered is said (memory_stored).
            let memoryStored = (try? stored.get()) != nil
            if !memoryStored { metrics.errors(kind: "store") }
            let trust = (try? stored.get())?.trust ?? 0
            let elapsed = Date().timeIntervalSince(started)
            metrics.chatSeconds.record(elapsed)
            completion(
                .success(
                    Turn(
                        userMessage: message, reply: reply.content, processingMilliseconds: elapsed * 1000,
                        model: reply.model.isEmpty ? client.configuration.model : reply.model, memoryStored: memoryStored, trust: trust)))
        }
    }
}

/// The worker's `/metrics`: requests, chat and LLM latency, tokens, store latency, errors.
final class WorkerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    let chatSeconds: ValueHistogram
    let llmSeconds: ValueHistogram
    let storeSeconds: ValueHistogram
    let promptTokens: Counter
    let completionTokens: Counter
    private let character: String

    init(character: String) {
        self.character = character
        let buckets = [0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60]
        chatSeconds = registry.makeValueHistogram(
            descriptor: Self.name("chat_duration", "seconds", "Time to answer a chat message, LLM included"),
            labels: [("character", character)], buckets: buckets)
        llmSeconds = registry.makeValueHistogram(
            descriptor: Self.name("llm_duration", "seconds", "Time of LLM calls, retries included"), labels: [("character", character)],
            buckets: buckets)
        storeSeconds = registry.makeValueHistogram(
            descriptor: Self.name("store_duration", "seconds", "Time of conversation store operations"),
            labels: [("character", character)], buckets: [0.0001, 0.0005, 0.001, 0.005, 0.025, 0.1, 0.5, 2])
        let tokens = Self.name("llm_tokens", "total", "Tokens the LLM reported, by kind")
        promptTokens = registry.makeCounter(descriptor: tokens, labels: [("character", character), ("kind", "prompt")])
        completionTokens = registry.makeCounter(descriptor: tokens, labels: [("character", character), ("kind", "completion")])
    }

    private static func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "whisperd", subsystem: "worker", metricName: metric, unitName: unit, helpText: help)
    }

    func request(endpoint: String, status: Int) {
        counter("requests|\(endpoint)|\(status)") {
            $0.makeCounter(
                descriptor: Self.name("requests", "total", "HTTP requests answered, by endpoint and status"),
                labels: [("character", character), ("endpoint", endpoint), ("status", String(status))])
        }.increment()
    }

    /// Discord messages handled, by outcome (answered, failed, ignored, send_failed).
    func discord(outcome: String) {
        counter("discord|\(outcome)") {
            $0.makeCounter(
                descriptor: Self.name("discord_messages", "total", "Discord messages handled, by outcome"),
                labels: [("character", character), ("outcome", outcome)])
        }.increment()
    }

    func errors(kind: String) {
        counter("errors|\(kind)") {
            $0.makeCounter(descriptor: Self.name("errors", "total", "Failures, by kind"), labels: [("character", character), ("kind", kind)])
        }.increment()
    }

    /// Counters and gauges by label set, made once (the registry's lookup hashes every label each time).
    private let made = Locked<[String: any Sendable]>([:])

    private func counter(_ key: String, _ make: (PrometheusCollectorRegistry) -> Counter) -> Counter { metric(key, make) }

    private func metric<Metric: Sendable>(_ key: String, _ make: (PrometheusCollectorRegistry) -> Metric) -> Metric {
        made.withLock { made in
            if let existing = made[key] as? Metric { return existing }
            let created = make(registry)
            made[key] = created
            return created
        }
    }

    /// What the HTTP counters stood at when last rendered (they are the server's own totals).
    private let renderedTotals = Locked<[String: Int]>([:])

    /// The API server's connections and the bytes of unfinished requests it holds, and its
    /// totals of connections refused for their address's limit and of those served once past
    /// the cap, and of the turns an address waited for a request token (its rate); set before
    /// each rendering.
    func httpServer(connections: Int, bufferedBytes: Int, refusedAtPeerLimit: Int, servedOnceOverCap: Int, deferredByRate: Int) {
        for (key, total) in [("peer_limit", refusedAtPeerLimit), ("over_cap_once", servedOnceOverCap), ("rate", deferredByRate)] {
            let added = renderedTotals.withLock { rendered -> Int in
                defer { rendered[key] = total }
                return total - (rendered[key] ?? 0)
            }
            let counter = counter("http|\(key)") {
                switch key {
                case "peer_limit":
                    $0.makeCounter(
                        descriptor: Self.name("http_connections_refused", "total", "Connections refused for their address's limit"),
                        labels: [("character", character), ("reason", "peer_limit")])
                case "rate":
                    $0.makeCounter(
                        descriptor: Self.name("http_turns_deferred", "total", "Turns an address waited for its request rate"),
                        labels: [("character", character)])
                default:
                    $0.makeCounter(
                        descriptor: Self.name("http_connections_served_once", "total", "Connections past the cap served one request"),
                        labels: [("character", character)])
                }
            }
            if added > 0 { counter.increment(by: Int64(added)) }
        }
        metric("gauge|connections") {
            $0.makeGauge(
                descriptor: Self.name("http_connections", "", "Connections open to the API"), labels: [("character", character)])
        }.set(Int64(connections))
        metric("gauge|buffered") {
            $0.makeGauge(
                descriptor: Self.name("http_buffered", "bytes", "Bytes of unfinished requests the API holds"),
                labels: [("character", character)])
        }.set(Int64(bufferedBytes))
    }

    /// Tokens left in the budget's window (`LLM_TOKEN_BUDGET`), set before each rendering.
    func budgetRemaining(_ tokens: Int) {
        metric("gauge|budget") {
            $0.makeGauge(
                descriptor: Self.name("llm_budget_remaining", "tokens", "Tokens left in the LLM token budget's window"),
                labels: [("character", character)])
        }.set(Int64(tokens))
    }

    func render() -> [UInt8] { registry.emitToBuffer() }
}
