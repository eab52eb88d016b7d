import Glibc

/// Reads a small file (under /proc, /sys) in one go; `nil` if it cannot be read. Reads
/// through a 4 KiB stack buffer: status endpoints call this thousands of times a second, and
/// zero-filling a large array per call was most of their cost (`docs/bench/history.md`,
/// "/health and /metrics under load").
///
/// Why not `readFileContents` (WhisperFiles): that reads any file whole into `Data` through
/// Foundation; this one is for kernel pseudo-files on hot paths, bounded by `limit` (their size
/// is not known before reading), with no Foundation and no allocation beyond the result.
public func readSmallFile(_ path: String, limit: Int = 65536) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var result: [UInt8] = []
    let complete = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { buffer -> Bool in
        while result.count < limit {
            let count = read(fd, buffer.baseAddress, min(buffer.count, limit - result.count))
            if count < 0, errno == EINTR { continue }
            if count < 0 { return result.isEmpty ? false : true }
            if count == 0 { break }
            result.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0..<count]))
        }
        return true
    }
    return complete ? String(decoding: result, as: UTF8.self) : nil
}
