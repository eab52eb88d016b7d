import Foundation
import Glibc
import Testing
import WhisperSystem

/// The HTTP server on a real loop (its own thread) and real loopback sockets.
@Suite struct HTTPServerTests {
    /// A server answering `200 ok` with the given idle timeout; stopped when the body returns.
    private func withServer(idleTimeout: Double, _ body: (Int) throws -> Void) throws {
        let port = Self.freePort()
        let ready = DispatchSemaphore(value: 0)
        let stopFD = EventFD.make()
        let finished = DispatchSemaphore(value: 0)
        Thread {
            defer { finished.signal() }
            guard let loop = try? EventLoop(),
                let server = try? HTTPServer(loop: loop, host: "127.0.0.1", port: port, idleTimeoutSeconds: idleTimeout, handler: { _ in
                    HTTPServer.Response(status: 200, body: "ok")
                }),
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

    private func connectTo(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
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
}
