import Foundation
import Glibc
import Testing
import WhisperSystem

/// The log writer on a real, small tmpfs (root: the suite mounts it).
@Suite struct LogWriterTests {
    /// A character whose own logs (3 files of 400 KiB) do not fit the 1 MiB disk: when the disk
    /// refuses a write, its oldest file goes and the write is tried again, so the newest lines
    /// are kept. Before, the current file stopped short of the size that rotates it and every
    /// later line was dropped for good.
    @Test func aCharacterWhoseLogsFillTheDisk_keepsItsNewestLines() throws {
        let directory = "/tmp/whisperd-logwriter-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try #require(mkdir(directory, 0o700) == 0)
        defer { rmdir(directory) }
        try #require(mount("tmpfs", directory, "tmpfs", 0, "size=1m") == 0, "mount a tmpfs (needs root): errno \(errno)")
        defer { umount2(directory, Int32(MNT_DETACH)) }

        let writer = try LogWriter(budgetBytes: 64 << 20, spaceRotationInterval: 0)
        let policy = LogWriter.FilePolicy(path: directory + "/c.log", maxSizeBytes: 400 << 10, maxFiles: 3)
        let linesPerBatch = 1000
        let batches = 60  // ~3 MiB of lines in all, three times the disk
        for batch in 0..<batches {
            var text = ""
            for line in 0..<linesPerBatch { text += "line \(batch * linesPerBatch + line + 1) of the test, padded to a length\n" }
            writer.append("c", policy: policy, bytes: Array(text.utf8), lines: linesPerBatch, stream: "stdout", pid: 1)
        }
        writer.close(timeout: 20)

        let current = try String(contentsOfFile: directory + "/c.log", encoding: .utf8)
        let last = batches * linesPerBatch
        #expect(current.hasSuffix("line \(last) of the test, padded to a length\n"), "c.log ends: \(current.suffix(80))")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        #expect(files.allSatisfy { ["c.log", "c.log.1", "c.log.2"].contains($0) }, "\(files)")
        for file in files {
            let size = try FileManager.default.attributesOfItem(atPath: directory + "/" + file)[.size] as? Int ?? 0
            #expect(size <= 400 << 10, "\(file): \(size) bytes")
        }
    }

    /// A mark is reached after the lines queued before it, and says the file's length there,
    /// whatever is queued after it.
    @Test func aMark_saysWhereTheLinesQueuedBeforeItEnd() throws {
        let directory = "/tmp/whisperd-logmark-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try #require(mkdir(directory, 0o700) == 0)
        defer {
            unlink(directory + "/c.log")
            rmdir(directory)
        }
        let writer = try LogWriter()
        let policy = LogWriter.FilePolicy(path: directory + "/c.log", maxSizeBytes: 1 << 20, maxFiles: 2)
        let before = Array(String(repeating: "a line before the mark\n", count: 500).utf8)
        writer.append("c", policy: policy, bytes: before, lines: 500, stream: "stdout", pid: 1)
        let mark = writer.mark(path: policy.path)
        writer.append("c", policy: policy, bytes: Array("a line after it\n".utf8), lines: 1, stream: "stdout", pid: 1)
        var length: Int64?
        #expect(eventuallyTrue { length = writer.takeMarkedLength(mark); return length != nil })
        #expect(length == Int64(before.count))
        #expect(writer.takeMarkedLength(mark) == nil, "asked once")
        let empty = writer.mark(path: directory + "/none.log")
        var none: Int64?
        #expect(eventuallyTrue { none = writer.takeMarkedLength(empty); return none != nil })
        #expect(none == 0, "a file not written yet is empty")
        writer.close()
    }

    private func eventuallyTrue(_ body: () -> Bool) -> Bool {
        for _ in 0..<500 {
            if body() { return true }
            usleep(10_000)
        }
        return false
    }
}
