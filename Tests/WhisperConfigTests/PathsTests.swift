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
