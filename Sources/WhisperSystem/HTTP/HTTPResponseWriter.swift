import CWhisperLinux
import Glibc

/// Writing answers: the head, bodies by sendmsg or sendfile, streams; never blocking the loop.
extension HTTPServer {
    func respond(_ fd: Int32, _ connection: Connection, _ response: Response, keepAlive: Bool = false, withBody: Bool = true) {
        connection.isResponding = true
        if let deferred = response.deferred {
            setPhase(connection, .handling)
            deferred { [weak self, weak connection] answer in
                guard let self, let connection, self.connections[fd] === connection, connection.isAwaitingAnswer else { return }
                self.respond(fd, connection, answer, keepAlive: keepAlive, withBody: withBody)
                self.serveInput(fd, connection)
            }
            return
        }
        let keepAlive = keepAlive && response.stream == nil
        let reason = Self.reasons[response.status] ?? "Status"
        let length = response.stream == nil ? "Content-Length: \(response.bodyCount)\r\n" : ""
        let extra = response.extraHeaders.map { "\($0.0): \($0.1)\r\n" }.joined()
        let head = "HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\n"
            + "\(length)\(extra)Connection: \(keepAlive ? "keep-alive" : "close")\r\n\r\n"
        connection.closeAfterFlush = !keepAlive
        connection.enqueue(Array(head.utf8))
        if withBody {
            if let file = response.file { connection.enqueue(file) } else { connection.enqueue(response.body) }
        }
        if let open = response.stream {
            let stream = HTTPStream(server: self, fd: fd)
            connection.stream = stream
            connection.closeAfterFlush = false
            setPhase(connection, .streaming)
            flush(fd, connection)
            if connections[fd] === connection { open(stream) }
            return
        }
        setPhase(connection, .writing(since: Clock.monotonicNanoseconds(), bytes: connection.pendingBytes))
        flush(fd, connection)
    }

    func streamWrite(_ fd: Int32, _ bytes: [UInt8]) {
        guard let connection = connections[fd] else { return }
        connection.enqueue(bytes)
        if connection.pendingBytes > 1 << 20 { return drop(fd) }
        flush(fd, connection)
    }

    func finishStream(_ fd: Int32) {
        guard let connection = connections[fd] else { return }
        connection.closeAfterFlush = true
        flush(fd, connection)
    }

    func flush(_ fd: Int32, _ connection: Connection) {
        while !connection.pending.isEmpty {
            let written = Self.send(fd, connection.pending, from: connection.sentOfFirst)
            if written < 0 {
                if errno == EAGAIN {
                    if !connection.isWaitingToWrite {
                        connection.isWaitingToWrite = true
                        arm(connection, .writable)
                    }
                    return
                }
                if errno == EINTR { continue }
                return drop(fd)
            }
            connection.pendingBytes -= written
            var remaining = written
            while remaining > 0, let first = connection.pending.first {
                let left = first.count - connection.sentOfFirst
                if remaining < left {
                    connection.sentOfFirst += remaining
                    remaining = 0
                } else {
                    remaining -= left
                    connection.pending.removeFirst()
                    connection.sentOfFirst = 0
                }
            }
        }
        if connection.closeAfterFlush { return drop(fd) }
        if connection.isWaitingToWrite {
            connection.isWaitingToWrite = false
            arm(connection, .readable)
        }
        if connection.stream == nil {
            connection.isResponding = false
            let now = Clock.monotonicNanoseconds()
            setPhase(connection, connection.input.isEmpty ? .idle(since: now) : .readingHead(since: now))
        }
    }

    /// One send of what is first in line, the first chunk from `offset`: two byte chunks (a head
    /// and its body) go out together by sendmsg; a head followed by a file body is sent with
    /// MSG_MORE so that it leaves with the body's first segment; a file body goes by sendfile.
    private static func send(_ fd: Int32, _ chunks: [Chunk], from offset: Int) -> Int {
        let first: [UInt8]
        switch chunks[0] {
        case .file(let file):
            return whisper_sendfile(fd, file.fd, Int64(offset), file.count - offset)
        case .bytes(let bytes):
            first = bytes
        }
        return first.withUnsafeBytes { first -> Int in
            var vectors = [iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress! + offset), iov_len: first.count - offset)]
            func sendVectors(_ flags: Int32 = 0) -> Int {
                vectors.withUnsafeMutableBufferPointer { buffer -> Int in
                    var message = msghdr()
                    message.msg_iov = buffer.baseAddress
                    message.msg_iovlen = buffer.count
                    return sendmsg(fd, &message, Int32(MSG_NOSIGNAL) | flags)
                }
            }
            guard chunks.count > 1 else { return sendVectors() }
            switch chunks[1] {
            case .file:
                return sendVectors(Int32(MSG_MORE))
            case .bytes(let secondBytes):
                return secondBytes.withUnsafeBytes { second -> Int in
                    vectors.append(iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress!), iov_len: second.count))
                    return sendVectors()
                }
            }
        }
    }

    static let reasons: [Int: String] = [
        200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request", 403: "Forbidden",
        404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict", 413: "Payload Too Large",
        422: "Unprocessable Entity", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
    ]
}
