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

/// The dynamic range's taken ids, read once a batch when every source can list its entries.
@Suite struct UserDatabaseListingTests {
    @Test func onlyFilesAndSystemd_listEveryEntry() {
        #expect(NameServiceSwitch.listsEveryEntry("passwd: files systemd\ngroup: files systemd\nhosts: files dns\n"))
        #expect(NameServiceSwitch.listsEveryEntry("# comment\npasswd:\tfiles [NOTFOUND=return] systemd # local\ngroup: files\n"))
        #expect(NameServiceSwitch.listsEveryEntry("passwd: files [SUCCESS=merge NOTFOUND=continue] systemd\ngroup: files\n"))
        #expect(!NameServiceSwitch.listsEveryEntry("passwd: files sss\ngroup: files systemd\n"), "SSSD may not enumerate")
        #expect(!NameServiceSwitch.listsEveryEntry("passwd: files\ngroup: files ldap\n"))
        #expect(!NameServiceSwitch.listsEveryEntry("passwd: compat\ngroup: files\n"), "compat can pull in NIS")
        #expect(!NameServiceSwitch.listsEveryEntry("passwd: files\n"), "group: not named means glibc's default")
        #expect(!NameServiceSwitch.listsEveryEntry("passwd:\ngroup: files\n"))
        #expect(!NameServiceSwitch.listsEveryEntry(""))
    }

    /// The listing holds what single lookups find: every id of the files, root included, and
    /// nothing a lookup says is free.
    @Test func theListing_agreesWithLookups() throws {
        let directory = NSTemporaryDirectory() + "nsswitch-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "passwd: files sss\ngroup: files\n".write(toFile: directory + "/ldap.conf", atomically: true, encoding: .utf8)
        #expect(UserDatabase.listedIDs(nsswitch: directory + "/ldap.conf") == nil)
        #expect(UserDatabase.listedIDs(nsswitch: directory + "/missing.conf") == nil)
        try "passwd: files systemd\ngroup: files systemd\n".write(toFile: directory + "/local.conf", atomically: true, encoding: .utf8)
        let listed = try #require(UserDatabase.listedIDs(nsswitch: directory + "/local.conf"))
        #expect(listed.contains(0))
        let passwd = try String(contentsOfFile: "/etc/passwd", encoding: .utf8)
        let group = try String(contentsOfFile: "/etc/group", encoding: .utf8)
        for line in passwd.split(separator: "\n") + group.split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count > 2, let id = UInt32(fields[2]) else { continue }
            #expect(listed.contains(id), "\(fields[0]) (\(id)) is in the files but not listed")
        }
        for id in UInt32(61184)...61284 { #expect(listed.contains(id) == UserDatabase.isIDTaken(id), "id \(id)") }
    }
}
