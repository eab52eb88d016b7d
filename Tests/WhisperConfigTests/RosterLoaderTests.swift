import Foundation
import Testing
import WhisperConfig
import WhisperCore

@Suite struct RosterLoaderTests {
    let loader = RosterLoader(selfExecutable: "/usr/local/bin/whisperd", hostEnvironment: ["PATH": "/usr/bin:/bin", "HOME": "/root", "SECRET_X": "nope"])

    func load(_ yaml: String, in directory: TempDirectory) -> Result<LoadedRoster, RosterError> {
        loader.load(path: directory.write("etc/roster.yaml", yaml))
    }

    func problems(_ yaml: String, in directory: TempDirectory = TempDirectory()) -> [RosterProblem] {
        switch load(yaml, in: directory) {
        case .success: return []
        case .failure(let error): return error.problems
        }
    }

    @Test func sampleRosterShippedInTheRepoLoads() throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let loaded = try loader.load(path: repository + "/etc/roster.yaml").get()
        #expect(loaded.roster.names.map(\.rawValue) == ["migrate", "nightly-backup", "local-llm", "elena", "aria", "ryan"])
        let model = try #require(loaded.roster[ServiceName("local-llm")!])
        #expect(model.health.ready == .http)
        #expect(model.health.probe?.check == .http(path: "/v1/models"))
        // The local model's address comes from etc/local-llm.env; .env (absent here) would win.
        #expect(loaded.roster[ServiceName("aria")!]?.launch.environment["LLM_BASE_URL"] == "http://127.0.0.1:8080/v1")
        #expect(loaded.roster[ServiceName("aria")!]?.after.map(\.rawValue) == ["migrate", "local-llm"])
        let elena = try #require(loaded.roster[ServiceName("elena")!])
        #expect(elena.limits.memoryBytes == 1 << 30)
        #expect(elena.limits.memoryHighBytes == 448 << 20)
        #expect(elena.launch.arguments == ["/usr/local/bin/whisperd", "worker", "elena"])
        #expect(elena.launch.environment["API_PORT"] == "8000")
        #expect(loaded.roster[ServiceName("ryan")!]?.health.ready == .http)
    }

    @Test func defaultsApplyAndEntriesOverrideFieldByField() throws {
        let directory = TempDirectory()
        let loaded = try load(
            """
            defaults:
              restart: on-failure
              restart_delay: 250ms
              limits: {memory: 256M, pids: 64}
              health: {ready: http, http: {interval: 5s}}
            characters:
              elena:
                command: [/bin/sleep, "100"]
                port: 8000
                limits: {memory: 1G}
                health: {http: {retries: 7}}
                stop_signal: INT
                stop_grace: 3s
            """, in: directory
        ).get()
        let elena = try #require(loaded.roster.services.first)
        #expect(elena.restart.mode == .onFailure)
        #expect(elena.restart.delay == .milliseconds(250))
        #expect(elena.restart.delayMax == .seconds(60))
        #expect(elena.limits == Limits(memoryBytes: 1 << 30, pids: 64))
        #expect(elena.health.ready == .http)
        #expect(elena.health.probe?.interval == .seconds(5))
        #expect(elena.health.probe?.retries == 7)
        #expect(elena.stopSignal == .int)
        #expect(elena.stopGrace == .seconds(3))
        #expect(elena.launch.workingDirectory == directory.path + "/etc")
    }

    @Test func environmentLayers_laterWins_andOriginsAreRecorded() throws {
        let directory = TempDirectory()
        directory.write("etc/.env", "SHARED=from-env\nOVERRIDE=from-env\nPATH=/custom/bin\n")
        directory.write("etc/.env.elena", "OVERRIDE=from-elena-file\nAPI_PORT=1\n")
        let loaded = try load(
            """
            defaults:
              env: {FROM_DEFAULTS: "yes"}
            characters:
              elena:
                command: [/bin/true]
                port: 8000
                env_file: [.env, .env.elena, "?.env.missing"]
                env: {OVERRIDE: from-env-key}
            """, in: directory
        ).get()
        let elena = try #require(loaded.roster.services.first)
        let environment = elena.launch.environment
        #expect(environment["SHARED"] == "from-env")
        #expect(environment["OVERRIDE"] == "from-env-key")
        #expect(environment["PATH"] == "/custom/bin")
        #expect(environment["HOME"] == "/root")
        #expect(environment["SECRET_X"] == nil)
        #expect(environment["FROM_DEFAULTS"] == "yes")
        #expect(environment["API_PORT"] == "8000")
        #expect(environment["WHISPERD_CHARACTER"] == "elena")
        #expect(environment["WATCHDOG_USEC"] == "30000000")
        let origins = try #require(loaded.environmentOrigins[ServiceName("elena")!])
        #expect(origins["SHARED"] == ".env:1")
        #expect(origins["OVERRIDE"] == "env")
        #expect(origins["PATH"] == ".env:3")
        #expect(origins["HOME"] == "base")
        #expect(origins["API_PORT"] == "whisperd")
    }

    @Test func unknownKeysAreRejectedWithKeyAndLine() {
        let found = problems(
            """
            version: 1
            characters:
              elena:
                command: [/bin/true]
                restart_dealy: 5s
            """)
        #expect(found.count == 1)
        #expect(found.first?.line == 5)
        #expect(found.first?.key == "characters.elena.restart_dealy")
        #expect(found.first?.description.contains("did you mean `restart_delay`") == true)
    }

    @Test func everyProblemIsReportedAtOnce() {
        let directory = TempDirectory()
        directory.write("etc/.env.a", "DISCORD_TOKEN=same-token\n")
        directory.write("etc/.env.b", "DISCORD_TOKEN=same-token\n")
        directory.write("etc/.env.open", "LLM_API_KEY=sk-live\n", mode: 0o644)
        let found = problems(
            """
            version: 2
            defaults:
              restart: sometimes
              limits: {memory: 1M, cpus: 0.001, pids: 2}
            jobs:
              migrate:
                after: [migrate]
                command: [/bin/true]
            characters:
              Bad_Name:
                command: [/bin/true]
              elena:
                port: 8000
                env_file: [.env.a]
              aria:
                command: [/bin/true]
                port: 8000
                env_file: [.env.b, .env.open, .env.nope]
                after: [ghost, ryan]
                restart_delay: forever
              ryan:
                command: [/bin/true]
                after: [aria]
                limits: {memory: lots}
                command_line: x
            """, in: directory)
        let text = found.map(\.description).joined(separator: "\n")
        let expectations = [
            "version", "sometimes", "below the floor of 8M", "below the floor of 0.01", "below the floor of 8",
            "cannot wait for itself", "invalid name", "character.md", "port 8000 is used by elena, aria",
            "same bot token", "world-readable", ".env.nope", "unknown service `ghost`", "not a duration",
            "dependency cycle", "not a size", "unknown key `command_line`",
        ]
        for expected in expectations {
            #expect(text.contains(expected), "missing problem: \(expected)\n\(text)")
        }
        #expect(found.count >= expectations.count)
    }

    @Test(arguments: [
        ("", "empty"),
        ("characters: [elena]", "expected a mapping"),
        ("version: 1", "missing"),
        ("characters:\n  elena:\n    command: python3 bot.py", "found a string"),
        ("characters:\n  elena: {command: [/bin/true]}\n  elena: {command: [/bin/true]}", "duplicate"),
        ("characters:\n  elena:\n    command: [/bin/true]\n  \"\": {}", "invalid name"),
        ("characters: {elena: {command: [/bin/true]}}\njobs: {elena: {command: [/bin/true]}}", "used twice"),
        ("jobs:\n  migrate: {run: once}\ncharacters: {}", "needs `command:`"),
        ("characters:\n  a: [unclosed", "not valid YAML"),
        ("characters:\n  elena: {command: [/bin/true], port: 70000}", "65535"),
        ("characters:\n  elena: {command: [/bin/true], health: {http: {path: nope}}}", "URL path"),
        ("characters:\n  elena: {command: [/bin/true], stop_signal: SIGNOPE}", "signal name"),
        ("characters:\n  elena: {command: [/bin/true], limits: {memory: 64M, memory_high: 128M}}", "above limits.memory"),
        // Found by the malformed-roster test: accepted, then whisperd crashed writing cpu.max.
        ("characters:\n  elena: {command: [/bin/true], limits: {cpus: 1e308}}", "above the ceiling of 8192"),
        ("characters:\n  elena: {command: [/bin/true], limits: {cpus: .inf}}", "limits.cpus"),
        ("characters:\n  elena: {command: [/bin/true], limits: {pids: 99999999}}", "whole number in 1...4194304"),
    ])
    func brokenRostersAreRejected(_ yaml: String, _ expected: String) {
        let text = problems(yaml).map(\.description).joined(separator: "\n")
        #expect(text.contains(expected), "expected \(expected.debugDescription) in:\n\(text)")
    }

    @Test func aMillionWrongValues_aBoundedReport() {
        let yaml = "characters:\n  elena: {command: [" + Array(repeating: "[]", count: 500).joined(separator: ",") + "]}"
        let found = problems(yaml)
        #expect(found.count == 101)
        #expect(found.last?.description.contains("more problems not listed") == true, "\(found.last?.description ?? "")")
    }

    @Test func jobsComeFirstAndGetTheirRunMode() throws {
        let loaded = try load(
            """
            characters:
              elena: {command: [/bin/true], after: [migrate, warmup]}
            jobs:
              migrate: {command: [whisperd, migrate]}
              warmup: {command: [/bin/true], run: every-start}
            """, in: TempDirectory()
        ).get()
        #expect(loaded.roster.names.map(\.rawValue) == ["migrate", "warmup", "elena"])
        #expect(loaded.roster.services[0].kind == .job(.oncePerRevision))
        #expect(loaded.roster.services[0].launch.arguments == ["/usr/local/bin/whisperd", "migrate"])
        #expect(loaded.roster.services[1].kind == .job(.everyStart))
    }

    @Test func scheduledJobs_cronOrEvery_withTheirOptions() throws {
        let loaded = try load(
            """
            jobs:
              nightly: {command: [/bin/true], schedule: "30 3 * * *", timezone: Europe/Berlin, jitter: 5m, catch_up: true}
              hourly: {command: [/bin/true], schedule: "@hourly"}
              ping: {command: [/bin/true], every: 90s}
            characters:
              elena: {command: [/bin/true]}
            """, in: TempDirectory()
        ).get()
        let nightly = try #require(loaded.roster[ServiceName("nightly")!]?.schedule)
        #expect(nightly.rule == .cron(try CronExpression("30 3 * * *")))
        #expect(nightly.timeZone == "Europe/Berlin" && nightly.jitter == .seconds(300) && nightly.catchUp)
        #expect(nightly.description == "30 3 * * * (Europe/Berlin)")
        #expect(loaded.roster[ServiceName("hourly")!]?.schedule?.description == "@hourly")
        #expect(loaded.roster[ServiceName("ping")!]?.schedule == JobSchedule(rule: .every(.seconds(90))))
        #expect(loaded.roster[ServiceName("ping")!]?.kind == .job(.oncePerRevision))
    }

    @Test func scheduledJobs_badShapesAreNamed() {
        let found = problems(
            """
            jobs:
              both: {command: [/bin/true], schedule: "@daily", every: 1h}
              bad: {command: [/bin/true], schedule: "61 * * * *"}
              never: {command: [/bin/true], schedule: "0 0 30 2 *"}
              zone: {command: [/bin/true], schedule: "@daily", timezone: Mars/Olympus}
              zoned-every: {command: [/bin/true], every: 1h, timezone: UTC}
              lonely: {command: [/bin/true], catch_up: true, jitter: 1m}
              twice: {command: [/bin/true], run: every-start, every: 1h}
              fast: {command: [/bin/true], every: 10ms}
            characters:
              elena: {command: [/bin/true], after: [twice], schedule: "@daily"}
            """)
        let text = found.map { "\($0.key): \($0.message)" }
        for expected in [
            "jobs.both.every: give `schedule:` or `every:`, not both",
            "jobs.bad.schedule: minute `61` is not in 0–59",
            "jobs.never.schedule: `0 0 30 2 *` never runs",
            "jobs.zone.timezone: unknown time zone `Mars/Olympus`",
            "jobs.zoned-every.timezone: `every:` does not read the wall clock",
            "jobs.lonely.catch_up: only for a job with `schedule:` or `every:`",
            "jobs.lonely.jitter: only for a job with `schedule:` or `every:`",
            "jobs.twice: `run:` and `schedule:`/`every:` both say when the job runs",
            "jobs.fast.every: must be at least 1s",
            "characters.elena.after: `twice` runs by the clock",
            "characters.elena.schedule",
        ] {
            #expect(text.contains { $0.hasPrefix(expected) }, "missing: \(expected) in \(text)")
        }
    }

    @Test func oversizedAndBinaryFilesAreRejected() {
        let directory = TempDirectory()
        let big = directory.write("big.yaml", "characters: {}\n# " + String(repeating: "x", count: RosterLoader.maxFileSize))
        guard case .failure(let error) = loader.load(path: big) else {
            Issue.record("accepted a huge file")
            return
        }
        #expect(error.description.contains("limit"))
        let nul = directory.write("nul.yaml", "characters: {}\u{0}")
        guard case .failure = loader.load(path: nul) else {
            Issue.record("accepted a NUL byte")
            return
        }
    }

    /// Pre-flight problems point at the line to change (issue 28).
    @Test func portAndAfterProblems_carryTheLineToChange() {
        let found = problems(
            """
            characters:
              a: {command: [/bin/true], port: 8000, after: [b]}
              b:
                command: [/bin/true]
                port: 8000
                after:
                  - a
                  - b
                  - ghost
            """)
        func line(of fragment: String) -> Int? { found.first { $0.message.contains(fragment) }?.line }
        #expect(line(of: "port 8000 is used by a, b") == 5, "\(found)")
        #expect(line(of: "b cannot wait for itself") == 8, "\(found)")
        #expect(line(of: "unknown service `ghost`") == 9, "\(found)")
        #expect(line(of: "dependency cycle: a → b → a") == 2, "\(found)")
        #expect(found.first { $0.message.contains("port 8000") }?.key == "characters.b.port")
    }

    @Test(arguments: ["characters:\n\ta: {command: [/bin/true]}\n", "characters:\n  a:\n    command: [/bin/true]\n  \tport: 8000\n"])
    func aTabIndentation_isCalledATab(_ yaml: String) {
        let text = problems(yaml).map(\.description).joined(separator: "\n")
        #expect(text.contains("is indented with a tab: YAML indents with spaces only"), "\(text)")
    }
}

@Suite struct TenantSettingsTests {
    let loader = RosterLoader(selfExecutable: "/usr/local/bin/whisperd", hostEnvironment: ["PATH": "/usr/bin:/bin"])
    let directory = TempDirectory()

    func load(_ yaml: String) -> Result<LoadedRoster, RosterError> {
        loader.load(path: directory.write("etc/roster.yaml", yaml))
    }

    @Test func defaults_areDynamicUsers_strictForTheWorker_defaultForCommands() throws {
        let loaded = try load("characters:\n  bot: {command: [sleep, '1']}\n  elena: {command: [whisperd, worker, elena]}\n").get()
        let bot = try #require(loaded.roster[ServiceName("bot")!]).launch.tenant
        #expect(bot.user == nil)  // whisperd decides: dynamic when root
        #expect(bot.sandbox.filesystem == .default)
        #expect(loaded.warnings.isEmpty)
    }

    @Test func everyTenantKey_isParsed_andEntriesOverrideDefaults() throws {
        let yaml = """
            defaults:
              user: dynamic
              sandbox: {filesystem: strict, read_paths: [models]}
              ulimits: {nofile: 4096, core: 0}
              oom_score_adj: 300
            characters:
              bot:
                command: [sleep, '1']
                user: botuser
                group: "1234"
                supplementary_groups: [audio, "44"]
                sandbox: {filesystem: default, write_paths: [/srv/bot], bind_ports: [9100]}
                ulimits: {nofile: {soft: 1024, hard: 8192}}
                cpuset: " 2-3, 0 ,1"
            """
        let loaded = try load(yaml).get()
        #expect(loaded.roster[ServiceName("bot")!]?.limits.cpuset?.description == "0-3")
        let tenant = try #require(loaded.roster[ServiceName("bot")!]).launch.tenant
        #expect(tenant.user == .named("botuser"))
        #expect(tenant.group == .id(1234))
        #expect(tenant.supplementaryGroups == [.named("audio"), .id(44)])
        #expect(tenant.sandbox.filesystem == .default)
        #expect(tenant.sandbox.readPaths.first?.hasSuffix("/etc/models") == true)  // from defaults, made absolute
        #expect(tenant.sandbox.writePaths == ["/srv/bot"])
        #expect(tenant.sandbox.bindPorts == [9100])
        #expect(tenant.oomScoreAdjust == 300)
        #expect(tenant.resourceLimits.contains(ResourceLimit(resource: .core, soft: 0, hard: 0)))
        #expect(tenant.resourceLimits.contains(ResourceLimit(resource: .nofile, soft: 1024, hard: 8192)))
        #expect(!tenant.resourceLimits.contains(ResourceLimit(resource: .nofile, soft: 4096, hard: 4096)))
    }

    @Test func healthChecks_inComposesShapes() throws {
        let yaml = """
            characters:
              postgres:
                command: [sleep, '1']
                health: {ready: exec, exec: {test: [CMD, pg_isready, -U, whisper], interval: 10s, retries: 5, start_period: 30s}}
              redis:
                command: [sleep, '1']
                health: {ready: exec, exec: {test: [CMD-SHELL, "redis-cli ping"]}}
              qdrant:
                command: [sleep, '1']
                port: 6333
                health: {ready: tcp}
              lavalink:
                command: [sleep, '1']
                health: {ready: log, ready_log_line: 'Lavalink is ready to accept connections'}
              elena:
                command: [sleep, '1']
                health: {ready: notify, exec: {test: "curl -f localhost:8000/health", timeout: 2s}}
              quiet:
                command: [sleep, '1']
                health: {ready: notify, exec: {test: [NONE]}}
            """
        let roster = try load(yaml).get().roster
        func probe(_ name: String) -> ProbePolicy? { roster[ServiceName(name)!]?.health.probe }
        // Compose's defaults where the roster says nothing: timeout 30s, start_interval 5s.
        #expect(probe("postgres") == ProbePolicy(
            check: .exec(arguments: ["pg_isready", "-U", "whisper"]), interval: .seconds(10), timeout: .seconds(30), retries: 5,
            startPeriod: .seconds(30), startInterval: .seconds(5)))
        #expect(probe("redis")?.check == .exec(arguments: ["/bin/sh", "-c", "redis-cli ping"]))
        #expect(probe("redis")?.interval == .seconds(30))
        #expect(probe("qdrant")?.check == .tcp(port: 6333))
        #expect(probe("lavalink") == nil)
        #expect(roster[ServiceName("lavalink")!]?.health.readyLogPattern == "Lavalink is ready to accept connections")
        // With notify readiness, an exec block is liveness after it.
        #expect(probe("elena")?.check == .exec(arguments: ["/bin/sh", "-c", "curl -f localhost:8000/health"]))
        #expect(probe("elena")?.timeout == .seconds(2))
        #expect(probe("quiet") == nil)
    }

    @Test func healthChecks_whatEachModeNeeds_andBadValues() {
        let yaml = """
            characters:
              a: {command: [sleep, '1'], health: {ready: exec}}
              b: {command: [sleep, '1'], health: {ready: tcp}}
              c: {command: [sleep, '1'], health: {ready: log}}
              d: {command: [sleep, '1'], health: {ready: log, ready_log_line: '(unclosed'}}
              e: {command: [sleep, '1'], health: {ready: exec, exec: {test: [RUN, x], interval: 1ms, timeout: 0s, start_interval: 1ms}}}
              f: {command: [sleep, '1'], health: {ready: http}}
            """
        guard case .failure(let error) = load(yaml) else {
            Issue.record("accepted")
            return
        }
        let text = error.problems.map(\.description).joined(separator: "\n")
        for expected in [
            "characters.a.health.exec.test", "characters.b.health.tcp.port", "characters.c.health.ready_log_line",
            "`(unclosed` is not a regular expression", "expected [CMD, program, args…]", "characters.e.health.exec.interval",
            "characters.e.health.exec.timeout", "characters.e.health.exec.start_interval", "ready: http probes the service's port",
        ] {
            #expect(text.contains(expected), "no problem saying \(expected): \(text)")
        }
    }

    @Test func replicas_expandIntoNamedInstances_withPortsAndIndex_andDependentsWaitForAll() throws {
        let yaml = """
            characters:
              gateway: {command: [sleep, '1'], replicas: 3, port: 8100, env: {DISCORD_TOKEN: same}}
              shard: {command: [sleep, '1'], replicas: 2, port: [9001, 9005]}
              web: {command: [sleep, '1'], after: {gateway: started}}
            """
        var loaded = try load(yaml).get()
        #expect(loaded.roster.names.map(\.rawValue) == ["gateway-0", "gateway-1", "gateway-2", "shard-0", "shard-1", "web"])
        let second = try #require(loaded.roster[ServiceName("gateway-1")!])
        #expect(second.port == 8101)
        #expect(second.launch.environment["REPLICA_INDEX"] == "1")
        #expect(second.launch.environment["REPLICA_COUNT"] == "3")
        #expect(second.launch.environment["API_PORT"] == "8101")
        #expect(second.launch.environment["DISCORD_BOT_NAME"] == "gateway", "the same bot: one token, shards")
        #expect(loaded.roster[ServiceName("shard-1")!]?.port == 9005)
        #expect(loaded.roster[ServiceName("web")!]?.dependencies.map(\.name.rawValue) == ["gateway-0", "gateway-1", "gateway-2"])
        #expect(loaded.roster[ServiceName("web")!]?.dependencies.allSatisfy { $0.condition == .started } == true)
        #expect(loaded.characterEntries == ["gateway", "shard", "web"])
        // `whisperctl scale` overrides the roster's count (0: none).
        var scaled = loader
        scaled.replicaOverrides = ["gateway": 1, "web": 2, "shard": 0]
        loaded = try scaled.load(path: directory.write("etc/roster.yaml", yaml.replacingOccurrences(of: "port: [9001, 9005]", with: "port: 9001"))).get()
        #expect(loaded.roster.names.map(\.rawValue) == ["gateway-0", "web-0", "web-1"])
    }

    @Test func replicas_badShapesAreNamed() {
        let yaml = """
            characters:
              a: {command: [sleep, '1'], replicas: 2, port: [9001]}
              b: {command: [sleep, '1'], port: [9001, 9002]}
              c: {command: [sleep, '1'], replicas: 3, port: 65534}
              d: {command: [sleep, '1'], replicas: 65}
              e: {command: [sleep, '1'], replicas: 2, port: 9100}
              f: {command: [sleep, '1'], port: 9101}
            """
        guard case .failure(let error) = load(yaml) else {
            Issue.record("accepted")
            return
        }
        let text = error.problems.map(\.description).joined(separator: "\n")
        for expected in [
            "1 ports for 2 replicas", "a list of ports needs `replicas:`", "ports 65534…65536 go past 65535",
            "characters.d.replicas", "port 9101 is used by e-1, f",
        ] {
            #expect(text.contains(expected), "no problem saying \(expected): \(text)")
        }
    }

    @Test func profiles_selectServicesAsComposeDoes() throws {
        let yaml = """
            jobs:
              migrate: {command: [/bin/true]}
            characters:
              postgres: {command: [sleep, '1']}
              elena: {command: [sleep, '1'], profiles: [elena, all], after: [postgres]}
              aria: {command: [sleep, '1'], profiles: [aria, all]}
              debug: {command: [sleep, '1'], profiles: [debug], after: {elena: {condition: started, required: false}}}
            """
        func names(_ profiles: Set<String>) throws -> [String] {
            var loader = self.loader
            loader.profiles = profiles
            return try loader.load(path: directory.write("etc/roster.yaml", yaml)).get().roster.services.map(\.name.rawValue)
        }
        // No profile: only the services without `profiles:`.
        #expect(try names([]) == ["migrate", "postgres"])
        #expect(try names(["elena"]) == ["migrate", "postgres", "elena"])
        #expect(try names(["all"]) == ["migrate", "postgres", "elena", "aria"])
        // debug's dependency on elena is not required: debug runs without it.
        #expect(try names(["debug"]) == ["migrate", "postgres", "debug"])
        var loader = self.loader
        loader.profiles = ["aria"]
        let loaded = try loader.load(path: directory.write("etc/roster.yaml", yaml)).get()
        #expect(loaded.inactive == ["elena", "debug"])
        #expect(loaded.summary.hasSuffix("not in the active profiles: elena, debug"))
    }

    @Test func profiles_aRequiredDependencyOutsideTheActiveProfiles_namesTheProfile() {
        var loader = self.loader
        loader.profiles = ["bots"]
        let yaml = """
            characters:
              postgres: {command: [sleep, '1'], profiles: [db]}
              elena: {command: [sleep, '1'], profiles: [bots], after: [postgres]}
              bad: {command: [sleep, '1'], profiles: ["-x", ok]}
            """
        guard case .failure(let error) = loader.load(path: directory.write("etc/roster.yaml", yaml)) else {
            Issue.record("accepted")
            return
        }
        let text = error.problems.map(\.description).joined(separator: "\n")
        #expect(text.contains("`postgres` runs only with profile db: activate one (--profile)"), "\(text)")
        #expect(text.contains("`-x` is not a profile name"), "\(text)")
    }

    @Test func afterAsAMap_takesComposesConditions_requiredAndRestart() throws {
        let yaml = """
            jobs:
              migrate: {command: [/bin/true]}
            characters:
              postgres: {command: [sleep, '1']}
              lavalink: {command: [sleep, '1']}
              elena:
                command: [sleep, '1']
                after:
                  postgres: healthy
                  migrate: service_completed_successfully
                  lavalink: {condition: service_started, restart: true}
                  redis: {condition: started, required: false}
              aria: {command: [sleep, '1'], after: [postgres, migrate]}
            """
        let roster = try load(yaml).get().roster
        let elena = try #require(roster[ServiceName("elena")!]).dependencies
        #expect(elena == [
            Dependency(ServiceName("postgres")!, condition: .healthy),
            Dependency(ServiceName("migrate")!, condition: .completedSuccessfully),
            Dependency(ServiceName("lavalink")!, condition: .started, restartsWithIt: true),
            Dependency(ServiceName("redis")!, condition: .started, required: false),
        ])
        // The list form: each healthy (for a job: succeeded), required, no restart.
        #expect(roster[ServiceName("aria")!]?.dependencies == [Dependency(ServiceName("postgres")!), Dependency(ServiceName("migrate")!)])
    }

    @Test func afterAsAMap_badValuesAreEachReported() {
        let yaml = """
            characters:
              postgres: {command: [sleep, '1']}
              elena:
                command: [sleep, '1']
                after:
                  postgres: service_finished
                  ghost: {condition: started, required: maybe}
                  other: {condition: started, restart: true, when: now}
              aria: {command: [sleep, '1'], after: {postgres: completed_successfully}}
              ryan: {command: [sleep, '1'], after: postgres}
            """
        guard case .failure(let error) = load(yaml) else {
            Issue.record("accepted")
            return
        }
        let text = error.problems.map(\.description).joined(separator: "\n")
        for expected in [
            "`service_finished` is not a condition", "expected true or false, found `maybe`", "unknown key `when`",
            "`postgres` is a character, which never completes", "expected a list of names or a map",
            "unknown service `other`",
        ] {
            #expect(text.contains(expected), "no problem saying \(expected): \(text)")
        }
    }

    @Test func userRoot_andFilesystemOff_areAccepted_withWarnings() throws {
        let loaded = try load("characters:\n  bot: {command: [sleep, '1'], user: root, sandbox: {filesystem: off}}\n").get()
        #expect(loaded.roster[ServiceName("bot")!]?.launch.tenant.user == .root)
        #expect(loaded.warnings.map(\.key) == ["characters.bot.user", "characters.bot.sandbox.filesystem"])
    }

    @Test func badTenantValues_areEachReported() {
        let yaml = """
            characters:
              memory: {command: [sleep, '1']}
              bot:
                command: [sleep, '1']
                user: "bad user!"
                sandbox: {filesystem: loose, bind_ports: [70000], network: none}
                oom_score_adj: 2000
                ulimits: {nofile: {soft: 10, hard: 5}, nofiles: 3, core: lots}
                cpuset: 3-1
            """
        guard case .failure(let error) = load(yaml) else {
            Issue.record("accepted")
            return
        }
        let keys = Set(error.problems.map(\.key))
        for key in [
            "characters.memory", "characters.bot.user", "characters.bot.sandbox.filesystem", "characters.bot.sandbox.bind_ports[0]",
            "characters.bot.sandbox.network", "characters.bot.oom_score_adj", "characters.bot.ulimits.nofile",
            "characters.bot.ulimits.nofiles", "characters.bot.ulimits.core", "characters.bot.cpuset",
        ] {
            #expect(keys.contains(key), "no problem reported for \(key): \(error)")
        }
    }
}

@Suite struct EnvFileSafetyTests {
    let loader = RosterLoader(selfExecutable: "/usr/local/bin/whisperd", hostEnvironment: ["PATH": "/usr/bin:/bin"])
    let directory = TempDirectory()

    func problems(envFile: String) -> [String] {
        let roster = directory.write("etc/roster.yaml", "characters:\n  bot: {command: [sleep, '1'], env_file: [\(envFile)]}\n")
        guard case .failure(let error) = loader.load(path: roster) else { return [] }
        return error.problems.map(\.message)
    }

    @Test func groupOrWorldWritableEnvFile_isRefused() {
        directory.write("etc/open.env", "LLM_MODEL_NAME=x\n", mode: 0o620)
        #expect(problems(envFile: "open.env").contains { $0.contains("group- or world-writable") })
    }

    @Test func symlinkedEnvFile_isRefused_notFollowed() throws {
        directory.write("etc/real.env", "LLM_MODEL_NAME=x\n")
        try FileManager.default.createSymbolicLink(atPath: directory.path + "/etc/link.env", withDestinationPath: directory.path + "/etc/real.env")
        #expect(problems(envFile: "link.env").contains { $0.contains("is a symlink") })
    }

    @Test func envFileOfAnotherUser_isRefused() throws {
        try #require(geteuid() == 0, "needs root to give a file away")
        let path = directory.write("etc/theirs.env", "LLM_MODEL_NAME=x\n")
        #expect(chown(path, 65534, 65534) == 0)
        #expect(problems(envFile: "theirs.env").contains { $0.contains("belongs to uid 65534") })
    }

    @Test func ownPrivateEnvFile_isRead() {
        directory.write("etc/ok.env", "LLM_MODEL_NAME=x\n")
        #expect(problems(envFile: "ok.env").isEmpty)
    }
}
