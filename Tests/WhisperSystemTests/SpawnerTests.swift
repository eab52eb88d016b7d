import Foundation
import Glibc
import Testing
import WhisperSystem

@Suite struct SpawnerTests {
    @Test func spawnsInItsOwnProcessGroup_withTheGivenEnvironment_andReapsThroughThePidfd() throws {
        let spawner = try ProcessSpawner()
        let request = ProcessSpawner.Request(
            arguments: ["sh", "-c", "echo \"$GREETING $(ps -o pgid= -p $$ | tr -d ' ') $$\"; exit 7"],
            environment: ["GREETING": "hello", "PATH": "/usr/bin:/bin"], workingDirectory: "/")
        let child = try spawner.spawn(request).get()
        defer { child.closeDescriptors() }
        #expect(awaitExit(child))
        let status = ChildReaper.reap(pidFD: child.pidFD)
        #expect(status?.code == 7)
        #expect(whisper_set_blocking(child.stdoutFD))
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = read(child.stdoutFD, &buffer, buffer.count)
        let output = String(decoding: buffer[0..<max(0, count)], as: UTF8.self)
        #expect(output == "hello \(child.pid) \(child.pid)\n")
    }

    /// A pipe whose buffer is full: a child given its write end as a `tasks` file blocks there,
    /// before its exec, until the test reads.
    static func fullPipe() throws -> [Int32] {
        var ends: [Int32] = [-1, -1]
        try #require(pipe(&ends) == 0)
        _ = fcntl(ends[1], F_SETFL, O_NONBLOCK)
        var byte: UInt8 = 0
        while write(ends[1], &byte, 1) == 1 {}
        _ = fcntl(ends[1], F_SETFL, 0)
        return ends
    }

    @Test func heldOutput_theExitHangsUpNoPipe_untilTheHeldEndsClose() throws {
        let spawner = try ProcessSpawner()
        var request = ProcessSpawner.Request(
            arguments: ["sh", "-c", "printf last"], environment: ["PATH": "/usr/bin:/bin"], workingDirectory: "/")
        request.holdsOutputOpen = true
        let child = try spawner.spawn(request).get()
        defer { child.closeDescriptors() }
        #expect(child.heldWriteFDs.count == 2)
        #expect(awaitExit(child))
        #expect(ChildReaper.reap(pidFD: child.pidFD)?.code == 0)
        // Reaped, and what it wrote is there, but neither pipe hangs up: whisperd's copies of
        // the write ends are still open.
        var pipes = [pollfd(fd: child.stdoutFD, events: Int16(POLLIN), revents: 0), pollfd(fd: child.stderrFD, events: Int16(POLLIN), revents: 0)]
        #expect(Glibc.poll(&pipes, 2, 0) == 1)
        #expect(pipes[0].revents & Int16(POLLHUP) == 0 && pipes[0].revents & Int16(POLLIN) != 0)
        #expect(pipes[1].revents == 0)
        var buffer = [UInt8](repeating: 0, count: 64)
        #expect(read(child.stdoutFD, &buffer, buffer.count) == 4)
        #expect(String(decoding: buffer[0..<4], as: UTF8.self) == "last")
        for fd in child.heldWriteFDs { close(fd) }
        // Closed: both hang up, and the end of the output reads as such. Each pipe is polled on
        // its own for up to 10 s: where spawns fork (ThreadSanitizer builds), another test's
        // child holds a copy of every descriptor from its fork to its exec.
        for index in pipes.indices { #expect(Glibc.poll(&pipes[index], 1, 10_000) == 1) }
        #expect(pipes.allSatisfy { $0.revents & Int16(POLLHUP) != 0 })
        #expect(read(child.stdoutFD, &buffer, buffer.count) == 0)
    }

    @Test func outputNotHeld_byDefault() throws {
        let child = try ProcessSpawner().spawn(.init(arguments: ["/bin/true"], environment: [:], workingDirectory: "/")).get()
        defer { child.closeDescriptors() }
        #expect(child.heldWriteFDs.isEmpty)
        #expect(awaitExit(child))
        _ = ChildReaper.reap(pidFD: child.pidFD)
        var pipe = pollfd(fd: child.stdoutFD, events: Int16(POLLIN), revents: 0)
        #expect(Glibc.poll(&pipe, 1, 1000) == 1)
        #expect(pipe.revents & Int16(POLLHUP) != 0)
    }

    @Test func missingProgramAndBadDirectoryAreReportedWithoutAZombie() throws {
        let spawner = try ProcessSpawner()
        guard case .failure(.notFound) = spawner.spawn(.init(arguments: ["no-such-binary-xyz"], environment: [:], workingDirectory: "/")) else {
            Issue.record("expected notFound")
            return
        }
        // The spawn does not wait for the child's exec (x86-64): a step that fails in the child is
        // reported once it has exited, with exit code 127; a waiting spawn reports it at once.
        let failure: ProcessSpawner.Failure
        switch spawner.spawn(.init(arguments: ["/bin/true"], environment: [:], workingDirectory: "/no/such/dir")) {
        case .failure(let early):
            failure = early
        case .success(let child):
            defer { child.closeDescriptors() }
            #expect(awaitExit(child))
            #expect(ChildReaper.reap(pidFD: child.pidFD)?.code == 127)
            failure = try #require(spawner.startFailure(of: child))
            #expect(spawner.startFailure(of: child) == nil, "a failure is reported once")
        }
        guard case .failed(let step, let errno) = failure else {
            Issue.record("expected a chdir failure, got \(failure)")
            return
        }
        #expect(step.hasPrefix("chdir"))
        #expect(errno == ENOENT)
    }

    /// Many children at once, more than the spawner keeps records for, each failing or not:
    /// every one is reaped with its own outcome, none waits for another's exec.
    @Test func aBurstOfSpawns_eachGetsItsOwnOutcome() throws {
        let spawner = try ProcessSpawner()
        var children: [(ProcessSpawner.Child, Bool)] = []
        for index in 0..<40 {
            let failing = index % 3 == 0
            let request = ProcessSpawner.Request(
                arguments: ["/bin/sh", "-c", "exit \(index % 7)"], environment: [:],
                workingDirectory: failing ? "/no/such/dir/\(index)" : "/")
            switch spawner.spawn(request) {
            case .success(let child): children.append((child, failing))
            case .failure(let failure):
                // A waiting spawn (not x86-64) reports the failure here.
                #expect(failing, "unexpected failure \(failure)")
            }
        }
        for (index, (child, failing)) in children.enumerated() {
            #expect(awaitExit(child))
            let status = ChildReaper.reap(pidFD: child.pidFD)
            let failure = spawner.startFailure(of: child)
            if failing {
                #expect(status?.code == 127)
                guard case .failed(let step, ENOENT)? = failure else {
                    Issue.record("child \(index): expected a chdir failure, got \(String(describing: failure))")
                    continue
                }
                #expect(step.hasPrefix("chdir /no/such/dir/"))
            } else {
                #expect(failure == nil)
                #expect(status?.code != 127)
            }
            close(child.pidFD)
            close(child.stdoutFD)
            close(child.stderrFD)
        }
    }

    /// Children held before their exec — here each blocks writing into a full pipe passed as a
    /// v1 cgroup `tasks` file — hold only their own records: a spawn after them neither waits
    /// for them nor fails, and they finish once let go.
    /// (Where the spawn waits for each exec, the first held child would hold the test itself.)
    @Test(.enabled(if: !ProcessSpawner.waitsForExec, "the spawn waits for each child's exec here"))
    func childrenStuckBeforeExec_doNotHoldUpTheNextSpawn() throws {
        let spawner = try ProcessSpawner()
        let ends = try Self.fullPipe()
        defer { close(ends[0]) }
        var stuck: [ProcessSpawner.Child] = []
        for _ in 0..<24 {
            let request = ProcessSpawner.Request(
                arguments: ["/bin/true"], environment: [:], workingDirectory: "/", placement: CgroupPlacement(taskFDs: [ends[1]]))
            stuck.append(try spawner.spawn(request).get())
        }
        close(ends[1])
        let free = try spawner.spawn(.init(arguments: ["/bin/sh", "-c", "exit 3"], environment: [:], workingDirectory: "/")).get()
        #expect(awaitExit(free))
        #expect(ChildReaper.reap(pidFD: free.pidFD)?.code == 3)
        for child in stuck {
            var poll = pollfd(fd: child.pidFD, events: Int16(POLLIN), revents: 0)
            #expect(Glibc.poll(&poll, 1, 0) == 0, "a held child should still be waiting")
        }
        // Let them go: each write of "0" gets through, then the exec.
        var buffer = [UInt8](repeating: 0, count: 65536)
        var finished = 0
        while finished < stuck.count {
            _ = read(ends[0], &buffer, buffer.count)
            finished = stuck.filter { child in
                var poll = pollfd(fd: child.pidFD, events: Int16(POLLIN), revents: 0)
                return Glibc.poll(&poll, 1, 10) == 1
            }.count
        }
        for child in stuck + [free] {
            if child.pidFD != free.pidFD { #expect(ChildReaper.reap(pidFD: child.pidFD)?.code == 0) }
            #expect(spawner.startFailure(of: child) == nil)
            close(child.pidFD)
            close(child.stdoutFD)
            close(child.stderrFD)
        }
    }

    @Test(.enabled(if: !ProcessSpawner.waitsForExec, "the spawn waits for each child's exec here, and copies the whole table"))
    func aChildCopiesOnlyTheLowDescriptors_notWhisperdsWholeTable() throws {
        let spawner = try ProcessSpawner()
        // Many descriptors of ours, all above the slots (set aside when the first spawner was made).
        var extra: [Int32] = []
        defer { for fd in extra { close(fd) } }
        for _ in 0..<500 {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { break }
            extra.append(fd)
        }
        try #require(extra.count == 500, "needs 500 spare descriptors")
        // A child held before its exec (writing into a full pipe given as a v1 `tasks` file).
        let ends = try Self.fullPipe()
        defer { close(ends[0]) }
        let child = try spawner.spawn(.init(
            arguments: ["/bin/true"], environment: [:], workingDirectory: "/", placement: CgroupPlacement(taskFDs: [ends[1]]))).get()
        // One whose cgroup could hold it before its first step: the spawn does not wait, so it
        // copies the whole table as before.
        let held = try spawner.spawn(.init(
            arguments: ["/bin/true"], environment: [:], workingDirectory: "/",
            placement: CgroupPlacement(taskFDs: [ends[1]], mayHoldTheChildAtClone: true))).get()
        close(ends[1])
        defer {
            for spawned in [child, held] {
                close(spawned.pidFD)
                close(spawned.stdoutFD)
                close(spawned.stderrFD)
            }
        }
        let ours = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        let its = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(child.pid)/fd").count
        let heldCount = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(held.pid)/fd").count
        #expect(ours > 500)
        // The kernel copies at least the first 64 numbers; nothing near our 500 more.
        #expect(its < 200, "the child holds \(its) descriptors before its exec, whisperd \(ours)")
        #expect(heldCount > 500, "a child its cgroup may hold copies the whole table (\(heldCount))")
        // They still have what they need: once the pipe drains, their writes get through and they exec.
        var buffer = [UInt8](repeating: 0, count: 65536)
        _ = fcntl(ends[0], F_SETFL, O_NONBLOCK)
        for spawned in [child, held] {
            var exit = pollfd(fd: spawned.pidFD, events: Int16(POLLIN), revents: 0)
            while Glibc.poll(&exit, 1, 10) == 0 { _ = read(ends[0], &buffer, buffer.count) }
            #expect(ChildReaper.reap(pidFD: spawned.pidFD)?.code == 0)
            #expect(spawner.startFailure(of: spawned) == nil)
        }
    }

    @Test func theEnvironmentBlock_isExactlyTheGivenPairs_sortedByKey() throws {
        let environment = ["B": "2", "A": "1=x", "EMPTY": "", "UNICODE": "café ☕"]
        let child = try ProcessSpawner().spawn(.init(arguments: ["/usr/bin/env"], environment: environment, workingDirectory: "/")).get()
        defer { child.closeDescriptors() }
        #expect(awaitExit(child))
        #expect(ChildReaper.reap(pidFD: child.pidFD)?.code == 0)
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = read(child.stdoutFD, &buffer, buffer.count)
            if count > 0 { output += buffer[0..<count] } else if count < 0, errno == EAGAIN {
                var readable = pollfd(fd: child.stdoutFD, events: Int16(POLLIN), revents: 0)
                _ = Glibc.poll(&readable, 1, 1000)
            } else { break }
        }
        #expect(String(decoding: output, as: UTF8.self) == "A=1=x\nB=2\nEMPTY=\nUNICODE=café ☕\n")
    }

    /// The exit is read without reaping: the zombie (and its pid) stays until the reap, which
    /// then sees the same status.
    @Test func exitStatus_leavesTheZombieForTheReap() throws {
        let child = try ProcessSpawner().spawn(.init(arguments: ["/bin/sh", "-c", "exit 5"], environment: [:], workingDirectory: "/")).get()
        defer { child.closeDescriptors() }
        #expect(awaitExit(child))
        #expect(ChildReaper.exitStatus(pidFD: child.pidFD)?.code == 5)
        let stat = try String(contentsOfFile: "/proc/\(child.pid)/stat", encoding: .utf8)
        #expect(stat.split(separator: ")").last?.split(separator: " ").first == "Z", "still a zombie: \(stat)")
        #expect(ChildReaper.exitStatus(pidFD: child.pidFD)?.code == 5, "asked twice, the same")
        #expect(ChildReaper.reap(pidFD: child.pidFD)?.code == 5)
        #expect(access("/proc/\(child.pid)", F_OK) != 0, "reaped: gone")
    }

    /// One command serves several starts (a restart reuses its service's); one whose program is
    /// not found starts nothing and says so.
    @Test func aCommand_servesEveryStart_andOneNotFoundStartsNothing() throws {
        let spawner = try ProcessSpawner()
        let command = ProcessSpawner.Command(arguments: ["sh", "-c", "echo \"$WORD\""], environment: ["WORD": "again", "PATH": "/usr/bin:/bin"], workingDirectory: "/")
        #expect(command.path == "/usr/bin/sh")
        for _ in 0..<2 {
            let child = try spawner.spawn(.init(command: command, workingDirectory: "/")).get()
            defer { child.closeDescriptors() }
            #expect(awaitExit(child))
            #expect(ChildReaper.reap(pidFD: child.pidFD)?.code == 0)
            #expect(whisper_set_blocking(child.stdoutFD))
            var buffer = [UInt8](repeating: 0, count: 64)
            let count = read(child.stdoutFD, &buffer, buffer.count)
            #expect(String(decoding: buffer[0..<max(0, count)], as: UTF8.self) == "again\n")
        }
        let missing = ProcessSpawner.Command(arguments: ["no-such-program-xyz"], environment: ["PATH": "/usr/bin:/bin"], workingDirectory: "/")
        #expect(missing.path == nil)
        guard case .failure(.notFound("no-such-program-xyz")) = spawner.spawn(.init(command: missing, workingDirectory: "/")) else {
            Issue.record("a program not found must not start")
            return
        }
        #expect(ProcessSpawner.Command(arguments: [], environment: [:], workingDirectory: "/").path == nil)
    }

    @Test func childrenDoNotInheritWhisperdsDescriptors() throws {
        let spawner = try ProcessSpawner()
        let leaked = open("/dev/null", O_RDONLY)  // deliberately without O_CLOEXEC
        defer { close(leaked) }
        let child = try spawner.spawn(.init(arguments: ["sh", "-c", "ls /proc/self/fd | wc -l"], environment: ["PATH": "/usr/bin:/bin"], workingDirectory: "/")).get()
        defer { child.closeDescriptors() }
        var poll = pollfd(fd: child.pidFD, events: Int16(POLLIN), revents: 0)
        _ = Glibc.poll(&poll, 1, 5000)
        _ = ChildReaper.reap(pidFD: child.pidFD)
        #expect(whisper_set_blocking(child.stdoutFD))
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = read(child.stdoutFD, &buffer, buffer.count)
        // 0, 1, 2 and the one `ls` opens for /proc/self/fd.
        #expect(String(decoding: buffer[0..<max(0, count)], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "4")
    }
}

/// Waits up to 5 s for the child's exit (its pidfd polls readable).
func awaitExit(_ child: ProcessSpawner.Child) -> Bool {
    var exit = pollfd(fd: child.pidFD, events: Int16(POLLIN), revents: 0)
    return Glibc.poll(&exit, 1, 5000) == 1
}

extension ProcessSpawner.Child {
    /// The test's ends: the pidfd and the output pipes.
    func closeDescriptors() {
        close(pidFD)
        close(stdoutFD)
        close(stderrFD)
    }
}

func whisper_set_blocking(_ fd: Int32) -> Bool {
    let flags = fcntl(fd, F_GETFL)
    return fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0
}
