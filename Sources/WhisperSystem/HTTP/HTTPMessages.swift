import CWhisperLinux
import Glibc

/// What a handler gets and gives: the request, the response (bytes, a memory file, a stream or
/// an answer that comes later).
extension HTTPServer {
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var query: String
        public var headers: [(String, String)]
        public var body: [UInt8]
        /// The peer's credentials (Unix sockets only; SO_PEERCRED).
        public var peer: PeerCredentials?

        /// `key=value` pairs of the query string (no percent-decoding beyond `+`/`%20`).
        public var queryItems: [String: String] {
            var items: [String: String] = [:]
            for pair in query.split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let value = parts.count > 1 ? String(parts[1]).replacingPlusAndSpaces() : ""
                items[String(parts[0])] = value
            }
            return items
        }

        /// The first header called `name` (ASCII case-insensitive, as HTTP field names are).
        public func header(_ name: String) -> String? {
            headers.first { Self.equalsIgnoringASCIICase($0.0, name) }?.1
        }

        static func equalsIgnoringASCIICase(_ left: String, _ right: String) -> Bool {
            var rightBytes = right.utf8.makeIterator()
            for byte in left.utf8 {
                guard let other = rightBytes.next() else { return false }
                if byte != other, byte | 0x20 != other | 0x20 || !(97...122).contains(byte | 0x20) { return false }
            }
            return rightBytes.next() == nil
        }
    }

    /// A large body that many clients fetch (`/metrics` of 300 characters is ~430 KB), kept in a
    /// memory file and sent with sendfile(2): the socket takes the file's pages instead of a
    /// copy of the bytes, which was half of the server's CPU and most of its tail latency.
    /// Never written after it is made, because pages in flight are the file's own.
    public final class FileBody: Sendable {
        public let fd: Int32
        public let count: Int

        /// nil when no memory file can be made (the caller sends the bytes instead).
        public init?(_ bytes: [UInt8], name: String = "http-body") {
            let fd = bytes.withUnsafeBytes { whisper_memfd_with_bytes(name, $0.baseAddress, $0.count) }
            guard fd >= 0 else { return nil }
            self.fd = fd
            self.count = bytes.count
        }

        /// The bytes again (for an encoding made later); nil if they cannot be read.
        public func bytes() -> [UInt8]? {
            var bytes = [UInt8](repeating: 0, count: count)
            let read = bytes.withUnsafeMutableBytes { whisper_pread_all(fd, $0.baseAddress, $0.count, 0) }
            return read == count ? bytes : nil
        }

        deinit { Glibc.close(fd) }
    }

    public struct Response {
        public var status: Int
        public var contentType: String
        public var body: [UInt8]
        /// Sent instead of `body` when set (see ``FileBody``).
        public var file: FileBody?
        /// More header lines (`Content-Encoding`, `Vary`).
        public var extraHeaders: [(String, String)] = []
        /// A streamed response: the head and `body` go out, then the connection stays open
        /// and this is called with a stream to write more to (until either side closes).
        public var stream: ((HTTPStream) -> Void)?
        /// An answer that comes later: called at once with a function that sends the real
        /// response, which must be called on the loop's thread, once. If the client has gone
        /// by then, the response is dropped.
        public var deferred: ((@escaping (Response) -> Void) -> Void)?

        /// A response given later (see ``deferred``).
        public static func later(_ start: @escaping (@escaping (Response) -> Void) -> Void) -> Response {
            var response = Response(status: 500, body: "")
            response.deferred = start
            return response
        }

        public init(status: Int, contentType: String = "application/json", body: String, stream: ((HTTPStream) -> Void)? = nil) {
            self.status = status
            self.contentType = contentType
            self.body = Array(body.utf8)
            self.stream = stream
        }

        public init(status: Int, contentType: String, bytes: [UInt8]) {
            self.status = status
            self.contentType = contentType
            self.body = bytes
            self.stream = nil
        }

        public init(status: Int, contentType: String, file: FileBody) {
            self.status = status
            self.contentType = contentType
            self.body = []
            self.file = file
            self.stream = nil
        }

        /// The body's length on the wire.
        public var bodyCount: Int { file?.count ?? body.count }
    }

    /// The open end of a streamed response. Writes never block the loop: a client that does
    /// not keep up (over 1 MiB behind) is disconnected.
    public final class HTTPStream {
        weak var server: HTTPServer?
        let fd: Int32
        public var onClose: (() -> Void)?
        public private(set) var isClosed = false

        init(server: HTTPServer, fd: Int32) {
            self.server = server
            self.fd = fd
        }

        public func write(_ bytes: [UInt8]) {
            guard !isClosed else { return }
            server?.streamWrite(fd, bytes)
        }

        public func close() {
            guard !isClosed else { return }
            server?.finishStream(fd)
        }

        func closed() {
            guard !isClosed else { return }
            isClosed = true
            onClose?()
            onClose = nil
        }
    }
}

extension String {
    func replacingPlusAndSpaces() -> String {
        var text = self
        text = text.split(separator: "+", omittingEmptySubsequences: false).joined(separator: " ")
        return text.split(separator: "%20", omittingEmptySubsequences: false).joined(separator: " ")
    }
}
