import Testing
import WhisperConfig

@Suite struct PathsTests {
    @Test(arguments: [
        ("characters", "/etc/whisperd", "/etc/whisperd/characters"),
        ("../characters", "/work/main/etc", "/work/main/characters"),
        ("./a/./b/", "/x", "/x/a/b"),
        ("/abs/../path", "/ignored", "/path"),
        ("../../../..", "/a/b", "/"),
        ("a//b", "/", "/a/b"),
        ("/already/normal", "/x", "/already/normal"),
        ("/trailing/", "/x", "/trailing"),
        ("/a/.hidden/b", "/x", "/a/.hidden/b"),
        ("/a/b/.", "/x", "/a/b"),
        ("/", "/x", "/"),
        ("/a//b", "/x", "/a/b"),
        ("/a/..", "/x", "/"),
        ("//", "/x", "/"),
        ("/a/b..c/.d", "/x", "/a/b..c/.d"),
    ])
    func absoluteFoldsDotsWithoutTouchingTheDisk(_ path: String, _ base: String, _ expected: String) {
        #expect(Paths.absolute(path, from: base) == expected)
    }

    @Test func directoryAndLastComponent() {
        #expect(Paths.directory(of: "/etc/whisperd/roster.yaml") == "/etc/whisperd")
        #expect(Paths.directory(of: "/roster.yaml") == "/")
        #expect(Paths.lastComponent("/etc/whisperd/roster.yaml") == "roster.yaml")
    }
}
