import CWhisperLinux
import Glibc

/// A check in flight on the event loop. Its owner calls ``expire()`` at ``deadline``; the
/// check reports once, through the completion it was made with.
public protocol RunningProbe: AnyObject {
    var deadline: Int64 { get }
    var isDone: Bool { get }
    func expire()
}

/// One check on loopback, run on the event loop: a `GET` whose success is any 2xx status line,
/// or (`path` nil) a TCP connect whose success is an established connection.
public final class LoopbackProbe: RunningProbe {
    public let deadline: Int64
    private let loop: EventLoop
    private var fd: Int32 = -1
    private var request: [UInt8]
    private var response: [UInt8] = []
    private var completion: ((Bool) -> Void)?
    private let connectOnly: Bool

    /// - Parameters:
    ///   - deadline: monotonic ns after which the probe counts as failed (the owner calls ``expire()``).
    public init(loop: EventLoop, host: String, port: Int, path: String?, deadline: Int64, completion: @escaping (Bool) -> Void) {
        self.loop = loop
        self.deadline = deadline
        self.completion = completion
        self.connectOnly = path == nil
        self.request = path.map {
            Array("GET \($0) HTTP/1.1\r\nHost: \(host):\(port)\r\nUser-Agent: whisperd-probe\r\nConnection: close\r\n\r\n".utf8)
        } ?? []
        fd = whisper_tcp_connect(host, Int32(port))
        guard fd >= 0 else {
            finish(false)
            return
        }
        do {
            try loop.add(fd, [.writable, .readable]) { [weak self] _ in self?.onEvent() }
        } catch {
            finish(false)
        }
    }

    public var isDone: Bool { completion == nil }

    public func expire() { finish(false) }

    deinit {
        if fd >= 0 {
            loop.remove(fd)
            close(fd)
        }
    }

    private func onEvent() {
        if connectOnly { return finish(whisper_socket_error(fd) == 0) }
        if !request.isEmpty {
            if whisper_socket_error(fd) != 0 { return finish(false) }
            let written = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if written < 0 {
                if errno == EAGAIN || errno == EINTR { return }
                return finish(false)
            }
            request.removeFirst(written)
            if request.isEmpty { loop.modify(fd, .readable) }
            return
        }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count < 0 {
            if errno == EAGAIN || errno == EINTR { return }
            return finish(false)
        }
        response += buffer[0..<count]
        if let verdict = Self.statusVerdict(response) { return finish(verdict) }
        if count == 0 { finish(false) }
    }

    /// `true` for a 2xx status line, `false` for another status, `nil` while incomplete.
    static func statusVerdict(_ bytes: [UInt8]) -> Bool? {
        guard let end = bytes.firstIndex(of: 0x0A) else { return bytes.count > 512 ? false : nil }
        let line = String(decoding: bytes[0..<end], as: UTF8.self)
        let parts = line.split(separator: " ")
        guard parts.count >= 2, parts[0].hasPrefix("HTTP/1."), let code = Int(parts[1]) else { return false }
        return (200..<300).contains(code)
    }

    private func finish(_ succeeded: Bool) {
        if fd >= 0 {
            loop.remove(fd)
            close(fd)
            fd = -1
        }
        guard let completion else { return }
        self.completion = nil
        completion(succeeded)
    }
}
