import Foundation
import Glibc
import Testing
import WhisperConfig
import WhisperCore
@testable import WhisperDaemon
@testable import WhisperSystem

/// The keeper's bookkeeping against a temporary directory laid out like a delegated cgroup v2
/// subtree (as `FakeCgroupV2Tests` in WhisperSystemTests): which cgroups it keeps, the figures
/// it caches, what it reports about OOM kills and peaks, and what goes when a character does.
@Suite struct CgroupKeeperTests {
    final class FakeV2Root {
        let scratch = Scratch()
        let service = "/system.slice/whisperd.service"

        init() {
            write(service + "/cgroup.procs", "")
            write(service + "/cgroup.controllers", "cpuset cpu io memory pids\n")
            write(service + "/cgroup.subtree_control", "")
            write(service + "/supervisor/cgroup.procs", "")
        }

        var layout: CgroupLayout { CgroupLayout(unified: .init(mountPoint: scratch.path, ownPath: service)) }

        /// The character's directory as the kernel would fill it when whisperd makes it.
        func character(_ name: String, procs: String = "", memory: UInt64 = 1 << 20, peak: UInt64 = 2 << 20, oomKills: Int = 0) {
            let directory = service + "/char-" + name
            for file in [
                "cgroup.kill", "memory.max", "memory.high", "memory.swap.max", "memory.oom.group", "cpu.max", "cpu.weight",
                "memory.low", "pids.max", "cpuset.cpus",
            ] {
                write(directory + "/" + file, "")
            }
            write(directory + "/cgroup.procs", procs)
            write(directory + "/cgroup.events", "populated \(procs.isEmpty ? 0 : 1)\nfrozen 0\n")
            write(directory + "/memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill \(oomKills)\noom_group_kill 0\n")
            write(directory + "/memory.current", "\(memory)\n")
            write(directory + "/memory.peak", "\(peak)\n")
            write(directory + "/cpu.stat", "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
            write(directory + "/pids.current", "3\n")
        }

        func write(_ relative: String, _ text: String) {
            let path = scratch.path + relative
            try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            // In place, like the kernel: the keeper keeps some of these files open.
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
            close(fd)
        }
    }

    static func spec(_ name: String, memory: UInt64? = 64 << 20) -> ServiceSpec {
        ServiceSpec(
            name: ServiceName(name)!, kind: .character, launch: LaunchSpec(arguments: ["/bin/true"]), limits: Limits(memoryBytes: memory))
    }

    /// The keeper on a fake v2 root, with what it told the fleet.
    final class Harness {
        let root = FakeV2Root()
        let backend: CgroupBackend
        let loop: EventLoop
        let keeper: CgroupKeeper
        var oomKills: [(ServiceName, UInt64)] = []

        init() throws {
            backend = try CgroupBackend.detect(mode: .auto, basePath: nil, layout: root.layout)
            loop = try EventLoop()
            keeper = CgroupKeeper(backend: backend, loop: loop, log: DaemonLog())
            keeper.events.oomKilled = { [unowned self] name, kills in self.oomKills.append((name, kills)) }
        }

        deinit { backend.finish() }
    }

    @Test func aCharactersCgroup_isMadeAtItsFirstStart_andGoesWhenItIsRemoved() throws {
        let harness = try Harness()
        let elena = ServiceName("elena")!
        #expect(!harness.keeper.hasCgroup(elena))
        #expect(harness.keeper.usage(of: elena, now: 1) == nil, "no cgroup, no figures")
        harness.root.character("elena")
        _ = try harness.keeper.prepare(for: Self.spec("elena"))
        #expect(harness.keeper.hasCgroup(elena))
        #expect(harness.keeper.contains(getpid(), in: elena) == false, "the test runner is not in the fake cgroup")
        harness.keeper.remove(elena, offThread: false)
        #expect(!harness.keeper.hasCgroup(elena))
        #expect(harness.keeper.lastUsage(of: elena) == nil)
    }

    @Test func figures_areReadAtMostOnceASecond_andFreshOnAsk() throws {
        let harness = try Harness()
        let elena = ServiceName("elena")!
        harness.root.character("elena", memory: 1000)
        _ = try harness.keeper.prepare(for: Self.spec("elena"))
        let second: Int64 = 1_000_000_000
        #expect(harness.keeper.usage(of: elena, now: 10 * second)?.memoryBytes == 1000)
        harness.root.write(harness.root.service + "/char-elena/memory.current", "2000\n")
        #expect(harness.keeper.usage(of: elena, now: 10 * second + second - 1)?.memoryBytes == 1000, "cached under a second")
        #expect(harness.keeper.lastUsage(of: elena)?.memoryBytes == 1000)
        #expect(harness.keeper.freshUsage(of: elena)?.memoryBytes == 2000, "read now")
        #expect(harness.keeper.usage(of: elena, now: 11 * second)?.memoryBytes == 2000, "a second later, read again")
        harness.keeper.store([(elena, CgroupUsage(memoryBytes: 3000))], readAt: 12 * second)
        #expect(harness.keeper.usageReadAt == 12 * second)
        #expect(harness.keeper.usage(of: elena, now: 12 * second)?.memoryBytes == 3000, "what the metrics thread read")
    }

    @Test func theEndOfARun_reportsNewOOMKills_andItsPeak() throws {
        let harness = try Harness()
        let elena = ServiceName("elena")!
        harness.root.character("elena", peak: 5 << 20, oomKills: 1)
        _ = try harness.keeper.prepare(for: Self.spec("elena"))
        harness.root.write(harness.root.service + "/char-elena/memory.events", "oom 3\noom_kill 3\n")
        let peak = harness.keeper.endRun(elena, removalOffThread: false)
        #expect(peak == 5 << 20)
        #expect(harness.oomKills.map(\.0) == [elena])
        #expect(harness.oomKills.map(\.1) == [2], "only the kills since the cgroup was prepared")
        _ = harness.keeper.endRun(elena, removalOffThread: false)
        #expect(harness.oomKills.count == 1, "kills are reported once")
        #expect(harness.keeper.endRun(ServiceName("nobody")!, removalOffThread: false) == nil)
    }

    @Test func anEmptyCgroup_isNotDrained_andAKillOfAnEndedRunIsRefused() throws {
        let harness = try Harness()
        let elena = ServiceName("elena")!
        harness.root.character("elena")
        _ = try harness.keeper.prepare(for: Self.spec("elena"))
        let run = LiveRun(pid: 999_999, pidFD: -1)
        #expect(!harness.keeper.drainIfPopulated(elena, run, .exited(code: 0)), "nothing left in the cgroup")
        #expect(harness.keeper.anyDraining == nil && harness.keeper.nextDrainDeadline == nil)
        #expect(!harness.keeper.killAll(elena, isCurrentRun: false), "not the current run: its pid is not ours")
        #expect(harness.keeper.killAll(ServiceName("nobody")!, isCurrentRun: false), "no cgroup: the process group is all there is")
    }

    @Test func aPopulatedCgroup_isDrained_untilItsDeadline() throws {
        let harness = try Harness()
        let elena = ServiceName("elena")!
        harness.root.character("elena", procs: "999998\n")
        _ = try harness.keeper.prepare(for: Self.spec("elena"))
        var drained: [(ServiceName, Int32)] = []
        harness.keeper.events.drained = { name, run, _ in drained.append((name, run.pid)) }
        let run = LiveRun(pid: 999_999, pidFD: -1)
        #expect(harness.keeper.drainIfPopulated(elena, run, .exited(code: 0)))
        #expect(harness.keeper.isDraining(elena) && harness.keeper.anyDraining == elena)
        let deadline = try #require(harness.keeper.nextDrainDeadline)
        harness.keeper.expireDrains(now: deadline - 1)
        #expect(drained.isEmpty, "before its deadline")
        harness.keeper.expireDrains(now: deadline)
        #expect(drained.map(\.0) == [elena] && drained.map(\.1) == [999_999])
        #expect(!harness.keeper.isDraining(elena) && harness.keeper.nextDrainDeadline == nil)
    }

    @Test func limits_areDescribedAsTheLogSaysThem() {
        #expect(CgroupKeeper.describe(Limits(memoryBytes: 64 << 20, pids: 10)) == "memory=64.0 MiB cpus=unlimited pids=10")
    }
}
