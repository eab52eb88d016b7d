import Foundation
import Glibc
import Testing

/// `whisperctl backup` and `restore` against a running fleet: chat → backup → more chat →
/// restore → the history is exactly the snapshot's; a damaged archive is refused and changes
/// nothing.
extension IntegrationTests {
    @Suite struct BackupSection {
        static func memoryCount(_ port: Int) -> Int? {
            postJSON(port: port, path: "/api/user-state", ["user_id": "backup-user"]).json["memory_count"] as? Int
        }

        @Test func chat_backup_chat_restore_givesTheSnapshotsHistory_andADamagedArchiveChangesNothing() throws {
            let llm = try TestLLM()
            let scratch = Scratch()
            let port = freePort()
            scratch.write("characters/elena/character.md", "You are Elena.\n")
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      elena:
                        port: \(port)
                        health: {ready: notify, ready_timeout: 30s}
                        env: {LLM_BASE_URL: \(llm.baseURL), LLM_MODEL_NAME: test-model}
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("startup complete: 1/1 characters ready", timeout: 30) != nil)
            for text in ["one", "two"] {
                #expect(postJSON(port: port, path: "/api/chat", ["user_id": "backup-user", "message": text]).status == 200)
            }
            let snapshot = try #require(Self.memoryCount(port))
            // What a hostile character could leave in its own directory: a link to a secret, a
            // FIFO, a name too long for the archive. Left out, said, and no one's backup fails.
            let own = scratch.path + "/state/elena"
            #expect(symlink("/etc/shadow", own + "/evil") == 0)
            #expect(mkfifo(own + "/pipe", 0o600) == 0)
            FileManager.default.createFile(atPath: own + "/" + String(repeating: "n", count: 90), contents: Data("x".utf8))
            let target = scratch.path + "/backups"
            mkdir(target, 0o700)
            let backup = try whisperd.ctl("backup", "--to", target, "elena")
            #expect(backup.code == 0, "\(backup.stderr) \(backup.stdout)")
            let archive = backup.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(archive.hasPrefix(target + "/whisperd-backup-") && archive.hasSuffix(".tar"), "\(backup.stdout)")
            var info = stat()
            #expect(stat(archive, &info) == 0 && info.st_mode & 0o077 == 0o040, "0640 without secrets")
            #expect(backup.stderr.contains("left out characters/elena/state/evil: "), "\(backup.stderr)")
            #expect(backup.stderr.contains("left out characters/elena/state/pipe: not a plain file"), "\(backup.stderr)")
            #expect(backup.stderr.contains("name too long"), "\(backup.stderr)")
            let shadow = try String(contentsOfFile: "/etc/shadow", encoding: .utf8)
            let archived = String(decoding: try #require(FileManager.default.contents(atPath: archive)), as: UTF8.self)
            #expect(!archived.contains(shadow.prefix(40)), "a link's target was archived")

            #expect(postJSON(port: port, path: "/api/chat", ["user_id": "backup-user", "message": "three"]).status == 200)
            #expect(Self.memoryCount(port) ?? 0 > snapshot)

            // A damaged archive: refused, nothing changed (same process, same history).
            let before = try #require(whisperd.character("elena")?["pid"] as? Int)
            let bytes = try #require(FileManager.default.contents(atPath: archive))
            let cut = scratch.path + "/backups/cut.tar"
            FileManager.default.createFile(atPath: cut, contents: bytes.prefix(bytes.count / 2))
            let refused = try whisperd.ctl("restore", cut, "elena")
            #expect(refused.code != 0)
            #expect(refused.stderr.contains("damaged archive") || refused.stderr.contains("refused"), "\(refused.stderr)")
            #expect(whisperd.character("elena")?["pid"] as? Int == before)
            #expect(Self.memoryCount(port) ?? 0 > snapshot)

            // A FIFO planted where restore writes its temporary file does not block it.
            #expect(mkfifo(own + "/.memory.sqlite3.restore-tmp", 0o600) == 0)
            let restore = try whisperd.ctl("restore", archive, "elena")
            #expect(restore.code == 0, "\(restore.stderr)")
            #expect(restore.stdout.contains("elena: restored"), "\(restore.stdout)")
            #expect(whisperd.character("elena")?["ready"] as? Bool == true)
            #expect(whisperd.character("elena")?["pid"] as? Int != before)
            #expect(Self.memoryCount(port) == snapshot, "the history is the snapshot's")
        }
    }
}
