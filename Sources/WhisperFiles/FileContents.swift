import Foundation

/// A whole file, or nil when it cannot be read: the one way every module reads a file whole
/// (the roster loader, the state and incident stores, the worker, the fuzzers, the tests).
/// Not `FileManager.contents(atPath:)`: on this toolchain that leaks a 4 KiB buffer for every
/// empty file it reads (found by scripts/sanitizers.sh address: each reload of an empty roster
/// leaked one). For /proc and /sys, see `readSmallFile` (WhisperSystem).
public func readFileContents(_ path: String) -> Data? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    do { return try handle.readToEnd() ?? Data() } catch { return nil }
}
