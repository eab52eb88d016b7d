import Foundation

/// A whole file, or nil when it cannot be read. Not `FileManager.contents(atPath:)`: on this
/// toolchain that leaks a 4 KiB buffer for every empty file it reads (found by
/// scripts/sanitizers.sh address: each reload of an empty roster leaked one).
func readFileContents(_ path: String) -> Data? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    do { return try handle.readToEnd() ?? Data() } catch { return nil }
}
