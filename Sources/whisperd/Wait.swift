import ArgumentParser
import Foundation
import Glibc
import WhisperConfig
import WhisperCore

extension Whisperd {
    struct Wait: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "wait",
            abstract: "Wait until a dependency answers (an init container's `after:`), then exit 0.",
            discussion: """
                --http URL: until a GET answers 2xx (http only; e.g. another pod's whisperd \
                /health, which is 200 once its character is ready). --tcp HOST:PORT: until a \
                connection is accepted. Tries at once, then after 100ms, doubling to every 2s. \
                Exits 1 with the last failure when --timeout passes; 2 on a bad argument. See \
                docs/kubernetes.md.
                """)

        @Option(name: .long, help: ArgumentHelp("Wait for a 2xx answer to a GET of this URL.", valueName: "URL"))
        var http: String?

        @Option(name: .long, help: ArgumentHelp("Wait for a TCP connection to be accepted.", valueName: "HOST:PORT"))
        var tcp: String?

        @Option(name: .long, help: ArgumentHelp("Give up after this long (250ms, 30s, 5m…).", valueName: "DURATION"))
        var timeout: String = "5m"

        func run() throws {
            // `whisperd --http` is the root command's option too: it takes the value (see valuesTakenByTheRoot).
            let http = self.http ?? Whisperd.valuesTakenByTheRoot(after: Self._commandName, "--http", CommandLine.arguments).last
            guard (http == nil) != (tcp == nil) else { throw ValidationError("give exactly one of --http URL or --tcp HOST:PORT") }
            guard let limit = Units.parseDuration(timeout), limit > .zero else {
                throw ValidationError("--timeout: `\(timeout.prefix(40))` is not a duration (250ms, 30s, 5m)")
            }
            let parsed = http.map(WaitTarget.parseHTTP) ?? WaitTarget.parseTCP(tcp ?? "")
            let target: WaitTarget
            switch parsed {
            case .failure(let error): throw ValidationError(error.description)
            case .success(let value): target = value
            }
            var clock = MonotonicWaitClock()
            let outcome = WaitRun.run(WaitSchedule(timeout: limit), clock: &clock) { budget in
                DependencyCheck.attempt(target, budget: budget)
            }
            switch outcome {
            case .ready(let attempts, let after):
                print("whisperd wait: \(target) answered after \(Self.seconds(after)) (\(counted(attempts, "attempt")))")
            case .timedOut(let attempts, let after, let lastFailure):
                FileHandle.standardError.write(
                    Data(
                        "whisperd wait: \(target) did not answer within \(timeout) (\(counted(attempts, "attempt")) in \(Self.seconds(after))); last: \(lastFailure)\n"
                            .utf8))
                throw ExitCode(1)
            }
        }

        static func seconds(_ duration: Duration) -> String {
            let milliseconds = duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
            return "\(milliseconds / 1000).\(String(format: "%03d", milliseconds % 1000))s"
        }
    }
}

/// The monotonic clock and a real sleep, for `WaitRun`.
struct MonotonicWaitClock: WaitClock {
    func now() -> Duration {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return .seconds(time.tv_sec) + .nanoseconds(time.tv_nsec)
    }

    func sleep(_ duration: Duration) {
        let nanoseconds = duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
        var request = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0, errno == EINTR { request = remaining }
    }
}

/// One try of a dependency, blocking, within a time budget: resolve, connect, and for HTTP
/// send a GET and read the status line. `nil` is success; otherwise why it failed.
enum DependencyCheck {
    static func attempt(_ target: WaitTarget, budget: Duration) -> String? {
        let deadline = MonotonicWaitClock().now() + budget
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(target.host, String(target.port), &hints, &list)
        guard status == 0, let first = list else {
            return "cannot resolve \(target.host): \(String(cString: gai_strerror(status)))"
        }
        defer { freeaddrinfo(list) }
        var failure = "no address for \(target.host)"
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let address = entry {
            entry = address.pointee.ai_next
            let fd = socket(address.pointee.ai_family, address.pointee.ai_socktype | Int32(SOCK_NONBLOCK.rawValue | SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else {
                failure = "socket: \(String(cString: strerror(errno)))"
                continue
            }
            defer { close(fd) }
            if let problem = connect(fd, address.pointee.ai_addr, address.pointee.ai_addrlen, deadline: deadline) {
                failure = problem
                continue
            }
            guard case .http(let host, let port, let path) = target else { return nil }
            return httpGet(fd, host: host, port: port, path: path, deadline: deadline)
        }
        return failure
    }

    private static func millisecondsLeft(_ deadline: Duration) -> Int32 {
        let left = deadline - MonotonicWaitClock().now()
        guard left > .zero else { return 0 }
        return Int32(clamping: left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1)
    }

    /// Waits for `events` on `fd` until the deadline; false when it passed.
    private static func waitFor(_ fd: Int32, _ events: Int16, deadline: Duration) -> Bool {
        while true {
            var poller = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&poller, 1, millisecondsLeft(deadline))
            if ready < 0, errno == EINTR { continue }
            return ready > 0
        }
    }

    private static func connect(_ fd: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: socklen_t, deadline: Duration) -> String? {
        if Glibc.connect(fd, address, length) == 0 { return nil }
        guard errno == EINPROGRESS else { return "connect: \(String(cString: strerror(errno)))" }
        guard waitFor(fd, Int16(POLLOUT), deadline: deadline) else { return "connect: timed out" }
        var error: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size)
        return error == 0 ? nil : "connect: \(String(cString: strerror(error)))"
    }

    private static func httpGet(_ fd: Int32, host: String, port: Int, path: String, deadline: Duration) -> String? {
        let authority = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(authority)\r\nUser-Agent: whisperd-wait\r\nConnection: close\r\n\r\n".utf8)
        var sent = 0
        while sent < request.count {
            let count = request[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count > 0 {
                sent += count
            } else if count < 0, errno == EAGAIN || errno == EINTR {
                guard waitFor(fd, Int16(POLLOUT), deadline: deadline) else { return "HTTP: timed out sending the request" }
            } else {
                return "HTTP: send: \(String(cString: strerror(errno)))"
            }
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 512)
        while !response.contains(0x0A), response.count < 4096 {
            guard waitFor(fd, Int16(POLLIN), deadline: deadline) else { return "HTTP: no answer in time" }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count > 0 {
                response += buffer[0..<count]
            } else if count == 0 {
                break
            } else if errno != EAGAIN && errno != EINTR {
                return "HTTP: recv: \(String(cString: strerror(errno)))"
            }
        }
        let line = String(decoding: response.prefix { $0 != 0x0D && $0 != 0x0A }, as: UTF8.self)
        let parts = line.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]) else {
            return response.isEmpty ? "HTTP: connection closed without an answer" : "HTTP: not an HTTP answer"
        }
        return (200...299).contains(code) ? nil : "HTTP \(line.dropFirst(parts[0].count + 1).prefix(80))"
    }
}
