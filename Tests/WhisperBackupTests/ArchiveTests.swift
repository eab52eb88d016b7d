import Testing
import WhisperBackup

@Suite struct SHA256Tests {
    @Test func knownVectors() {
        // FIPS 180-4 examples and the empty message.
        #expect(SHA256.hex([UInt8]()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        // Fed in pieces of every size, the same digest.
        let million = [UInt8](repeating: UInt8(ascii: "a"), count: 1_000_000)
        var hash = SHA256()
        var offset = 0
        var step = 1
        while offset < million.count {
            let end = min(million.count, offset + step)
            hash.update(million[offset..<end])
            offset = end
            step = step % 997 + 13
        }
        #expect(hash.hexDigest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}

@Suite struct TarTests {
    @Test func writtenEntries_readBack() throws {
        let entries = [
            Tar.Entry(path: "manifest.json", mode: 0o600, bytes: Array("{}".utf8)),
            Tar.Entry(path: "characters/elena/state/memory.sqlite3", mode: 0o600, bytes: [UInt8](repeating: 7, count: 1500)),
            Tar.Entry(path: "empty", mode: 0o644, bytes: []),
        ]
        let archive = Tar.write(entries, mtime: 1_700_000_000)
        #expect(archive.count % 512 == 0)
        #expect(try Tar.read(archive) == entries)
    }

    @Test func aCutOrAlteredArchive_isRefused() {
        let archive = Tar.write([Tar.Entry(path: "a", mode: 0o600, bytes: [UInt8](repeating: 1, count: 2000))], mtime: 0)
        for cut in [archive.count - 1024, 700, 100] {
            #expect(throws: Tar.Damaged.self) { try Tar.read(Array(archive.prefix(cut))) }
        }
        var altered = archive
        altered[10] ^= 1
        #expect(throws: Tar.Damaged.self) { try Tar.read(altered) }
        let climbing = Tar.write([Tar.Entry(path: "../etc/passwd", mode: 0o600, bytes: [1])], mtime: 0)
        #expect(throws: Tar.Damaged.self) { try Tar.read(climbing) }
    }

    /// The archive with its first header's size field set to `text` and the checksum made right.
    static func withSize(_ text: String, _ archive: [UInt8]) -> [UInt8] {
        var bytes = archive
        let field = Array(text.utf8) + [0]
        for index in 0..<12 { bytes[124 + index] = index < field.count ? field[index] : 0 }
        for index in 148..<156 { bytes[index] = 0x20 }
        let sum = bytes[0..<512].reduce(0) { $0 + Int($1) }
        let checksum = Array(String(sum, radix: 8).utf8)
        for index in 0..<6 { bytes[148 + index] = index < 6 - checksum.count ? UInt8(ascii: "0") : checksum[index - (6 - checksum.count)] }
        bytes[154] = 0
        return bytes
    }

    @Test func aForgedSize_isRefused_notACrash() {
        let archive = Tar.write([Tar.Entry(path: "a", mode: 0o600, bytes: [1, 2, 3])], mtime: 0)
        #expect((try? Tar.read(Self.withSize("00000000003", archive))) != nil, "the helper keeps a good header good")
        for forged in ["-1", "77777777777", "+3", "9", ""] {
            #expect(throws: Tar.Damaged.self) { try Tar.read(Self.withSize(forged, archive)) }
        }
    }

    @Test func verify_checksEveryFileAgainstTheManifest() throws {
        let manifest = """
            {"characters":["elena"],"createdAt":"now","files":[{"character":"elena","path":"x","sha256":"\(SHA256.hex([1, 2, 3]))","size":3}],"format":1,"includesSecrets":false,"stores":"SQLite"}
            """
        let good = Tar.write([Tar.Entry(path: "manifest.json", mode: 0o600, bytes: Array(manifest.utf8)), Tar.Entry(path: "x", mode: 0o600, bytes: [1, 2, 3])], mtime: 0)
        #expect(try Backup.verify(good).1["x"] == [1, 2, 3])
        let tampered = Tar.write([Tar.Entry(path: "manifest.json", mode: 0o600, bytes: Array(manifest.utf8)), Tar.Entry(path: "x", mode: 0o600, bytes: [1, 2, 4])], mtime: 0)
        #expect(throws: BackupFailure.self) { try Backup.verify(tampered) }
        let extra = Tar.write(
            [Tar.Entry(path: "manifest.json", mode: 0o600, bytes: Array(manifest.utf8)), Tar.Entry(path: "x", mode: 0o600, bytes: [1, 2, 3]), Tar.Entry(path: "y", mode: 0o600, bytes: [])],
            mtime: 0)
        #expect(throws: BackupFailure.self) { try Backup.verify(extra) }
    }
}
