import Foundation
import Glibc
import Testing
import WhisperFiles
import WhisperSystem

/// `reserveDescriptorTable` grows this test process's descriptor table for real: the kernel's
/// own figure (`FDSize` in /proc/self/status) is at least the size asked for afterwards, and
/// the ask is capped at the soft open-file limit.
@Suite struct DescriptorTableTests {
    private func tableSize() throws -> Int {
        let status = String(decoding: try #require(readFileContents("/proc/self/status")), as: UTF8.self)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("FDSize:") })
        return try #require(Int(line.dropFirst("FDSize:".count).trimmingCharacters(in: .whitespaces)))
    }

    private func softLimit() -> Int {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return Int(clamping: limit.rlim_cur)
    }

    /// One test, in this order: the cap grows the table to the soft limit, after which there
    /// is nothing left to grow.
    @Test func theTable_holdsTheCountAskedFor_capsAtTheSoftLimit_andSmallAsksDoNothing() throws {
        let before = try tableSize()
        // Twice what the table holds now (tests running beside may have grown it), under the limit.
        let wanted = min(max(before * 2, 1024), softLimit())
        try #require(wanted > before, "the soft limit leaves no room to grow the table")
        #expect(reserveDescriptorTable(count: wanted) == wanted)
        #expect(try tableSize() >= wanted)

        #expect(reserveDescriptorTable(count: 10) == 0)
        // A table of a million slots would cost this test process 8 MiB of kernel memory.
        let limit = softLimit()
        guard limit <= 1 << 16 else { return }
        #expect(reserveDescriptorTable(count: limit + 100_000) == limit)
        #expect(try tableSize() >= limit)
    }
}
