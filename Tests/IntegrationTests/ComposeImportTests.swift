import Foundation
import Testing

/// The real `whisperd import compose` on the committed Compose corpus: the roster it prints
/// passes `whisperd --check`; bad input exits 1 with the reason and prints no roster.
extension IntegrationTests {
    @Suite struct ComposeImportSection {
        static let corpus = repositoryRoot() + "/fuzz/corpus/compose/"

        @Test func whisperEngineStack_importedWithDotEnv_passesCheck() throws {
            let scratch = Scratch()
            let compose = try String(contentsOfFile: Self.corpus + "whisperengine.yaml", encoding: .utf8)
            scratch.write("compose.yaml", compose)
            // Interpolation reads .env beside the file; the bots' env_file must exist for --check.
            scratch.write(".env", "POSTGRES_PASSWORD=from-dotenv-s3cret\nBOT_TAG=v2\n")
            scratch.write(".env.bots", "LLM_MODEL_NAME=test\n")
            scratch.write("characters/elena/character.md", "# Elena\nA marine biologist.\n")
            scratch.write("characters/marcus/character.md", "# Marcus\nAn AI researcher.\n")
            var environment = ProcessInfo.processInfo.environment
            environment["POSTGRES_PASSWORD"] = nil
            let imported = try runCommand(
                whisperdBinary(),
                ["import", "compose", scratch.path + "/compose.yaml", "--worker-image", "whisperengine/bot", "--profile", "all"],
                environment: environment)
            #expect(imported.code == 0, "\(imported.stderr)")
            // The report: one line per key, with file and line; no secret in it.
            #expect(imported.stderr.contains("compose.yaml:76: services.qdrant: not mappable: left out: `image: qdrant/qdrant:latest` has no `command:`"))
            #expect(imported.stderr.contains("compose.yaml:42: services.postgres.container_name: ignored"))
            #expect(imported.stderr.contains("services.elena.image: mapped: the built-in worker"))
            #expect(!imported.stderr.contains("s3cret"))
            #expect(imported.stdout.contains("POSTGRES_PASSWORD: from-dotenv-s3cret"))
            scratch.write("roster.yaml", imported.stdout)
            let check = try runCommand(whisperdBinary(), ["--check", "--roster", scratch.path + "/roster.yaml"])
            #expect(check.code == 0, "\(check.stdout)\(check.stderr)\n\(imported.stdout)")
            #expect(check.stdout.contains("ok (5 characters, 1 job)"), "\(check.stdout)")
        }

        @Test func everyCorpusFile_importsAndPassesCheck() throws {
            for file in ["keys.yaml", "extends.yaml", "extends-file.yaml"] {
                let scratch = Scratch()
                let imported = try runCommand(whisperdBinary(), ["import", "compose", Self.corpus + file])
                #expect(imported.code == 0, "\(file): \(imported.stderr)")
                scratch.write("roster.yaml", imported.stdout)
                let check = try runCommand(whisperdBinary(), ["--check", "--roster", scratch.path + "/roster.yaml"])
                #expect(check.code == 0, "\(file): \(check.stdout)\(check.stderr)\n\(imported.stdout)")
            }
            let extended = try runCommand(whisperdBinary(), ["import", "compose", Self.corpus + "extends-file.yaml"])
            #expect(extended.stdout.contains("command: [/bin/sleep, 60]"), "\(extended.stdout)")
            #expect(extended.stdout.contains("LEVEL: from-extends-file"))
            #expect(extended.stdout.contains("EXTRA: \"yes\""))
            // An override file on top: later wins.
            var environment = ProcessInfo.processInfo.environment
            environment["POSTGRES_PASSWORD"] = "x"
            let layered = try runCommand(
                whisperdBinary(), ["import", "compose", Self.corpus + "whisperengine.yaml", Self.corpus + "override.yaml"], environment: environment)
            #expect(layered.code == 0, "\(layered.stderr)")
            #expect(layered.stdout.contains("POSTGRES_DB: whisper"))
            #expect(layered.stdout.contains("interval: 2s"))
        }

        @Test func badInput_exitsOneWithTheReason_andPrintsNoRoster() throws {
            let scratch = Scratch()
            scratch.write("list.yaml", "- not\n- compose\n")
            var environment = ProcessInfo.processInfo.environment
            environment["POSTGRES_PASSWORD"] = nil
            let cases: [([String], String)] = [
                ([scratch.path + "/absent.yaml"], "absent.yaml: cannot read: No such file or directory"),
                ([scratch.path], "not a regular file"),
                ([scratch.path + "/list.yaml"], "not a Compose file"),
                ([Self.corpus + "whisperengine.yaml", "--env-file", scratch.path + "/none.env"], "none.env: cannot read"),
                ([Self.corpus + "whisperengine.yaml"], "whisperengine.yaml:32: POSTGRES_PASSWORD: set POSTGRES_PASSWORD in .env"),
                ([Self.corpus + "keys.yaml", "--profile", "b@d"], "not a profile name"),
            ]
            for (arguments, says) in cases {
                let result = try runCommand(whisperdBinary(), ["import", "compose"] + arguments, environment: environment)
                #expect(result.code == 1, "\(arguments): exited \(result.code)")
                #expect(result.stdout.isEmpty, "\(arguments): \(result.stdout)")
                #expect(result.stderr.contains(says), "\(arguments) should say \(says): \(result.stderr)")
            }
            #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.path) == ["list.yaml"])
        }
    }
}
