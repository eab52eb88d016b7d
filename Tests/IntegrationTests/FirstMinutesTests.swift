import Foundation
import Glibc
import Testing

/// What a new user meets in the first minutes with whisperctl and whisperd (issue 28, item 4).
extension IntegrationTests {
    @Suite struct FirstMinutesSection {
        @Test func envExplain_printsTheWholeOrigin_fileAndLine() throws {
            let scratch = Scratch()
            scratch.write("a-long-name-for-an.env", String(repeating: "# comment\n", count: 11) + "MOOD=calm\n")
            scratch.write(
                "roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300'], env_file: [a-long-name-for-an.env]}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            _ = whisperd.waitFor("elena: starting -> running")
            let env = try whisperd.ctl("env", "elena", "--explain")
            #expect(env.code == 0)
            let mood = env.stdout.split(separator: "\n").first { $0.hasPrefix("MOOD ") }
            #expect(mood?.contains("a-long-name-for-an.env:12") == true, "\(env.stdout)")
        }

        @Test func logsOfAnUnknownCharacter_isAnErrorOnly_notJSONOnStdout() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            _ = whisperd.waitFor("elena: starting -> running")
            let logs = try whisperd.ctl("logs", "nosuch")
            #expect(logs.code == 1)
            #expect(logs.stdout.isEmpty, "\(logs.stdout)")
            #expect(logs.stderr.contains("no character named nosuch"))
        }

        @Test func socketBeforeCheck_isAccepted_andCheckReadsTheFile() throws {
            let scratch = Scratch()
            let roster = scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            let check = try runCommand(whisperctlBinary(), ["--socket", scratch.path + "/nowhere.sock", "check", roster])
            #expect(check.code == 0, "\(check.stderr)")
            #expect(check.stdout.contains("ok (1 character, 0 jobs)"))
        }

        @Test func oneProblem_isOneProblem() throws {
            let scratch = Scratch()
            let roster = scratch.write("roster.yaml", "characters:\n  elena: {command: [sleep, '1'], comand: x}\n")
            let check = try runCommand(whisperctlBinary(), ["check", roster])
            #expect(check.code == 1)
            #expect(check.stderr.contains("roster rejected (1 problem)"), "\(check.stderr)")
        }

        /// A crash-looping character has no process: no memory figure, and `status --check`
        /// (unlike plain status) fails while it should be up.
        @Test func crashLoop_showsNoMemory_andStatusCheckExits1() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + """
                    characters:
                      elena: {command: [sleep, '300']}
                      crasher:
                        command: [sh, -c, 'exit 3']
                        limits: {memory: 64M}
                        restart_budget: {max: 1, window: 60s}
                        restart_delay_max: 60s
                    """)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            #expect(whisperd.waitFor("crasher: ", "-> crashloop") != nil)
            let crasher = try #require(whisperd.character("crasher"))
            #expect(crasher["pid"] == nil)
            let resources = crasher["resources"] as? [String: Any] ?? [:]
            #expect(resources["memory_bytes"] == nil, "\(resources)")
            #expect(resources["memory_limit_bytes"] as? Int == 64 << 20)

            let status = try whisperd.ctl("status")
            #expect(status.code == 0, "plain status describes; it does not judge")
            let row = status.stdout.split(separator: "\n").first { $0.hasPrefix("crasher ") }
            #expect(row?.contains(" -/64") == true, "\(status.stdout)")
            let check = try whisperd.ctl("status", "--check")
            #expect(check.code == 1)
            #expect(check.stderr.contains("not ready: crasher"), "\(check.stderr)")
            #expect(check.stdout.contains("crashloop"), "--check prints the table as plain status does")
            #expect(try whisperd.ctl("status", "--check", "elena").code == 0)
        }

        /// Discussion paragraphs are wrapped by ArgumentParser (to 79 columns without a terminal);
        /// a line break in the source shows as a line the next word would have fitted on.
        @Test(arguments: [[String](), ["worker", "--help"], ["notify", "--help"], ["migrate", "--help"]])
        func whisperdHelp_hasNoStrayLineBreaks(_ arguments: [String]) throws {
            let help = try runCommand(whisperdBinary(), arguments.isEmpty ? ["--help"] : arguments)
            #expect(help.code == 0)
            let discussion = help.stdout.components(separatedBy: "\nUSAGE:").first ?? ""
            for paragraph in discussion.components(separatedBy: "\n\n") {
                let lines = paragraph.split(separator: "\n")
                for (line, next) in zip(lines, lines.dropFirst()) {
                    let nextWord = next.split(separator: " ").first ?? ""
                    #expect(line.count + 1 + nextWord.count >= 80, "a line break inside a paragraph: \(line) / \(next)")
                }
            }
        }

        /// The run command installs what running needs and nothing of the test toolchain
        /// (issue 28: PostgreSQL, Prometheus with its unit enabled, debootstrap, nspawn, wrk).
        @Test func runDependencies_areASubsetOfTheTests_withoutTheTestToolchain() throws {
            func packages(_ set: String) throws -> Set<String> {
                let list = try runCommand("/bin/bash", [repositoryRoot() + "/scripts/install-deps.sh", "--list", set])
                #expect(list.code == 0, "\(list.stderr)")
                return Set(list.stdout.split(separator: "\n").map(String.init))
            }
            let run = try packages("run")
            let test = try packages("test")
            #expect(run.contains("libsystemd-dev") && run.contains("libcurl4-openssl-dev"))
            #expect(run.isSubset(of: test), "\(run.subtracting(test))")
            // The image's set (scripts/build-image.sh) is in the tests' (scripts/e2e-kubernetes.sh), not in run's.
            let image = try packages("image")
            #expect(image.contains("podman") && image.contains("runc") && run.isSubset(of: image) && image.isSubset(of: test))
            #expect(run.isDisjoint(with: ["podman", "runc"]))
            let toolchain: Set = ["postgresql-15", "prometheus", "debootstrap", "systemd-container", "wrk"]
            #expect(run.isDisjoint(with: toolchain), "\(run.intersection(toolchain))")
            // One release build for the sample, the end-to-end tests and install.sh.
            let sample = try String(contentsOfFile: repositoryRoot() + "/scripts/run-sample.sh", encoding: .utf8)
            #expect(sample.contains("bin=$(scripts/build-release.sh)"))
            #expect(try runCommand("/bin/bash", [repositoryRoot() + "/scripts/install-deps.sh", "--list", "nope"]).code == 2)
        }
    }
}
