import Foundation
import Glibc
import Testing
import WhisperCore
import WhisperSystem
import WhisperFiles

@Suite struct CgroupLayoutTests {
    @Test func field_readsOneCountOutOfAKeyedFile() {
        let oomControl = "oom_kill_disable 0\nunder_oom 0\noom_kill 12\n"
        #expect(CgroupFS.field("oom_kill", in: oomControl) == 12)
        #expect(CgroupFS.field("oom_kill_disable", in: oomControl) == 0)
        #expect(CgroupFS.field("oom", in: oomControl) == nil, "a key is the whole first word")
        #expect(CgroupFS.field("usage_usec", in: "usage_usec 18446744073709551615\nuser_usec 5") == UInt64.max)
        #expect(CgroupFS.field("usage_usec", in: "usage_usec 18446744073709551616") == nil, "too large")
        #expect(CgroupFS.field("user_usec", in: "usage_usec 1\nuser_usec 5") == 5, "the last line needs no newline")
        #expect(CgroupFS.field("populated", in: "populated x1\n") == nil)
        #expect(CgroupFS.field("populated", in: "populated \n") == nil)
        #expect(CgroupFS.field("populated", in: "") == nil)
    }

    /// Read from an open descriptor, from its start each time, as the end of every run does.
    @Test func fieldAndNumber_readFromAnOpenFile_atItsStartEachTime() throws {
        let directory = NSTemporaryDirectory() + "cgroupfs-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        func opened(_ name: String, _ text: String) throws -> Int32 {
            try text.write(toFile: "\(directory)/\(name)", atomically: false, encoding: .utf8)
            return open("\(directory)/\(name)", O_RDWR | O_CLOEXEC)
        }
        let events = try opened("cgroup.events", "populated 1\nfrozen 0\n")
        let peak = try opened("memory.peak", "123456\n")
        let long = try opened("long", String(repeating: "x 1\n", count: 400) + "oom_kill 3\n")
        let junk = try opened("junk", "12a\n")
        defer { for fd in [events, peak, long, junk] { close(fd) } }
        #expect(CgroupFS.field("populated", fd: events) == 1)
        #expect(CgroupFS.field("frozen", fd: events) == 0)
        #expect(CgroupFS.field("missing", fd: events) == nil)
        #expect(CgroupFS.number(fd: peak) == 123456)
        #expect(CgroupFS.number(fd: peak) == 123456, "again, from the start")
        #expect(CgroupFS.field("oom_kill", fd: long) == nil, "longer than these files are: not read")
        #expect(CgroupFS.number(fd: junk) == nil)
        #expect(CgroupFS.number(fd: -1) == nil)
        // The kernel rewrites the file in place; the next read sees the new value.
        #expect(pwrite(events, "populated 0\nfrozen 0\n", 22, 0) == 22)
        #expect(CgroupFS.field("populated", fd: events) == 0)
    }

    @Test func parsesAHybridHost_likeThisOne() {
        let mountinfo = """
            31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
            33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
            37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
            39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
            """
        let selfCgroup = """
            9:name=systemd:/
            8:pids:/
            6:freezer:/
            4:memory:/process_api/ee79
            2:cpuacct:/
            1:cpu:/
            0::/
            """
        let layout = CgroupLayout.parse(mountinfo: mountinfo, selfCgroup: selfCgroup)
        #expect(layout.unified == .init(mountPoint: "/sys/fs/cgroup/unified", ownPath: "/"))
        #expect(layout.controllers["memory"] == .init(mountPoint: "/sys/fs/cgroup/memory", ownPath: "/process_api/ee79"))
        #expect(layout.controllers["freezer"]?.mountPoint == "/sys/fs/cgroup/freezer")
        #expect(Set(layout.controllers.keys) == ["cpu", "cpuacct", "memory", "freezer", "pids"])
    }

    @Test func parsesAPureV2Host_andCoMountedV1Controllers() {
        let v2 = CgroupLayout.parse(
            mountinfo: "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate",
            selfCgroup: "0::/system.slice/whisperd.service\n")
        #expect(v2.unified == .init(mountPoint: "/sys/fs/cgroup", ownPath: "/system.slice/whisperd.service"))
        #expect(v2.controllers.isEmpty)
        #expect(v2.unified?.directory("/system.slice/whisperd.service/char-elena") == "/sys/fs/cgroup/system.slice/whisperd.service/char-elena")

        let comounted = CgroupLayout.parse(
            mountinfo: "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct",
            selfCgroup: "2:cpu,cpuacct:/user.slice\n")
        #expect(comounted.controllers["cpu"] == comounted.controllers["cpuacct"])
        #expect(comounted.controllers["cpu"]?.ownPath == "/user.slice")
    }

    @Test func aBindMountedSubtree_givesPathsRelativeToItsRoot() {
        // A container without a cgroup namespace sees its own subtree mounted at the top.
        let layout = CgroupLayout.parse(
            mountinfo: "41 31 0:38 /machine.slice/box /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw",
            selfCgroup: "0::/machine.slice/box/system.slice/whisperd.service\n")
        #expect(layout.unified?.ownPath == "/system.slice/whisperd.service")
    }

    @Test func mountPointsWithSpaces_areUnescaped() {
        let layout = CgroupLayout.parse(
            mountinfo: "41 31 0:38 / /tmp/odd\\040place rw - cgroup2 cgroup2 rw", selfCgroup: "0::/\n")
        #expect(layout.unified?.mountPoint == "/tmp/odd place")
    }
}

@Suite struct CgroupLimitFilesTests {
    let limits = Limits(memoryBytes: 512 << 20, memoryHighBytes: 448 << 20, cpus: 0.2, pids: 256)

    @Test func v2Values() {
        #expect(CgroupLimitFiles.memory(limits, .v2).map { "\($0.file)=\($0.value)" } == [
            "memory.max=536870912", "memory.high=469762048", "memory.swap.max=0", "memory.low=0", "memory.oom.group=1",
        ])
        #expect(CgroupLimitFiles.cpu(limits, .v2).map(\.value) == ["20000 100000", "100"])
        #expect(CgroupLimitFiles.memory(Limits(), .v2).map(\.value) == ["max", "max", "max", "0", "1"])
        #expect(CgroupLimitFiles.cpu(Limits(), .v2).map(\.value) == ["max 100000", "100"])
        // Compose's mem_reservation and cpu_shares (as a weight).
        let reserved = Limits(cpuWeight: 250, memoryLowBytes: 64 << 20)
        #expect(CgroupLimitFiles.memory(reserved, .v2).contains { $0 == ("memory.low", "67108864") })
        #expect(CgroupLimitFiles.cpu(reserved, .v2).contains { $0 == ("cpu.weight", "250") })
        #expect(CgroupLimitFiles.cpu(reserved, .v1).contains { $0 == ("cpu.shares", "2560") })
        #expect(CgroupLimitFiles.pids(Limits()).map(\.value) == ["max"])
        // cpuset: v2 inherits from an empty value; v1 has no "inherit", so it gets the base's CPUs.
        let pinned = Limits(cpuset: CPUSet(cpus: [3, 1, 2]))
        #expect(CgroupLimitFiles.cpuset(pinned, .v2, allCPUs: "0-7").map(\.value) == ["1-3"])
        #expect(CgroupLimitFiles.cpuset(Limits(), .v2, allCPUs: "0-7").map(\.value) == [""])
        #expect(CgroupLimitFiles.cpuset(Limits(), .v1, allCPUs: "0-7").map(\.value) == ["0-7"])
        // Never a crash on a value the roster should have refused: no limit instead.
        #expect(CgroupLimitFiles.cpu(Limits(cpus: 1e308), .v2).map(\.value) == ["max 100000", "100"])
        #expect(CgroupLimitFiles.cpu(Limits(cpus: .infinity), .v1).map(\.value) == ["100000", "-1", "1024"])
    }

    @Test func v1Values_keepMemswAboveTheLimitAtEveryStep() {
        #expect(CgroupLimitFiles.memory(limits, .v1).map { "\($0.file)=\($0.value)" } == [
            "memory.memsw.limit_in_bytes=-1", "memory.limit_in_bytes=536870912", "memory.memsw.limit_in_bytes=536870912",
            "memory.soft_limit_in_bytes=469762048",
        ])
        #expect(CgroupLimitFiles.cpu(limits, .v1).map { "\($0.file)=\($0.value)" } == [
            "cpu.cfs_period_us=100000", "cpu.cfs_quota_us=20000", "cpu.shares=1024",
        ])
        #expect(CgroupLimitFiles.cpu(Limits(), .v1)[1].value == "-1")
        // The kernel's minimum quota is 1 ms.
        #expect(CgroupLimitFiles.cpu(Limits(cpus: 0.001), .v1)[1].value == "1000")
    }
}

/// The v2 code paths against a temporary directory laid out like a delegated cgroupfs subtree
/// (what systemd gives a `Delegate=yes` service), checking which files get which values.
@Suite struct FakeCgroupV2Tests {
    final class FakeTree {
        let root: String
        let service = "/system.slice/whisperd.service"

        init(controllers: String = "cpuset cpu io memory pids") {
            var template = Array("/tmp/wd-fakecg-XXXXXX".utf8CString)
            root = String(cString: template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!)! })
            write(service + "/cgroup.procs", "")
            write(service + "/cgroup.controllers", controllers + "\n")
            write(service + "/cgroup.subtree_control", "")
            write(service + "/supervisor/cgroup.procs", "")
            for name in ["elena", "old"] {
                let character = service + "/char-" + name
                for file in [
                    "cgroup.procs", "cgroup.kill", "memory.max", "memory.high", "memory.swap.max", "memory.oom.group",
                    "cpu.max", "cpu.weight", "memory.low", "pids.max", "cpuset.cpus",
                ] {
                    write(character + "/" + file, "")
                }
                write(character + "/cgroup.events", "populated 0\nfrozen 0\n")
                write(character + "/memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n")
                write(character + "/memory.current", "1048576\n")
                write(character + "/memory.peak", "2097152\n")
                write(character + "/cpu.stat", "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
                write(character + "/pids.current", "3\n")
            }
        }

        var layout: CgroupLayout { CgroupLayout(unified: .init(mountPoint: root, ownPath: service)) }

        func write(_ relative: String, _ text: String) {
            let path = root + relative
            try? FileManager.default.createDirectory(
                atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            // In place, like the kernel: whisperd keeps some of these files open.
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            _ = text.withCString { Glibc.write(fd, $0, strlen($0)) }
            close(fd)
        }

        func read(_ relative: String) -> String? {
            readFileContents(root + relative).map { String(decoding: $0, as: UTF8.self) }
        }

        func elena(_ file: String) -> String? { read(service + "/char-elena/" + file) }

        deinit { try? FileManager.default.removeItem(atPath: root) }
    }

    @Test func delegatedSubtree_movesWhisperdToALeaf_enablesControllers_andWritesEveryLimit() throws {
        let fake = FakeTree()
        let backend = try CgroupBackend.detect(mode: .auto, basePath: nil, layout: fake.layout)
        defer { backend.finish() }
        #expect(backend.name == "v2")
        #expect(backend.notEnforced.isEmpty)
        #expect(backend.grouping?.baseDirectory == fake.root + fake.service)
        #expect(fake.read(fake.service + "/supervisor/cgroup.procs") == "0")
        #expect(fake.read(fake.service + "/cgroup.subtree_control") == "+memory +cpu +pids +cpuset")

        let elena = backend.makeCharacterCgroup("elena")
        let placement = try elena.prepare(limits: Limits(memoryBytes: 512 << 20, memoryHighBytes: 448 << 20, cpus: 1.5, pids: 256))
        #expect(placement.directoryFD >= 0 && placement.taskFDs.isEmpty, "one v2 cgroup holds every controller")
        #expect(placement.mayHoldTheChildAtClone, "a CPU quota joined at clone can hold the child: the spawn must not wait for it")
        #expect(fake.elena("memory.max") == "536870912")
        #expect(fake.elena("memory.high") == "469762048")
        #expect(fake.elena("memory.swap.max") == "0")
        #expect(fake.elena("memory.oom.group") == "1")
        #expect(fake.elena("cpu.max") == "150000 100000")
        #expect(fake.elena("pids.max") == "256")
        #expect(elena.oomEventFD >= 0 && elena.oomEventNeedsPriority)
        #expect(elena.populatedEventFD >= 0)

        try elena.applyLive(Limits(cpuset: CPUSet(cpus: [0, 1])))
        #expect(fake.elena("cpuset.cpus") == "0-1")
        try elena.applyLive(Limits())
        #expect(fake.elena("memory.max") == "max")
        #expect(fake.elena("cpuset.cpus") == "\n", "back to the parent's CPUs")
        #expect(fake.elena("memory.high") == "max")
        #expect(fake.elena("memory.swap.max") == "max")
        #expect(fake.elena("cpu.max") == "max 100000")
        #expect(fake.elena("pids.max") == "max")
    }

    @Test func killEmptinessAccountingAndOOMCounter_readTheRightFiles() throws {
        let fake = FakeTree()
        let backend = try CgroupBackend.detect(mode: .v2, basePath: nil, layout: fake.layout)
        defer { backend.finish() }
        let elena = backend.makeCharacterCgroup("elena")
        let placement = try elena.prepare(limits: Limits(memoryBytes: 64 << 20, pids: 16))
        #expect(!placement.mayHoldTheChildAtClone, "memory.max and pids.max do not hold a child before its first step")
        for holding in [Limits(cpuWeight: 50), Limits(cpuset: CPUSet(cpus: [0])), Limits(memoryHighBytes: 32 << 20)] {
            #expect(try elena.prepare(limits: holding).mayHoldTheChildAtClone, "\(holding)")
        }

        #expect(elena.isEmpty())
        fake.write(fake.service + "/char-elena/cgroup.events", "populated 1\nfrozen 0\n")
        #expect(!elena.isEmpty())
        elena.killAll()
        #expect(fake.elena("cgroup.kill") == "1")

        let usage = elena.usage()
        #expect(usage.memoryBytes == 1_048_576)
        #expect(usage.memoryPeakBytes == 2_097_152)
        #expect(usage.cpuMicroseconds == 1_500_000)
        #expect(usage.pids == 3)

        #expect(elena.takeNewOOMKills() == 0)
        fake.write(fake.service + "/char-elena/memory.events", "low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\noom_group_kill 1\n")
        #expect(elena.takeNewOOMKills() == 2)
        #expect(elena.takeNewOOMKills() == 0)
    }

    @Test func leftoversAreFound_andOnlyCharacterCgroupsCount() throws {
        let fake = FakeTree()
        fake.write(fake.service + "/char-old/cgroup.procs", "999999999\n")
        let backend = try CgroupBackend.detect(mode: .v2, basePath: nil, layout: fake.layout)
        defer { backend.finish() }
        let leftovers = backend.leftoverCharacterCgroups()
        #expect(leftovers.map(\.name) == ["elena", "old"], "supervisor is not a character")
        #expect(leftovers.first { $0.name == "old" }?.pids == [999_999_999])
    }

    @Test func aSubtreeWithoutControllers_stillGroups_andSaysWhatIsNotEnforced() throws {
        // Like systemd-nspawn on a hybrid host: v2 delegated without controllers, v1 read-only.
        let fake = FakeTree(controllers: "")
        let readOnly = fake.root + "/not-a-directory"
        _ = FileManager.default.createFile(atPath: readOnly, contents: Data())
        var layout = fake.layout
        for controller in ["memory", "cpu", "cpuacct", "pids", "freezer"] {
            layout.controllers[controller] = .init(mountPoint: readOnly, ownPath: "/")
        }
        let backend = try CgroupBackend.detect(mode: .auto, basePath: nil, layout: layout)
        defer { backend.finish() }
        #expect(backend.name == "v2")
        #expect(backend.grouping != nil)
        #expect(backend.notEnforced == ["memory", "memory_high", "cpus", "pids", "cpuset"])
        #expect(backend.notes.contains { $0.contains("has no memory, cpu, pids, cpuset controller") })
        #expect(backend.notes.contains { $0.hasPrefix("cgroup v1 memory:") && $0.contains("not writable") })
        // No controllers enabled, so whisperd need not leave its cgroup.
        #expect(fake.read(fake.service + "/supervisor/cgroup.procs") == "")
    }

    @Test func aBaseHeldByAnotherWhisperd_isRefused() throws {
        let fake = FakeTree()
        let first = try CgroupBackend.detect(mode: .v2, basePath: nil, layout: fake.layout)
        defer { first.finish() }
        #expect(throws: CgroupBackend.DetectionError.self) {
            _ = try CgroupBackend.detect(mode: .v2, basePath: nil, layout: fake.layout)
        }
    }

    @Test func noneMode_usesNothing() throws {
        let backend = try CgroupBackend.detect(mode: .none, basePath: nil, layout: FakeTree().layout)
        #expect(backend.name == "none")
        #expect(backend.grouping == nil)
        #expect(backend.notEnforced == ["memory", "memory_high", "cpus", "pids", "cpuset"])
    }
}
