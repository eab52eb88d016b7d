import Foundation
import Glibc
import Testing
import WhisperSystem

/// The HTTP server on a real loop (its own thread) and real loopback sockets.
@Suite struct HTTPServerTests {
    /// A server answering `200 ok` (or what `handler` says) with the given idle timeout; stopped
    /// when the body returns.
    private func withServer(
        idleTimeout: Double,
        handler: @escaping @Sendable (HTTPServer.Request) -> HTTPServer.Response = { _ in HTTPServer.Response(status: 200, body: "ok") },
        _ body: (Int) throws -> Void
    ) throws {
        let port = Self.freePort()
        let ready = DispatchSemaphore(value: 0)
        let stopFD = EventFD.make()
        let finished = DispatchSemaphore(value: 0)
        Thread {
            defer { finished.signal() }
            guard let loop = try? EventLoop(),
                let server = try? HTTPServer(loop: loop, host: "127.0.0.1", port: port, idleTimeoutSeconds: idleTimeout, handler: handler),
                (try? loop.add(stopFD, .readable, { _ in loop.stop() })) != nil
            else {
                ready.signal()
                return
            }
            ready.signal()
            loop.run()
            server.close()
        }.start()
        ready.wait()
        defer {
            EventFD.signal(stopFD)
            finished.wait()
            close(stopFD)
        }
        try body(port)
    }

    private static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 ? getsockname(fd, pointer, &length) : -1
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// A connected client; `receiveBuffer` (set before connecting, so the window is made for it)
    /// makes a slow reader.
    private func connectTo(_ port: Int, receiveBuffer: Int32? = nil) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        return fd
    }

    private func send(_ fd: Int32, _ text: String) {
        _ = text.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until the server closes (or the 5 s receive timeout); the bytes and when it ended.
    private func readToEnd(_ fd: Int32) -> (text: String, closed: Bool) {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { return (String(decoding: bytes, as: UTF8.self), true) }
            if count < 0 { return (String(decoding: bytes, as: UTF8.self), false) }
            bytes += buffer[0..<count]
        }
    }

    @Test func aStalledRequest_andAnIdleKeepAlive_areClosedAfterTheIdleTimeout() throws {
        try withServer(idleTimeout: 0.3) { port in
            let stalled = connectTo(port)
            defer { close(stalled) }
            send(stalled, "GET /health HTTP/1.1\r\nHost: x\r\n")  // never finished
            let idle = connectTo(port)
            defer { close(idle) }
            send(idle, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")  // answered, then kept open
            let started = Date()
            let stalledEnd = readToEnd(stalled)
            let idleEnd = readToEnd(idle)
            let waited = Date().timeIntervalSince(started)
            #expect(stalledEnd.closed && stalledEnd.text.isEmpty)
            #expect(idleEnd.closed && idleEnd.text.hasPrefix("HTTP/1.1 200 OK"))
            #expect(waited >= 0.25 && waited < 3, "closed after \(waited) s")
        }
    }

    @Test func aClientThatKeepsTalking_isNotCut() throws {
        try withServer(idleTimeout: 0.3) { port in
            let fd = connectTo(port)
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            for _ in 0..<6 {
                send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(recv(fd, &buffer, buffer.count, 0) > 0)
                usleep(100_000)  // 0.6 s in all, twice the timeout, never 0.3 s silent
            }
        }
    }

    /// One response off a keep-alive connection: its head, and a body of its Content-Length
    /// (none for a HEAD request). `pending` holds what was read beyond it.
    private func readResponse(_ fd: Int32, _ pending: inout [UInt8], headOnly: Bool = false) -> (head: String, body: [UInt8])? {
        var buffer = [UInt8](repeating: 0, count: 65536)
        func fill() -> Bool {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count <= 0 { return false }
            pending += buffer[0..<count]
            return true
        }
        let separator: [UInt8] = Array("\r\n\r\n".utf8)
        var headEnd: Int?
        while headEnd == nil {
            headEnd = pending.count < 4 ? nil : (0...(pending.count - 4)).first { Array(pending[$0..<($0 + 4)]) == separator }
            if headEnd == nil, !fill() { return nil }
        }
        let head = String(decoding: pending[0..<headEnd!], as: UTF8.self)
        pending.removeFirst(headEnd! + 4)
        guard let lengthLine = head.split(separator: "\r\n").first(where: { $0.lowercased().hasPrefix("content-length:") }),
            let length = Int(lengthLine.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
        else { return nil }
        if headOnly { return (head, []) }
        while pending.count < length { if !fill() { return nil } }
        let body = Array(pending[0..<length])
        pending.removeFirst(length)
        return (head, body)
    }

    /// A large body kept in a memory file goes out by sendfile: whole and unchanged, to
    /// pipelined requests on one connection whose small receive buffer makes the server wait
    /// (a partial sendfile resumed), with a plain answer between and a HEAD that gets only
    /// the length.
    @Test func aFileBody_goesOutWhole_toPipelinedRequests_andASlowReader() throws {
        // No two nearby offsets alike, so a byte sent from the wrong offset shows.
        let payload = (0..<(3 << 20) + 12345).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 13) }
        let file = try #require(HTTPServer.FileBody(payload, name: "test-body"))
        #expect(file.bytes() == payload)
        try withServer(idleTimeout: 10, handler: { request in
            request.path == "/big" ? HTTPServer.Response(status: 200, contentType: "application/octet-stream", file: file)
                : HTTPServer.Response(status: 200, body: "small")
        }) { port in
            let fd = connectTo(port, receiveBuffer: 65536)
            defer { close(fd) }
            send(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n"
                + "HEAD /big HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            var pending: [UInt8] = []
            let first = try #require(readResponse(fd, &pending))
            #expect(first.head.hasPrefix("HTTP/1.1 200 OK"))
            #expect(first.head.contains("Content-Length: \(payload.count)"))
            #expect(first.body == payload)
            let between = try #require(readResponse(fd, &pending))
            #expect(between.body == Array("small".utf8))
            let head = try #require(readResponse(fd, &pending, headOnly: true))
            #expect(head.head.contains("Content-Length: \(payload.count)"))
            let last = try #require(readResponse(fd, &pending))
            #expect(last.body == payload)
            #expect(last.head.contains("Connection: close"))
            #expect(pending.isEmpty)
            let end = readToEnd(fd)
            #expect(end.closed && end.text.isEmpty)

            // A client that goes away mid-body leaves the server serving the next one.
            let quitter = connectTo(port, receiveBuffer: 65536)
            send(quitter, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            var some = [UInt8](repeating: 0, count: 4096)
            #expect(recv(quitter, &some, some.count, 0) > 0)
            close(quitter)
            let next = connectTo(port)
            defer { close(next) }
            send(next, "GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            var nextPending: [UInt8] = []
            #expect(readResponse(next, &nextPending)?.body == payload)
        }
    }
}
