import Foundation
import Glibc
import WhisperCore
import WhisperFiles

/// What a whisperd hands to the binary it re-executes (`whisperctl reexec`, SIGUSR2): the
/// descriptors it keeps open across the exec and what it knows of each running process. Written
/// to `<runtime>/handover.json` (0600), read and removed by the new process.
public struct Handover: Codable, Sendable {
    public static let currentVersion = 1

    public var version = Handover.currentVersion
    /// The listening control socket and status port.
    public var controlFD: Int32
    public var statusFD: Int32?
    /// How many re-execs this whisperd has been through (this one included).
    public var reexecs: Int
    /// Cgroup bases the first whisperd made: the last one removes them at exit.
    public var createdCgroupBases: [String]? = nil
    /// Set by a whisperd whose loop runs at the nice value it was started with. Absent from an
    /// older whisperd's file: that one ran its loop 5 steps lower when it had CAP_SYS_NICE, and
    /// the exec kept that value (``loopNiceToRestore(current:hasCapSysNice:)``).
    public var loopAtStartedNice: Bool? = nil
    public var services: [Service]

    public struct Service: Codable, Sendable {
        public var name: String
        public var pid: Int32
        public var pidFD: Int32
        public var notifyFD: Int32
        public var outputs: [Output]
        /// On the monotonic clock, which an exec does not reset.
        public var startedAtNanoseconds: Int64
        public var isReady: Bool
        public var restarts: Int
        public var restartsByReason: [String: Int]
        public var oomKills: Int
        public var statusText: String?
        public var facets: [FacetValue]
        public var jobRunStartedAt: Int64?
    }

    /// A child's stdout or stderr, with the line it had begun.
    public struct Output: Codable, Sendable {
        public var fd: Int32
        public var stream: String
        public var unfinishedLine: [UInt8]
    }

    public struct FacetValue: Codable, Sendable {
        public var name: String
        public var level: String
        public var detail: String?
    }

    /// The nice value the loop thread goes back to after the exec, if it must: an older whisperd
    /// lowered its loop's by 5 when it could (with CAP_SYS_NICE, which the exec keeps), and its
    /// characters ran at the value it was started with.
    public func loopNiceToRestore(current: Int32, hasCapSysNice: Bool) -> Int32? {
        guard loopAtStartedNice != true, hasCapSysNice else { return nil }
        return min(19, current + 5)
    }

    /// Every descriptor that must survive the exec.
    var descriptors: [Int32] {
        [controlFD] + (statusFD.map { [$0] } ?? []) + services.flatMap { [$0.pidFD, $0.notifyFD] + $0.outputs.map(\.fd) }
    }

    public static func path(runtimeDirectory: String) -> String { runtimeDirectory + "/handover.json" }

    /// Reads and removes the file (it is read once); a file that is not whisperd's own is refused.
    public static func take(from path: String) throws -> Handover {
        defer { unlink(path) }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw HandoverError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, info.st_uid == geteuid(), info.st_mode & 0o077 == 0 else {
            throw HandoverError("\(path) is not whisperd's own private file")
        }
        let data = FileHandle(fileDescriptor: fd, closeOnDealloc: false).readDataToEndOfFile()
        let handover = try JSONDecoder().decode(Handover.self, from: data)
        guard handover.version == currentVersion else {
            throw HandoverError("\(path) is version \(handover.version); this whisperd reads \(currentVersion)")
        }
        return handover
    }

    func write(to path: String) throws {
        let data = try JSONEncoder().encode(self)
        if let failure = replaceFile(path, with: Array(data)) {
            throw HandoverError("cannot write \(path): \(String(cString: strerror(failure)))")
        }
    }

    /// The core's view of one handed-over process.
    func adoptedRuns() -> [ServiceName: AdoptedRun] {
        var runs: [ServiceName: AdoptedRun] = [:]
        for service in services {
            guard let name = ServiceName(service.name) else { continue }
            runs[name] = AdoptedRun(
                pid: service.pid, startedAt: Instant(nanoseconds: service.startedAtNanoseconds), isReady: service.isReady,
                restarts: service.restarts, restartsByReason: service.restartsByReason, oomKills: service.oomKills,
                statusText: service.statusText,
                facets: service.facets.compactMap { facet in
                    Facet.Level(rawValue: facet.level).map { Facet(name: facet.name, level: $0, detail: facet.detail) }
                })
        }
        return runs
    }
}

public struct HandoverError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Sets or clears close-on-exec on each descriptor.
func setCloseOnExec(_ descriptors: [Int32], _ on: Bool) {
    for fd in descriptors {
        let flags = fcntl(fd, F_GETFD)
        guard flags >= 0 else { continue }
        _ = fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC)
    }
}
