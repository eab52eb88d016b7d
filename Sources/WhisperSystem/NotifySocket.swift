import CWhisperLinux
import Glibc

/// A datagram socket speaking the sd_notify protocol, with the sender's credentials per message.
public final class NotifySocket {
    public let path: String
    public let fd: Int32

    public struct Datagram {
        public var bytes: [UInt8]
        public var senderPID: Int32
        public var senderUID: UInt32
        public var isTruncated: Bool
    }

    public init(path: String) throws {
        self.path = path
        fd = whisper_notify_socket_bind(path)
        guard fd >= 0 else { throw SystemError("bind notify socket \(path)") }
    }

    /// A socket already bound at `path`, handed over by a previous whisperd (re-exec).
    public init(path: String, inheritedFD: Int32) {
        self.path = path
        fd = inheritedFD
    }

    /// Hands pending datagrams to `handle` one at a time, each before the next is received:
    /// a `BARRIER=1` datagram's descriptor is closed on receipt, so its sender learns that
    /// everything it sent earlier was handled (and checked while it was still alive).
    public func drain(limit: Int = 64, _ handle: (Datagram) -> Void) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<limit {
            var pid: pid_t = 0
            var uid: uid_t = 0
            let count = buffer.withUnsafeMutableBytes {
                whisper_recv_with_credentials(fd, $0.baseAddress, $0.count, &pid, &uid)
            }
            if count == -2 {
                handle(Datagram(bytes: [], senderPID: pid, senderUID: uid, isTruncated: true))
                continue
            }
            if count < 0 { break }
            handle(Datagram(bytes: Array(buffer[0..<count]), senderPID: pid, senderUID: uid, isTruncated: false))
        }
    }

    /// Waits until whisperd has handled everything this process sent to `path` before
    /// (sd_notify_barrier), so a short-lived sender is still alive when it is checked.
    public static func barrier(_ path: String, timeoutMilliseconds: Int32 = 5000) -> Bool {
        whisper_notify_barrier(path, timeoutMilliseconds) == 0
    }

    public func close() {
        Glibc.close(fd)
        unlink(path)
    }

    /// Sends one datagram to a `$NOTIFY_SOCKET`-style path: the one sd_notify sender (the worker
    /// and `whisperd notify` towards whisperd, ``SystemdNotifier`` towards systemd, tests).
    /// `waiting: false` gives up at once when the receiver's queue is full (a Unix datagram
    /// queue holds `net.unix.max_dgram_qlen` messages, 10 by default) instead of blocking until
    /// whisperd reads.
    public static func send(_ message: String, to path: String, waiting: Bool = true) -> Bool {
        message.withCString { whisper_notify_send_flags(path, $0, strlen($0), waiting ? 0 : Int32(MSG_DONTWAIT)) == 0 }
    }
}
