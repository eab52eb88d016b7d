import Foundation
import Testing
import WhisperConfig
import WhisperCore

/// `whisperd import compose`'s translator: Compose text in, roster text and report out; every
/// roster it writes is loaded back with the roster loader and checked field by field.
@Suite struct ComposeImportTests {
    let loader = RosterLoader(selfExecutable: "/usr/local/bin/whisperd", hostEnvironment: ["PATH": "/usr/bin:/bin"])
    let directory = TempDirectory()

    func translate(
        _ yaml: String, environment: [String: String] = [:], options: ComposeImportOptions = .init()
    ) -> Result<ComposeImportResult, ComposeImportError> {
        ComposeImport.translate([ComposeSource(path: directory.path + "/compose.yaml", text: yaml)], environment: environment, options: options)
    }

    /// Translates and loads the roster; fails the test when either step fails.
    func roster(_ yaml: String, environment: [String: String] = [:], options: ComposeImportOptions = .init()) throws -> (LoadedRoster, ComposeImportResult) {
        let result = try translate(yaml, environment: environment, options: options).get()
        switch loader.parse(result.roster, path: directory.path + "/roster.yaml") {
        case .success(let loaded): return (loaded, result)
        case .failure(let error):
            Issue.record("the roster written does not load: \(error)\n\(result.roster)")
            throw error
        }
    }

    func service(_ loaded: LoadedRoster, _ name: String) throws -> ServiceSpec {
        try #require(loaded.roster.services.first { $0.name.rawValue == name }, "no \(name) in \(loaded.roster.names)")
    }

    func failure(_ yaml: String, environment: [String: String] = [:]) -> ComposeImportError? {
        if case .failure(let error) = translate(yaml, environment: environment) { return error }
        return nil
    }

    func finding(_ result: ComposeImportResult, _ key: String) -> ComposeFinding? {
        result.findings.first { $0.key == key }
    }

    // MARK: interpolation

    @Test func interpolation_everyFormComposeDocuments() throws {
        let yaml = """
            services:
              app:
                command:
                  - /bin/echo
                  - "${SET}"
                  - "$SET"
                  - "${UNSET:-fallback}"
                  - "${EMPTY:-for-empty}"
                  - "${EMPTY-kept-empty}"
                  - "${UNSET-for-unset}"
                  - "${SET:+alternative}"
                  - "${UNSET+never}"
                  - "${UNSET:-${SET}-nested}"
                  - "cost: $$5"
                  - "${SET:?must be set}"
                  - "${EMPTY?set though empty}"
                  - "a$ b"
            """
        let (loaded, _) = try roster(yaml, environment: ["SET": "value", "EMPTY": ""])
        #expect(try service(loaded, "app").launch.arguments == [
            "/bin/echo", "value", "value", "fallback", "for-empty", "", "for-unset", "alternative", "", "value-nested",
            "cost: $5", "value", "", "a$ b",
        ])
    }

    @Test func interpolation_requiredVariableMissing_failsWithItsMessageFileAndLine() throws {
        let error = try #require(failure("services:\n  db:\n    command: [postgres]\n    environment:\n      PASSWORD: ${DB_PASSWORD:?set it in .env}\n"))
        #expect(error.line == 5)
        #expect(error.file.hasSuffix("compose.yaml"))
        #expect(error.message == "DB_PASSWORD: set it in .env")
        let empty = try #require(failure("services:\n  db:\n    command: [\"${EMPTY:?}\"]\n", environment: ["EMPTY": ""]))
        #expect(empty.message == "required variable EMPTY is unset or empty")
        // Without the colon, set-but-empty is enough.
        #expect(failure("services:\n  db:\n    command: [\"x${EMPTY?}\"]\n", environment: ["EMPTY": ""]) == nil)
    }

    @Test func interpolation_malformed_isAnErrorNotAGuess() throws {
        #expect(try #require(failure("services:\n  a:\n    command: [\"${UNCLOSED\"]\n")).message.contains("`}`"))
        #expect(try #require(failure("services:\n  a:\n    command: [\"${A:-x\"]\n")).message.contains("closing"))
        #expect(try #require(failure("services:\n  a:\n    command: [\"${}\"]\n")).message.contains("variable name"))
        #expect(try #require(failure("services:\n  a:\n    command: [\"${A*b}\"]\n")).message.contains("expected"))
    }

    @Test func interpolation_unsetVariable_isEmptyAndWarned() throws {
        let (loaded, result) = try roster("services:\n  a:\n    command: [/bin/echo, \"[${NOPE}]\"]\n")
        #expect(try service(loaded, "a").launch.arguments == ["/bin/echo", "[]"])
        let warning = try #require(result.findings.first { $0.label == "warning" })
        #expect(warning.line == 3)
        #expect(warning.detail.contains("NOPE is not set"))
    }

    // MARK: anchors and merge keys

    @Test func mergeKeys_ownKeysWin_thenTheFirstMergedMapping() throws {
        let yaml = """
            x-a: &a
              command: [/bin/true, from-a]
              stop_signal: SIGINT
              cpus: "0.5"
            x-b: &b
              command: [/bin/true, from-b]
              stop_signal: SIGQUIT
              pids_limit: 50
            services:
              merged:
                <<: [*a, *b]
                cpus: "2"
              single:
                <<: *b
              plain:
                command: [/bin/true]
                environment: &env
                  SHARED: one
              aliased:
                command: [/bin/true]
                environment: *env
            """
        let (loaded, result) = try roster(yaml)
        let merged = try service(loaded, "merged")
        #expect(merged.launch.arguments == ["/bin/true", "from-a"])
        #expect(merged.stopSignal == Signal(name: "SIGINT"))
        #expect(merged.limits.cpus == 2)
        #expect(merged.limits.pids == 50)
        let single = try service(loaded, "single")
        #expect(single.launch.arguments == ["/bin/true", "from-b"])
        #expect(single.stopSignal == Signal(name: "SIGQUIT"))
        #expect(try service(loaded, "aliased").launch.environment["SHARED"] == "one")
        #expect(finding(result, "x-a")?.label == "ignored")
        // A key merged from an anchor is reported where it was written.
        #expect(finding(result, "services.merged.pids_limit")?.line == 8)
    }

    @Test func mergeKey_ofAScalar_isRefused() throws {
        let error = try #require(failure("x: &x 3\nservices:\n  a:\n    <<: *x\n    command: [a]\n"))
        #expect(error.message.contains("merges mappings"))
    }

    @Test func aliasBomb_isRefusedNotExpanded() throws {
        var yaml = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for level in 1...7 { yaml += "a\(level): &a\(level) [" + Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ", ") + "]\n" }
        yaml += "services: {}\n"
        #expect(try #require(failure(yaml)).message.contains("aliases are expanded"))
    }

    // MARK: service keys

    @Test func commandAndEntrypoint_stringsSplitAsShellWords_listsKept() throws {
        let yaml = """
            services:
              words:
                command: sh -c "echo \\"quoted\\" \\$$HOME" it\\'s
              both:
                entrypoint: [/bin/sh, -c]
                command: echo 'single  spaced'
              entry:
                entrypoint: /usr/bin/env FOO=1 printenv
            """
        let (loaded, result) = try roster(yaml)
        #expect(try service(loaded, "words").launch.arguments == ["sh", "-c", "echo \"quoted\" $HOME", "it's"])
        #expect(try service(loaded, "both").launch.arguments == ["/bin/sh", "-c", "echo", "single  spaced"])
        #expect(try service(loaded, "entry").launch.arguments == ["/usr/bin/env", "FOO=1", "printenv"])
        #expect(finding(result, "services.both.entrypoint")?.detail.contains("entrypoint + command") == true)
        #expect(try #require(translate("services:\n  a:\n    command: \"echo 'open\"\n").get().findings.first { $0.key == "services.a.command" }).label == "not mappable")
    }

    @Test func environment_mapAndList_valuesNeverInTheReport() throws {
        let yaml = """
            services:
              map:
                command: [/bin/true]
                environment:
                  TOKEN: s3cr3t-value
                  EMPTY: ""
                  FROM_SHELL:
              list:
                command: [/bin/true]
                environment: [TOKEN=other-s3cr3t, "WITH=equals=inside", BARE]
            """
        let (loaded, result) = try roster(yaml)
        let map = try service(loaded, "map").launch.environment
        #expect(map["TOKEN"] == "s3cr3t-value")
        #expect(map["EMPTY"] == "")
        #expect(map["FROM_SHELL"] == nil)
        let list = try service(loaded, "list").launch.environment
        #expect(list["TOKEN"] == "other-s3cr3t")
        #expect(list["WITH"] == "equals=inside")
        let report = result.findings.map(\.description).joined(separator: "\n")
        #expect(!report.contains("s3cr3t"))
        #expect(report.contains("FROM_SHELL without a value"))
        #expect(report.contains("BARE without a value"))
    }

    /// Found by the `compose` fuzzer: a list may name a variable twice, and the roster written
    /// had the name twice in one mapping (not valid YAML). The last is kept, as Compose keeps it.
    @Test func environment_aNameListedTwice_theLastIsKept_andSaid() throws {
        let yaml = """
            services:
              list:
                command: [/bin/true]
                environment: [GREETING=hi, OTHER=1, GREETING=hello, BARE, BARE=set]
            """
        let (loaded, result) = try roster(yaml)
        let environment = try service(loaded, "list").launch.environment
        #expect(environment["GREETING"] == "hello")
        #expect(environment["OTHER"] == "1")
        #expect(environment["BARE"] == "set")
        let report = result.findings.map(\.description).joined(separator: "\n")
        #expect(report.contains("GREETING, BARE given more than once: the last is kept"))
        #expect(!report.contains("BARE without a value"))
        #expect(!report.contains("hello"))
    }

    @Test func envFile_stringListAndPathRequired_resolvedFromTheComposeFile() throws {
        directory.write("a.env", "A=1\n")
        directory.write("b.env", "B=2\n")
        let yaml = """
            services:
              string:
                command: [/bin/true]
                env_file: a.env
              list:
                command: [/bin/true]
                env_file: [a.env, ./b.env]
              long:
                command: [/bin/true]
                env_file:
                  - path: a.env
                  - path: missing.env
                    required: false
            """
        let (loaded, result) = try roster(yaml)
        #expect(try service(loaded, "string").launch.environment["A"] == "1")
        #expect(try service(loaded, "list").launch.environment["B"] == "2")
        #expect(try service(loaded, "long").launch.environment["A"] == "1")
        #expect(result.roster.contains("\"?\(directory.path)/missing.env\""))
    }

    @Test func healthcheck_everyShape() throws {
        let yaml = """
            services:
              cmd:
                command: [/bin/sleep, "9"]
                healthcheck:
                  test: [CMD, pg_isready, -U, whisper]
                  interval: 5s
                  timeout: 3s
                  retries: 5
                  start_period: 1m30s
                  start_interval: 500ms
              shell:
                command: [/bin/sleep, "9"]
                healthcheck:
                  test: [CMD-SHELL, "redis-cli ping || exit 1"]
              string:
                command: [/bin/sleep, "9"]
                healthcheck:
                  test: curl -f http://localhost/
              none:
                command: [/bin/sleep, "9"]
                healthcheck:
                  test: [NONE]
              disabled:
                command: [/bin/sleep, "9"]
                healthcheck:
                  test: [CMD, "true"]
                  disable: true
              bad:
                command: [/bin/sleep, "9"]
                healthcheck:
                  test: [CMD-SHELL, a, b]
            """
        let (loaded, result) = try roster(yaml)
        let cmd = try service(loaded, "cmd").health
        #expect(cmd.ready == .exec)
        let probe = try #require(cmd.probe)
        #expect(probe.check == .exec(arguments: ["pg_isready", "-U", "whisper"]))
        #expect(probe.interval == .seconds(5))
        #expect(probe.timeout == .seconds(3))
        #expect(probe.retries == 5)
        #expect(probe.startPeriod == .seconds(90))
        #expect(probe.startInterval == .milliseconds(500))
        #expect(try service(loaded, "shell").health.probe?.check == .exec(arguments: ["/bin/sh", "-c", "redis-cli ping || exit 1"]))
        #expect(try service(loaded, "string").health.probe?.check == .exec(arguments: ["/bin/sh", "-c", "curl -f http://localhost/"]))
        for name in ["none", "disabled", "bad"] {
            #expect(try service(loaded, name).health.ready == .started)
            #expect(try service(loaded, name).health.probe == nil)
        }
        #expect(finding(result, "services.bad.healthcheck.test")?.label == "not mappable")
    }

    @Test func dependsOn_bothForms_conditionsRequiredRestart_andJobs() throws {
        let yaml = """
            services:
              db:
                command: [/bin/sleep, "9"]
              migrate:
                command: [/bin/true]
                depends_on: [db]
              cache:
                command: [/bin/sleep, "9"]
              app:
                command: [/bin/sleep, "9"]
                depends_on:
                  db:
                    condition: service_healthy
                    restart: true
                  migrate:
                    condition: service_completed_successfully
                  cache:
                    condition: service_started
                    required: false
            """
        let (loaded, _) = try roster(yaml)
        #expect(try service(loaded, "migrate").isJob)
        #expect(try service(loaded, "migrate").dependencies == [Dependency(ServiceName("db")!, condition: .started)])
        #expect(try !service(loaded, "db").isJob)
        #expect(try service(loaded, "app").dependencies == [
            Dependency(ServiceName("db")!, condition: .healthy, restartsWithIt: true),
            Dependency(ServiceName("migrate")!, condition: .completedSuccessfully),
            Dependency(ServiceName("cache")!, condition: .started, required: false),
        ])
    }

    @Test func resources_limitsReservationsSharesCpusetPidsUlimits() throws {
        let yaml = """
            services:
              v1:
                command: [/bin/true]
                cpus: 1.5
                mem_limit: 1gb
                mem_reservation: 300m
                cpu_shares: 2048
                cpuset: "0"
                pids_limit: 64
                ulimits:
                  nofile: {soft: 1024, hard: 4096}
                  nproc: 512
                  core: -1
                  bogus: 1
                  stack: lots
              v2:
                command: [/bin/true]
                deploy:
                  resources:
                    limits: {cpus: "0.25", memory: 100000000, pids: 30}
                    reservations: {cpus: "0.1", memory: 64M}
            """
        let (loaded, result) = try roster(yaml)
        let v1 = try service(loaded, "v1")
        #expect(v1.limits.cpus == 1.5)
        #expect(v1.limits.memoryBytes == 1 << 30)
        #expect(v1.limits.memoryLowBytes == 300 << 20)
        #expect(v1.limits.cpuWeight == 200)
        #expect(v1.limits.cpuset == (try CPUSet.parse("0")))
        #expect(v1.limits.pids == 64)
        let limits = v1.launch.tenant.resourceLimits
        #expect(limits.contains(ResourceLimit(resource: .nofile, soft: 1024, hard: 4096)))
        #expect(limits.contains(ResourceLimit(resource: .nproc, soft: 512, hard: 512)))
        #expect(limits.contains(ResourceLimit(resource: .core, soft: nil, hard: nil)))
        #expect(finding(result, "services.v1.ulimits.bogus")?.label == "not mappable")
        #expect(finding(result, "services.v1.ulimits.stack")?.label == "not mappable")
        let v2 = try service(loaded, "v2")
        #expect(v2.limits.cpus == 0.25)
        #expect(v2.limits.memoryBytes == 100_000_000)
        #expect(result.roster.contains("memory: 100000000"))
        #expect(v2.limits.pids == 30)
        #expect(v2.limits.memoryLowBytes == 64 << 20)
        #expect(finding(result, "services.v2.deploy.resources.reservations.cpus")?.label == "not mappable")
    }

    /// Found by the fuzzer: a share count past Int.max trapped converting to a weight.
    @Test func cpuShares_outOfRange_clampedOrRefused_neverATrap() throws {
        let (loaded, result) = try roster("""
            services:
              huge: {command: [/bin/true], cpu_shares: 51211111111111111111111111}
              tiny: {command: [/bin/true], cpu_shares: 2}
              inf: {command: [/bin/true], cpu_shares: .inf}
            """)
        #expect(try service(loaded, "huge").limits.cpuWeight == 10_000)
        #expect(try service(loaded, "tiny").limits.cpuWeight == 1)
        #expect(try service(loaded, "inf").limits.cpuWeight == nil)
        #expect(finding(result, "services.inf.cpu_shares")?.label == "not mappable")
    }

    @Test func processKeys_userWorkingDirSignalsGraceRestartLogging() throws {
        let yaml = """
            services:
              a:
                command: [/bin/true]
                user: "nobody:nogroup"
                working_dir: /tmp
                stop_signal: INT
                stop_grace_period: 1m30s
                restart: on-failure:5
                logging:
                  driver: json-file
                  options: {max-size: 20m, max-file: "4", labels: x}
              b:
                command: [/bin/true]
                user: "1234"
                restart: unless-stopped
                logging: {driver: syslog}
              c:
                command: [/bin/true]
            """
        let (loaded, result) = try roster(yaml)
        let a = try service(loaded, "a")
        #expect(a.launch.tenant.user == .named("nobody"))
        #expect(a.launch.tenant.group == .named("nogroup"))
        #expect(a.launch.workingDirectory == "/tmp")
        #expect(a.stopSignal == Signal(name: "SIGINT"))
        #expect(a.stopGrace == .seconds(90))
        #expect(a.restart.mode == .onFailure)
        #expect(a.logs.maxSizeBytes == 20 << 20)
        #expect(a.logs.maxFiles == 4)
        let b = try service(loaded, "b")
        #expect(b.launch.tenant.user == .id(1234))
        #expect(b.restart.mode == .unlessStopped)
        #expect(finding(result, "services.b.logging")?.label == "ignored")
        // Compose's default is no restart; whisperd's is always: the import keeps Compose's.
        #expect(try service(loaded, "c").restart.mode == .no)
    }

    @Test func portsProfilesReplicas() throws {
        let yaml = """
            services:
              short:
                command: [/bin/true]
                ports: ["127.0.0.1:8101:8100/tcp", "9000:9000"]
                profiles: [bots, all]
                scale: 3
              long:
                command: [/bin/true]
                ports:
                  - target: 80
                    published: "8200"
                deploy: {replicas: 2}
              too-many:
                command: [/bin/true]
                scale: 65
              container-only:
                command: [/bin/true]
                ports: ["8300"]
                profiles: [other]
            """
        let (loaded, result) = try roster(yaml, options: .init())
        #expect(loaded.inactive.sorted() == ["container-only", "short"])
        #expect(loaded.profileMembers["bots"] == ["short"])
        #expect(finding(result, "services.short.ports")?.detail.contains("must listen on 8101") == true)
        let active = try loader.parse(result.roster, path: directory.path + "/roster.yaml").get()
        _ = active
        var withProfiles = loader
        withProfiles.profiles = ["bots", "other"]
        let all = try withProfiles.parse(result.roster, path: directory.path + "/roster.yaml").get()
        #expect(all.roster.services.filter { $0.name.rawValue.hasPrefix("short-") }.map(\.port) == [8101, 8102, 8103])
        #expect(all.roster.services.filter { $0.name.rawValue.hasPrefix("long-") }.map(\.port) == [8200, 8201])
        #expect(try service(all, "container-only").port == 8300)
        #expect(finding(result, "services.too-many.scale")?.label == "not mappable")
        #expect(try service(all, "too-many").port == nil)
    }

    @Test func profileOption_importsOnlyThoseServices_andDropsDependenciesOnTheRest() throws {
        let yaml = """
            services:
              always:
                command: [/bin/true]
                depends_on: [elena]
              elena:
                command: [/bin/true]
                profiles: [elena]
              marcus:
                command: [/bin/true]
                profiles: [marcus]
            """
        let (loaded, result) = try roster(yaml, options: .init(profiles: ["marcus"]))
        // Chosen by --profile: imported without `profiles:`, so the roster runs them without one.
        #expect(Set(loaded.roster.names.map(\.rawValue)) == ["always", "marcus"])
        #expect(finding(result, "services.marcus.profiles")?.label == "ignored")
        #expect(finding(result, "services.elena")?.label == "ignored")
        #expect(finding(result, "services.always.depends_on.elena")?.label == "not mappable")
        #expect(result.names == ["always": "always", "marcus": "marcus"])
    }

    @Test func workerImage_becomesTheBuiltInWorker_namedByDiscordBotName() throws {
        directory.write("characters/elena/character.md", "# Elena\n")
        directory.write("characters/bot-b/character.md", "# B\n")
        let yaml = """
            services:
              elena-bot:
                image: whisperengine/bot:v2.1
                environment: {DISCORD_BOT_NAME: Elena}
              Bot.B:
                image: whisperengine/bot
              other:
                image: postgres:16
              watcher:
                command: [/bin/true]
                depends_on: [elena-bot, other]
            """
        let (loaded, result) = try roster(yaml, options: .init(workerImage: "whisperengine/bot"))
        #expect(try service(loaded, "elena").launch.arguments == ["/usr/local/bin/whisperd", "worker", "elena"])
        #expect(try service(loaded, "bot-b").launch.arguments == ["/usr/local/bin/whisperd", "worker", "bot-b"])
        #expect(try service(loaded, "watcher").dependencies.map(\.name.rawValue) == ["elena"])
        #expect(finding(result, "services.other")?.label == "not mappable")
        #expect(finding(result, "services.other")?.line == 7)
        #expect(finding(result, "services.watcher.depends_on.other")?.label == "not mappable")
        #expect(result.names["elena-bot"] == "elena")
        // A tag in --worker-image must match exactly.
        let tagged = try translate(yaml, options: .init(workerImage: "whisperengine/bot:v1")).get()
        #expect(tagged.names["elena-bot"] == nil)
    }

    @Test func extends_sameFile_mergesAndRefusesCyclesAndOtherFiles() throws {
        let yaml = """
            services:
              base:
                command: [/bin/sleep, "1"]
                environment: {LEVEL: base, KEEP: kept}
                stop_signal: SIGINT
              child:
                extends: {service: base}
                environment: [LEVEL=child]
              short:
                extends: child
                command: [/bin/sleep, "2"]
            """
        let (loaded, _) = try roster(yaml)
        let child = try service(loaded, "child")
        #expect(child.launch.environment["LEVEL"] == "child")
        #expect(child.launch.environment["KEEP"] == "kept")
        #expect(child.stopSignal == Signal(name: "SIGINT"))
        #expect(try service(loaded, "short").launch.arguments == ["/bin/sleep", "2"])
        #expect(try service(loaded, "short").launch.environment["LEVEL"] == "child")
        #expect(try #require(failure("services:\n  a:\n    extends: b\n  b:\n    extends: a\n")).message.contains("cycle"))
        #expect(try #require(failure("services:\n  a:\n    extends: {service: b, file: other.yaml}\n")).message.contains("other.yaml was not read"))
        #expect(try #require(failure("services:\n  a:\n    extends: nope\n")).message.contains("no service `nope`"))
    }

    @Test func extends_otherFiles_chained_withTheirOwnDirectories() throws {
        directory.write("common/base.env", "FROM_BASE_FILE=1\n")
        let common = """
            services:
              base:
                command: [/bin/sleep, "${SLEEP:-5}"]
                env_file: base.env
                stop_signal: SIGINT
              web:
                extends: {service: base, file: ../more/deeper.yaml}
            """
        let deeper = "services:\n  root:\n    command: [/bin/true]\n    environment: {DEEP: \"yes\"}\n  base:\n    extends: root\n"
        let main = ComposeSource(path: directory.path + "/compose.yaml", text: """
            services:
              app:
                extends: {file: common/common.yaml, service: base}
                environment: {OWN: "1"}
              site:
                extends: {file: ./common/common.yaml, service: web}
            """)
        let commonPath = directory.path + "/common/common.yaml"
        let deeperPath = directory.path + "/more/deeper.yaml"
        #expect(ComposeImport.filesToRead([main], alreadyRead: [:]) == [commonPath])
        #expect(ComposeImport.filesToRead([main], alreadyRead: [commonPath: common]) == [deeperPath])
        #expect(ComposeImport.filesToRead([main], alreadyRead: [commonPath: common, deeperPath: deeper]).isEmpty)
        let result = try ComposeImport.translate(
            [main], extendedFiles: [commonPath: common, deeperPath: deeper], environment: ["SLEEP": "7"]).get()
        let loaded = try loader.parse(result.roster, path: directory.path + "/roster.yaml").get()
        let app = try service(loaded, "app")
        #expect(app.launch.arguments == ["/bin/sleep", "7"])
        #expect(app.launch.environment["FROM_BASE_FILE"] == "1")
        #expect(app.launch.environment["OWN"] == "1")
        #expect(app.stopSignal == Signal(name: "SIGINT"))
        let site = try service(loaded, "site")
        #expect(site.launch.arguments == ["/bin/true"])
        #expect(site.launch.environment["DEEP"] == "yes")
        // A key from the other file is reported there.
        #expect(result.findings.first { $0.key == "services.app.stop_signal" }.map { ($0.file, $0.line) }! == ("common.yaml", 5))
    }

    @Test func ignoredAndUnknownKeys_reportedWithTheirLines() throws {
        let yaml = """
            version: "3.9"
            x-meta: {owner: me}
            services:
              a:
                command: [/bin/true]
                container_name: a1
                networks: [n]
                volumes: [data:/data]
                x-private: 1
                runtime: nvidia
                image: alpine
            networks: {n: {}}
            """
        let (_, result) = try roster(yaml)
        #expect(finding(result, "version")?.label == "ignored")
        #expect(finding(result, "x-meta")?.line == 2)
        #expect(finding(result, "services.a.container_name").map { ($0.label, $0.line) }! == ("ignored", 6))
        #expect(finding(result, "services.a.networks")?.label == "ignored")
        #expect(finding(result, "services.a.volumes")?.label == "ignored")
        #expect(finding(result, "services.a.x-private")?.label == "ignored")
        #expect(finding(result, "services.a.runtime").map { ($0.label, $0.line) }! == ("not mappable", 10))
        #expect(finding(result, "services.a.image")?.label == "ignored")
        #expect(finding(result, "services.a.command")?.description == "compose.yaml:5: services.a.command: mapped: command:, run on this host (`/bin/true` must exist here); an image's own entrypoint is not prepended")
    }

    @Test func severalFiles_laterOverridesEarlier() throws {
        let base = ComposeSource(
            path: directory.path + "/compose.yaml",
            text: "services:\n  a:\n    command: [/bin/true]\n    environment: {A: base, B: base}\n    stop_signal: SIGINT\n    ports: [\"8001:80\"]\n")
        // Compose merges `environment` by name across forms and appends `ports`; `command` is replaced.
        let override = ComposeSource(
            path: directory.path + "/override.yaml",
            text: "services:\n  a:\n    environment: [B=override, C=new]\n    stop_signal: SIGQUIT\n    ports: [\"8002:80\"]\n  b:\n    command: [/bin/true]\n")
        let result = try ComposeImport.translate([base, override], environment: [:]).get()
        let loaded = try loader.parse(result.roster, path: directory.path + "/roster.yaml").get()
        let a = try service(loaded, "a")
        #expect(a.launch.environment["A"] == "base")
        #expect(a.launch.environment["B"] == "override")
        #expect(a.launch.environment["C"] == "new")
        #expect(a.port == 8001)
        #expect(result.findings.first { $0.key == "services.a.ports" && $0.label == "ignored" }?.file == "override.yaml")
        #expect(a.stopSignal == Signal(name: "SIGQUIT"))
        #expect(try service(loaded, "b").launch.arguments == ["/bin/true"])
        #expect(result.findings.first { $0.key == "services.a.stop_signal" }?.file == "override.yaml")
    }

    @Test func notCompose_clearErrors() throws {
        #expect(try #require(failure("- a\n- b\n")).message.contains("not a Compose file"))
        #expect(try #require(failure("characters: {}\n")).message.contains("no `services:`"))
        #expect(try #require(failure("services: [\n")).message.contains("not valid YAML"))
        #expect(try #require(failure("")).message.contains("empty"))
        #expect(try #require(failure("services:\n  a: 3\n")).message.contains("expected a mapping"))
        #expect(try #require(failure("services:\n  a:\n    command: [x]\n    command: [y]\n")).message.contains("duplicate"))
        #expect(try #require(failure("services:\n  A.b:\n    command: [x]\n  a-b:\n    command: [y]\n")).message.contains("both be `a-b`"))
    }

    @Test func rosterValuesThatLookLikeYAMLSyntax_roundTrip() throws {
        let awkward = ["yes", "no", "-D", "a: b", "#hash", "[x]", "{y}", "*star", "&amp", "!tag", "'q'", "\"dq\"", "multi\nline", "tab\there", "", " lead", "100", "~", "null", "%p", "@at", "ünï"]
        let list = awkward.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n").replacingOccurrences(of: "\t", with: "\\t") + "\"" }
        let (loaded, _) = try roster("services:\n  a:\n    command: [/bin/echo, \(list.joined(separator: ", "))]\n")
        #expect(try service(loaded, "a").launch.arguments == ["/bin/echo"] + awkward)
    }
}
