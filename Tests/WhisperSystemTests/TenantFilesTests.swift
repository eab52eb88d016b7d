import Foundation
import Glibc
import Testing
import WhisperSystem

@Suite struct TenantFilesTests {
    @Test func ownDirectory_isGivenWithItsFiles_butNotAHardLinkToAFileElsewhere() throws {
        try #require(geteuid() == 0, "needs root to give files away")
        let root = NSTemporaryDirectory() + "tenant-files-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: root + "/state/elena", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        FileManager.default.createFile(atPath: root + "/state/elena/notes", contents: Data("mine\n".utf8))
        // Someone else's file, and a second link to it inside the directory.
        FileManager.default.createFile(atPath: root + "/outside", contents: Data("not hers\n".utf8))
        #expect(link(root + "/outside", root + "/state/elena/link") == 0)

        try TenantFiles.prepareOwnDirectory(parent: root + "/state", name: "elena", uid: 61999, gid: 61999)

        var info = stat()
        #expect(stat(root + "/state/elena", &info) == 0 && info.st_uid == 61999 && info.st_mode & 0o7777 == 0o700)
        #expect(stat(root + "/state/elena/notes", &info) == 0 && info.st_uid == 61999)
        #expect(stat(root + "/outside", &info) == 0 && info.st_uid == 0, "a hard link gave away a file outside the directory")
    }

    @Test func ownDirectory_thatIsASymlink_isRefused() throws {
        let root = NSTemporaryDirectory() + "tenant-files-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: root + "/state", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/elsewhere", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createSymbolicLink(atPath: root + "/state/elena", withDestinationPath: root + "/elsewhere")
        #expect(throws: SystemError.self) {
            try TenantFiles.prepareOwnDirectory(parent: root + "/state", name: "elena", uid: 61999, gid: 61999)
        }
        var info = stat()
        #expect(stat(root + "/elsewhere", &info) == 0 && info.st_uid == geteuid())
    }
}
