import Foundation
import Glibc
import Testing
import WhisperCore
import WhisperSystem

/// Real kernel enforcement: this machine (and CI) has writable v1 memory, cpu, pids and freezer
/// hierarchies plus a controller-less v2 hierarchy, so `auto` groups and kills through v2 and
/// limits through v1; `--cgroup-backend v1` and `v2` force the other code paths for real.
extension IntegrationTests {
    @Suite struct CgroupSection {
        /// `char-NAME` of this whisperd in the hierarchy of `controller` (`nil`: the v2 one).
        static func directory(_ whisperd: WhisperdProcess, _ name: String, controller: String?) throws -> String {
            let mount = try #require(controller.map(TestCgroups.mountPoint(controller:)) ?? TestCgroups.unifiedMountPoint)
            return mount + (whisperd.cgroupBase ?? "") + "/char-" + name
        }

        static func resources(_ whisperd: WhisperdProcess, _ name: String) -> [String: Any]? {
            whisperd.character(name)?["resources"] as? [String: Any]
        }

        /// A character whose main process leaves a `setsid` grandchild behind.
        static func daemonizingRoster(limits: String) -> String {
            fastDefaults + """
                characters:
                  elena:
                    command: [sh, -c, 'setsid sleep 300 & exec sleep 300']
                    limits: \(limits)
                """
        }

        /// SIGKILLs the main process; every process that was in `group` must be gone by the restart.
        static func killMainExpectingWholeTreeGone(_ whisperd: WhisperdProcess, main: Int32, group: String) {
            #expect(eventually { TestCgroups.pids(group).count == 2 })
            let members = TestCgroups.pids(group)
            kill(main, SIGKILL)
            #expect(whisperd.waitFor("elena: starting -> running", occurrence: 2) != nil)
            for pid in members { #expect(!isAlive(pid), "process \(pid) outlived its character") }
        }

        @Test func memoryHog_isOOMKilledAtItsLimit_withPeakMemory_andItsSiblingIsUntouched() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      hog:
                        command: [sh, -c, 'a=x; while :; do a=$a$a; done']
                        limits: {memory: 64M}
                      calm: {command: [sleep, '300']}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let calm = try #require(WhisperdProcess.pid(in: whisperd.waitFor("calm: starting -> running")))
            let memory = try Self.directory(whisperd, "hog", controller: "memory")
            #expect(TestCgroups.read(memory + "/memory.limit_in_bytes") == "67108864\n")
            #expect(TestCgroups.read(memory + "/memory.memsw.limit_in_bytes") == "67108864\n")

            #expect(whisperd.waitFor("hog:", "running -> backoff", "OOMKilled (peak ") != nil)
            // Restarted per policy.
            #expect(whisperd.waitFor("hog: starting -> running", occurrence: 2) != nil)
            let hog = try #require(whisperd.character("hog"))
            let lastExit = try #require(hog["last_exit"] as? [String: Any])
            #expect(lastExit["reason"] as? String == "OOMKilled")
            let peak = try #require(lastExit["peak_memory_bytes"] as? Int)
            #expect(peak > 32 << 20 && peak <= 64 << 20, "peak \(peak) should be near the 64M limit")
            #expect((hog["oom_kills"] as? Int ?? 0) >= 1)
            #expect((hog["restarts_by_reason"] as? [String: Int])?["OOMKilled"] ?? 0 >= 1)

            let sibling = try #require(whisperd.character("calm"))
            #expect(sibling["pid"] as? Int == Int(calm))
            #expect(sibling["state"] as? String == "running")
            #expect(sibling["restarts"] as? Int == 0)
        }

        @Test func forkBomb_isCappedAtPids_siblingKeepsWorking_andStopLeavesNothing() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      bomb:
                        command: [sh, -c, 'bomb() { while :; do bomb & done; }; bomb & exec sleep 300']
                        limits: {pids: 24, cpus: 0.5}
                      calm: {command: [sleep, '300']}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let calm = try #require(WhisperdProcess.pid(in: whisperd.waitFor("calm: starting -> running")))
            let main = try #require(WhisperdProcess.pid(in: whisperd.waitFor("bomb: starting -> running")))
            let pids = try Self.directory(whisperd, "bomb", controller: "pids")
            #expect(TestCgroups.read(pids + "/pids.max") == "24\n")
            // The kernel refused forks at the cap (pids.events counts them) and never went past it.
            #expect(eventually { (TestCgroups.read(pids + "/pids.events") ?? "").contains("max ") && !(TestCgroups.read(pids + "/pids.events") ?? "").contains("max 0") })
            for _ in 0..<20 {
                let current = Int((TestCgroups.read(pids + "/pids.current") ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
                #expect(current <= 24)
                usleep(20_000)
            }
            #expect(whisperd.character("calm")?["pid"] as? Int == Int(calm))
            #expect(whisperd.character("bomb")?["pid"] as? Int == Int(main))
            #expect(whisperd.get("/health") != nil)

            let group = try Self.directory(whisperd, "bomb", controller: nil)
            let members = TestCgroups.pids(group)
            #expect(!members.isEmpty)
            whisperd.signal(SIGTERM)
            #expect(whisperd.waitForExit() == 0)
            for pid in members { #expect(!isAlive(pid), "bomb process \(pid) survived the stop") }
            #expect(!FileManager.default.fileExists(atPath: group), "empty cgroups are removed on stop")
        }

        @Test func busyLoop_withCpus0_2_usesAboutAFifthOfACore() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      spin:
                        command: [sh, -c, 'while :; do :; done']
                        limits: {cpus: 0.2}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            _ = try #require(whisperd.waitFor("spin: starting -> running"))
            let cpu = try Self.directory(whisperd, "spin", controller: "cpu")
            #expect(TestCgroups.read(cpu + "/cpu.cfs_quota_us") == "20000\n")
            #expect(TestCgroups.read(cpu + "/cpu.cfs_period_us") == "100000\n")
            let startCPU = try #require(Self.resources(whisperd, "spin")?["cpu_seconds"] as? Double)
            let startWall = Date()
            // A measurement window, not synchronisation: CPU time accrues only with wall time.
            usleep(3_000_000)
            let endCPU = try #require(Self.resources(whisperd, "spin")?["cpu_seconds"] as? Double)
            let share = (endCPU - startCPU) / Date().timeIntervalSince(startWall)
            #expect(share > 0.1 && share < 0.3, "busy loop used \(share) of a core with cpus: 0.2")
        }

        @Test func doubleForkedGrandchild_diesWithItsCharacter_onRestartAndOnStop() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      daemonizer:
                        command: [sh, -c, 'setsid sh -c "echo \\$$ >> $STATE_DIRECTORY/grandchildren; exec sleep 300" & exec sleep 300']
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let main = try #require(WhisperdProcess.pid(in: whisperd.waitFor("daemonizer: starting -> running")))
            #expect(eventually { (scratch.read("state/daemonizer/grandchildren") ?? "").split(separator: "\n").count == 1 })
            let first = try #require(Int32((scratch.read("state/daemonizer/grandchildren") ?? "").split(separator: "\n").first ?? ""))
            #expect(isAlive(first))

            kill(main, SIGKILL)
            #expect(whisperd.waitFor("daemonizer:", "main process \(main) ended; killing 1 remaining") != nil)
            #expect(whisperd.waitFor("daemonizer: starting -> running", occurrence: 2) != nil)
            #expect(!isAlive(first), "the double-forked grandchild outlived its character's restart")

            #expect(eventually { (scratch.read("state/daemonizer/grandchildren") ?? "").split(separator: "\n").count == 2 })
            let second = try #require(Int32((scratch.read("state/daemonizer/grandchildren") ?? "").split(separator: "\n").last ?? ""))
            let group = try Self.directory(whisperd, "daemonizer", controller: nil)
            whisperd.signal(SIGTERM)
            #expect(whisperd.waitForExit() == 0)
            #expect(!isAlive(second), "the double-forked grandchild outlived whisperd's stop")
            #expect(!FileManager.default.fileExists(atPath: group))
        }

        @Test func reloadChangingOnlyLimits_writesThemLive_withoutRestart() throws {
            let scratch = Scratch()
            let roster = { (limits: String) in
                fastDefaults + """
                    characters:
                      elena:
                        command: [sleep, '300']
                        limits: \(limits)
                    """
            }
            scratch.write("roster.yaml", roster("{memory: 64M}"))
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let pid = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            let memory = try Self.directory(whisperd, "elena", controller: "memory")
            #expect(TestCgroups.read(memory + "/memory.limit_in_bytes") == "67108864\n")

            scratch.write("roster.yaml", roster("{memory: 96M, memory_high: 80M, cpus: 0.5, pids: 32}"))
            whisperd.signal(SIGHUP)
            #expect(whisperd.waitFor("elena: limits updated live") != nil)
            #expect(TestCgroups.read(memory + "/memory.limit_in_bytes") == "100663296\n")
            #expect(TestCgroups.read(memory + "/memory.soft_limit_in_bytes") == "83886080\n")
            let cpu = try Self.directory(whisperd, "elena", controller: "cpu")
            let pids = try Self.directory(whisperd, "elena", controller: "pids")
            #expect(TestCgroups.read(cpu + "/cpu.cfs_quota_us") == "50000\n")
            #expect(TestCgroups.read(pids + "/pids.max") == "32\n")
            // A running character joined the new cpu and pids cgroups without a restart.
            #expect(TestCgroups.pids(cpu).contains(pid))
            #expect(TestCgroups.pids(pids).contains(pid))
            #expect(whisperd.character("elena")?["pid"] as? Int == Int(pid))
            #expect(whisperd.count("elena: starting -> running") == 1)
        }

        @Test func cpuWeight_isWrittenAtStart_andLiveOnReload() throws {
            let scratch = Scratch()
            let roster = { (weight: Int) in
                fastDefaults + "characters:\n  elena: {command: [sleep, '300'], cpu_weight: \(weight), memory_low: 16M}\n"
            }
            scratch.write("roster.yaml", roster(50))
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let pid = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            let cpu = try Self.directory(whisperd, "elena", controller: "cpu")
            // Compose's cpu_shares scale on v1: weight 50 of 100 is 512 of 1024.
            #expect(TestCgroups.read(cpu + "/cpu.shares") == "512\n")
            #expect(TestCgroups.pids(cpu).contains(pid))
            // This host's memory controller is v1, which has no memory.low: said, not silently dropped.
            #expect(whisperd.waitFor("elena: limits NOT enforced", "memory_low") != nil)

            scratch.write("roster.yaml", roster(400))
            whisperd.signal(SIGHUP)
            #expect(whisperd.waitFor("elena: limits updated live") != nil)
            #expect(TestCgroups.read(cpu + "/cpu.shares") == "4096\n")
            #expect(whisperd.character("elena")?["pid"] as? Int == Int(pid))
        }

        /// The CPUs a process may run on, as the kernel reports them.
        static func allowedCPUs(_ pid: Int32) -> String? {
            let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
            return status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }?
                .split(separator: "\t").last.map(String.init)
        }

        @Test func cpuset_pinsTheCharacter_changesLiveOnReload_andIsReleasedWhenRemoved() throws {
            let online = try #require(readSmallFile("/sys/devices/system/cpu/online")).filter { $0 != "\n" }
            let cpus = try CPUSet.parse(online).cpus
            try #require(cpus.count >= 2, "needs two CPUs")
            let scratch = Scratch()
            let roster = { (cpuset: String?) in
                fastDefaults + "characters:\n  elena: {command: [sleep, '300']\(cpuset.map { ", cpuset: '\($0)'" } ?? "")}\n"
            }
            scratch.write("roster.yaml", roster("\(cpus[1])"))
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let pid = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            let cpuset = try Self.directory(whisperd, "elena", controller: "cpuset")
            #expect(TestCgroups.pids(cpuset).contains(pid))
            #expect(Self.allowedCPUs(pid) == "\(cpus[1])")
            #expect(Self.resources(whisperd, "elena")?["cpuset"] as? String == "\(cpus[1])")

            scratch.write("roster.yaml", roster("\(cpus[0])"))
            whisperd.signal(SIGHUP)
            #expect(whisperd.waitFor("elena: limits updated live", "cpuset=\(cpus[0])") != nil)
            #expect(Self.allowedCPUs(pid) == "\(cpus[0])")

            // Without `cpuset:` the character may use every CPU again, still the same process.
            scratch.write("roster.yaml", roster(nil))
            whisperd.signal(SIGHUP)
            #expect(whisperd.waitFor("elena: limits updated live", occurrence: 2) != nil)
            #expect(whisperd.waitFor("elena: limits updated live", occurrence: 2)?.contains("cpuset") == false)
            #expect(Self.allowedCPUs(pid) == online)
            #expect(whisperd.character("elena")?["pid"] as? Int == Int(pid))
        }

        @Test func cpusetOfACPUTheHostLacks_isNamedAtLoad_andTheStartFailsWithTheKernelsReason() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300'], cpuset: '4000'}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("elena: cpuset 4000 names CPUs this host does not have online") != nil)
            #expect(whisperd.waitFor("elena:", "cpuset.cpus") != nil)
            #expect(whisperd.character("elena")?["pid"] == nil)
        }

        @Test func whisperdKilledHard_thenStartedAgain_leavesNoDuplicateAndNoOrphan() throws {
            let scratch = Scratch()
            let base = "/wd-it-hardkill-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            defer { TestCgroups.sweep(base: base) }
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      elena:
                        command: [sh, -c, 'setsid sleep 300 & exec sleep 300']
                    """)
            let first = try WhisperdProcess(scratch: scratch, extraArguments: ["--cgroup", base])
            let old = try #require(WhisperdProcess.pid(in: first.waitFor("elena: starting -> running")))
            let group = try Self.directory(first, "elena", controller: nil)
            #expect(eventually { TestCgroups.pids(group).count == 2 })
            let oldMembers = TestCgroups.pids(group)
            kill(first.pid, SIGKILL)
            _ = first.waitForExit()
            #expect(isAlive(old), "the character keeps running when whisperd dies")

            let second = try WhisperdProcess(scratch: scratch, extraArguments: ["--cgroup", base])
            defer { second.terminate() }
            #expect(second.waitFor("elena:", "killed 2 process(es) left running by a previous whisperd") != nil)
            let new = try #require(WhisperdProcess.pid(in: second.waitFor("elena: starting -> running")))
            #expect(new != old)
            for pid in oldMembers { #expect(!isAlive(pid), "leftover \(pid) still alive") }
            #expect(eventually { TestCgroups.pids(group).count == 2 })
            #expect(!TestCgroups.pids(group).contains(where: oldMembers.contains))
        }

        @Test func twoWhisperdsOnOneCgroupBase_theSecondRefusesToStart() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            let first = try WhisperdProcess(scratch: scratch)
            defer { first.terminate() }
            let pid = try #require(WhisperdProcess.pid(in: first.waitFor("elena: starting -> running")))
            let other = Scratch()
            other.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            let second = try WhisperdProcess(scratch: other, extraArguments: ["--cgroup", first.cgroupBase!])
            #expect(second.waitForExit() == 1)
            #expect(second.count("another whisperd already manages the character cgroups") == 1)
            #expect(isAlive(pid), "the second whisperd must not clear the first one's characters")
        }

        @Test func forcedV1_groupsWithTheFreezer_andKillsTheWholeTree() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", Self.daemonizingRoster(limits: "{memory: 64M, pids: 16}"))
            let whisperd = try WhisperdProcess(scratch: scratch, extraArguments: ["--cgroup-backend", "v1"])
            defer { whisperd.terminate() }
            let main = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            let supervisor = try #require(whisperd.healthJSON()?["supervisor"] as? [String: Any])
            #expect(supervisor["cgroup_backend"] as? String == "v1")
            let cgroups = try #require(supervisor["cgroups"] as? [String: Any])
            #expect((cgroups["grouping"] as? String)?.hasPrefix("v1 freezer ") == true)
            #expect((cgroups["cpu_accounting"] as? String)?.hasPrefix("v1 cpuacct ") == true)
            let freezer = try Self.directory(whisperd, "elena", controller: "freezer")
            Self.killMainExpectingWholeTreeGone(whisperd, main: main, group: freezer)
            #expect(TestCgroups.read(freezer + "/freezer.state") == "THAWED\n")
            #expect(Self.resources(whisperd, "elena")?["cpu_seconds"] is Double)
        }

        @Test func forcedV2_withoutControllers_groupsAndKills_andNamesEveryUnenforcedLimit() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", Self.daemonizingRoster(limits: "{memory: 64M, cpus: 0.5, pids: 16}"))
            let whisperd = try WhisperdProcess(scratch: scratch, extraArguments: ["--cgroup-backend", "v2"])
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("WARNING: these limits are NOT enforced on this host: memory, memory_high, cpus, pids, cpuset") != nil)
            #expect(whisperd.waitFor("elena: limits NOT enforced (v2 backend): memory (RLIMIT_DATA only), cpus, pids") != nil)
            let main = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            let cgroups = try #require((whisperd.healthJSON()?["supervisor"] as? [String: Any])?["cgroups"] as? [String: Any])
            #expect(cgroups["not_enforced"] as? [String] == ["memory", "memory_high", "cpus", "pids", "cpuset"])
            // The memory limit still bounds the heap through RLIMIT_DATA.
            #expect((try? String(contentsOfFile: "/proc/\(main)/limits", encoding: .utf8))?.contains("67108864") == true)
            Self.killMainExpectingWholeTreeGone(whisperd, main: main, group: try Self.directory(whisperd, "elena", controller: nil))
        }

        @Test func unprivileged_saysWhyEachTreeIsUnusable_thenRunsWithoutCgroups() throws {
            let scratch = Scratch()
            chmod(scratch.path, 0o777)
            let roster = scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            chmod(roster, 0o644)
            let whisperd = try WhisperdProcess(scratch: scratch, asNobody: true)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("cgroups: cgroup v2:", "is not writable", "Permission denied") != nil)
            #expect(whisperd.waitFor("cgroups: cgroup v1 freezer:", "is not writable") != nil)
            #expect(whisperd.waitFor("WARNING: no cgroup backend") != nil)
            let pid = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            #expect(isAlive(pid))
            #expect((whisperd.healthJSON()?["supervisor"] as? [String: Any])?["cgroup_backend"] as? String == "none")
        }

        @Test func noneBackend_warnsLoudly_andStillRunsTheFleet() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300'], limits: {memory: 64M}}\n")
            let whisperd = try WhisperdProcess(scratch: scratch, extraArguments: ["--cgroup-backend", "none"])
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("WARNING: no cgroup backend") != nil)
            _ = try #require(whisperd.waitFor("elena: starting -> running"))
            let supervisor = try #require(whisperd.healthJSON()?["supervisor"] as? [String: Any])
            #expect(supervisor["cgroup_backend"] as? String == "none")
        }
    }
}
