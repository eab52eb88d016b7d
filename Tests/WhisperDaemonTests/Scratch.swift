import Foundation
import Glibc

/// A scratch directory, removed when the value goes away (even if the test fails).
final class Scratch {
    let path: String

    init() {
        var template = Array((NSTemporaryDirectory() + "whisperd-daemon-test-XXXXXX").utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = String(cString: made!)
    }

    func file(_ name: String) -> String { path + "/" + name }

    func write(_ name: String, _ text: String, mode: mode_t = 0o600) {
        let fd = open(file(name), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        precondition(fd >= 0)
        _ = Array(text.utf8).withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        fchmod(fd, mode)
        close(fd)
    }

    func read(_ name: String) -> String? {
        FileManager.default.contents(atPath: file(name)).map { String(decoding: $0, as: UTF8.self) }
    }

    func exists(_ name: String) -> Bool { access(file(name), F_OK) == 0 }

    func mode(_ name: String) -> mode_t? {
        var info = stat()
        return stat(file(name), &info) == 0 ? info.st_mode & 0o7777 : nil
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}
