import WhisperChat
import WhisperCore
import WhisperSystem
import WhisperJSON

/// `POST /api/chat` without an HTTP server: a request body in, WhisperEngine's answer out. The
/// worker's event loop serves it (`Worker.chat`); so does the bench-only Hummingbird 2 server
/// (`scripts/bench/hummingbird-worker`), so that comparing the two measures the HTTP layer alone.
public struct ChatRoute: Sendable {
    /// An HTTP answer: status, extra header lines (`Retry-After`), a JSON body.
    public struct Answer: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]
        /// Facets the chat learned about (`llm`, `store`), for the worker's sd_notify.
        var facets: [String: String]
    }

    /// What a request becomes: answered at once (a 422, 429 or 503 decided from the request
    /// alone), or started, to be answered by `respond`, on one of the store's threads.
    public enum Start: Sendable {
        case answered(Answer)
        case started(@Sendable (_ respond: @escaping @Sendable (Answer) -> Void) -> Void)
    }

    let service: ChatService
    /// The name that 422/429/503 answers carry (the worker's, as given on its command line).
    let botName: String

    init(service: ChatService, botName: String) {
        self.service = service
        self.botName = botName
    }

    /// The character `name` from `environment`, as `whisperd worker NAME` starts it: its files,
    /// store, LLM client and admission rules (the same start-up, the same errors).
    public init(name: String, environment: [String: String]) throws {
        let (service, storeProblem) = try Worker.Setup(name: name, environment: environment).makeService(
            metrics: WorkerMetrics(character: name))
        if let storeProblem { throw Worker.Failure(description: "conversation store: \(storeProblem)") }
        self.init(service: service, botName: name)
    }

    /// No thread waits for a chat: the store's and the LLM client's threads carry it.
    public func start(_ body: [UInt8]) -> Start {
        let request: ChatRequest
        switch ChatRequests.chat(body) {
        case .failure(let failure):
            return .answered(Self.json(422, ["detail": failure.issues.map(Worker.issueObject)]))
        case .success(let valid): request = valid
        }
        if case .failure(let problem) = service.llm {
            return .answered(Self.json(503, ["success": false, "error": "LLM \(problem.description)", "bot_name": botName]))
        }
        if let refusal = service.admission.admitUser(request.userID) {
            var answer = Self.json(429, ["success": false, "error": refusal.message, "bot_name": botName])
            answer.headers = [("Retry-After", String(refusal.retryAfterSeconds))]
            return .answered(answer)
        }
        let service = service
        return .started { respond in
            service.chat(userID: request.userID, message: request.message, context: request.context) { outcome in
                let completion = Worker.answer(0, outcome, service)
                service.metrics.request(endpoint: "chat", status: completion.status)
                respond(Answer(status: completion.status, headers: completion.headers, body: completion.body, facets: completion.facets))
            }
        }
    }

    /// `GET /metrics`: the chat path's own metrics (requests, chat, LLM and store latency).
    public func metrics() -> Answer {
        Answer(status: 200, headers: [], body: service.metrics.render(), facets: [:])
    }

    /// `GET /health`'s body.
    public static func health() -> Answer {
        json(200, ["status": "healthy", "timestamp": Worker.timestamp()])
    }

    static func json(_ status: Int, _ object: [String: Any]) -> Answer {
        Answer(status: status, headers: [], body: JSONText.serialize(object), facets: [:])
    }
}
