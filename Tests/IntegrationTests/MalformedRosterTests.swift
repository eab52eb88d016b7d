import Foundation
import Glibc
import Testing

/// 200 broken rosters (wrong types, huge values, cycles, bad names, NUL bytes, a 10 MB file,
/// symlink loops in env_file paths, YAML syntax errors, semantic conflicts): each is refused
/// by `whisperd --check` with its problem named, and by a running whisperd on SIGHUP without
/// touching the fleet, which keeps running.
extension IntegrationTests {
    @Suite struct MalformedRosterSection {
        struct Case {
            var name: String
            var text: String
            /// Something the report must say (case-insensitive).
            var says: String
        }

        static let valid = fastDefaults + "characters:\n  keep: {command: [sleep, '300']}\n  also: {command: [sleep, '300']}\n"

        static func character(_ body: String, name: String = "bad") -> String {
            fastDefaults + "characters:\n  keep: {command: [sleep, '300']}\n  \(name): \(body)\n"
        }

        /// The generated cases, in a fixed order.
        static func cases(scratch: Scratch) -> [Case] {
            var cases: [Case] = []
            func add(_ name: String, _ text: String, _ says: String) { cases.append(Case(name: name, text: text, says: says)) }

            // Wrong types: each key, given values of the wrong shape.
            let wrong = ["[1, 2]", "{a: 1}", "true", "~", "-1", "'not a value'", "12abc", "\"\""]
            let keys: [(String, String)] = [
                ("restart", "restart"), ("restart_delay", "restart_delay"), ("restart_delay_max", "restart_delay_max"),
                ("restart_reset_after", "restart_reset_after"), ("stop_grace", "stop_grace"), ("stop_signal", "stop_signal"),
                ("port", "port"), ("after", "after"), ("env", "env"), ("env_file", "env_file"), ("logs", "logs"),
                ("limits", "limits"), ("health", "health"), ("restart_budget", "restart_budget"),
            ]
            for (index, (key, says)) in keys.enumerated() {
                for value in [wrong[index % wrong.count], wrong[(index + 3) % wrong.count], wrong[(index + 5) % wrong.count]] {
                    // A list is a valid `after`/`env_file`, a map a valid `env`/`logs`/…: skip what is not wrong.
                    if ["after", "env_file"].contains(key), value.hasPrefix("[") || value == "~" { continue }
                    if ["env", "logs", "limits", "health", "restart_budget"].contains(key), value.hasPrefix("{") || value == "~" { continue }
                    add("\(key)=\(value)", character("{command: [sleep, '1'], \(key): \(value)}"), says)
                }
            }
            for (key, value) in [
                ("memory", "lots"), ("memory", "[1]"), ("cpus", "fast"), ("pids", "1.5"), ("memory_high", "{x: 1}"), ("cpus", "-2"),
            ] {
                add("limits.\(key)=\(value)", character("{command: [sleep, '1'], limits: {\(key): \(value)}}"), key)
            }
            for (key, value) in [
                ("ready", "maybe"), ("ready_timeout", "soon"), ("watchdog", "[1]"), ("on_unhealthy", "panic"), ("http", "yes"),
                ("http", "{interval: x}"), ("http", "{retries: -3}"), ("http", "{path: 5, timeout: 0s}"),
            ] {
                add("health.\(key)=\(value)", character("{command: [sleep, '1'], health: {\(key): \(value)}}"), "health")
            }
            add("command=string", character("{command: sleep}"), "command")
            add("command=empty", character("{command: []}"), "command")
            add("command=map", character("{command: {a: b}}"), "command")
            add("command=nested", character("{command: [[sleep]]}"), "command")
            add("characters=list", fastDefaults + "characters: [a, b]\n", "characters")
            add("characters=scalar", fastDefaults + "characters: 5\n", "characters")
            add("jobs=list", fastDefaults + "jobs: [a]\ncharacters:\n  keep: {command: [sleep, '300']}\n", "jobs")
            add("defaults=list", "defaults: [1]\ncharacters:\n  keep: {command: [sleep, '300']}\n", "defaults")
            add("version=2", "version: 2\ncharacters:\n  keep: {command: [sleep, '300']}\n", "version")
            add("version=text", "version: one\ncharacters:\n  keep: {command: [sleep, '300']}\n", "version")
            add("job run", fastDefaults + "jobs:\n  j: {command: [true], run: sometimes}\ncharacters:\n  keep: {command: [sleep, '300']}\n", "run")

            // Huge values.
            for (body, says) in [
                ("{command: [sleep, '1'], port: 99999999999999999999999}", "port"),
                ("{command: [sleep, '1'], port: 70000}", "port"),
                ("{command: [sleep, '1'], port: 0}", "port"),
                ("{command: [sleep, '1'], restart_delay: 99999999999999999999h}", "restart_delay"),
                ("{command: [sleep, '1'], stop_grace: 9999999999999999999999999ms}", "stop_grace"),
                ("{command: [sleep, '1'], limits: {memory: 99999999999999999999999T}}", "memory"),
                ("{command: [sleep, '1'], limits: {cpus: 1e308}}", "cpus"),
                ("{command: [sleep, '1'], limits: {pids: 99999999999999999999}}", "pids"),
                ("{command: [sleep, '1'], limits: {memory: 1K}}", "below the floor"),
                ("{command: [sleep, '1'], logs: {max_size: 99999999999999999999G}}", "max_size"),
                ("{command: [sleep, '1'], logs: {max_files: 1000000000000}}", "max_files"),
                ("{command: [sleep, '1'], restart_budget: {max: 99999999999999999999, window: 1s}}", "restart_budget"),
                ("{command: [sleep, '1'], health: {ready_timeout: 999999999999999999999d}}", "ready_timeout"),
            ] {
                add("huge \(says)", character(body), says)
            }
            add("huge command", character("{command: [sleep, '\(String(repeating: "9", count: 200_000))'], port: -5}"), "port")
            add("many problems", character("{command: [\(Array(repeating: "[]", count: 5000).joined(separator: ","))]}"), "more problems not listed")
            add("deep nesting", character("{command: [sleep], env: " + String(repeating: "[", count: 500) + String(repeating: "]", count: 500) + "}"), "env")

            // Dependency cycles and unknown targets.
            add("self cycle", fastDefaults + "characters:\n  a: {command: [x], after: [a]}\n", "wait for itself")
            add("two cycle", fastDefaults + "characters:\n  a: {command: [x], after: [b]}\n  b: {command: [x], after: [a]}\n", "cycle")
            var long = fastDefaults + "characters:\n"
            for index in 0..<50 { long += "  c\(index): {command: [x], after: [c\((index + 1) % 50)]}\n" }
            add("fifty cycle", long, "cycle")
            add("job cycle", fastDefaults + "jobs:\n  j: {command: [x], after: [c]}\ncharacters:\n  c: {command: [x], after: [j]}\n", "cycle")
            add("unknown after", character("{command: [x], after: [nobody]}"), "nobody")
            add("after not a list", character("{command: [x], after: {a: b}}"), "after")

            // Bad names.
            for name in [
                "'../etc'", "'a/b'", "'..'", "'.'", "''", "'-lead'", "'UPPER'", "'has space'", "'a;rm -rf'", "'naïve'",
                "'\(String(repeating: "n", count: 300))'", "'x\\ty'", "'tab\tname'", "'emoji😀'", "'a:b'", "'/abs'",
                "'-'", "'new\\nline'", "'dot.name'", "'star*'",
            ] {
                add("name \(name.prefix(20))", fastDefaults + "characters:\n  keep: {command: [sleep, '300']}\n  \(name): {command: [x]}\n", "name")
            }

            // NUL bytes.
            add("NUL in value", character("{command: [sle\u{0}ep]}"), "NUL")
            add("NUL in key", character("{comm\u{0}and: [x]}"), "NUL")
            add("NUL at end", valid + "\u{0}", "NUL")
            add("NUL alone", "\u{0}", "NUL")
            add("NUL in comment", valid + "# \u{0}\n", "NUL")

            // YAML that is not YAML.
            for (label, text) in [
                ("unclosed bracket", "characters:\n  a: {command: [x\n"), ("unclosed brace", "characters: {a: {command: [x]}\n"),
                ("tab indent", "characters:\n\ta: {command: [x]}\n"), ("bad indent", "characters:\n  a:\n command: [x]\n   b: c\n"),
                ("unclosed quote", "characters:\n  a: {command: ['x]}\n"), ("stray colon", "characters: : :\n"),
                ("undefined alias", "characters:\n  a: {command: *nothing}\n"), ("two documents", valid + "---\n" + valid),
                ("bad escape", "characters:\n  a: {command: [\"\\q\"]}\n"), ("directive", "%YAML 9.9\n---\n" + valid),
                ("only dashes", "---\n"), ("only a comment", "# nothing\n"), ("a scalar", "hello\n"), ("a list", "- a\n- b\n"),
                ("empty", ""), ("whitespace", "   \n\n  \n"), ("anchor loop", "a: &a [*a]\n"),
                ("invalid utf8 escape", "characters:\n  a: {command: [\"\\uD800\"]}\n"), ("mapping key list", "? [a, b]\n: c\n"),
                ("duplicate key", fastDefaults + "characters:\n  keep: {command: [sleep, '300']}\n  keep: {command: [sleep, '1']}\n"),
            ] {
                add("yaml \(label)", text, "")
            }

            // Semantics the pre-flight knows.
            add("duplicate port", fastDefaults + "characters:\n  a: {command: [x], port: 8000}\n  b: {command: [x], port: 8000}\n", "8000")
            add("duplicate token", fastDefaults + "characters:\n  a: {command: [x], env: {DISCORD_TOKEN: same}}\n  b: {command: [x], env: {DISCORD_TOKEN: same}}\n", "DISCORD_TOKEN")
            add("missing character.md", fastDefaults + "characters:\n  ghost: {port: 8123}\n", "character.md")
            add("missing env file", character("{command: [x], env_file: [does-not-exist.env]}"), "does-not-exist.env")
            add("unknown key", character("{comand: [x]}"), "comand")
            add("unknown top key", valid + "extra: 1\n", "extra")
            add("unknown limits key", character("{command: [x], limits: {memroy: 1G}}"), "memroy")
            add("unknown stop signal", character("{command: [x], stop_signal: SIGNOPE}"), "SIGNOPE")
            add("relative working dir missing", character("{command: [x], working_dir: /nonexistent/dir}"), "working_dir")
            add("memory_high above memory", character("{command: [x], limits: {memory: 100M, memory_high: 200M}}"), "memory_high")

            // Symlink loops and other bad env_file paths.
            symlink(scratch.path + "/loop-b.env", scratch.path + "/loop-a.env")
            symlink(scratch.path + "/loop-a.env", scratch.path + "/loop-b.env")
            symlink(scratch.path + "/self.env", scratch.path + "/self.env")
            add("env_file loop", character("{command: [x], env_file: [loop-a.env]}"), "loop-a.env")
            add("env_file self loop", character("{command: [x], env_file: [self.env]}"), "self.env")
            add("env_file directory", character("{command: [x], env_file: [characters]}"), "characters")
            add("env_file through loop dir", character("{command: [x], env_file: [loop-a.env/x.env]}"), "loop-a.env/x.env")

            // Fill to 200 with seeded single-key damage of a valid roster: a known key renamed,
            // a value replaced by a wrong type.
            var random = SystemRandomNumberGeneratorSeeded(seed: 42)
            let damageKeys = ["restart", "stop_grace", "port", "restart_delay", "logs", "limits", "after"]
            while cases.count < 198 {
                let key = damageKeys[Int(random.next() % UInt64(damageKeys.count))]
                let value = ["[[]]", "{x: {y: z}}", "-99999", "'∞'", "0x10", "1e999", "!!binary AAAA"][Int(random.next() % 7)]
                add("damage \(cases.count) \(key)", character("{command: [sleep, '1'], \(key): \(value)}"), "")
            }
            // The 10 MB files last: refused by size before parsing.
            add("10 MB file", valid + "# " + String(repeating: "x", count: 10 << 20) + "\n", "limit")
            add("10 MB value", character("{command: [sleep, '\(String(repeating: "y", count: 10 << 20))']}"), "limit")
            return cases
        }

        @Test func twoHundredBrokenRosters_eachRefusedWithItsProblem_theFleetUntouched() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", Self.valid)
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let keep = try #require(WhisperdProcess.pid(in: whisperd.waitFor("keep: starting -> running")))
            let also = try #require(WhisperdProcess.pid(in: whisperd.waitFor("also: starting -> running")))
            let cases = Self.cases(scratch: scratch)
            #expect(cases.count == 200)
            for (index, broken) in cases.enumerated() {
                scratch.write("roster.yaml", broken.text)
                let check = try runCommand(whisperdBinary(), ["--check", "--roster", scratch.path + "/roster.yaml"])
                let report = check.stdout + check.stderr
                #expect(check.code == 1, "\(broken.name): --check exited \(check.code): \(report.prefix(500))")
                #expect(report.lowercased().contains("roster rejected"), "\(broken.name): \(report.prefix(500))")
                #expect(broken.says.isEmpty || report.lowercased().contains(broken.says.lowercased()), "\(broken.name) should say \(broken.says): \(report.prefix(800))")
                #expect(report.split(separator: "\n").count <= 110, "\(broken.name): the report is not bounded")
                whisperd.signal(SIGHUP)
                guard whisperd.waitFor("reload:", "the running fleet is unchanged", occurrence: index + 1, timeout: 20) != nil else {
                    Issue.record("\(broken.name): no rejection logged")
                    break
                }
            }
            #expect(isAlive(whisperd.pid))
            #expect(whisperd.character("keep")?["pid"] as? Int == Int(keep))
            #expect(whisperd.character("also")?["pid"] as? Int == Int(also))
            #expect(whisperd.character("bad") == nil)
            // A valid roster still applies afterwards.
            scratch.write("roster.yaml", Self.valid + "  added: {command: [sleep, '300']}\n")
            whisperd.signal(SIGHUP)
            #expect(whisperd.waitFor("added: starting -> running") != nil)
        }
    }
}

/// SplitMix64 for the test's own seeded choices.
struct SystemRandomNumberGeneratorSeeded: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
