import CWorkerLibs
import Foundation
import Synchronization
import WhisperSystem

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

/// An OpenAI-compatible `POST …/chat/completions` client on libcurl: connect and total
/// timeouts, retries of 429/5xx/connection failures with exponential backoff that honours
/// `Retry-After`, and the API key only ever in a request header (never in a message).
/// Blocking: call it from a worker thread. Easy handles are pooled so connections (and TLS
/// sessions) are reused.
public final class LLMClient: Sendable {
    public let configuration: LLMConfiguration
    private let idleHandles = Mutex<[CurlHandle]>([])

    /// A libcurl easy handle. Only one thread uses one at a time: it is taken out of the pool
    /// for a request and put back after.
    private struct CurlHandle: @unchecked Sendable {
        // @unchecked: the handle moves between threads only through the pool's lock, and is
        // used by one thread at a time (libcurl's rule for easy handles).
        let raw: UnsafeMutableRawPointer
    }

    /// libcurl's global set-up, once (the worker loaded the library before making a client).
    private static let globalInit: Void = {
        if (try? WorkerLibraries.load()) != nil { _ = wl_curl_global_init(Int(CURL_GLOBAL_ALL)) }
    }()

    public init(configuration: LLMConfiguration) {
        _ = Self.globalInit
        self.configuration = configuration
    }

    deinit {
        idleHandles.withLock { handles in for handle in handles { wl_curl_easy_cleanup(handle.raw) } }
    }

    /// Asks for one reply. Retries what can succeed later; a 4xx other than 429 fails at once.
    public func complete(_ messages: [ChatMessage], sleep: (Double) -> Void = { Thread.sleep(forTimeInterval: $0) }) -> Result<LLMReply, LLMError> {
        let body = requestBody(messages)
        let started = Date()
        var attempt = 0
        while true {
            attempt += 1
            let remaining = configuration.totalTimeoutSeconds - Date().timeIntervalSince(started)
            let outcome = post(body, timeout: max(1, remaining))
            switch outcome {
            case .success(var reply):
                reply.attempts = attempt
                return .success(reply)
            case .failure(let failure):
                let retriable = failure.error.kind == .rateLimited || failure.error.kind == .server || failure.error.kind == .connection
                guard retriable, attempt <= configuration.retries else { return .failure(failure.error) }
                let backoff = min(8, 0.5 * pow(2, Double(attempt - 1))) * Double.random(in: 0.9...1.1)
                let delay = min(30, failure.retryAfter ?? backoff)
                guard Date().timeIntervalSince(started) + delay < configuration.totalTimeoutSeconds else { return .failure(failure.error) }
                sleep(delay)
            }
        }
    }

    private func requestBody(_ messages: [ChatMessage]) -> [UInt8] {
        var object: [String: Any] = [
            "model": configuration.model,
            "messages": messages.map { ["role": $0.role, "content": $0.content] },
            "max_tokens": configuration.maxTokens,
            "stream": false,
        ]
        if let temperature = configuration.temperature { object["temperature"] = temperature }
        return JSONText.serialize(object)
    }

    private struct Failure: Error {
        var error: LLMError
        var retryAfter: Double?
    }

    /// Collects what libcurl hands the callbacks.
    private final class Exchange {
        var body: [UInt8] = []
        var retryAfter: Double?
        let limit = 8 << 20
    }

    private func post(_ body: [UInt8], timeout: Double) -> Result<LLMReply, Failure> {
        let handle = idleHandles.withLock { $0.popLast() } ?? wl_curl_easy_init().map(CurlHandle.init)
        guard let handle else { return .failure(Failure(error: LLMError(kind: .connection, description: "curl_easy_init failed"))) }
        defer {
            wl_curl_easy_reset(handle.raw)
            idleHandles.withLock { $0.append(handle) }
        }
        let curl = handle.raw
        let exchange = Exchange()
        let context = Unmanaged.passUnretained(exchange).toOpaque()
        var headers: UnsafeMutablePointer<curl_slist>?
        headers = wl_curl_slist_append(headers, "Content-Type: application/json")
        headers = wl_curl_slist_append(headers, "Accept: application/json")
        if let key = configuration.apiKey { headers = wl_curl_slist_append(headers, "Authorization: Bearer \(key)") }
        defer { wl_curl_slist_free_all(headers) }

        _ = wl_curl_set_string(curl, CURLOPT_URL, configuration.endpoint)
        _ = wl_curl_set_pointer(curl, CURLOPT_HTTPHEADER, headers)
        _ = wl_curl_set_long(curl, CURLOPT_POST, 1)
        _ = wl_curl_set_long(curl, CURLOPT_NOSIGNAL, 1)
        _ = wl_curl_set_long(curl, CURLOPT_CONNECTTIMEOUT_MS, Int(configuration.connectTimeoutSeconds * 1000))
        _ = wl_curl_set_long(curl, CURLOPT_TIMEOUT_MS, Int(timeout * 1000))
        _ = wl_curl_set_long(curl, CURLOPT_POSTFIELDSIZE, body.count)
        _ = wl_curl_set_pointer(curl, CURLOPT_WRITEDATA, context)
        _ = wl_curl_set_write_function(curl, CURLOPT_WRITEFUNCTION) { data, size, count, context in
            let exchange = Unmanaged<Exchange>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            guard exchange.body.count + length <= exchange.limit, let data else { return 0 }
            data.withMemoryRebound(to: UInt8.self, capacity: length) { exchange.body.append(contentsOf: UnsafeBufferPointer(start: $0, count: length)) }
            return length
        }
        _ = wl_curl_set_pointer(curl, CURLOPT_HEADERDATA, context)
        _ = wl_curl_set_write_function(curl, CURLOPT_HEADERFUNCTION) { data, size, count, context in
            let exchange = Unmanaged<Exchange>.fromOpaque(context!).takeUnretainedValue()
            let length = size * count
            guard let data else { return length }
            let line = String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
            if line.lowercased().hasPrefix("retry-after:") {
                exchange.retryAfter = LLMClient.retryAfterSeconds(String(line.dropFirst("retry-after:".count)))
            }
            return length
        }
        let code = body.withUnsafeBufferPointer { bytes -> CURLcode in
            _ = wl_curl_set_pointer(curl, CURLOPT_POSTFIELDS, UnsafeMutableRawPointer(mutating: bytes.baseAddress))
            return wl_curl_easy_perform(curl)
        }
        guard code == CURLE_OK else {
            let kind: LLMError.Kind = code == CURLE_OPERATION_TIMEDOUT ? .timeout : .connection
            let reason = String(cString: wl_curl_easy_strerror(code))
            return .failure(Failure(error: LLMError(kind: kind, description: "\(kind == .timeout ? "timed out" : "cannot reach the LLM"): \(reason)")))
        }
        var status = 0
        _ = wl_curl_get_long(curl, CURLINFO_RESPONSE_CODE, &status)
        let text = String(decoding: exchange.body.prefix(300), as: UTF8.self)
        switch status {
        case 200..<300:
            return Self.parseReply(exchange.body).mapError { Failure(error: $0) }
        case 429:
            return .failure(Failure(error: LLMError(kind: .rateLimited, description: "LLM rate limit (HTTP 429): \(text)", status: status), retryAfter: exchange.retryAfter))
        case 500...:
            return .failure(Failure(error: LLMError(kind: .server, description: "LLM server error (HTTP \(status)): \(text)", status: status), retryAfter: exchange.retryAfter))
        default:
            return .failure(Failure(error: LLMError(kind: .client, description: "LLM refused the request (HTTP \(status)): \(text)", status: status)))
        }
    }

    static func parseReply(_ body: [UInt8]) -> Result<LLMReply, LLMError> {
        guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
            let choices = object["choices"] as? [[String: Any]], let message = choices.first?["message"] as? [String: Any],
            let content = message["content"] as? String
        else {
            return .failure(LLMError(kind: .badResponse, description: "the LLM's answer has no choices[0].message.content: \(String(decoding: body.prefix(200), as: UTF8.self))"))
        }
        let usage = object["usage"] as? [String: Any]
        return .success(
            LLMReply(
                content: content, model: object["model"] as? String ?? "", promptTokens: usage?["prompt_tokens"] as? Int,
                completionTokens: usage?["completion_tokens"] as? Int, attempts: 1))
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
