import Foundation
import Glibc
import Testing
import WhisperSystem

@Suite struct SystemdNotifierTests {
    private func notifier(socket: String? = nil, usec: String?, pid: String? = nil) -> SystemdNotifier {
        var environment: [String: String] = [:]
        environment["NOTIFY_SOCKET"] = socket
        environment["WATCHDOG_USEC"] = usec
        environment["WATCHDOG_PID"] = pid
        return SystemdNotifier(environment: environment, ownPID: 4242)
    }

    @Test func theWatchdogIsPingedAtHalfTheIntervalSystemdAskedFor() {
        #expect(notifier(usec: "30000000").watchdogPingInterval == 15_000_000_000)
        #expect(notifier(usec: "30000000", pid: "4242").watchdogPingInterval == 15_000_000_000)
    }

    @Test func noWatchdogWhenUnsetMalformedZeroOrForAnotherProcess() {
        #expect(notifier(usec: nil).watchdogPingInterval == nil)
        #expect(notifier(usec: "0").watchdogPingInterval == nil)
        #expect(notifier(usec: "30s").watchdogPingInterval == nil)
        #expect(notifier(usec: "-5").watchdogPingInterval == nil)
        #expect(notifier(usec: "18446744073709551615").watchdogPingInterval == nil)
        #expect(notifier(usec: "30000000", pid: "1").watchdogPingInterval == nil)
        #expect(notifier(usec: "30000000", pid: "self").watchdogPingInterval == nil)
    }

    @Test func withoutNotifySocketNothingIsSent() {
        #expect(!notifier(usec: nil).isUnderSystemd)
        #expect(!notifier(socket: "", usec: nil).isUnderSystemd)
        notifier(usec: nil).ready(status: "no socket: a no-op")
    }

    /// The same sender as a child's, received by whisperd's own socket.
    @Test func linesArriveAsOneDatagramEach() throws {
        let path = NSTemporaryDirectory() + "whisperd-notifier-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        let socket = try NotifySocket(path: path)
        defer { socket.close() }
        let systemd = notifier(socket: path, usec: nil)
        #expect(systemd.isUnderSystemd)
        systemd.ready(status: "3/3 ready")
        systemd.watchdog()
        systemd.reloading(monotonicMicroseconds: 12)
        var received: [String] = []
        socket.drain { datagram in
            #expect(datagram.senderPID == getpid())
            received.append(String(decoding: datagram.bytes, as: UTF8.self))
        }
        #expect(received == ["READY=1\nSTATUS=3/3 ready", "WATCHDOG=1", "RELOADING=1\nMONOTONIC_USEC=12"])
    }

    /// A socket file an earlier whisperd left behind (it was killed) is replaced, and a plain
    /// file of that name too: the new socket receives.
    @Test func aLeftoverFileAtTheSocketsPath_isReplaced() throws {
        let path = NSTemporaryDirectory() + "whisperd-stale-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
        defer { unlink(path) }
        let first = try NotifySocket(path: path)
        Glibc.close(first.fd)  // as a killed whisperd: the file stays
        for _ in 0..<2 {
            let socket = try NotifySocket(path: path)
            notifier(socket: path, usec: nil).watchdog()
            var received: [String] = []
            socket.drain { received.append(String(decoding: $0.bytes, as: UTF8.self)) }
            #expect(received == ["WATCHDOG=1"])
            Glibc.close(socket.fd)
            // The second round: a regular file where the socket was.
            unlink(path)
            #expect(FileManager.default.createFile(atPath: path, contents: Data("stale".utf8)))
        }
    }
}
