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

    /// Sends one datagram to `$NOTIFY_SOCKET`-style path (children use this; so do tests).
    /// `waiting: false` gives up at once when the receiver's queue is full (a Unix datagram
    /// queue holds `net.unix.max_dgram_qlen` messages, 10 by default) instead of blocking until
    /// whisperd reads.
    public static func send(_ message: String, to path: String, waiting: Bool = true) -> Bool {
        message.withCString { whisper_notify_send_flags(path, $0, strlen($0), waiting ? 0 : Int32(MSG_DONTWAIT)) == 0 }
    }
}

/// Which process tree a pid belongs to, read from /proc.
public enum ProcessTree {
    /// The process group id of `pid`, from /proc/PID/stat (field 5).
    public static func processGroup(of pid: Int32) -> Int32? {
        guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is state, [1] ppid, [2] pgrp
        guard fields.count > 2 else { return nil }
        return Int32(fields[2])
    }

    /// Whether `pid` is `mainPID` or in its process group (the `none` backend's notion of a tree).
    public static func isMember(_ pid: Int32, ofGroupLedBy mainPID: Int32) -> Bool {
        if pid == mainPID { return true }
        return processGroup(of: pid) == mainPID
    }
}

/// Reads a small file (under /proc, /sys) in one go; `nil` if it cannot be read. Reads
/// through a 4 KiB stack buffer: status endpoints call this thousands of times a second, and
/// zero-filling a 64 KiB array per call was most of their cost.
public func readSmallFile(_ path: String, limit: Int = 65536) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var result: [UInt8] = []
    let complete = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { buffer -> Bool in
        while result.count < limit {
            let count = read(fd, buffer.baseAddress, min(buffer.count, limit - result.count))
            if count < 0, errno == EINTR { continue }
            if count < 0 { return result.isEmpty ? false : true }
            if count == 0 { break }
            result.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0..<count]))
        }
        return true
    }
    return complete ? String(decoding: result, as: UTF8.self) : nil
}
