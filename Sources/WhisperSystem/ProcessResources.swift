import CWhisperLinux
import Glibc

// What whisperd and its workers do to their own process: file limit, memory given back.

/// Raises our own RLIMIT_NOFILE soft limit to the hard limit (a fleet needs several fds per
/// character); returns the old soft limit, which children get back.
public func raiseFileLimit() -> Int64 {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return -1 }
    let original = Int64(limit.rlim_cur)
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    return original
}

/// Grows this process's descriptor table once to hold `count` descriptors (capped at the soft
/// limit), by placing one descriptor at the top and closing it. The kernel never shrinks the
/// table. Why: when a process with more than one thread outgrows its table, the kernel waits for
/// an RCU grace period before it may free the old one, inside whatever `open`, `pipe2`, `dup`
/// or `clone3` needed the slot; a cold start of a few hundred characters doubles the table
/// five or six times, each a wait of milliseconds on the loop thread (docs/performance.md,
/// cold start). Growing it while we are still one thread costs no wait at all. Returns the
/// size asked for (0 when nothing was done).
@discardableResult
public func reserveDescriptorTable(count: Int) -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
    let wanted = min(count, Int(clamping: limit.rlim_cur))
    guard wanted > 64 else { return 0 }
    let root = open("/", LandlockRuleset.openPathOnly | O_CLOEXEC)
    guard root >= 0 else { return 0 }
    defer { close(root) }
    let top = fcntl(root, F_DUPFD_CLOEXEC, Int32(wanted - 1))
    guard top >= 0 else { return 0 }
    close(top)
    return wanted
}

/// Returns freed heap to the kernel (after start-up, which leaves parse garbage behind).
public func releaseFreedMemory() {
    _ = malloc_trim(0)
}

/// Lets the kernel reclaim the code and read-only data pages that only start-up used: roster
/// parsing, Foundation's and the runtime's set-up, the first spawn burst. whisperd's binary
/// also holds the worker, and the kernel maps the cached neighbours of every page it touches,
/// so after start-up much more of it sat in whisperd's memory than the steady state needs
/// (figures: `docs/performance.md`, PSS; how it was found: `docs/bench/history.md`). What is
/// used again comes back on first touch (a disk read if it left the page cache). Returns how many mappings were advised.
@discardableResult
public func releaseStartupCodePages() -> Int {
    Int(whisper_page_out_file_mappings())
}

/// Whether capability `number` is in this process's effective set (`CapEff`, /proc/self/status).
public func hasEffectiveCapability(_ number: Int) -> Bool {
    guard let status = readSmallFile("/proc/self/status"),
        let line = status.split(separator: "\n").first(where: { $0.hasPrefix("CapEff:") }),
        let mask = UInt64(line.dropFirst("CapEff:".count).filter { !$0.isWhitespace }, radix: 16)
    else { return false }
    return mask & (1 << UInt64(number)) != 0
}
