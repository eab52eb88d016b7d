import Foundation
import Glibc
import Testing
import WhisperCore
@testable import WhisperDaemon

/// The file a whisperd hands to the binary it re-executes: what one writes the next reads,
/// and a file that is not whisperd's own (or not this version's) is refused.
@Suite struct HandoverTests {
    static func sample() -> Handover {
        Handover(
            controlFD: 3, statusFD: 4, reexecs: 2, createdCgroupBases: ["/sys/fs/cgroup/whisperd"],
            services: [
                Handover.Service(
                    name: "elena", pid: 4100, pidFD: 10, notifyFD: 11,
                    outputs: [
                        Handover.Output(fd: 12, stream: "stdout", unfinishedLine: Array("half a li".utf8)),
                        Handover.Output(fd: 13, stream: "stderr", unfinishedLine: []),
                    ],
                    startedAtNanoseconds: 5_000_000_000, isReady: true, restarts: 3, restartsByReason: ["Error": 2, "OOMKilled": 1],
                    oomKills: 1, statusText: "serving",
                    facets: [
                        Handover.FacetValue(name: "llm", level: "degraded", detail: "slow"),
                        Handover.FacetValue(name: "store", level: "ok", detail: nil),
                    ],
                    jobRunStartedAt: nil),
                Handover.Service(
                    name: "nightly", pid: 4200, pidFD: 14, notifyFD: 15, outputs: [], startedAtNanoseconds: 7, isReady: false, restarts: 0,
                    restartsByReason: [:], oomKills: 0, statusText: nil, facets: [], jobRunStartedAt: 1_700_000_000),
            ])
    }

    @Test func whatOneWhisperdWrites_theNextReads_once() throws {
        let scratch = Scratch()
        let path = Handover.path(runtimeDirectory: scratch.path)
        #expect(path == scratch.path + "/handover.json")
        try Self.sample().write(to: path)
        #expect(scratch.mode("handover.json") == 0o600)

        let read = try Handover.take(from: path)
        #expect(!scratch.exists("handover.json"), "read once: the file is removed")
        #expect(read.version == Handover.currentVersion)
        #expect(read.controlFD == 3 && read.statusFD == 4 && read.reexecs == 2)
        #expect(read.createdCgroupBases == ["/sys/fs/cgroup/whisperd"])
        #expect(read.services.map(\.name) == ["elena", "nightly"])
        let elena = read.services[0]
        #expect(elena.outputs.map(\.unfinishedLine) == [Array("half a li".utf8), []])
        #expect(elena.restartsByReason == ["Error": 2, "OOMKilled": 1])
        #expect(elena.facets.map(\.detail) == ["slow", nil])
        #expect(read.services[1].jobRunStartedAt == 1_700_000_000)
        #expect(throws: HandoverError.self) { try Handover.take(from: path) }
    }

    /// An older whisperd ran its loop 5 nice steps lower when it had CAP_SYS_NICE (which the exec
    /// keeps); the loop goes back up, and a file from a whisperd that no longer does says so.
    @Test func theLoopsNice_isRestoredAfterAnOlderWhisperd_only() throws {
        var legacy = Self.sample()
        #expect(legacy.loopAtStartedNice == nil)
        #expect(legacy.loopNiceToRestore(current: -5, hasCapSysNice: true) == 0)
        #expect(legacy.loopNiceToRestore(current: 17, hasCapSysNice: true) == 19)
        #expect(legacy.loopNiceToRestore(current: 0, hasCapSysNice: false) == nil, "without the capability it was never lowered")
        legacy.loopAtStartedNice = true
        #expect(legacy.loopNiceToRestore(current: -5, hasCapSysNice: true) == nil)
        let scratch = Scratch()
        let path = Handover.path(runtimeDirectory: scratch.path)
        try legacy.write(to: path)
        #expect(try Handover.take(from: path).loopAtStartedNice == true)
    }

    @Test func everyDescriptorThatMustSurviveTheExec() {
        #expect(Self.sample().descriptors == [3, 4, 10, 11, 12, 13, 14, 15])
        var noStatusPort = Self.sample()
        noStatusPort.statusFD = nil
        noStatusPort.services = []
        #expect(noStatusPort.descriptors == [3])
    }

    @Test func aFileOthersCanRead_isRefused_andRemoved() throws {
        let scratch = Scratch()
        let path = scratch.file("handover.json")
        try Self.sample().write(to: path)
        chmod(path, 0o644)
        #expect(throws: HandoverError.self) { try Handover.take(from: path) }
        #expect(!scratch.exists("handover.json"))
    }

    @Test func aSymlink_isRefused() throws {
        let scratch = Scratch()
        try Self.sample().write(to: scratch.file("real.json"))
        symlink(scratch.file("real.json"), scratch.file("handover.json"))
        #expect(throws: HandoverError.self) { try Handover.take(from: scratch.file("handover.json")) }
    }

    @Test func anotherVersion_isRefused_sayingWhich() throws {
        let scratch = Scratch()
        let path = scratch.file("handover.json")
        try Self.sample().write(to: path)
        let text = try #require(scratch.read("handover.json"))
        scratch.write("handover.json", text.replacingOccurrences(of: #""version":1"#, with: #""version":2"#))
        #expect(scratch.read("handover.json")?.contains(#""version":2"#) == true)
        do {
            _ = try Handover.take(from: path)
            Issue.record("version 2 was read")
        } catch let error as HandoverError {
            #expect(error.description.contains("version 2"))
        }
    }

    @Test func garbage_isAnError_notACrash() {
        let scratch = Scratch()
        scratch.write("handover.json", #"{"version":1,"controlFD":"#)
        #expect(throws: (any Error).self) { try Handover.take(from: scratch.file("handover.json")) }
    }

    /// The core's view: each process as running, its counters and facets kept; a name the
    /// roster could not hold, or a facet level this build does not know, is left out.
    @Test func adoptedRuns_giveTheCoreEachProcess() throws {
        var handover = Self.sample()
        handover.services[0].facets.append(Handover.FacetValue(name: "odd", level: "sideways", detail: nil))
        handover.services.append(handover.services[1])
        handover.services[2].name = "Not A Name!"
        let runs = handover.adoptedRuns()
        #expect(Set(runs.keys.map(\.rawValue)) == ["elena", "nightly"])
        let elena = try #require(runs[ServiceName("elena")!])
        #expect(elena.pid == 4100 && elena.isReady && elena.restarts == 3 && elena.oomKills == 1)
        #expect(elena.startedAt == Instant(nanoseconds: 5_000_000_000))
        #expect(elena.restartsByReason == ["Error": 2, "OOMKilled": 1])
        #expect(elena.statusText == "serving")
        #expect(elena.facets == [Facet(name: "llm", level: .degraded, detail: "slow"), Facet(name: "store", level: .ok)])
    }
}
