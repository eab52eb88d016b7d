import Foundation
import Synchronization
import WhisperChat
import WhisperCore
import WhisperSystem
import WhisperJSON

/// Where and how to call the LLM, from the character's environment.
public struct LLMConfiguration: Sendable, Equatable {
    public var endpoint: String
    public var apiKey: String?
    public var model: String
    public var temperature: Double?
    public var maxTokens: Int
    public var connectTimeoutSeconds: Double
    public var totalTimeoutSeconds: Double
    /// Attempts after the first, for 429, 5xx and connection failures.
    public var retries: Int

    /// Default base URLs of `LLM_PROVIDER`.
    public static let presets = [
        "openai": "https://api.openai.com/v1", "openrouter": "https://openrouter.ai/api/v1",
        "ollama": "http://127.0.0.1:11434/v1", "lmstudio": "http://127.0.0.1:1234/v1",
    ]

    /// The configuration, or what is missing (for the 503 and the `llm` facet).
    public static func from(_ environment: [String: String]) -> Result<LLMConfiguration, LLMNotConfigured> {
        func value(_ key: String) -> String? { environment[key].flatMap { $0.isEmpty ? nil : $0 } }
        let provider = value("LLM_PROVIDER")?.lowercased()
        if let provider, presets[provider] == nil, value("LLM_BASE_URL") == nil {
            return .failure(
                LLMNotConfigured(
                    "LLM_PROVIDER=\(provider) is not one of \(presets.keys.sorted().joined(separator: ", ")); set LLM_BASE_URL"))
        }
        guard let base = value("LLM_BASE_URL") ?? provider.flatMap({ presets[$0] }) else {
            return .failure(LLMNotConfigured("set LLM_BASE_URL (or LLM_PROVIDER), LLM_MODEL_NAME and, for a hosted API, LLM_API_KEY"))
        }
        guard let model = value("LLM_MODEL_NAME") else {
            return .failure(LLMNotConfigured("LLM_MODEL_NAME is not set (the model to ask at \(base))"))
        }
        let apiKey = value("LLM_API_KEY")
        let isHosted = provider == "openai" || provider == "openrouter"
        if isHosted, apiKey == nil { return .failure(LLMNotConfigured("LLM_API_KEY is not set (\(provider!) needs one)")) }
        let loopback = isLoopback(base)
        return .success(
            LLMConfiguration(
                endpoint: chatCompletionsURL(base), apiKey: apiKey, model: model,
                temperature: value("LLM_TEMPERATURE").flatMap(Double.init), maxTokens: value("LLM_MAX_TOKENS").flatMap(Int.init) ?? 512,
                connectTimeoutSeconds: value("LLM_CONNECT_TIMEOUT").flatMap(Double.init) ?? 10,
                totalTimeoutSeconds: value("LLM_TIMEOUT").flatMap(Double.init) ?? (loopback ? 180 : 60),
                retries: value("LLM_RETRIES").flatMap(Int.init) ?? 2))
    }

    /// `{"max_tokens":…,"messages":[{"content":…,"role":…},…],"model":…,"stream":false[,"temperature":…]}`,
    /// written directly: through `JSONText`'s `[String: Any]` (a dictionary per message, cast
    /// back at every level) it was a tenth of a chat's CPU.
    public func requestBody(_ messages: [ChatMessage]) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(messages.reduce(256) { $0 + $1.content.utf8.count + 32 })
        body += #"{"max_tokens":"#.utf8
        body += String(maxTokens).utf8
        body += #","messages":["#.utf8
        for (index, message) in messages.enumerated() {
            body += (index == 0 ? #"{"content":"# : #",{"content":"#).utf8
            JSONText.appendString(message.content, to: &body)
            body += #","role":"#.utf8
            JSONText.appendString(message.role, to: &body)
            body.append(UInt8(ascii: "}"))
        }
        body += #"],"model":"#.utf8
        JSONText.appendString(model, to: &body)
        body += #","stream":false"#.utf8
        if let temperature = temperature, temperature.isFinite {
            body += #","temperature":"#.utf8
            body += "\(temperature)".utf8
        }
        body.append(UInt8(ascii: "}"))
        return body
    }

    /// `{base}/chat/completions` with exactly one `/v1`: `http://h:8080` and `http://h:8080/v1/`
    /// both give `http://h:8080/v1/chat/completions`; a base with another path is kept.
    static func chatCompletionsURL(_ base: String) -> String {
        var trimmed = base
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        if trimmed.hasSuffix("/chat/completions") { return trimmed }
        let afterScheme = trimmed.range(of: "://").map { trimmed[$0.upperBound...] } ?? trimmed[...]
        let hasPath = afterScheme.contains("/")
        return hasPath ? trimmed + "/chat/completions" : trimmed + "/v1/chat/completions"
    }

    static func isLoopback(_ url: String) -> Bool {
        guard let host = URLComponents(string: url)?.host?.lowercased() else { return false }
        return host == "localhost" || host.hasPrefix("127.") || host == "::1" || host == "[::1]"
    }
}

public struct LLMNotConfigured: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    /// Always starts `not configured:` (the facet reads `llm:down:not configured: …`).
    init(_ problem: String) { self.description = "not configured: " + problem }
}

public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

public struct LLMReply: Sendable, Equatable {
    public var content: String
    /// The model the server says answered.
    public var model: String
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var attempts: Int
}

public struct LLMError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case timeout
        case connection
        case rateLimited = "rate_limited"
        case server = "server_error"
        case client = "client_error"
        case badResponse = "bad_response"
    }

    public var kind: Kind
    public var description: String
    public var status: Int?
}

/// An OpenAI-compatible `POST …/chat/completions` client on libcurl's multi interface
/// (`CurlMulti`: every call in flight on one thread): connect and total timeouts, retries of
/// 429/5xx/connection failures with exponential backoff that honours `Retry-After`, and the API
/// key only ever in a request header (never in a message).
public final class LLMClient: Sendable {
    public let configuration: LLMConfiguration
    private let http: CurlMulti

    public init(configuration: LLMConfiguration) throws {
        self.configuration = configuration
        self.http = try CurlMulti()
    }

    /// Asks for one reply; `completion` runs on the client's thread and must not block.
    /// Retries what can succeed later; a 4xx other than 429 fails at once.
    public func complete(_ messages: [ChatMessage], completion: @escaping @Sendable (Result<LLMReply, LLMError>) -> Void) {
        attempt(1, body: configuration.requestBody(messages), started: Self.now(), delay: 0, completion: completion)
    }

    private func attempt(
        _ number: Int, body: [UInt8], started: Double, delay: Double, completion: @escaping @Sendable (Result<LLMReply, LLMError>) -> Void
    ) {
        var headers = ["Content-Type: application/json", "Accept: application/json"]
        if let key = configuration.apiKey { headers.append("Authorization: Bearer \(key)") }
        let total = configuration.totalTimeoutSeconds
        let remaining = total - (Self.now() - started) - delay
        let request = CurlHTTP.Request(
            method: "POST", url: configuration.endpoint, headers: headers, body: body,
            connectTimeout: configuration.connectTimeoutSeconds, timeout: max(1, remaining), keptHeaders: ["retry-after"])
        http.submit(request, after: delay) { [self] outcome in
            switch Self.interpret(outcome) {
            case .success(var reply):
                reply.attempts = number
                completion(.success(reply))
            case .failure(let failure):
                let retriable = failure.error.kind == .rateLimited || failure.error.kind == .server || failure.error.kind == .connection
                guard retriable, number <= configuration.retries else { return completion(.failure(failure.error)) }
                let backoff = min(8, 0.5 * pow(2, Double(number - 1))) * Double.random(in: 0.9...1.1)
                let wait = min(30, failure.retryAfter ?? backoff)
                guard Self.now() - started + wait < total else { return completion(.failure(failure.error)) }
                attempt(number + 1, body: body, started: started, delay: wait, completion: completion)
            }
        }
    }

    private static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    private struct Failure: Error {
        var error: LLMError
        var retryAfter: Double?
    }

    private static func interpret(_ outcome: Result<CurlHTTP.Answer, CurlHTTP.Failure>) -> Result<LLMReply, Failure> {
        let answer: CurlHTTP.Answer
        switch outcome {
        case .failure(let failure):
            let kind: LLMError.Kind = failure.timedOut ? .timeout : .connection
            return .failure(Failure(error: LLMError(kind: kind, description: "\(kind == .timeout ? "timed out" : "cannot reach the LLM"): \(failure)")))
        case .success(let value):
            answer = value
        }
        let status = answer.status
        let retryAfter = answer.headers["retry-after"].flatMap(Self.retryAfterSeconds)
        let text = String(decoding: answer.body.prefix(300), as: UTF8.self)
        switch status {
        case 200..<300:
            return Self.parseReply(answer.body).mapError { Failure(error: $0) }
        case 429:
            return .failure(Failure(error: LLMError(kind: .rateLimited, description: "LLM rate limit (HTTP 429): \(text)", status: status), retryAfter: retryAfter))
        case 500...:
            return .failure(Failure(error: LLMError(kind: .server, description: "LLM server error (HTTP \(status)): \(text)", status: status), retryAfter: retryAfter))
        default:
            return .failure(Failure(error: LLMError(kind: .client, description: "LLM refused the request (HTTP \(status)): \(text)", status: status)))
        }
    }

    static func parseReply(_ body: [UInt8]) -> Result<LLMReply, LLMError> {
        let object = try? JSONValue.parse(body)
        guard let object, let content = object["choices"].arrayValue.first?["message"]["content"].stringValue else {
            return .failure(LLMError(kind: .badResponse, description: "the LLM's answer has no choices[0].message.content: \(String(decoding: body.prefix(200), as: UTF8.self))"))
        }
        func count(_ value: JSONValue) -> Int? {
            if case .int(let number) = value { return Int(exactly: number) }
            return nil
        }
        let usage = object["usage"]
        return .success(
            LLMReply(
                content: content, model: object["model"].stringValue ?? "", promptTokens: count(usage["prompt_tokens"]),
                completionTokens: count(usage["completion_tokens"]), attempts: 1))
    }

    /// `Retry-After: 7` or an HTTP date.
    static func retryAfterSeconds(_ value: String) -> Double? {
        let text = value.trimmingCharacters(in: .whitespacesAndNewlines)
        if let seconds = Double(text) { return max(0, seconds) }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        return formatter.date(from: text).map { max(0, $0.timeIntervalSinceNow) }
    }
}
