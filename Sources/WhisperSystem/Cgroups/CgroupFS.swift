import Glibc

/// Small, synchronous operations on cgroupfs files (kernfs: each call is microseconds).
public enum CgroupFS {
    public static func write(_ value: String, to path: String) throws(SystemError) {
        // O_TRUNC is what `echo > file` does; cgroupfs ignores it, a fake tree needs it.
        let fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open \(path)") }
        defer { close(fd) }
        try write(value, fd: fd, path: path)
    }

    public static func write(_ value: String, fd: Int32, path: String) throws(SystemError) {
        var bytes = Array(value.utf8)
        if bytes.isEmpty { bytes = [UInt8(ascii: "\n")] }
        while true {
            // At offset 0, so a descriptor kept open can be written again and again.
            let count = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            if count == bytes.count { return }
            if count < 0, errno == EINTR { continue }
            throw SystemError("write \"\(value)\" to \(path)", errno: count < 0 ? errno : EIO)
        }
    }

    public static func read(_ path: String) -> String? { readSmallFile(path) }

    /// Reads an open interface file from its start (kernfs re-generates the content each time),
    /// up to `limit` bytes, through a stack buffer.
    public static func read(fd: Int32, limit: Int = 65536) -> String? {
        var result: [UInt8] = []
        let ok = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 4096) { buffer -> Bool in
            while result.count < limit {
                let count = pread(fd, buffer.baseAddress, min(buffer.count, limit - result.count), off_t(result.count))
                if count < 0, errno == EINTR { continue }
                if count < 0 { return false }
                if count == 0 { break }
                result.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[0..<count]))
                // A kernel seq_file fills the buffer while it has more: a short read was the end
                // (one pread instead of two per small cgroup file).
                if count < min(buffer.count, limit - result.count + count) { break }
            }
            return true
        }
        return ok ? String(decoding: result, as: UTF8.self) : nil
    }

    /// Creates `path` and its missing parents; returns whether `path` itself was created.
    @discardableResult
    public static func makeDirectory(_ path: String) throws(SystemError) -> Bool {
        if mkdir(path, 0o755) == 0 { return true }
        switch errno {
        case EEXIST:
            return false
        case ENOENT:
            let parent = parentDirectory(of: path)
            guard parent != path else { throw SystemError("mkdir \(path)") }
            try makeDirectory(parent)
            if mkdir(path, 0o755) == 0 { return true }
            if errno == EEXIST { return false }
            throw SystemError("mkdir \(path)")
        default:
            throw SystemError("mkdir \(path)")
        }
    }

    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// The pids listed in a `cgroup.procs` file.
    public static func processIDs(_ procsPath: String) -> [Int32] {
        guard let text = read(procsPath) else { return [] }
        return text.split(separator: "\n").compactMap { Int32($0) }
    }

    /// Subdirectory names of `path` (the child cgroups).
    public static func childNames(_ path: String) -> [String] {
        guard let directory = opendir(path) else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            guard entry.pointee.d_type == DT_DIR else { continue }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// `key value` lines (memory.events, cpu.stat, memory.oom_control) → the value of `key`.
    public static func field(_ key: String, in text: String) -> UInt64? {
        var text = text
        return text.withUTF8 { field(key, in: UnsafeRawBufferPointer($0)) }
    }

    /// The value of `key` in an open flat-keyed file, read from its start into a stack buffer:
    /// no string is made (the end of every run reads such files before its restart).
    public static func field(_ key: String, fd: Int32) -> UInt64? {
        withSmallRead(fd) { bytes in bytes.flatMap { field(key, in: $0) } }
    }

    /// The number an open single-value file holds (`memory.peak`, `memory.max_usage_in_bytes`).
    public static func number(fd: Int32) -> UInt64? {
        withSmallRead(fd) { bytes in
            guard let bytes else { return nil }
            var end = bytes.count
            while end > 0, bytes[end - 1] == 0x0A || bytes[end - 1] == 0x20 { end -= 1 }
            return decimal(UnsafeRawBufferPointer(rebasing: bytes[0..<end]))
        }
    }

    /// One pread of up to 1 KiB from offset 0; `nil` to `body` when it fails or the file is
    /// longer (such a file is not one of these).
    private static func withSmallRead<T>(_ fd: Int32, _ body: (UnsafeRawBufferPointer?) -> T) -> T {
        withUnsafeTemporaryAllocation(byteCount: 1024, alignment: 1) { buffer in
            var count: Int
            repeat { count = pread(fd, buffer.baseAddress, buffer.count, 0) } while count < 0 && errno == EINTR
            guard count >= 0, count < buffer.count else { return body(nil) }
            return body(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
        }
    }

    private static func field(_ key: String, in bytes: UnsafeRawBufferPointer) -> UInt64? {
        let key = key.utf8
        var lineStart = 0
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count, bytes[lineEnd] != 0x0A { lineEnd += 1 }
            let valueStart = lineStart + key.count + 1
            if valueStart < lineEnd, bytes[valueStart - 1] == 0x20, bytes[lineStart..<valueStart - 1].elementsEqual(key) {
                return decimal(UnsafeRawBufferPointer(rebasing: bytes[valueStart..<lineEnd]))
            }
            lineStart = lineEnd + 1
        }
        return nil
    }

    /// Digits only, no overflow; else `nil`.
    private static func decimal(_ digits: UnsafeRawBufferPointer) -> UInt64? {
        guard !digits.isEmpty else { return nil }
        var value: UInt64 = 0
        for byte in digits {
            guard byte >= 0x30, byte <= 0x39 else { return nil }
            let (times10, overflowed) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflowedToo) = times10.addingReportingOverflow(UInt64(byte - 0x30))
            guard !overflowed, !overflowedToo else { return nil }
            value = sum
        }
        return value
    }
}
