import Testing
import WhisperCore
import WhisperRandom
@testable import WhisperSystem

/// The request parser, byte by byte: what it accepts, what it refuses and why, and that it
/// agrees with a plain String-based reading of the same rules (below, as the oracle).
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
        for text in ["", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\n\r", "GET / HTTP/1.1\r\nHost: x\r\n\r"] {
            guard case .incomplete = parse(text) else {
                Issue.record("not incomplete: \(text.debugDescription)")
                continue
            }
        }
        // A complete head whose body is still coming says how long both are.
        let head = "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n"
        guard case .awaitingBody(let headLength, let contentLength) = parse(head + "abc") else {
            Issue.record("a body still coming is not awaited")
            return
        }
        #expect(headLength == head.utf8.count)
        #expect(contentLength == 4)
    }

    @Test func badRequestsAreNamed() {
        #expect(invalidReason("GET /\r\n\r\n") == "bad request line")
        #expect(invalidReason("GET / HTTP/2\r\n\r\n") == "bad request line")
        #expect(invalidReason("GET / HTTP/1.1 extra\r\n\r\n") == "bad request line")
        #expect(invalidReason("GET / HTTP/1.1\r\nno colon here\r\n\r\n") == "bad header name")
        #expect(invalidReason("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n") == "bad content-length")
        #expect(invalidReason("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n") == "bad content-length")
        #expect(invalidReason("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") == "chunked bodies are not supported")
        let line = "X-Filler: " + String(repeating: "a", count: 6000) + "\r\n"
        #expect(invalidReason("GET / HTTP/1.1\r\n" + line + line + line) == "headers too large")
        guard case .tooLarge = parse("POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n") else {
            Issue.record("a body over 1 MiB is not refused")
            return
        }
    }

    /// RFC 9112's rules where a proxy in front and this server could read one request two ways.
    @Test func contentLength_isDigitsOnly_andDuplicatesMustAgree() throws {
        let twice = try #require(complete("POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nhi"))
        #expect(twice.0.body == Array("hi".utf8))
        #expect(invalidReason("POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi!") == "conflicting content-length")
        for value in ["+2", "2 2", "2,2", "0x2", "", "\t", "2.0", "\u{661}"] {  // U+0661 is an Arabic-Indic one
            #expect(invalidReason("POST / HTTP/1.1\r\nContent-Length: \(value)\r\n\r\nhi") == "bad content-length", "\(value.debugDescription)")
        }
        guard case .tooLarge = parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999999\r\n\r\n") else {
            Issue.record("a length past Int is not refused as too large")
            return
        }
        let leadingZeros = try #require(complete("POST / HTTP/1.1\r\nContent-Length: 002\r\n\r\nhi"))
        #expect(leadingZeros.0.body.count == 2)
    }

    @Test func contentLengthWithTransferEncoding_isRefused() {
        #expect(invalidReason("POST / HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nhi") == "content-length with transfer-encoding")
        #expect(invalidReason("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nhi") == "content-length with transfer-encoding")
    }

    @Test func headerNamesAreTokens_andValuesHaveNoControlBytes() throws {
        for line in ["Bad Name: x", "Na(me: x", ": x", "Name : x", "Na\u{e9}me: x", "Name\t: x"] {
            #expect(invalidReason("GET / HTTP/1.1\r\n\(line)\r\n\r\n") == "bad header name", "\(line.debugDescription)")
        }
        for line in ["X: a\u{1}b", "X: a\u{7f}", "X: \u{0}"] {
            #expect(invalidReason("GET / HTTP/1.1\r\n\(line)\r\n\r\n") == "bad header value", "\(line.debugDescription)")
        }
        let tabAndObsText = try #require(complete("GET / HTTP/1.1\r\nX-Tab: a\tb\r\nX-Name: Zo\u{eb}\r\n\r\n"))
        #expect(tabAndObsText.0.header("x-tab") == "a\tb")
        #expect(tabAndObsText.0.header("x-name") == "Zo\u{eb}")
    }

    @Test func obsFold_bareCR_bareLF_andLongLines_areRefusedAsSoonAsSeen() {
        #expect(invalidReason("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n") == "obsolete line folding")
        #expect(invalidReason("GET / HTTP/1.1\r\n\tX: a\r\n\r\n") == "obsolete line folding")
        // Before the head is complete: no need to wait for the rest.
        #expect(invalidReason("GET / HTTP/1.1\rHost") == "bare CR in the head")
        #expect(invalidReason("GET / HTTP/1.1\nHost: x\n\n") == "bare LF in the head")
        #expect(invalidReason("GET / HTTP/1.1\r\nX: a\nb") == "bare LF in the head")
        #expect(invalidReason("GET /" + String(repeating: "a", count: 9000)) == "header line too long")
        #expect(invalidReason("GET / HTTP/1.1\r\nX: " + String(repeating: "a", count: 9000) + "\r\n\r\n") == "header line too long")
        // A CR in a body is the body's business.
        #expect(complete("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na\rb")?.0.body == [97, 13, 98])
    }

    @Test func theRequestLine_isMethodTargetVersion_oneSpaceEach() {
        for line in ["GET  / HTTP/1.1", "GET / HTTP/1.1 ", " GET / HTTP/1.1", "GET / HTTP/1.x", "GET / HTTP/2.0", "GE(T / HTTP/1.1",
            "GET /a\u{7f} HTTP/1.1", "GET /\u{e9} HTTP/1.1", "GET\t/ HTTP/1.1", "GET / HTTP/1.10"]
        {
            #expect(invalidReason(line + "\r\n\r\n") == "bad request line", "\(line.debugDescription)")
        }
        #expect(complete("\r\nGET / HTTP/1.1\r\n\r\n")?.length == 20, "an empty line before the request line is skipped")
        #expect(complete("PATCH /x HTTP/1.1\r\n\r\n")?.0.method == "PATCH")
    }

    @Test func headerLookupIgnoresASCIICaseOnly() throws {
        let (request, _, _) = try #require(complete("GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\nX-K: k\r\n\r\n"))
        #expect(request.header("accept-encoding") == "gzip")
        #expect(request.header("ACCEPT-ENCODING") == "gzip")
        #expect(request.header("accept-encodin") == nil)
        #expect(request.header("x-k") == "k")
        #expect(request.header("x-\u{212A}") == nil)  // The Kelvin sign is not a K.
    }

    /// Thousands of requests built from pieces that matter (versions, spacing, header names in
    /// any case, lengths, stray bytes, cut-off input): the byte parser and the oracle agree.
    @Test func agreesWithTheStringParser() {
        var generator = SplitMix64(seed: 0x5eed)  // Seeded: a failure reproduces.
        let methods = ["GET", "POST", "HEAD", "DELETE", "", "G ET", "GE(T"]
        let targets = ["/", "/metrics", "/v1/characters/elena?x=1&y=2", "/a?b?c", "?", "/%20+"]
        let versions = ["HTTP/1.1", "HTTP/1.0", "HTTP/1.", "HTTP/2", "http/1.1", "HTTP/1.1 ", "HTTP/1.x", "HTTP/1.9"]
        let names = ["Host", "content-length", "Content-Length", "CONNECTION", "Transfer-Encoding", "Accept-Encoding", "X-\u{e9}", "", "Bad Name", " Folded", "X-Ok "]
        let values = ["", " 3", "3 ", "0", "12", "-1", "+2", "close", "keep-alive", "Keep-Alive, Upgrade", " ,close, ", "\tgzip\t", "a:b", "a\u{1}b", "\u{7f}", "2, 2", "003"]
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
        case .awaitingBody(let headLength, let contentLength): return "awaitingBody(\(headLength), \(contentLength))"
        case .invalid(let reason): return "invalid(\(reason))"
        case .tooLarge: return "tooLarge"
        case .complete(let request, let length, let keepAlive):
            return "complete(\(request.method)|\(request.path)|\(request.query)|\(request.headers.map { "\($0.0)=\($0.1)" })|\(request.body)|\(length)|\(keepAlive))"
        }
    }

    /// The same rules read with String splitting, for ASCII input the reference.
    private static func oracle(_ bytes: [UInt8]) -> HTTPServer.ParseResult {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let headEnd = bytes.firstRange(of: separator) else {
            return bytes.count > 16384 ? .invalid("headers too large") : .incomplete
        }
        let head = String(decoding: bytes[..<headEnd.lowerBound], as: UTF8.self)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let requestLine = lines.removeFirst().split(separator: " ", omittingEmptySubsequences: false)
        func isToken(_ text: Substring) -> Bool {
            !text.isEmpty && text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "!#$%&'*+-.^_`|~".contains($0)) }
        }
        guard requestLine.count == 3, isToken(requestLine[0]),
            !requestLine[1].isEmpty, requestLine[1].unicodeScalars.allSatisfy({ (33...126).contains($0.value) }),
            requestLine[2].count == 8, requestLine[2].hasPrefix("HTTP/1."), requestLine[2].last!.isASCII, requestLine[2].last!.isNumber
        else { return .invalid("bad request line") }
        var headers: [(String, String)] = []
        var contentLength: Int?
        var hasTransferEncoding = false
        for line in lines {
            if line.first == " " || line.first == "\t" { return .invalid("obsolete line folding") }
            guard let colon = line.firstIndex(of: ":"), isToken(line[..<colon]) else { return .invalid("bad header name") }
            let value = trim(line[line.index(after: colon)...])
            guard value.unicodeScalars.allSatisfy({ $0 == "\t" || ($0.value >= 32 && $0.value != 127) }) else {
                return .invalid("bad header value")
            }
            headers.append((String(line[..<colon]), value))
            if line[..<colon].lowercased() == "content-length" {
                guard !value.isEmpty, value.allSatisfy({ $0.isASCII && $0.isNumber }), let parsed = Int(value) else {
                    return .invalid("bad content-length")
                }
                if let contentLength, contentLength != parsed { return .invalid("conflicting content-length") }
                contentLength = parsed
            }
            if line[..<colon].lowercased() == "transfer-encoding" { hasTransferEncoding = true }
        }
        if hasTransferEncoding {
            return .invalid(contentLength == nil ? "chunked bodies are not supported" : "content-length with transfer-encoding")
        }
        let length = contentLength ?? 0
        guard length <= 1 << 20 else { return .tooLarge }
        let bodyStart = headEnd.upperBound
        guard bytes.count - bodyStart >= length else { return .awaitingBody(headLength: bodyStart, contentLength: length) }
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
