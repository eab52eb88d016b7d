import Foundation
import Glibc
import Testing

/// Hostile clients: garbage, stalled requests and a thousand connections on whisperd's control
/// socket and status port, and on the worker's chat API oversized, invalid and deeply nested
/// bodies and a thousand connections. Promise: others are still served, answers are 4xx/503,
/// nothing crashes, descriptors and memory come back.
extension IntegrationTests {
    @Suite struct AbuseSection {
        /// A connected socket (Unix path or loopback TCP port), closed on deinit.
        final class Client {
            let fd: Int32

            init?(unixPath: String) {
                fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                var address = sockaddr_un()
                address.sun_family = sa_family_t(AF_UNIX)
                withUnsafeMutableBytes(of: &address.sun_path) { raw in
                    for (index, byte) in unixPath.utf8.enumerated() { raw[index] = byte }
                }
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
                }
                if connected != 0 {
                    close(fd)
                    return nil
                }
            }

            init?(port: Int) {
                guard let fd = connectLoopback(port: port) else { return nil }
                self.fd = fd
            }

            func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } }

            /// Everything until the peer closes (or `timeout`).
            func readAll(timeout: Int = 5) -> String {
                var tv = timeval(tv_sec: timeout, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
                var response = [UInt8]()
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = recv(fd, &buffer, buffer.count, 0)
                    if count <= 0 { break }
                    response += buffer[0..<count]
                }
                return String(decoding: response, as: UTF8.self)
            }

            deinit { close(fd) }
        }

        static func openDescriptors(_ pid: Int32) -> Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        }

        static func descriptorTargets(_ pid: Int32) -> [String: Int] {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
            let targets = names.map { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) ?? "?" }
            return Dictionary(grouping: targets, by: { $0.split(separator: ":").first.map(String.init) ?? $0 }).mapValues(\.count)
        }

        static func rssKiB(_ pid: Int32) -> Int {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
        }

        @Test func garbageStallsAndAThousandConnections_doNotStopWhisperdServingOthers() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  keep: {command: [sleep, '300']}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("keep: starting -> running") != nil)
            let socketPath = scratch.path + "/run/control.sock"
            // The first status read opens the cgroup files it samples (kept open): before the baseline.
            _ = try runCommand(whisperctlBinary(), ["--socket", socketPath, "status"])
            _ = whisperd.get("/health")
            let baseline = Self.openDescriptors(whisperd.pid)

            // Garbage gets a 400 (or a close), never a crash.
            var random = SystemRandomNumberGeneratorSeeded(seed: 7)
            for size in [1, 100, 20_000, 70_000] {
                let garbage = (0..<size).map { _ in UInt8(truncatingIfNeeded: random.next()) } + [13, 10, 13, 10]
                let client = try #require(Client(unixPath: socketPath))
                client.send(garbage)
                let answer = client.readAll()
                #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 4"), "\(answer.prefix(80))")
            }
            // A stalled request and a thousand idle connections on each listener…
            var stalled = Client(unixPath: socketPath)
            #expect(stalled != nil)
            stalled?.send(Array("GET /v1/charac".utf8))
            var held: [Client] = []
            for _ in 0..<1000 {
                if let client = Client(unixPath: socketPath) { held.append(client) }
                if let client = Client(port: whisperd.httpPort) { held.append(client) }
            }
            #expect(held.count == 2000)
            // …and others are still served, on both.
            let status = try runCommand(whisperctlBinary(), ["--socket", socketPath, "status"])
            #expect(status.code == 0, "\(status.stderr)")
            #expect(status.stdout.contains("keep"))
            #expect(whisperd.get("/health")?.0 == 200)
            #expect(Self.openDescriptors(whisperd.pid) < baseline + 600, "connections are bounded")
            held.removeAll()
            stalled = nil
            #expect(
                eventually { Self.openDescriptors(whisperd.pid) <= baseline },
                "descriptors come back: \(baseline) → \(Self.openDescriptors(whisperd.pid)): \(Self.descriptorTargets(whisperd.pid))")
            #expect(isAlive(whisperd.pid))
            #expect(whisperd.character("keep")?["state"] as? String == "running")
        }

        @Test func oversizedInvalidAndDeepBodies_andAThousandConnections_getAnswers_theWorkerStaysUp() throws {
            let scratch = Scratch()
            let llm = try TestLLM()
            let (worker, port) = try WorkerAPISection.startWorker(scratch, llm: llm)
            defer { withExtendedLifetime((worker, scratch)) {} }
            let pid = worker.pid

            @Sendable func post(_ body: [UInt8]) -> String {
                guard let client = Client(port: port) else { return "" }
                client.send(
                    Array("POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
                        + body)
                return client.readAll(timeout: 10)
            }
            @Sendable func status(_ answer: String) -> Int { Int(answer.split(separator: " ").dropFirst().first ?? "") ?? 0 }

            #expect(status(post([UInt8](repeating: 0x61, count: 2 << 20))) == 413, "over 1 MiB")
            #expect(status(post(Array(#"{"user_id":"u","message":"\#u{FF}"}"#.utf8) + [0xFF, 0xFE])) == 422, "invalid UTF-8")
            let deep = Array((String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)).utf8)
            #expect(status(post(deep)) == 422, "100,000 levels of nesting")
            let deepObject = Array(("{\"user_id\":\"u\",\"message\":\"m\",\"context\":" + String(repeating: "{\"a\":", count: 50_000) + "1" + String(repeating: "}", count: 50_000) + "}").utf8)
            #expect([200, 422].contains(status(post(deepObject))), "deep context")
            #expect(status(post(Array("{\"user_id\":\"u\",\"message\":\"\(String(repeating: "x", count: 5000))\"}".utf8))) == 422)

            // A thousand connections at once, each sending a chat: every one gets an answer
            // (200, or 503 when every slot is busy) or is closed; the worker stays up.
            llm.script(Array(repeating: ["delay": 0.2], count: 50))
            let rssBefore = Self.rssKiB(pid)
            let answers = StatusList()
            let group = DispatchGroup()
            for index in 0..<1000 {
                group.enter()
                DispatchQueue.global().async {
                    let answer = post(Array(#"{"user_id":"u\#(index % 50)","message":"hi"}"#.utf8))
                    answers.add(status(answer))
                    group.leave()
                }
            }
            #expect(group.wait(timeout: .now() + 120) == .success)
            let counts = Dictionary(grouping: answers.values, by: { $0 }).mapValues(\.count)
            #expect(Set(counts.keys).isSubset(of: [0, 200, 503]), "\(counts)")
            #expect((counts[200] ?? 0) > 0, "\(counts)")
            #expect(isAlive(pid))
            #expect(getJSON(port: port, path: "/health").status == 200)
            #expect(Self.rssKiB(pid) < rssBefore + 200 * 1024, "memory bounded: \(rssBefore) → \(Self.rssKiB(pid)) KiB")
        }
    }
}

extension IntegrationTests.AbuseSection {
    /// Slowloris against the real worker: every slot taken by clients that trickle a header line
    /// now and then. A chat still gets in (the oldest trickler gives way), and the tricklers get
    /// 408 at the header deadline however much they send.
    @Test func slowlorisOnEverySlot_aChatStillGetsIn_andTheTricklersGet408() throws {
        let scratch = Scratch()
        let llm = try TestLLM()
        let (worker, port) = try IntegrationTests.WorkerAPISection.startWorker(
            scratch, llm: llm, environment: ["API_HEADER_TIMEOUT": "1.5", "API_MAX_CONNECTIONS": "40"])
        defer { withExtendedLifetime((worker, scratch)) {} }
        let tricklers = (0..<40).compactMap { _ in Client(port: port) }
        #expect(tricklers.count == 40)
        for client in tricklers { client.send(Array("POST /api/chat HTTP/1.1\r\nHost: x\r\n".utf8)) }
        let started = Date()
        let chat = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "hello"], timeout: 10)
        #expect(chat.status == 200, "\(chat)")
        // The worker says what it holds: the tricklers' connections and their half heads.
        let metrics = rawHTTP(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") ?? ""
        let connections = metrics.firstMatch(of: /whisperd_worker_http_connections\{character="elena"\} (\d+)/).flatMap { Int($0.1) }
        let buffered = metrics.firstMatch(of: /whisperd_worker_http_buffered_bytes\{character="elena"\} (\d+)/).flatMap { Int($0.1) }
        #expect((connections ?? 0) >= 30 && (connections ?? 0) <= 40, "\(String(describing: connections))")
        #expect((buffered ?? 0) >= 30 * 30, "\(String(describing: buffered))")
        // Keep trickling (a line each 0.1 s, 3 s at most): the deadline, not progress, decides.
        var answers: [Int: String] = [:]
        for _ in 0..<30 where answers.count < tricklers.count {
            for (index, client) in tricklers.enumerated() where answers[index] == nil {
                client.send(Array("X-Slow: y\r\n".utf8))
                var entry = pollfd(fd: client.fd, events: Int16(POLLIN), revents: 0)
                if poll(&entry, 1, 0) > 0 { answers[index] = client.readAll(timeout: 2) }
            }
            usleep(100_000)
        }
        let waited = Date().timeIntervalSince(started)
        let timedOut = answers.values.filter { $0.hasPrefix("HTTP/1.1 408") }.count
        let shed = answers.values.filter { $0.hasPrefix("HTTP/1.1 503") || $0.isEmpty }.count
        #expect(timedOut + shed == tricklers.count && shed <= 1, "408: \(timedOut), shed: \(shed) of \(tricklers.count) after \(waited) s")
        #expect(waited < 3.5)
        #expect(getJSON(port: port, path: "/health").status == 200)
    }
}

extension IntegrationTests.AbuseSection {
    /// A flood from one address against the real worker: that address holds its limit of
    /// connections, its newcomers are refused (503, WhisperEngine's error shape not needed: the
    /// request is never read), none of its held connections is shed, a chat from another
    /// address is answered, and /metrics counts the refusals.
    @Test func oneAddressAtItsConnectionLimit_isRefused_aChatFromAnotherAddressIsAnswered() throws {
        let scratch = Scratch()
        let llm = try TestLLM()
        let (worker, port) = try IntegrationTests.WorkerAPISection.startWorker(
            scratch, llm: llm, environment: ["API_MAX_CONNECTIONS_PER_PEER": "5", "API_PEER_REFUSAL_DELAY": "0.2"])
        defer { withExtendedLifetime((worker, scratch)) {} }
        let held = (0..<5).compactMap { _ in Client(port: port) }
        #expect(held.count == 5)
        // Each of them has been accepted (a request answered) before the newcomers come.
        for client in held {
            client.send(Array("GET /health HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            var buffer = [UInt8](repeating: 0, count: 4096)
            #expect(recv(client.fd, &buffer, buffer.count, 0) > 0)
        }
        for _ in 0..<3 {
            let refused = rawHTTP(port: port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n") ?? ""
            #expect(refused.hasPrefix("HTTP/1.1 503") && refused.contains("Retry-After: 1"), "\(refused.prefix(80))")
        }
        let chat = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "hello"], timeout: 10, from: "127.0.0.2")
        #expect(chat.status == 200, "\(chat)")
        for client in held {
            client.send(Array("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
            #expect(client.readAll().hasPrefix("HTTP/1.1 200"), "a held connection was kept")
        }
        let metrics = rawHTTP(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", from: "127.0.0.3") ?? ""
        let refusals = metrics.firstMatch(of: /whisperd_worker_http_connections_refused_total\{character="elena",reason="peer_limit"\} (\d+)/)
            .flatMap { Int($0.1) }
        #expect(refusals == 3, "\(String(describing: refusals))")
    }

    /// One address past its request rate against the real worker: its requests wait unread and
    /// are all answered, at the rate; a chat from another address is answered meanwhile; /metrics
    /// counts the turns deferred.
    @Test func oneAddressPastItsRequestRate_waitsAndIsAnswered_aChatFromAnotherAddressDoesNotWait() throws {
        let scratch = Scratch()
        let llm = try TestLLM()
        let (worker, port) = try IntegrationTests.WorkerAPISection.startWorker(
            scratch, llm: llm, environment: ["API_PEER_REQUESTS_PER_SECOND": "2", "API_PEER_REQUEST_BURST": "2"])
        defer { withExtendedLifetime((worker, scratch)) {} }
        guard let client = Client(port: port) else {
            Issue.record("no connection")
            return
        }
        let started = Date()
        // Pipelined: one read takes all four into the bucket's debt, the next waits for it.
        client.send(Array(String(repeating: "GET /health HTTP/1.1\r\nHost: x\r\n\r\n", count: 4).utf8))
        var buffer = [UInt8](repeating: 0, count: 8192)
        _ = recv(client.fd, &buffer, buffer.count, 0)
        client.send(Array("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8))
        let chat = postJSON(port: port, path: "/api/chat", ["user_id": "u1", "message": "hello"], timeout: 10, from: "127.0.0.2")
        #expect(chat.status == 200, "\(chat)")
        let rest = client.readAll()
        #expect(rest.contains("HTTP/1.1 200"), "\(rest.prefix(80))")
        #expect(Date().timeIntervalSince(started) >= 0.9, "the fifth request waited for the debt of the four")
        let metrics = rawHTTP(port: port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", from: "127.0.0.3") ?? ""
        let deferred = metrics.firstMatch(of: /whisperd_worker_http_turns_deferred_total\{character="elena"\} (\d+)/).flatMap { Int($0.1) }
        #expect((deferred ?? 0) >= 1, "\(String(describing: deferred))")
    }
}
