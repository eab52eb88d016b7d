import Foundation
import Glibc
import Testing
import WhisperSystem
import WhisperFiles

/// `releaseStartupCodePages` on a real file mapping of this test process: its pages leave the
/// process's memory, and reading them again gives the same bytes.
@Suite struct MemoryTrimTests {
    /// Resident KiB of the mapping that starts at `address`, from /proc/self/smaps.
    private func residentKiB(at address: UInt) -> Int? {
        // Read to the end: String(contentsOfFile:) stops after the first page of a /proc file.
        guard let data = readFileContents("/proc/self/smaps") else { return nil }
        let smaps = String(decoding: data, as: UTF8.self)
        var inMapping = false
        for line in smaps.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), let start = UInt(line[..<dash], radix: 16), line.contains(" ") {
                inMapping = start == address
            } else if inMapping, line.hasPrefix("Rss:") {
                return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
            }
        }
        return nil
    }

    @Test func aReadOnlyFileMapping_onlyWeMap_leavesMemory_andReadsBackTheSame() throws {
        // On disk, not tmpfs: tmpfs pages cannot be reclaimed without swap.
        let directory = FileManager.default.currentDirectoryPath + "/.build/memory-trim-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/pages"
        let size = 8 << 20
        let bytes = (0..<size).map { UInt8(truncatingIfNeeded: ($0 &* 2_654_435_761) >> 11) }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { close(fd) }
        fsync(fd)  // clean pages: reclaim would have to write dirty ones first
        let mapping = try #require(mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0))
        try #require(mapping != MAP_FAILED)
        defer { munmap(mapping, size) }
        let pages = mapping.assumingMemoryBound(to: UInt8.self)
        var sum = 0
        for offset in stride(from: 0, to: size, by: 4096) { sum &+= Int(pages[offset]) }
        let address = UInt(bitPattern: mapping)
        let before = try #require(residentKiB(at: address))
        #expect(before >= (size >> 10) * 9 / 10, "every page touched: \(before) KiB resident")

        #expect(releaseStartupCodePages() > 0)
        let after = try #require(residentKiB(at: address))
        #expect(after <= (size >> 10) / 10, "\(after) of \(before) KiB still resident")
        #expect(Array(UnsafeBufferPointer(start: pages, count: size)) == bytes, "pages read back differ")
        _ = sum
    }
}
