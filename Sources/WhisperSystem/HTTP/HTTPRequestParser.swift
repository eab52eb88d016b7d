/// Reading requests: one request off the front of the bytes a connection received, strictly by
/// RFC 9112. Whatever two parsers could read differently (a proxy in front and this server) is
/// refused rather than guessed: that difference is what request smuggling uses.
extension HTTPServer {
    public enum ParseResult {
        /// The head is not all in yet (and nothing in it so far is wrong).
        case incomplete
        /// The head is in and valid; its body of `contentLength` bytes is not (the connection is
        /// now reading a body, with the body's deadline).
        case awaitingBody(headLength: Int, contentLength: Int)
        /// 400 and close; the reason names the rule broken.
        case invalid(String)
        /// A `Content-Length` over ``maxBodyBytes`` (413, not read).
        case tooLarge
        /// The request, how many bytes of the input it took, and whether the client keeps the
        /// connection open (HTTP/1.1 unless `Connection: close`; 1.0 only with `keep-alive`).
        case complete(Request, length: Int, keepAlive: Bool)
    }

    /// A request's head (request line and header lines, with their CRLFs) may be this long.
    public static let maxHeadBytes = 16384
    /// One line of the head may be this long.
    public static let maxLineBytes = 8192
    /// A body may be this long.
    public static let maxBodyBytes = 1 << 20

    /// One request off the front of `bytes` (public for the fuzzer). Works on the bytes, with
    /// no String splitting or generic searching: every request of a busy scraper pays for it.
    public static func parse(_ bytes: [UInt8]) -> ParseResult {
        bytes.withUnsafeBufferPointer { parse(buffer: $0) }
    }

    private static let carriageReturn: UInt8 = 13
    private static let lineFeed: UInt8 = 10

    private static func parse(buffer bytes: UnsafeBufferPointer<UInt8>) -> ParseResult {
        // The head's lines, split at CRLF, up to the empty line that ends it. A CR or LF alone, a
        // line or a head over its limit is refused as soon as it is seen, not when the head ends.
        var lines: [Range<Int>] = []
        var lineStart = 0
        var index = 0
        var headLength: Int?
        while index < bytes.count {
            let byte = bytes[index]
            if byte == lineFeed { return .invalid("bare LF in the head") }
            if byte != carriageReturn {
                index += 1
                if index - lineStart > maxLineBytes { return .invalid("header line too long") }
                continue
            }
            guard index + 1 < bytes.count else { break }
            guard bytes[index + 1] == lineFeed else { return .invalid("bare CR in the head") }
            if index == lineStart, !lines.isEmpty {
                headLength = index + 2
                break
            }
            // An empty line before the request line is skipped (RFC 9112 section 2.2).
            if index > lineStart { lines.append(lineStart..<index) }
            index += 2
            lineStart = index
            if index > maxHeadBytes { return .invalid("headers too large") }
        }
        guard let headLength else { return bytes.count > maxHeadBytes ? .invalid("headers too large") : .incomplete }
        if headLength > maxHeadBytes + 2 { return .invalid("headers too large") }

        guard let requestLine = RequestLine(bytes, lines[0]) else { return .invalid("bad request line") }

        var headers: [(String, String)] = []
        headers.reserveCapacity(lines.count - 1)
        var contentLength: Int?
        var connectionValues: [Range<Int>] = []
        var hasTransferEncoding = false
        for line in lines.dropFirst() {
            // obs-fold (a line that continues the one before) is refused, not unfolded.
            if bytes[line.lowerBound] == 32 || bytes[line.lowerBound] == 9 { return .invalid("obsolete line folding") }
            var colon = line.lowerBound
            while colon < line.upperBound, isTokenCharacter(bytes[colon]) { colon += 1 }
            guard colon > line.lowerBound, colon < line.upperBound, bytes[colon] == 58 else { return .invalid("bad header name") }
            let name = line.lowerBound..<colon
            let value = trimmed(bytes, (colon + 1)..<line.upperBound)
            for position in value where !isFieldValueCharacter(bytes[position]) { return .invalid("bad header value") }
            headers.append((text(bytes, name), text(bytes, value)))
            if equalsIgnoringCase(bytes, name, "content-length") {
                switch decimal(bytes, value) {
                case nil: return .invalid("bad content-length")
                case let length?:
                    if let contentLength, contentLength != length { return .invalid("conflicting content-length") }
                    contentLength = length
                }
            }
            if equalsIgnoringCase(bytes, name, "transfer-encoding") { hasTransferEncoding = true }
            if equalsIgnoringCase(bytes, name, "connection") { connectionValues.append(value) }
        }
        if hasTransferEncoding {
            return .invalid(contentLength == nil ? "chunked bodies are not supported" : "content-length with transfer-encoding")
        }
        let length = contentLength ?? 0
        guard length <= maxBodyBytes else { return .tooLarge }
        guard bytes.count - headLength >= length else { return .awaitingBody(headLength: headLength, contentLength: length) }

        var sawKeepAlive = false
        var sawClose = false
        for value in connectionValues {
            var tokenStart = value.lowerBound
            for position in value.lowerBound...value.upperBound where position == value.upperBound || bytes[position] == 44 {
                let token = trimmed(bytes, tokenStart..<position)
                if equalsIgnoringCase(bytes, token, "keep-alive") { sawKeepAlive = true }
                if equalsIgnoringCase(bytes, token, "close") { sawClose = true }
                tokenStart = position + 1
            }
        }
        let target = requestLine.target
        let questionMark = target.first { bytes[$0] == 63 }
        return .complete(
            Request(
                method: text(bytes, requestLine.method), path: text(bytes, target.lowerBound..<(questionMark ?? target.upperBound)),
                query: questionMark.map { text(bytes, ($0 + 1)..<target.upperBound) } ?? "", headers: headers,
                body: Array(bytes[headLength..<(headLength + length)])),
            length: headLength + length, keepAlive: requestLine.isHTTP10 ? sawKeepAlive : !sawClose)
    }

    /// `method SP request-target SP HTTP/1.x`: one space each, a token for the method, visible
    /// ASCII for the target.
    private struct RequestLine {
        let method: Range<Int>
        let target: Range<Int>
        let isHTTP10: Bool

        init?(_ bytes: UnsafeBufferPointer<UInt8>, _ line: Range<Int>) {
            var position = line.lowerBound
            while position < line.upperBound, HTTPServer.isTokenCharacter(bytes[position]) { position += 1 }
            guard position > line.lowerBound, position < line.upperBound, bytes[position] == 32 else { return nil }
            method = line.lowerBound..<position
            position += 1
            let targetStart = position
            while position < line.upperBound, (33...126).contains(bytes[position]) { position += 1 }
            guard position > targetStart, position < line.upperBound, bytes[position] == 32 else { return nil }
            target = targetStart..<position
            let version = (position + 1)..<line.upperBound
            guard version.count == 8, HTTPServer.startsWith(bytes, version, "HTTP/1."), (48...57).contains(bytes[version.upperBound - 1]) else {
                return nil
            }
            isHTTP10 = bytes[version.upperBound - 1] == 48
        }
    }

    /// tchar (RFC 9110 section 5.6.2): what a method or a header name is made of.
    public static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case 48...57, 65...90, 97...122: true
        case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: true  // !#$%&'*+-.^_`|~
        default: false
        }
    }

    /// A field value's bytes: visible ASCII, space, tab and obs-text; no other control byte.
    private static func isFieldValueCharacter(_ byte: UInt8) -> Bool {
        byte == 9 || (byte >= 32 && byte != 127)
    }

    /// `1*DIGIT`, nothing else (no sign, no space, no list); capped just above the body limit
    /// so that no length overflows. nil when it is not a number.
    private static func decimal(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int? {
        guard !range.isEmpty else { return nil }
        var value = 0
        for position in range {
            let byte = bytes[position]
            guard (48...57).contains(byte) else { return nil }
            value = min(value * 10 + Int(byte - 48), maxBodyBytes + 1)
        }
        return value
    }

    private static func text(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    private static func trimmed(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Range<Int> {
        var lower = range.lowerBound
        var upper = range.upperBound
        while lower < upper, bytes[lower] == 32 || bytes[lower] == 9 { lower += 1 }
        while upper > lower, bytes[upper - 1] == 32 || bytes[upper - 1] == 9 { upper -= 1 }
        return lower..<upper
    }

    private static func startsWith(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ prefix: StaticString) -> Bool {
        guard range.count >= prefix.utf8CodeUnitCount else { return false }
        for offset in 0..<prefix.utf8CodeUnitCount where bytes[range.lowerBound + offset] != prefix.utf8Start[offset] { return false }
        return true
    }

    /// ASCII case-insensitive equality with a lower-case `name`.
    private static func equalsIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ name: StaticString) -> Bool {
        guard range.count == name.utf8CodeUnitCount else { return false }
        for offset in 0..<range.count {
            var byte = bytes[range.lowerBound + offset]
            if byte >= 65, byte <= 90 { byte += 32 }
            if byte != name.utf8Start[offset] { return false }
        }
        return true
    }
}
