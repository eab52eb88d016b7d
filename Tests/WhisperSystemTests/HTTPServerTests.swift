import Foundation
import Glibc
import Testing
import WhisperSystem

/// The HTTP server on a real loop (its own thread) and real loopback sockets.
@Suite struct HTTPServerTests {
    /// A server answering `200 ok` (or what `handler` says) with the given limits; stopped
    /// when the body returns.
    private func withServer(
        limits: HTTPLimits,
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
                let server = try? HTTPServer(loop: loop, host: "127.0.0.1", port: port, limits: limits, handler: handler),
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
    private func connectTo(_ port: Int, receiveBuffer: Int32? = nil, from source: String? = nil) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        if var size = receiveBuffer { setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size)) }
        if let source {
            // Another loopback address (all of 127/8 is the loopback here): another peer.
            var local = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            local.sin_addr.s_addr = inet_addr(source)
            _ = withUnsafePointer(to: &local) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
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

    /// Reads until the server closes (or the 5 s receive timeout); the bytes and whether it closed.
    private func readToEnd(_ fd: Int32) -> (text: String, closed: Bool) {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            if count == 0 { return (String(decoding: bytes, as: UTF8.self), true) }
            // A reset is a close too (the client sent more after the server had closed).
            if count < 0 { return (String(decoding: bytes, as: UTF8.self), errno == ECONNRESET) }
            bytes += buffer[0..<count]
        }
    }

    private static func seconds(_ value: Double) -> Int64 { HTTPLimits.nanoseconds(seconds: value) }

    /// Limits with every deadline long but the ones a test sets.
    private static func limits(
        header: Double = 30, body: Double = 30, bodyRate: Int = 1 << 30, write: Double = 30, writeRate: Int = 1 << 30, idle: Double = 30,
        connections: Int = 256, buffered: Int = 32 << 20, perPeer: Int? = nil
    ) -> HTTPLimits {
        HTTPLimits(
            headerTimeout: seconds(header), bodyTimeout: seconds(body), minimumBodyRate: bodyRate, writeTimeout: seconds(write),
            minimumWriteRate: writeRate, idleTimeout: seconds(idle), maxConnections: connections, maxBufferedBytes: buffered,
            maxConnectionsPerPeer: perPeer)
    }

    /// Waits (at most `timeout`) for `fd` to have `events`; the events it has.
    private func waitFor(_ fd: Int32, _ events: Int32, timeout: Double) -> Int32 {
        var entry = pollfd(fd: fd, events: Int16(events), revents: 0)
        return poll(&entry, 1, Int32(timeout * 1000)) > 0 ? Int32(entry.revents) : 0
    }

    /// Sends `pieces` one at a time, `interval` apart, until the server answers (or the pieces
    /// run out): a client that keeps making progress. The answer, and how long it took.
    private func trickle(_ fd: Int32, _ pieces: [String], interval: Double) -> (answer: (text: String, closed: Bool), seconds: Double) {
        let started = Date()
        for piece in pieces {
            send(fd, piece)
            if waitFor(fd, Int32(POLLIN), timeout: interval) != 0 { break }
        }
        return (readToEnd(fd), Date().timeIntervalSince(started))
    }

    @Test func aSlowHeader_getsA408_atTheHeaderDeadline_thoughEveryPieceIsProgress() throws {
        try withServer(limits: Self.limits(header: 0.4)) { port in
            let fd = connectTo(port)
            defer { close(fd) }
            let pieces = ["GET /health HTTP/1.1\r\n"] + (0..<100).map { "X-Slow-\($0): y\r\n" }  // 5 s at most
            let (answer, waited) = trickle(fd, pieces, interval: 0.05)
            #expect(answer.text.hasPrefix("HTTP/1.1 408 Request Timeout"), "\(answer.text.prefix(60))")
            #expect(answer.closed)
            #expect(waited >= 0.35 && waited < 3, "cut after \(waited) s")
        }
    }

    @Test func aConnectionThatSendsNothing_getsA408_atTheHeaderDeadline() throws {
        try withServer(limits: Self.limits(header: 0.3)) { port in
            let fd = connectTo(port)
            defer { close(fd) }
            let answer = readToEnd(fd)
            #expect(answer.text.hasPrefix("HTTP/1.1 408"))
            #expect(answer.closed)
        }
    }

    @Test func aSlowBody_getsA408_atTheBodyDeadline_scaledToItsLength() throws {
        // 2 s for the body's 1000 bytes at 500 B/s on top of 0.3 s: 2.3 s; the client sends 200 B/s.
        try withServer(limits: Self.limits(body: 0.3, bodyRate: 500)) { port in
            let fd = connectTo(port)
            defer { close(fd) }
            let pieces = ["POST /chat HTTP/1.1\r\nContent-Length: 1000\r\n\r\n"] + Array(repeating: String(repeating: "b", count: 10), count: 99)
            let (answer, waited) = trickle(fd, pieces, interval: 0.05)
            #expect(answer.text.hasPrefix("HTTP/1.1 408"), "\(answer.text.prefix(60))")
            #expect(waited >= 2.2 && waited < 4.8, "cut after \(waited) s")
        }
    }

    @Test func aBodyWithinItsDeadline_isServed() throws {
        try withServer(limits: Self.limits(body: 0.5, bodyRate: 1000), handler: { request in
            HTTPServer.Response(status: 200, body: "got \(request.body.count)")
        }) { port in
            let fd = connectTo(port)
            defer { close(fd) }
            let pieces = ["POST /chat HTTP/1.1\r\nContent-Length: 100\r\nConnection: close\r\n\r\n"] + Array(repeating: String(repeating: "b", count: 25), count: 4)
            let (answer, _) = trickle(fd, pieces, interval: 0.05)
            #expect(answer.text.hasPrefix("HTTP/1.1 200") && answer.text.hasSuffix("got 100"), "\(answer.text)")
        }
    }

    @Test func aSlowReader_isAborted_atTheWriteDeadline() throws {
        let payload = [UInt8](repeating: 120, count: 8 << 20)
        try withServer(limits: Self.limits(write: 0.3, writeRate: 16 << 20), handler: { _ in
            HTTPServer.Response(status: 200, contentType: "application/octet-stream", bytes: payload)
        }) { port in
            let fd = connectTo(port, receiveBuffer: 4096)
            defer { close(fd) }
            let started = Date()
            send(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            // Never reading: the server gives up on it (0.8 s allowed: 0.3 s, and 8 MiB at 16 MiB/s) and
            // resets the connection.
            let events = waitFor(fd, Int32(POLLERR) | Int32(POLLHUP), timeout: 10)
            let waited = Date().timeIntervalSince(started)
            #expect(events & (Int32(POLLERR) | Int32(POLLHUP)) != 0, "events \(events)")
            #expect(waited >= 0.75 && waited < 5, "aborted after \(waited) s")
            var buffer = [UInt8](repeating: 0, count: 65536)
            var received = 0
            while case let count = recv(fd, &buffer, buffer.count, 0), count > 0 { received += count }
            #expect(received < payload.count)
        }
    }

    @Test func aStalledRequest_getsA408_andAnIdleKeepAlive_isClosed_atTheirDeadlines() throws {
        try withServer(limits: Self.limits(header: 0.3, idle: 0.3)) { port in
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
            #expect(stalledEnd.closed && stalledEnd.text.hasPrefix("HTTP/1.1 408"))
            #expect(idleEnd.closed && idleEnd.text.hasPrefix("HTTP/1.1 200 OK") && !idleEnd.text.contains("408"))
            #expect(waited >= 0.25 && waited < 3, "closed after \(waited) s")
        }
    }

    @Test func aKeepAliveClient_askingWithinTheIdleTimeout_isKept() throws {
        try withServer(limits: Self.limits(header: 0.3, idle: 0.3)) { port in
            let fd = connectTo(port)
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            for _ in 0..<6 {
                send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(recv(fd, &buffer, buffer.count, 0) > 0)
                // The client's pace (0.6 s in all, twice the timeout, never 0.3 s idle), not a wait for the server.
                usleep(100_000)
            }
        }
    }

    /// A flood of connections that never finish a request fills every slot: a newcomer still
    /// gets in, the oldest trickler gives way, and idle keep-alives (which completed requests) stay.
    @Test func aConnectionFlood_letsALegitimateClientIn_bySheddingTheOldestUnfinished() throws {
        try withServer(limits: Self.limits(connections: 6)) { port in
            var pending: [UInt8] = []
            let keptAlive = (0..<2).map { _ in connectTo(port) }
            defer { keptAlive.forEach { close($0) } }
            for fd in keptAlive {
                send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(readResponse(fd, &pending)?.body == Array("ok".utf8))
            }
            let flood = (0..<4).map { _ in connectTo(port) }
            defer { flood.forEach { close($0) } }
            for fd in flood { send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n") }
            // Three newcomers, each kept open after its answer (so each needs a slot of its own).
            let legit = (0..<3).map { _ in connectTo(port) }
            defer { legit.forEach { close($0) } }
            for fd in legit {
                send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                let answer = readResponse(fd, &pending)
                #expect(answer?.head.hasPrefix("HTTP/1.1 200 OK") == true, "\(String(describing: answer?.head))")
            }
            // The three oldest tricklers were shed (told 503), the youngest is still held.
            for fd in flood.prefix(3) {
                let end = readToEnd(fd)
                #expect(end.closed && end.text.hasPrefix("HTTP/1.1 503"), "\(end.text.prefix(60))")
            }
            #expect(waitFor(flood[3], Int32(POLLIN), timeout: 0.2) == 0)
            for fd in keptAlive {
                send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(readResponse(fd, &pending)?.body == Array("ok".utf8))
            }
        }
    }

    /// A burst of new connections past the cap, one of them with its request already sent and
    /// the rest silent: the server reads a connection before shedding it, so that one is served.
    @Test func inABurstOfNewConnections_theOneThatSentItsRequest_isServed() throws {
        try withServer(limits: Self.limits(connections: 4)) { port in
            var burst: [Int32] = []
            defer { burst.forEach { close($0) } }
            for index in 0..<12 {
                let fd = connectTo(port)
                if index == 6 { send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n") }
                burst.append(fd)
            }
            var pending: [UInt8] = []
            let answer = readResponse(burst[6], &pending)
            #expect(answer?.head.hasPrefix("HTTP/1.1 200 OK") == true, "\(String(describing: answer?.head))")
            // The silent ones that gave way were told 503 (and the newest stay).
            let told = burst.enumerated().filter { $0.offset != 6 && waitFor($0.element, Int32(POLLIN), timeout: 0.5) != 0 }
            #expect(told.count >= 5, "\(told.count) shed")
            for (_, fd) in told { #expect(readToEnd(fd).text.hasPrefix("HTTP/1.1 503")) }
        }
    }

    /// Every slot held by clients that do not read their (large) answers: a newcomer still gets
    /// in, the longest-writing one is reset.
    @Test func slowReadersOnEverySlot_theOldestGivesWay() throws {
        let payload = [UInt8](repeating: 120, count: 8 << 20)
        try withServer(limits: Self.limits(connections: 2), handler: { request in
            request.path == "/big" ? HTTPServer.Response(status: 200, contentType: "application/octet-stream", bytes: payload)
                : HTTPServer.Response(status: 200, body: "ok")
        }) { port in
            let readers = (0..<2).map { _ in connectTo(port, receiveBuffer: 4096) }
            defer { readers.forEach { close($0) } }
            var pending: [UInt8] = []
            for fd in readers {
                send(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                // Its answer has begun (so it is in the server's writing phase).
                #expect(readResponse(fd, &pending, headOnly: true)?.head.hasPrefix("HTTP/1.1 200") == true)
                pending = []
            }
            let newcomer = connectTo(port)
            defer { close(newcomer) }
            send(newcomer, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            #expect(readToEnd(newcomer).text.hasSuffix("ok"))
            #expect(waitFor(readers[0], Int32(POLLERR) | Int32(POLLHUP), timeout: 5) != 0, "the oldest slow reader is reset")
        }
    }

    @Test func whenEverySlotIsBeingAnswered_aNewcomerGets503() throws {
        let entered = DispatchSemaphore(value: 0)
        try withServer(limits: Self.limits(connections: 3), handler: { request in
            guard request.path == "/hang" else { return HTTPServer.Response(status: 200, body: "ok") }
            entered.signal()
            return .later { _ in }
        }) { port in
            let busy = (0..<3).map { _ in connectTo(port) }
            defer { busy.forEach { close($0) } }
            for fd in busy { send(fd, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n") }
            for _ in busy { #expect(entered.wait(timeout: .now() + 5) == .success) }
            let newcomer = connectTo(port)
            defer { close(newcomer) }
            send(newcomer, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            let answer = readToEnd(newcomer)
            #expect(answer.text.hasPrefix("HTTP/1.1 503") && answer.text.contains("Retry-After: 1"), "\(answer.text.prefix(80))")
        }
    }

    /// Past the worker-wide cap on bytes of unfinished requests, a new request gets 503 with
    /// Retry-After; a request that fits is still served; the cap's bytes come back when the
    /// holder goes.
    @Test func pastTheBufferedBytesCap_aNewRequestGets503_withRetryAfter() throws {
        try withServer(limits: Self.limits(buffered: 64 << 10), handler: { request in
            HTTPServer.Response(status: 200, body: "got \(request.body.count)")
        }) { port in
            let holder = connectTo(port)
            send(holder, "POST /chat HTTP/1.1\r\nContent-Length: 60000\r\n\r\n" + String(repeating: "h", count: 50000))
            // The loop reads the holder's bytes (16 KiB a turn, level-triggered) in every turn that
            // also answers this client: after five answers all 50,000 are held.
            let probe = connectTo(port)
            defer { close(probe) }
            var pending: [UInt8] = []
            for _ in 0..<5 {
                send(probe, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(readResponse(probe, &pending)?.body == Array("got 0".utf8))
            }
            func post(_ size: Int) -> String {
                let fd = connectTo(port)
                defer { close(fd) }
                send(fd, "POST /chat HTTP/1.1\r\nContent-Length: \(size)\r\nConnection: close\r\n\r\n" + String(repeating: "p", count: size))
                return readToEnd(fd).text
            }
            let refused = post(20000)
            #expect(refused.hasPrefix("HTTP/1.1 503") && refused.contains("Retry-After: 1"), "\(refused.prefix(80))")
            #expect(post(100).hasSuffix("got 100"))
            close(holder)
            #expect(eventually { post(20000).hasSuffix("got 20000") })
        }
    }

    /// `condition` polled for at most `timeout` (the server's side of a close is not observable
    /// from here).
    private func eventually(timeout: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return false
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
        try withServer(limits: HTTPLimits(), handler: { request in
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

    // MARK: - Peers

    /// One address at its limit: a newcomer from it is held unread for the refusal delay, then
    /// told 503 and closed, and none of the connections it holds is shed; a client from another
    /// address is served meanwhile.
    @Test func aPeerAtItsConnectionLimit_isRefusedAfterADelay_itsConnectionsKept_anotherAddressServed() throws {
        var limits = Self.limits(connections: 16, perPeer: 3)
        limits.refusalDelay = Self.seconds(0.5)
        try withServer(limits: limits) { port in
            var pending: [UInt8] = []
            let held = (0..<3).map { _ in connectTo(port) }
            defer { held.forEach { close($0) } }
            for fd in held {
                send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(readResponse(fd, &pending)?.body == Array("ok".utf8))
            }
            let over = (0..<3).map { _ in connectTo(port) }
            defer { over.forEach { close($0) } }
            for fd in over { send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n") }
            let other = connectTo(port, from: "127.0.0.2")
            defer { close(other) }
            send(other, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(readResponse(other, &pending)?.head.hasPrefix("HTTP/1.1 200 OK") == true)
            #expect(waitFor(over[0], Int32(POLLIN), timeout: 0.1) == 0, "not answered before the delay")
            for fd in over {
                let end = readToEnd(fd)
                #expect(end.closed && end.text.hasPrefix("HTTP/1.1 503") && end.text.contains("Retry-After: 1"), "\(end.text.prefix(80))")
                #expect(end.text.contains("too many connections from your address"))
            }
            for fd in held {
                send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(readResponse(fd, &pending)?.body == Array("ok".utf8), "a held connection was not shed")
            }
        }
    }

    /// Connections refused for their address's limit together are not let go together: their
    /// 503s go out a few at a time, a tick apart, so a flood that reconnects the moment it is
    /// refused comes back spread out, not in a burst; every one is told 503 and closed.
    @Test func refusedTogether_theHeldConnectionsAreLetGoAFewAtATime_eachTold503() throws {
        var limits = Self.limits(connections: 64, perPeer: 1)
        limits.refusalDelay = Self.seconds(1)
        try withServer(limits: limits) { port in
            var pending: [UInt8] = []
            let held = connectTo(port)
            defer { close(held) }
            send(held, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(readResponse(held, &pending)?.body == Array("ok".utf8))
            let over = (0..<30).map { _ in connectTo(port) }
            defer { over.forEach { close($0) } }
            for fd in over { send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n") }
            // When the first is told, the others are not all told with it (one per tick here: the
            // thirty over about a third of a second).
            #expect(waitFor(over[0], Int32(POLLIN), timeout: 5) != 0)
            let toldWithTheFirst = over.filter { waitFor($0, Int32(POLLIN), timeout: 0) != 0 }.count
            #expect(toldWithTheFirst < over.count, "all \(toldWithTheFirst) let go at once")
            for fd in over {
                let end = readToEnd(fd)
                #expect(end.closed && end.text.hasPrefix("HTTP/1.1 503") && end.text.contains("Retry-After: 1"), "\(end.text.prefix(80))")
            }
        }
    }

    /// Peers take turns: twenty connections of one address and one of another all waiting to be
    /// read at once, the other address's request is read first or second, not after the twenty.
    @Test func peersTakeTurns_oneAddressWithManyConnections_doesNotGoFirstWithAllOfThem() throws {
        let order = Recorder()
        let blocking = DispatchSemaphore(value: 0)
        try withServer(limits: Self.limits(), handler: { request in
            if request.path == "/block" {
                // Holds the loop while the others connect and send: then they are all waiting at once.
                blocking.signal()
                usleep(300_000)
            } else {
                order.add(request.path)
            }
            return HTTPServer.Response(status: 200, body: "ok")
        }) { port in
            let blocker = connectTo(port)
            defer { close(blocker) }
            send(blocker, "GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(blocking.wait(timeout: .now() + 5) == .success)
            let many = (0..<20).map { _ in connectTo(port) }
            defer { many.forEach { close($0) } }
            for (index, fd) in many.enumerated() { send(fd, "GET /many-\(index) HTTP/1.1\r\nHost: x\r\n\r\n") }
            let other = connectTo(port, from: "127.0.0.2")
            defer { close(other) }
            send(other, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
            var pending: [UInt8] = []
            for fd in many + [other] {
                pending = []
                #expect(readResponse(fd, &pending)?.body == Array("ok".utf8))
            }
            let paths = order.values
            #expect(paths.count == 21)
            let position = paths.firstIndex(of: "/other") ?? -1
            #expect(position >= 0 && position <= 1, "read as number \(position + 1) of \(paths.count): \(paths)")
        }
    }

    /// An address over its request rate is not read until it has a token again: its requests
    /// past the burst are answered, in order, at the rate, while another address is answered at
    /// once meanwhile, and among the throttled address's connections a new one goes first.
    @Test func anAddressOverItsRequestRate_waitsForATokenUnread_anotherAddressIsServedMeanwhile() throws {
        var limits = Self.limits()
        limits.peerRequestRate = RequestRate(perSecond: 2, burst: 2)
        let order = Recorder()
        try withServer(limits: limits, handler: { request in
            order.add(request.path)
            return HTTPServer.Response(status: 200, body: "ok")
        }) { port in
            var pending: [UInt8] = []
            let keptAlive = connectTo(port)
            defer { close(keptAlive) }
            let started = Date()
            for index in 0..<4 {
                pending = []
                send(keptAlive, "GET /kept-\(index) HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(readResponse(keptAlive, &pending)?.body == Array("ok".utf8))
            }
            // Two from the burst, then two at half a second each.
            let throttled = Date().timeIntervalSince(started)
            #expect(throttled >= 0.9, "four requests in \(throttled) s")
            // Its bucket is empty again: its next request waits, unread, while another address is served.
            send(keptAlive, "GET /kept-4 HTTP/1.1\r\nHost: x\r\n\r\n")
            let newcomer = connectTo(port)
            defer { close(newcomer) }
            send(newcomer, "GET /newcomer HTTP/1.1\r\nHost: x\r\n\r\n")
            let other = connectTo(port, from: "127.0.0.2")
            defer { close(other) }
            send(other, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
            pending = []
            #expect(readResponse(other, &pending)?.body == Array("ok".utf8))
            pending = []
            #expect(readResponse(newcomer, &pending)?.body == Array("ok".utf8))
            pending = []
            #expect(readResponse(keptAlive, &pending)?.body == Array("ok".utf8))
            let paths = order.values
            #expect(paths.suffix(3) == ["/other", "/newcomer", "/kept-4"], "\(paths)")
        }
    }

    /// At the cap with every connection a busy keep-alive (each just completed a request), a
    /// newcomer is served once and closed (`Connection: close`) instead of one of them being shed.
    @Test func atTheCap_withBusyKeepAlives_aNewcomerIsServedOnce_andNoneIsShed() throws {
        try withServer(limits: Self.limits(connections: 4)) { port in
            var pending: [UInt8] = []
            let keptAlive = (0..<4).map { _ in connectTo(port) }
            defer { keptAlive.forEach { close($0) } }
            for fd in keptAlive {
                send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(readResponse(fd, &pending)?.body == Array("ok".utf8))
            }
            let newcomer = connectTo(port)
            defer { close(newcomer) }
            send(newcomer, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            let end = readToEnd(newcomer)
            #expect(end.closed && end.text.hasPrefix("HTTP/1.1 200 OK") && end.text.contains("Connection: close"), "\(end.text)")
            for fd in keptAlive {
                #expect(waitFor(fd, Int32(POLLIN), timeout: 0.1) == 0, "not closed")
                send(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                #expect(readResponse(fd, &pending)?.body == Array("ok".utf8))
            }
        }
    }
}

/// What a handler saw, in order (the handler runs on the server's thread).
private final class Recorder: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []

    func add(_ item: String) { lock.withLock { items.append(item) } }

    var values: [String] { lock.withLock { items } }
}
