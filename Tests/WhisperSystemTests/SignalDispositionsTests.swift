import Glibc
import Testing
import WhisperSystem

@Suite struct SignalDispositionsTests {
    /// whisperd ignores SIGPIPE; a child it spawns must not: a character writing to a closed pipe
    /// should die of SIGPIPE as any program would. `SigIgn` in /proc/PID/status shows the mask.
    @Test func ignoringSIGPIPEHere_leavesSpawnedChildrenAtTheDefault() throws {
        #expect(SignalDispositions.ignoreSIGPIPE())
        let pipeBit: UInt64 = 1 << UInt64(SIGPIPE - 1)
        let ownMask = try #require(Self.ignoredSignals(in: readSmallFile("/proc/self/status") ?? ""))
        #expect(ownMask & pipeBit != 0)

        let spawner = try ProcessSpawner()
        let child = try spawner.spawn(.init(arguments: ["/bin/cat", "/proc/self/status"], environment: [:], workingDirectory: "/")).get()
        defer {
            close(child.pidFD)
            close(child.stdoutFD)
            close(child.stderrFD)
        }
        #expect(whisper_set_blocking(child.stdoutFD))
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(child.stdoutFD, &buffer, buffer.count)
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { break }
            output += buffer[0..<count]
        }
        var poll = pollfd(fd: child.pidFD, events: Int16(POLLIN), revents: 0)
        _ = Glibc.poll(&poll, 1, 5000)
        #expect(ChildReaper.reap(pidFD: child.pidFD)?.code == 0)
        let childMask = try #require(Self.ignoredSignals(in: String(decoding: output, as: UTF8.self)))
        #expect(childMask & pipeBit == 0, "the child inherited whisperd's ignored SIGPIPE")
    }

    private static func ignoredSignals(in status: String) -> UInt64? {
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigIgn:") }) else { return nil }
        return line.split(whereSeparator: { $0 == " " || $0 == "\t" }).last.flatMap { UInt64($0, radix: 16) }
    }
}
