import Foundation
import Glibc

/// A whole file, or nil when it cannot be read: the one way every module reads a file whole
/// (the roster loader, the state and incident stores, the worker, the fuzzers, the tests).
/// Not `FileManager.contents(atPath:)`: on this toolchain that leaks a 4 KiB buffer for every
/// empty file it reads (found by scripts/sanitizers.sh address: each reload of an empty roster
/// leaked one). For /proc and /sys, see `readSmallFile` (WhisperSystem).
public func readFileContents(_ path: String) -> Data? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    do { return try handle.readToEnd() ?? Data() } catch { return nil }
}

/// Replaces a small file whole: written beside it (opened without following a link), synced,
/// renamed over it, so a reader sees the old file or the new one, never half. Returns nil, or
/// the errno of the step that failed (the temporary is then removed). The one way whisperd
/// writes its state files, the hand-over and the worker's session hand-over.
public func replaceFile(_ path: String, with bytes: [UInt8], mode: mode_t = 0o600) -> Int32? {
    let temporary = path + ".tmp"
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode)
    guard fd >= 0 else { return errno }
    let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    let failure: Int32? = written != bytes.count ? (written < 0 ? errno : EIO) : (fsync(fd) != 0 ? errno : nil)
    close(fd)
    if let failure {
        unlink(temporary)
        return failure
    }
    guard rename(temporary, path) == 0 else {
        let failure = errno
        unlink(temporary)
        return failure
    }
    return nil
}
