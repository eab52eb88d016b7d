import Foundation

/// A scratch directory removed when the value goes away, even if the test fails.
final class TempDirectory {
    let path: String

    init() {
        var template = Array(((NSTemporaryDirectory() as NSString).appendingPathComponent("whisperd-test-XXXXXX")).utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: created!)
    }

    @discardableResult
    func write(_ relative: String, _ text: String, mode: Int = 0o600) -> String {
        let full = path + "/" + relative
        try? FileManager.default.createDirectory(
            atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: full, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
        return full
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
