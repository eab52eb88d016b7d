import CWorkerLibs
import Foundation
import Glibc
import WhisperChat
import WhisperSystem
import Synchronization
import WhisperCore
import WhisperJSON

/// WhisperEngine v2's routes and JSON shapes, field for field.
extension Worker {
    func route(_ request: HTTPServer.Request) -> HTTPServer.Response {
        let endpoint: String
        let response: HTTPServer.Response
        switch (request.method, request.path) {
        case ("GET", "/health"), ("HEAD", "/health"):
            endpoint = "health"
            let health = ChatRoute.health()
            response = HTTPServer.Response(status: health.status, contentType: "application/json", bytes: health.body)
        case ("POST", "/api/chat"):
            endpoint = "chat"
            response = chat(request.body)
        case ("POST", "/api/conversation"):
            endpoint = "conversation"
            response = conversation(request.body)
        case ("POST", "/api/user-state"):
            endpoint = "user-state"
            response = userState(request.body)
        case ("POST", "/api/clear-user-data"):
            endpoint = "clear-user-data"
            response = clearUserData(request.body)
        case ("GET", "/api/diagnostics"):
            endpoint = "diagnostics"
            response = diagnostics()
        case ("GET", "/metrics"):
            endpoint = "metrics"
            if let remaining = service.admission.remainingTokens() { metrics.budgetRemaining(remaining) }
            if let server {
                metrics.httpServer(
                    connections: server.connectionCount, bufferedBytes: server.bufferedBytes, refusedAtPeerLimit: server.refusedAtPeerLimit,
                    servedOnceOverCap: server.admittedOverCap, deferredByRate: server.deferredByRate)
            }
            response = HTTPServer.Response(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", bytes: metrics.render())
        case (_, "/health"), (_, "/api/chat"), (_, "/api/conversation"), (_, "/api/user-state"), (_, "/api/clear-user-data"),
            (_, "/api/diagnostics"), (_, "/metrics"):
            endpoint = "other"
            response = json(405, ["detail": "Method Not Allowed"])
        default:
            endpoint = "other"
            response = json(404, ["detail": "Not Found"])
        }
        // Deferred answers count their own status when they come back.
        if response.deferred == nil { metrics.request(endpoint: endpoint, status: response.status) }
        return response
    }

    /// Validates the body on the loop (422 at once), then does `work` on the pool.
    private func handle<Request: Sendable>(
        _ body: [UInt8], _ decode: ([UInt8]) -> Result<Request, ValidationFailure>, endpoint: String, needsLLM: Bool = false,
        _ work: @escaping @Sendable (Int, Request, ChatService) -> Completion
    ) -> HTTPServer.Response {
        let request: Request
        switch decode(body) {
        case .failure(let failure): return unprocessable(failure)
        case .success(let valid): request = valid
        }
        if needsLLM, case .failure(let problem) = service.llm { return notConfigured(problem) }
        let service = service!
        let metrics = metrics
        return later { ticket in
            let completion = work(ticket, request, service)
            metrics.request(endpoint: endpoint, status: completion.status)
            return completion
        }
    }

    /// No thread waits for a chat: the store's and the LLM client's threads carry it, and the
    /// answer comes back through the mailbox.
    private func chat(_ body: [UInt8]) -> HTTPServer.Response {
        switch ChatRoute(service: service, botName: name).start(body) {
        case .answered(let answer):
            var response = HTTPServer.Response(status: answer.status, contentType: "application/json", bytes: answer.body)
            response.extraHeaders = answer.headers
            return response
        case .started(let run):
            return later { ticket, respond in
                run { answer in
                    respond(Completion(ticket: ticket, status: answer.status, body: answer.body, facets: answer.facets, headers: answer.headers))
                }
            }
        }
    }

    /// Its turns one after another, each an ordinary chat: no thread waits for one (a turn's end
    /// starts the next; a delay is a timer), and the whole request is bounded in turns
    /// (`CONVERSATION_MAX_TURNS`, a 422 past it) and in wall time (`CONVERSATION_MAX_SECONDS`).
    private func conversation(_ body: [UInt8]) -> HTTPServer.Response {
        let settings = service.admission.settings
        let request: ConversationRequest
        switch ChatRequests.conversation(body, maxTurns: settings.conversationMaxTurns) {
        case .failure(let failure): return unprocessable(failure)
        case .success(let valid): request = valid
        }
        if case .failure(let problem) = service.llm { return notConfigured(problem) }
        if let refusal = service.admission.admitUser(request.userID, cost: request.messages.count) { return refused(refusal) }
        let run = ConversationRun(
            request: request, service: service!, maxSeconds: settings.conversationMaxSeconds, started: Date())
        let metrics = metrics
        return later { ticket, answer in
            run.turn(0, done: []) { outcome in
                let completion = Self.conversationAnswer(ticket, outcome, run)
                metrics.request(endpoint: "conversation", status: completion.status)
                answer(completion)
            }
        }
    }

    static func conversationAnswer(_ ticket: Int, _ outcome: ConversationRun.Outcome, _ run: ConversationRun) -> Completion {
        let service = run.service
        let turns: [[String: Any]] = outcome.turns.map { turn in
            [
                "user_message": turn.userMessage, "bot_response": turn.reply, "processing_time_ms": milliseconds(turn.processingMilliseconds),
                "mode": "fast", "complexity": "SIMPLE",
            ]
        }
        switch outcome.end {
        case .answered:
            let stored = outcome.turns.allSatisfy(\.memoryStored)
            return Completion(
                ticket: ticket, status: 200,
                body: JSONText.serialize([
                    "success": true, "user_id": run.request.userID, "bot_name": service.profile.name, "turns": turns,
                    "total_time_ms": milliseconds(Date().timeIntervalSince(run.started) * 1000), "memory_stored": stored,
                ] as [String: Any]), facets: ["llm": "ok", "store": stored ? "ok" : "down:a write failed"])
        case .failed(let failure):
            // What was answered stays answered (and stored); the failing turn is said.
            var (completion, object) = failureAnswer(ticket, failure, service)
            object["turns"] = turns
            object["user_id"] = run.request.userID
            completion.body = JSONText.serialize(object)
            return completion
        case .outOfTime:
            return Completion(
                ticket: ticket, status: 504,
                body: JSONText.serialize([
                    "success": false, "user_id": run.request.userID, "bot_name": service.profile.name, "turns": turns,
                    "error": "the conversation reached its time limit (CONVERSATION_MAX_SECONDS=\(run.maxSeconds)) after "
                        + "\(outcome.turns.count) of \(run.request.messages.count) turns",
                ] as [String: Any]))
        }
    }

    private func userState(_ body: [UInt8]) -> HTTPServer.Response {
        handle(body, ChatRequests.userState, endpoint: "user-state") { ticket, request, service in
            do {
                let state = try service.store.userState(character: service.profile.name, userID: request.userID, recent: 10)
                let memories: [[String: Any]] = state.recentUserMessages.enumerated().map { index, content in
                    ["content": content, "score": Double(Int(1000 / Double(index + 1))) / 1000]
                }
                return Completion(
                    ticket: ticket, status: 200,
                    body: JSONText.serialize([
                        "user_id": request.userID, "trust_score": state.trust, "trust_level": service.profile.trustLevel(for: state.trust),
                        "memory_count": state.messageCount, "recent_memories": memories,
                        "knowledge_facts": state.facts.map { ["fact": $0] },
                    ] as [String: Any]), facets: ["store": "ok"])
            } catch {
                return Self.storeUnavailable(ticket, error, service)
            }
        }
    }

    private func clearUserData(_ body: [UInt8]) -> HTTPServer.Response {
        handle(body, ChatRequests.clearUserData, endpoint: "clear-user-data") { ticket, request, service in
            do {
                let cleared = try service.store.clear(
                    character: service.profile.name, userID: request.userID, memories: request.clearMemories, trust: request.clearTrust)
                return Completion(
                    ticket: ticket, status: 200,
                    body: JSONText.serialize([
                        "success": true, "user_id": request.userID, "memories_cleared": cleared.memoriesCleared,
                        "trust_reset": cleared.trustReset, "knowledge_cleared": cleared.knowledgeCleared,
                    ] as [String: Any]), facets: ["store": "ok"])
            } catch {
                return Self.storeUnavailable(ticket, error, service)
            }
        }
    }

    private func diagnostics() -> HTTPServer.Response {
        let service = service!
        let metrics = metrics
        let started = startedAt
        return later { ticket in
            let alive = service.store.ping()
            let model: Any
            switch service.llm {
            case .success(let client): model = client.configuration.model
            case .failure: model = Optional<Any>.none as Any
            }
            metrics.request(endpoint: "diagnostics", status: 200)
            return Completion(
                ticket: ticket, status: 200,
                body: JSONText.serialize([
                    "bot_name": service.profile.name, "llm_models": ["main": model],
                    "database_status": ["postgres": service.store.kind == "postgres" && alive, "sqlite": service.store.kind == "sqlite" && alive],
                    "uptime_seconds": Date().timeIntervalSince(started), "version": Worker.version,
                    "feature_flags": [String: Any](),
                ] as [String: Any]), facets: ["store": alive ? "ok" : "down:ping failed"])
        }
    }

    // MARK: - Answers

    /// A chat outcome as WhisperEngine shapes it, with the facets it tells about.
    static func answer(_ ticket: Int, _ outcome: Result<ChatService.Turn, ChatService.Failure>, _ service: ChatService) -> Completion {
        switch outcome {
        case .success(let turn):
            return Completion(
                ticket: ticket, status: 200, body: chatAnswer(turn, botName: service.profile.name),
                facets: ["llm": "ok", "store": turn.memoryStored ? "ok" : "down:a write failed"])
        case .failure(let failure):
            return failureAnswer(ticket, failure, service).completion
        }
    }

    /// A failed chat as WhisperEngine shapes it (`{success: false, error, bot_name}`), and that
    /// object (for answers that add to it).
    static func failureAnswer(_ ticket: Int, _ failure: ChatService.Failure, _ service: ChatService) -> (
        completion: Completion, object: [String: Any]
    ) {
        let botName = service.profile.name
        let object: [String: Any]
        var completion: Completion
        switch failure {
        case .llm(let error):
            object = ["success": false, "error": error.description, "bot_name": botName]
            completion = Completion(ticket: ticket, status: 502, body: [], facets: ["llm": "down:\(error.kind.rawValue)", "store": "ok"])
        case .notConfigured(let problem):
            object = ["success": false, "error": problem, "bot_name": botName]
            completion = Completion(ticket: ticket, status: 503, body: [])
        case .store(let problem):
            object = ["success": false, "error": "conversation store unavailable: \(StoreError(problem))", "bot_name": botName]
            completion = Completion(ticket: ticket, status: 503, body: [], facets: ["store": "down:\(StoreError(problem))"])
        case .refused(let refusal):
            object = ["success": false, "error": refusal.message, "bot_name": botName]
            completion = Completion(ticket: ticket, status: 429, body: [], headers: [("Retry-After", String(refusal.retryAfterSeconds))])
            if case .budgetSpent = refusal { completion.facets = ["llm": "degraded:budget"] }
        }
        completion.body = JSONText.serialize(object)
        return (completion, object)
    }

    /// `{"bot_name","complexity","memory_stored","mode","model_used","processing_time_ms",
    /// "response","success","timestamp"}` (byte order, as `JSONText` writes objects), written
    /// directly: through a `[String: Any]` it was a visible share of a chat.
    static func chatAnswer(_ turn: ChatService.Turn, botName: String) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(turn.reply.utf8.count + botName.utf8.count + turn.model.utf8.count + 220)
        body += #"{"bot_name":"#.utf8
        JSONText.appendString(botName, to: &body)
        body += #","complexity":"SIMPLE","memory_stored":"#.utf8
        body += (turn.memoryStored ? "true" : "false").utf8
        body += #","mode":"fast","model_used":"#.utf8
        JSONText.appendString(turn.model, to: &body)
        body += #","processing_time_ms":"#.utf8
        let elapsed = milliseconds(turn.processingMilliseconds)
        body += (elapsed.isFinite ? "\(elapsed)" : "null").utf8
        body += #","response":"#.utf8
        JSONText.appendString(turn.reply, to: &body)
        body += #","success":true,"timestamp":"#.utf8
        JSONText.appendString(timestamp(), to: &body)
        body.append(UInt8(ascii: "}"))
        return body
    }

    static func storeUnavailable(_ ticket: Int, _ error: any Error, _ service: ChatService) -> Completion {
        Completion(
            ticket: ticket, status: 503,
            body: JSONText.serialize(
                ["success": false, "error": "conversation store unavailable: \(error)", "bot_name": service.profile.name] as [String: Any]),
            facets: ["store": "down:\(error)"])
    }

    /// 429 with `Retry-After`, in WhisperEngine's error shape, decided on the loop.
    private func refused(_ refusal: ChatAdmission.Refusal) -> HTTPServer.Response {
        var response = json(429, ["success": false, "error": refusal.message, "bot_name": name])
        response.extraHeaders = [("Retry-After", String(refusal.retryAfterSeconds))]
        return response
    }

    private func notConfigured(_ problem: LLMNotConfigured) -> HTTPServer.Response {
        json(503, ["success": false, "error": "LLM \(problem.description)", "bot_name": name])
    }

    /// FastAPI's 422: `{"detail": [{"type", "loc", "msg", "input"[, "ctx"]}]}`.
    private func unprocessable(_ failure: ValidationFailure) -> HTTPServer.Response {
        json(422, ["detail": failure.issues.map(Self.issueObject)])
    }

    static func issueObject(_ issue: ValidationIssue) -> [String: Any] {
        var object: [String: Any] = [
            "type": issue.type, "msg": issue.message, "input": issue.input.any,
            "loc": issue.location.map { part -> Any in
                switch part {
                case .key(let key): key
                case .index(let index): index
                }
            },
        ]
        if let context = issue.context { object["ctx"] = context.mapValues(\.any) }
        return object
    }

    private func json(_ status: Int, _ object: [String: Any]) -> HTTPServer.Response {
        HTTPServer.Response(status: status, contentType: "application/json", bytes: JSONText.serialize(object))
    }

    /// Like Python's `datetime.now().isoformat()`: local time, microseconds
    /// (`2026-01-05T14:03:07.123456`). Written by hand: ICU's formatter was a measured part of
    /// every chat (`docs/bench/history.md`, "The chat path without a thread per request").
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        localtime_r(&seconds, &parts)
        var text: [UInt8] = []
        text.reserveCapacity(26)
        func digits(_ value: Int, _ count: Int) {
            var divisor = 1
            for _ in 1..<count { divisor *= 10 }
            var rest = value
            while divisor > 0 {
                text.append(UInt8(ascii: "0") + UInt8(rest / divisor % 10))
                rest %= divisor
                divisor /= 10
            }
        }
        digits(Int(parts.tm_year) + 1900, 4)
        text.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mon) + 1, 2)
        text.append(UInt8(ascii: "-"))
        digits(Int(parts.tm_mday), 2)
        text.append(UInt8(ascii: "T"))
        digits(Int(parts.tm_hour), 2)
        text.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_min), 2)
        text.append(UInt8(ascii: ":"))
        digits(Int(parts.tm_sec), 2)
        text.append(UInt8(ascii: "."))
        digits(Int(now.tv_nsec) / 1000, 6)
        return String(decoding: text, as: UTF8.self)
    }

    static func milliseconds(_ value: Double) -> Double { (value * 100).rounded() / 100 }
}

extension JSONValue {
    /// For `JSONText`.
    var any: Any {
        switch self {
        case .null: Optional<Any>.none as Any
        case .bool(let value): value
        case .int(let value): value
        case .double(let value): value
        case .string(let value): value
        case .array(let items): items.map(\.any)
        case .object(let fields): fields.mapValues(\.any)
        }
    }
}
