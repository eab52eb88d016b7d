import Testing
import WhisperCore
@testable import WhisperSystem

/// The request parser, byte by byte: what it accepts, what it refuses and why, and that it
/// agrees with the plain String-based reading it replaced (kept below as the oracle).
@Suite struct HTTPParseTests {
    private func parse(_ text: String) -> HTTPServer.ParseResult { HTTPServer.parse(Array(text.utf8)) }

    private func complete(_ text: String) -> (HTTPServer.Request, length: Int, keepAlive: Bool)? {
        if case .complete(let request, let length, let keepAlive) = parse(text) { return (request, length, keepAlive) }
        return nil
    }

    private func invalidReason(_ text: String) -> String? {
        if case .invalid(let reason) = parse(text) { return reason }
        return nil
    }

    @Test func aSimpleGet() throws {
        let (request, length, keepAlive) = try #require(complete("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
        #expect(request.method == "GET")
        #expect(request.path == "/metrics")
        #expect(request.query == "")
        #expect(request.headers.map(\.0) == ["Host"])
        #expect(request.headers.map(\.1) == ["x"])
        #expect(request.body.isEmpty)
        #expect(length == "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8.count)
        #expect(keepAlive)
    }

    @Test func queryBodyAndPipelinedRest() throws {
        let text = "POST /api/chat?user=a+b&x=1 HTTP/1.1\r\ncontent-LENGTH:  5 \r\n\r\nhelloGET / HTTP/1.1\r\n\r\n"
        let (request, length, _) = try #require(complete(text))
        #expect(request.path == "/api/chat")
        #expect(request.query == "user=a+b&x=1")
        #expect(request.queryItems["user"] == "a b")
        #expect(request.body == Array("hello".utf8))
        #expect(request.header("Content-Length") == "5")
        #expect(length == text.utf8.count - "GET / HTTP/1.1\r\n\r\n".utf8.count)
    }

    @Test func keepAliveFollowsTheVersionAndConnectionTokens() {
        #expect(complete("GET / HTTP/1.1\r\n\r\n")?.keepAlive == true)
        #expect(complete("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")?.keepAlive == false)
        #expect(complete("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n")?.keepAlive == false)
        #expect(complete("GET / HTTP/1.0\r\n\r\n")?.keepAlive == false)
        #expect(complete("GET / HTTP/1.0\r\nconnection:keep-alive\r\n\r\n")?.keepAlive == true)
        #expect(complete("GET / HTTP/1.0\r\nConnection: x\r\nConnection: Keep-Alive \r\n\r\n")?.keepAlive == true)
    }

    @Test func incompleteUntilTheHeadAndTheBodyAreIn() {
        for text in ["", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\n\r", "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabc"] {
            guard case .incomplete = parse(text) else {
                Issue.record("not incomplete: \(text.debugDescription)")
                continue
            }
        }
    }

    @Test func badRequestsAreNamed() {
        #expect(invalidReason("GET /\r\n\r\n") == "bad request line")
        #expect(invalidReason("GET / HTTP/2\r\n\r\n") == "bad request line")
        #expect(invalidReason("GET / HTTP/1.1 extra\r\n\r\n") == "bad request line")
        #expect(invalidReason("GET / HTTP/1.1\r\nno colon here\r\n\r\n") == "bad header line")
        #expect(invalidReason("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n") == "bad content-length")
        #expect(invalidReason("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n") == "bad content-length")
        #expect(invalidReason("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == "chunked bodies are not supported")
        #expect(invalidReason(String(repeating: "a", count: 16385)) == "headers too large")
        guard case .tooLarge = parse("POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n") else {
            Issue.record("a body over 1 MiB is not refused")
            return
        }
    }

    @Test func headerLookupIgnoresASCIICaseOnly() throws {
        let (request, _, _) = try #require(complete("GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\nX-\u{212A}: k\r\n\r\n"))
        #expect(request.header("accept-encoding") == "gzip")
        #expect(request.header("ACCEPT-ENCODING") == "gzip")
        #expect(request.header("accept-encodin") == nil)
        #expect(request.header("x-k") == nil)  // The Kelvin sign is not a K.
    }

    /// Thousands of requests built from pieces that matter (versions, spacing, header names in
    /// any case, lengths, stray bytes, cut-off input): the byte parser and the oracle agree.
    @Test func agreesWithTheStringParser() {
        var generator = SplitMix64(seed: 0x5eed)  // Seeded: a failure reproduces.
        let methods = ["GET", "POST", "HEAD", "DELETE", "", "G ET"]
        let targets = ["/", "/metrics", "/v1/characters/elena?x=1&y=2", "/a?b?c", "?", "/%20+"]
        let versions = ["HTTP/1.1", "HTTP/1.0", "HTTP/1.", "HTTP/2", "http/1.1", "HTTP/1.1 "]
        let names = ["Host", "content-length", "Content-Length", "CONNECTION", "Transfer-Encoding", "Accept-Encoding", "X-\u{e9}", ""]
        let values = ["", " 3", "3 ", "0", "12", "-1", "+2", "close", "keep-alive", "Keep-Alive, Upgrade", " ,close, ", "\tgzip\t", "a:b"]
        for _ in 0..<4000 {
            var text = "\(methods.randomElement(using: &generator)!) \(targets.randomElement(using: &generator)!)\(generator.next() % 8 == 0 ? "  " : " ")\(versions.randomElement(using: &generator)!)\r\n"
            for _ in 0..<(generator.next() % 4) {
                if generator.next() % 20 == 0 {
                    text += "no colon\r\n"
                } else {
                    text += "\(names.randomElement(using: &generator)!):\(values.randomElement(using: &generator)!)\r\n"
                }
            }
            text += "\r\n" + String(repeating: "b", count: Int(generator.next() % 16))
            var bytes = Array(text.utf8)
            if generator.next() % 5 == 0 { bytes = Array(bytes.prefix(Int(generator.next() % UInt64(bytes.count + 1)))) }
            let actual = describe(HTTPServer.parse(bytes))
            let expected = describe(Self.oracle(bytes))
            if actual != expected {
                Issue.record("\(String(decoding: bytes, as: UTF8.self).debugDescription): \(actual) != \(expected)")
                return
            }
        }
    }

    private func describe(_ result: HTTPServer.ParseResult) -> String {
        switch result {
        case .incomplete: return "incomplete"
        case .invalid(let reason): return "invalid(\(reason))"
        case .tooLarge: return "tooLarge"
        case .complete(let request, let length, let keepAlive):
            return "complete(\(request.method)|\(request.path)|\(request.query)|\(request.headers.map { "\($0.0)=\($0.1)" })|\(request.body)|\(length)|\(keepAlive))"
        }
    }

    /// The parser as it was (String splitting), for ASCII input the reference.
    private static func oracle(_ bytes: [UInt8]) -> HTTPServer.ParseResult {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headEnd = bytes.firstRange(of: separator) else {
            return bytes.count > 16384 ? .invalid("headers too large") : .incomplete
        }
        let head = String(decoding: bytes[..<headEnd.lowerBound], as: UTF8.self)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1.") else { return .invalid("bad request line") }
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { return .invalid("bad header line") }
            headers.append((String(line[..<colon]), trim(line[line.index(after: colon)...])))
        }
        var length = 0
        if let value = headers.first(where: { $0.0.lowercased() == "content-length" })?.1 {
            guard let parsed = Int(value), parsed >= 0 else { return .invalid("bad content-length") }
            guard parsed <= 1 << 20 else { return .tooLarge }
            length = parsed
        }
        if headers.contains(where: { $0.0.lowercased() == "transfer-encoding" }) {
            return .invalid("chunked bodies are not supported")
        }
        let bodyStart = headEnd.upperBound
        guard bytes.count - bodyStart >= length else { return .incomplete }
        let pathAndQuery = String(requestLine[1]).split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        let tokens = headers.filter { $0.0.lowercased() == "connection" }
            .flatMap { $0.1.lowercased().split(separator: ",").map { trim($0) } }
        let keepAlive = requestLine[2] == "HTTP/1.0" ? tokens.contains("keep-alive") : !tokens.contains("close")
        return .complete(
            HTTPServer.Request(
                method: String(requestLine[0]), path: String(pathAndQuery[0]),
                query: pathAndQuery.count > 1 ? String(pathAndQuery[1]) : "", headers: headers,
                body: Array(bytes[bodyStart..<(bodyStart + length)])),
            length: bodyStart + length, keepAlive: keepAlive)
    }

    private static func trim(_ text: Substring) -> String {
        var text = text
        while text.first == " " || text.first == "\t" { text = text.dropFirst() }
        while text.last == " " || text.last == "\t" { text = text.dropLast() }
        return String(text)
    }
}
