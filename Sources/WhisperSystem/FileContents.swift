import Foundation

/// A whole file, or nil when it cannot be read. Not `FileManager.contents(atPath:)`: on this
/// toolchain that leaks a 4 KiB buffer for every empty file it reads (scripts/sanitizers.sh).
/// WhisperConfig has its own copy; it does not depend on this module.
public func readFileContents(_ path: String) -> Data? {
    guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
    do { return try handle.readToEnd() ?? Data() } catch { return nil }
}
