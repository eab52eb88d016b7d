import Testing

@testable import WhisperCore

@Suite struct DynamicIDAllocatorTests {
    @Test func sameName_getsTheSameID_everyTime_andAcrossAllocators() throws {
        var first = DynamicIDAllocator()
        let elena = try first.id(for: "elena", isTaken: { _ in false }).get()
        #expect(DynamicIDAllocator.defaultRange.contains(elena.id))
        #expect(!elena.changed)
        #expect(try first.id(for: "elena", isTaken: { _ in false }).get().id == elena.id)
        // A fresh allocator (another host, no state) picks the same id by the name's hash.
        var second = DynamicIDAllocator()
        #expect(try second.id(for: "elena", isTaken: { _ in false }).get().id == elena.id)
    }

    @Test func persistedAssignment_isKept_evenWhereTheHashWouldPointElsewhere() throws {
        var allocator = DynamicIDAllocator(assignments: ["elena": 61190])
        #expect(try allocator.id(for: "elena", isTaken: { _ in false }).get().id == 61190)
    }

    @Test func idsInTheSystemDatabases_andHeldByOthers_areSkipped() throws {
        var probe = DynamicIDAllocator()
        let natural = try probe.id(for: "aria", isTaken: { _ in false }).get().id
        // Someone else holds the natural id, and the system databases have the next one.
        var allocator = DynamicIDAllocator(assignments: ["ryan": natural])
        let next = natural == DynamicIDAllocator.defaultRange.upperBound ? DynamicIDAllocator.defaultRange.lowerBound : natural + 1
        let aria = try allocator.id(for: "aria", isTaken: { $0 == next }).get().id
        #expect(aria != natural && aria != next)
        #expect(allocator.assignments["aria"] == aria)
        #expect(allocator.assignments["ryan"] == natural)
    }

    @Test func anIDTheSystemNowUses_isReplaced_andReportedAsChanged() throws {
        var allocator = DynamicIDAllocator(assignments: ["elena": 61190])
        let result = try allocator.id(for: "elena", isTaken: { $0 == 61190 }).get()
        #expect(result.id != 61190)
        #expect(result.changed)
        #expect(allocator.assignments["elena"] == result.id)
    }

    @Test func exhaustedRange_isAnError_notASharedID() {
        var allocator = DynamicIDAllocator(range: 70000...70001, assignments: ["a": 70000, "b": 70001])
        #expect(throws: DynamicIDAllocator.Failure.exhausted(70000...70001)) { try allocator.id(for: "c", isTaken: { _ in false }).get() }
    }
}

@Suite struct SandboxPlanTests {
    let own = ["/var/lib/whisperd/elena", "/run/whisperd/elena"]

    @Test func strict_readsTheSystemAndItsOwnFiles_writesOnlyItsOwnDirectories() {
        let plan = SandboxPlan(
            sandbox: SandboxSpec(filesystem: .strict, readPaths: ["/srv/models"], writePaths: ["/srv/cache"]), port: 8000,
            executable: "/usr/local/bin/whisperd", libraryPaths: ["/opt/swift/usr/lib/swift/linux"], ownDirectories: own,
            characterDirectory: "/etc/whisperd/characters/elena")
        #expect(plan.readPaths.contains("/usr") && plan.readPaths.contains("/etc"))
        #expect(plan.readPaths.contains("/opt/swift/usr/lib/swift/linux"))
        #expect(plan.readPaths.contains("/usr/local/bin/whisperd"))
        #expect(plan.readPaths.contains("/etc/whisperd/characters/elena"))
        #expect(plan.readPaths.contains("/srv/models"))
        #expect(!plan.readPaths.contains("/"))
        #expect(!plan.readPaths.contains("/tmp") && !plan.readPaths.contains("/home"))
        #expect(plan.writePaths == own + ["/srv/cache"])
        #expect(plan.bindPorts == [8000])
    }

    @Test func default_readsEverythingDACAllows_butWritesNothingShared() {
        let plan = SandboxPlan(
            sandbox: SandboxSpec(filesystem: .default, bindPorts: [9000, 8000]), port: 8000, executable: "/x",
            libraryPaths: [], ownDirectories: own, characterDirectory: nil)
        #expect(plan.readPaths == ["/"])
        #expect(plan.writePaths == own)
        #expect(!plan.writePaths.contains("/tmp") && !plan.writePaths.contains("/dev/shm"))
        #expect(plan.devicePaths.contains("/dev/null"))
        #expect(plan.bindPorts == [8000, 9000])
    }

    @Test func off_hasNoFilesystemRules_butKeepsItsPorts() {
        let plan = SandboxPlan(
            sandbox: SandboxSpec(filesystem: .off), port: nil, executable: "/x", libraryPaths: [], ownDirectories: own,
            characterDirectory: nil)
        #expect(plan.readPaths.isEmpty && plan.writePaths.isEmpty && plan.devicePaths.isEmpty)
        #expect(plan.bindPorts.isEmpty)  // no port: it may listen on none
    }

    @Test(arguments: [
        (7, FilesystemSandbox.default, SandboxCoverage.Level.enforced, 0),
        (5, .default, .partly, 1),
        (3, .strict, .partly, 2),
        (0, .default, .not, 1),
        (7, .off, .partly, 1),
    ])
    func coverage_namesWhatTheKernelDoesNotEnforce(abi: Int, filesystem: FilesystemSandbox, level: SandboxCoverage.Level, missing: Int) {
        let coverage = SandboxCoverage(abi: abi, filesystem: filesystem)
        #expect(coverage.level == level)
        #expect(coverage.missing.count == missing)
    }
}
