import Foundation
import WhisperChat
import WhisperSystem
import WhisperJSON

/// Discord's REST API through libcurl, within Discord's rate limits: every request waits
/// for its bucket and the global budget (`DiscordRateLimits`), a 429 is waited out and sent
/// again, 5xx and connection failures are retried with backoff. The token is only ever in
/// the `Authorization` header.
actor DiscordREST {
    struct Failure: Error, Sendable, CustomStringConvertible {
        var status: Int?
        var description: String
    }

    private let settings: DiscordSettings
    private let http = CurlHTTP()
    private let pool: WorkerPool
    private var limits = DiscordRateLimits()
    /// Requests that were answered 429 (for the log and the metrics).
    private(set) var rateLimitedCount = 0

    init(settings: DiscordSettings, pool: WorkerPool) {
        self.settings = settings
        self.pool = pool
    }

    static func now() -> Double { Double(Clock.monotonicNanoseconds()) / 1e9 }

    struct Gateway: Sendable {
        var url: String
        /// When the day's identify budget is spent: seconds until it is renewed.
        var identifyBudgetResetsIn: Double?
    }

    /// `GET /gateway/bot`: the URL to connect to, and whether an Identify is allowed now.
    func gateway() async -> Result<Gateway, Failure> {
        switch await request("GET", "/gateway/bot", json: nil) {
        case .failure(let failure): return .failure(failure)
        case .success(let answer):
            guard let body = try? JSONValue.parse(answer.body), let url = body["url"].stringValue else {
                return .failure(Failure(status: answer.status, description: "GET /gateway/bot gave no url"))
            }
            let limit = body["session_start_limit"]
            var resetsIn: Double?
            if case .int(0) = limit["remaining"] {
                switch limit["reset_after"] {
                case .int(let milliseconds): resetsIn = Double(milliseconds) / 1000
                case .double(let milliseconds): resetsIn = milliseconds / 1000
                default: resetsIn = 60
                }
            }
            return .success(Gateway(url: url, identifyBudgetResetsIn: resetsIn))
        }
    }

    /// `POST /channels/{id}/messages`, replying to `reference` when given; the new message's id.
    @discardableResult
    func createMessage(channel: String, content: String, replyingTo reference: String?) async -> Result<String, Failure> {
        var fields: [String: JSONValue] = [
            "content": .string(content),
            // Never ping @everyone or roles because the LLM wrote them; the replied-to user is fine.
            "allowed_mentions": .object(["parse": .array([.string("users")]), "replied_user": .bool(true)]),
        ]
        if let reference {
            fields["message_reference"] = .object(["message_id": .string(reference), "fail_if_not_exists": .bool(false)])
        }
        switch await request("POST", "/channels/\(channel)/messages", json: .object(fields)) {
        case .failure(let failure): return .failure(failure)
        case .success(let answer):
            let id = (try? JSONValue.parse(answer.body))?["id"].stringValue ?? ""
            return .success(id)
        }
    }

    /// `POST /channels/{id}/typing`: the "is typing…" indicator for ~10 s.
    func triggerTyping(channel: String) async {
        _ = await request("POST", "/channels/\(channel)/typing", json: nil)
    }

    /// One request, waited for its rate limit and retried as Discord asks. A 2xx answer is a
    /// success; anything else a failure naming the status.
    func request(_ method: String, _ path: String, json: JSONValue?) async -> Result<CurlHTTP.Answer, Failure> {
        let route = DiscordRateLimits.Route(method: method, path: path)
        var headers = [
            "Authorization: Bot \(settings.token)", "User-Agent: DiscordBot (https://github.com/whisperd/whisperd, \(Worker.version))",
        ]
        var body: [UInt8]?
        if let json {
            headers.append("Content-Type: application/json")
            body = Array(json.jsonText.utf8)
        } else if method != "GET" {
            body = []
        }
        let url = settings.apiBase + path
        var attempt = 0
        while true {
            attempt += 1
            while true {
                let wait = limits.delay(for: route, now: Self.now())
                if wait <= 0 { break }
                try? await Task.sleep(for: .milliseconds(Int64((wait * 1000).rounded(.up))))
            }
            limits.willSend(route, now: Self.now())
            let http = http
            let requestHeaders = headers
            let requestBody = body
            let outcome = await pool.run {
                http.perform(method: method, url: url, headers: requestHeaders, body: requestBody, connectTimeout: 10, timeout: 15)
            }
            switch outcome {
            case .failure(let failure):
                if attempt < 4 {
                    try? await Task.sleep(for: .milliseconds(250 << attempt))
                    continue
                }
                return .failure(Failure(status: nil, description: "\(method) \(route.template): \(failure)"))
            case .success(let answer):
                var retryAfter: Double?
                var isGlobal = false
                if answer.status == 429, let object = try? JSONValue.parse(answer.body) {
                    switch object["retry_after"] {
                    case .double(let value): retryAfter = value
                    case .int(let value): retryAfter = Double(value)
                    default: break
                    }
                    isGlobal = object["global"].boolValue ?? false
                }
                limits.record(route, status: answer.status, headers: answer.headers, retryAfter: retryAfter, isGlobal: isGlobal, now: Self.now())
                if answer.status == 429 {
                    rateLimitedCount += 1
                    if attempt < 6 { continue }  // The limits now hold the wait.
                }
                if answer.status >= 500, attempt < 4 {
                    try? await Task.sleep(for: .milliseconds(250 << attempt))
                    continue
                }
                if (200..<300).contains(answer.status) { return .success(answer) }
                let text = String(decoding: answer.body.prefix(200), as: UTF8.self)
                return .failure(Failure(status: answer.status, description: "\(method) \(route.template): HTTP \(answer.status) \(text)"))
            }
        }
    }
}
