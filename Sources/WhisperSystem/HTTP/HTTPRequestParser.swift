import CWhisperLinux
import Glibc

/// Reading requests: one request off the front of the bytes a connection received.
extension HTTPServer {
    public enum ParseResult {
        case incomplete
        case invalid(String)
        /// A `Content-Length` over the 1 MiB limit (413, not read).
        case tooLarge
        /// The request, how many bytes of the input it took, and whether the client keeps the
        /// connection open (HTTP/1.1 unless `Connection: close`; 1.0 only with `keep-alive`).
        case complete(Request, length: Int, keepAlive: Bool)
    }

    /// One request off the front of `bytes` (public for the fuzzer). Works on the bytes, with
    /// no String splitting or generic searching: every request of a busy scraper pays for it.
    public static func parse(_ bytes: [UInt8]) -> ParseResult {
        bytes.withUnsafeBufferPointer { parse(buffer: $0) }
    }

    private static func parse(buffer bytes: UnsafeBufferPointer<UInt8>) -> ParseResult {
        guard let headLength = headEnd(bytes) else {
            return bytes.count > 16384 ? .invalid("headers too large") : .incomplete
        }
        // The head's lines, split at CRLF (the first is the request line).
        var lines: [Range<Int>] = []
        var lineStart = 0
        var index = 0
        while index + 1 < headLength {
            if bytes[index] == 13, bytes[index + 1] == 10 {
                lines.append(lineStart..<index)
                index += 2
                lineStart = index
            } else {
                index += 1
            }
        }
        lines.append(lineStart..<headLength)

        // Method, target and version, separated by runs of spaces.
        var words: [Range<Int>] = []
        var wordStart: Int?
        for position in lines[0] {
            if bytes[position] == 32 {
                if let start = wordStart { words.append(start..<position) }
                wordStart = nil
            } else if wordStart == nil {
                wordStart = position
            }
        }
        if let start = wordStart { words.append(start..<lines[0].upperBound) }
        guard words.count == 3, startsWith(bytes, words[2], "HTTP/1.") else { return .invalid("bad request line") }

        var headers: [(String, String)] = []
        headers.reserveCapacity(lines.count - 1)
        var contentLength: Range<Int>?
        var connectionValues: [Range<Int>] = []
        var hasTransferEncoding = false
        for line in lines.dropFirst() {
            guard let colon = line.first(where: { bytes[$0] == 58 }) else { return .invalid("bad header line") }
            let name = line.lowerBound..<colon
            let value = trimmed(bytes, (colon + 1)..<line.upperBound)
            headers.append((text(bytes, name), text(bytes, value)))
            if contentLength == nil, equalsIgnoringCase(bytes, name, "content-length") { contentLength = value }
            if equalsIgnoringCase(bytes, name, "transfer-encoding") { hasTransferEncoding = true }
            if equalsIgnoringCase(bytes, name, "connection") { connectionValues.append(value) }
        }
        var length = 0
        if let contentLength {
            guard let parsed = Int(text(bytes, contentLength)), parsed >= 0 else { return .invalid("bad content-length") }
            guard parsed <= 1 << 20 else { return .tooLarge }
            length = parsed
        }
        if hasTransferEncoding { return .invalid("chunked bodies are not supported") }
        let bodyStart = headLength + 4
        guard bytes.count - bodyStart >= length else { return .incomplete }

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
        let isHTTP10 = words[2].count == 8 && startsWith(bytes, words[2], "HTTP/1.0")
        let target = words[1]
        let questionMark = target.first { bytes[$0] == 63 }
        return .complete(
            Request(
                method: text(bytes, words[0]), path: text(bytes, target.lowerBound..<(questionMark ?? target.upperBound)),
                query: questionMark.map { text(bytes, ($0 + 1)..<target.upperBound) } ?? "", headers: headers,
                body: Array(bytes[bodyStart..<(bodyStart + length)])),
            length: bodyStart + length, keepAlive: isHTTP10 ? sawKeepAlive : !sawClose)
    }

    /// Where the head's blank line (CRLF CRLF) starts.
    private static func headEnd(_ bytes: UnsafeBufferPointer<UInt8>) -> Int? {
        guard let base = bytes.baseAddress else { return nil }
        let offset = whisper_find_blank_line(base, bytes.count)
        return offset < 0 ? nil : offset
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
