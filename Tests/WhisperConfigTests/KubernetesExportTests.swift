import Foundation
import Testing
import WhisperConfig
import WhisperCore
import Yams

/// `whisperd export kubernetes`'s translator: a resolved roster in, typed objects, YAML and a
/// report of every key out. The shipped samples (etc/roster.yaml, etc/stack.yaml) are exported
/// and checked object by object; the pods' own rosters are loaded back as `run-one` loads them.
@Suite struct KubernetesExportTests {
    static let root: String = {
        var directory = (#filePath as NSString).deletingLastPathComponent
        while !FileManager.default.fileExists(atPath: directory + "/Package.swift"), directory.count > 1 {
            directory = (directory as NSString).deletingLastPathComponent
        }
        return directory
    }()

    static let whisperd = "/usr/local/bin/whisperd"
    let loader = RosterLoader(selfExecutable: KubernetesExportTests.whisperd, hostEnvironment: ["PATH": "/usr/bin:/bin", "HOME": "/root"])
    let directory = TempDirectory()

    func load(_ path: String, profiles: Set<String> = []) throws -> LoadedRoster {
        var loader = loader
        loader.profiles = profiles
        switch loader.load(path: path) {
        case .success(let loaded): return loaded
        case .failure(let error):
            Issue.record("\(path) does not load: \(error)")
            throw error
        }
    }

    /// The character files the command would read, from the roster's characters directory.
    func files(_ loaded: LoadedRoster) -> [String: [CharacterFile]] {
        var files: [String: [CharacterFile]] = [:]
        for spec in loaded.roster.services where !spec.isJob {
            let name = spec.launch.environment["WHISPERD_CHARACTER"] ?? spec.name.rawValue
            let folder = loaded.charactersDirectory + "/" + name
            let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
            files[name] = names.sorted().map { CharacterFile(name: $0, text: try? String(contentsOfFile: folder + "/" + $0, encoding: .utf8)) }
        }
        return files
    }

    func export(_ loaded: LoadedRoster, _ options: KubernetesExportOptions? = nil) throws -> KubernetesExportResult {
        let text = try String(contentsOfFile: loaded.path, encoding: .utf8)
        return try KubernetesExport.translate(
            loaded, rosterText: text, characterFiles: files(loaded), options: options ?? KubernetesExportOptions(selfExecutable: Self.whisperd)
        ).get()
    }

    func exportRoster(_ yaml: String, _ options: KubernetesExportOptions? = nil) throws -> KubernetesExportResult {
        directory.write("roster.yaml", yaml)
        return try export(try load(directory.path + "/roster.yaml"), options)
    }

    // MARK: - Finding objects

    func names(_ result: KubernetesExportResult) -> [String] { result.objects.map { "\($0.kind) \($0.metadata.name)" } }

    /// The object of this kind and name: `extract` picks the kind.
    func object<T>(_ result: KubernetesExportResult, _ name: String, _ kind: String, _ extract: (Kubernetes.Object) -> (T, String)?) throws -> T {
        for candidate in result.objects {
            if let (object, objectName) = extract(candidate), objectName == name { return object }
        }
        throw Missing(what: "\(kind) \(name) in \(names(result))")
    }

    func statefulSet(_ result: KubernetesExportResult, _ name: String) throws -> Kubernetes.StatefulSet {
        try object(result, name, "StatefulSet") { if case .statefulSet(let o) = $0 { (o, o.metadata.name) } else { nil } }
    }

    func deployment(_ result: KubernetesExportResult, _ name: String) throws -> Kubernetes.Deployment {
        try object(result, name, "Deployment") { if case .deployment(let o) = $0 { (o, o.metadata.name) } else { nil } }
    }

    func job(_ result: KubernetesExportResult, _ name: String) throws -> Kubernetes.Job {
        try object(result, name, "Job") { if case .job(let o) = $0 { (o, o.metadata.name) } else { nil } }
    }

    func configMap(_ result: KubernetesExportResult, _ name: String) throws -> Kubernetes.ConfigMap {
        try object(result, name, "ConfigMap") { if case .configMap(let o) = $0 { (o, o.metadata.name) } else { nil } }
    }

    func service(_ result: KubernetesExportResult, _ name: String) throws -> Kubernetes.Service {
        try object(result, name, "Service") { if case .service(let o) = $0 { (o, o.metadata.name) } else { nil } }
    }

    struct Missing: Error, CustomStringConvertible {
        var what: String
        var description: String { "missing: \(what)" }
    }

    func env(_ container: Kubernetes.Container, _ name: String) -> Kubernetes.EnvVar? { container.env?.first { $0.name == name } }

    func report(_ result: KubernetesExportResult) -> String { result.findings.map { "\($0)" }.joined(separator: "\n") }

    /// A pod's roster (and its character files) written out as the ConfigMap volume does, and
    /// loaded as `whisperd run-one NAME` loads it, with `environment` as the pod's env.
    func loadPodRoster(
        _ configMap: Kubernetes.ConfigMap, _ name: String, characterFiles: Kubernetes.ConfigMap? = nil, replicaIndex: Int? = nil,
        environment: [String: String] = ["PATH": "/usr/bin"]
    ) -> Result<LoadedRoster, RosterError> {
        // As the pod mounts them: the roster at roster/, the character's files at characters/NAME/.
        let pod = TempDirectory()
        let roster = pod.write("roster/roster.yaml", configMap.data["roster.yaml"] ?? "", mode: 0o644)
        for entry in characterFiles?.data.entries ?? [] { pod.write("characters/\(name)/\(entry.key)", entry.value, mode: 0o644) }
        var loader = RosterLoader(selfExecutable: Self.whisperd, hostEnvironment: environment)
        loader.oneService = .init(name: name, replicaIndex: replicaIndex)
        return loader.parse(configMap.data["roster.yaml"] ?? "", path: roster)
    }

    // MARK: - The sample roster

    @Test func sampleRoster_charactersAreStatefulSets_jobsRunFirst_theLLMIsReachedByItsService() throws {
        let loaded = try load(Self.root + "/etc/roster.yaml")
        let result = try export(loaded)
        #expect(
            names(result) == [
                "ConfigMap migrate-config", "Job migrate", "ConfigMap nightly-backup-config", "CronJob nightly-backup",
                "ConfigMap local-llm-config", "Service local-llm", "StatefulSet local-llm",
                "ConfigMap elena-config", "ConfigMap elena-character", "Service elena", "StatefulSet elena",
                "ConfigMap aria-config", "ConfigMap aria-character", "Service aria", "StatefulSet aria",
                "ConfigMap ryan-config", "ConfigMap ryan-character", "Service ryan", "StatefulSet ryan",
            ])
        let elena = try statefulSet(result, "elena")
        #expect(elena.spec.replicas == 1 && elena.spec.serviceName == "elena")
        #expect(elena.spec.volumeClaimTemplates?.first?.metadata.name == "state")
        #expect(elena.spec.volumeClaimTemplates?.first?.spec.resources.requests["storage"] == "1Gi")
        let pod = elena.spec.template.spec
        #expect(pod.automountServiceAccountToken == false && pod.enableServiceLinks == false)
        #expect(pod.securityContext.runAsNonRoot && pod.securityContext.runAsUser == 10001 && pod.securityContext.fsGroup == 10001)
        #expect(pod.securityContext.seccompProfile.type == "RuntimeDefault")
        #expect(pod.terminationGracePeriodSeconds == 15)
        #expect(pod.initContainers?.map(\.name) == ["job-migrate", "wait-local-llm"])
        #expect(pod.initContainers?.last?.command == ["/usr/bin/whisperd", "wait", "--http", "http://local-llm:9464/health", "--timeout", "10m"])
        #expect(pod.initContainers?.first?.command.prefix(3) == ["/usr/bin/whisperd", "run-one", "migrate"])
        let main = try #require(pod.containers.first)
        #expect(main.volumeMounts?.prefix(2).map(\.mountPath) == ["/etc/whisperd/roster", "/etc/whisperd/characters/elena"])
        #expect(pod.volumes.prefix(2).map { $0.configMap?.name } == ["elena-config", "elena-character"])
        #expect(
            main.command == [
                "/usr/bin/whisperd", "run-one", "elena", "--roster", "/etc/whisperd/roster/roster.yaml", "--state-dir", "/var/lib/whisperd/elena",
                "--runtime-dir", "/run/whisperd/elena", "--log-dir", "/var/log/whisperd/elena", "--http", "0.0.0.0:9464",
            ])
        #expect(main.resources?.limits?["memory"] == "1Gi" && main.resources?.limits?["cpu"] == "1")
        #expect(main.resources?.requests?["memory"] == "448Mi")
        #expect(main.securityContext.allowPrivilegeEscalation == false && main.securityContext.readOnlyRootFilesystem)
        #expect(main.securityContext.capabilities.drop == ["ALL"])
        #expect(main.readinessProbe?.httpGet.path == "/health" && main.livenessProbe?.httpGet.path == "/v1/characters")
        #expect(main.ports?.map(\.containerPort) == [8000, 9464])
        // The local model on 127.0.0.1:8080 is the Service local-llm in the cluster.
        #expect(env(main, "LLM_BASE_URL")?.value == "http://local-llm:8080/v1")
        #expect(env(main, "API_HOST")?.value == "0.0.0.0")
        #expect(env(main, "PATH") == nil && env(main, "WHISPERD_CHARACTER") == nil, "the host's base and whisperd's own layer stay out")
        #expect(report(result).contains("characters.elena.env_file: mapped: read at export: LLM_BASE_URL"))
        #expect(try service(result, "elena").spec.clusterIP == "None")
        #expect(try service(result, "elena").spec.ports.map(\.port) == [8000, 9464])
        let migrate = try job(result, "migrate")
        #expect(migrate.spec.template.spec.restartPolicy == "OnFailure")
        #expect(!result.objects.contains { $0.kind == "Secret" }, "the sample has no secret")
        // ryan's readiness is an HTTP check that whisperd runs in the pod.
        let ryanRoster = try configMap(result, "ryan-config").data["roster.yaml"] ?? ""
        #expect(ryanRoster.contains("ready: http"), "\(ryanRoster)")
    }

    @Test func podRoster_isLoadedByRunOne_withThePodsEnvironmentAndItsCharacterFiles() throws {
        let result = try export(try load(Self.root + "/etc/roster.yaml"))
        let config = try configMap(result, "elena-config")
        let character = try configMap(result, "elena-character")
        #expect(character.data["character.md"]?.contains("Elena") == true && config.data.entries.count == 1)
        let loaded = try loadPodRoster(
            config, "elena", characterFiles: character, environment: ["PATH": "/usr/bin", "LLM_BASE_URL": "http://local-llm:8080/v1"]
        ).get()
        #expect(loaded.roster.names.map(\.rawValue) == ["elena"], "run-one keeps only elena (not the job in its roster)")
        let elena = try #require(loaded.roster.services.first)
        #expect(elena.port == 8000 && elena.dependencies.isEmpty)
        #expect(elena.launch.arguments == [Self.whisperd, "worker", "elena"])
        #expect(elena.health.ready == .notify && elena.health.watchdog == .seconds(30) && elena.restart.mode == .always)
        #expect(elena.launch.environment["LLM_BASE_URL"] == "http://local-llm:8080/v1")
        #expect(loaded.environmentOrigins[elena.name]?["LLM_BASE_URL"] == "container")
        #expect(elena.limits == Limits(), "limits are the container's, not whisperd's, in the pod")
        // The init container's job, from the same roster.
        let migrate = try loadPodRoster(config, "migrate").get()
        #expect(migrate.roster.services.first?.kind == .job(.everyStart))
        #expect(migrate.roster.services.first?.launch.arguments == [Self.whisperd, "migrate"])
    }

    // MARK: - The whole stack

    @Test func stack_postgresStoreCharactersAreDeployments_andWaitForTheDatabaseAndEveryJob() throws {
        let result = try export(try load(Self.root + "/etc/stack.yaml"))
        let elena = try deployment(result, "elena")
        #expect(elena.spec.strategy.type == "Recreate")
        let pod = elena.spec.template.spec
        #expect(pod.initContainers?.map(\.name) == ["wait-postgres", "job-createdb", "job-migrate"])
        let main = try #require(pod.containers.first)
        #expect(env(main, "DATABASE_URL")?.value == "postgresql://whisper@postgres:5433/whisper")
        #expect(try service(result, "elena").spec.clusterIP == nil)
        let postgres = try statefulSet(result, "postgres")
        #expect(postgres.spec.volumeClaimTemplates?.count == 1)
        #expect(postgres.spec.template.spec.terminationGracePeriodSeconds == 35)
        #expect(postgres.spec.template.spec.containers.first?.resources?.limits?["memory"] == "1Gi")
        let elenaRoster = try configMap(result, "elena-config").data["roster.yaml"] ?? ""
        #expect(elenaRoster.contains("  createdb:") && elenaRoster.contains("  migrate:"))
        let migrateJob = try job(result, "migrate")
        #expect(migrateJob.spec.template.spec.initContainers?.map(\.name) == ["wait-postgres", "job-createdb"])
        let text = report(result)
        #expect(text.contains("stack.yaml:23: characters.postgres.user: not mappable: user `postgres` is a name of this host"))
        #expect(text.contains("characters.postgres.command: warning: names a loopback address"))
        #expect(text.contains("characters.elena.env.DATABASE_URL (defaults): mapped: container env DATABASE_URL; 127.0.0.1:5433 → postgres:5433"))
        #expect(text.contains("characters.postgres.limits.pids (defaults): not mappable: node-level"))
        // The pod's roster keeps the exec health check and the stop signal.
        let postgresRoster = try loadPodRoster(try configMap(result, "postgres-config"), "postgres").get()
        let spec = try #require(postgresRoster.roster.services.first)
        #expect(spec.stopSignal == .int && spec.stopGrace == .seconds(30) && spec.health.ready == .exec)
        #expect(spec.health.probe?.check == .exec(arguments: ["/usr/bin/pg_isready", "-h", "127.0.0.1", "-p", "5433", "-U", "whisper"]))
        #expect(spec.health.probe?.startInterval == .milliseconds(200) && spec.health.readyTimeout == .seconds(120))
    }

    // MARK: - The report

    @Test(arguments: ["etc/roster.yaml", "etc/stack.yaml"])
    func theReportNamesEveryKeyOfEveryService(roster: String) throws {
        let loaded = try load(Self.root + "/" + roster)
        let result = try export(loaded)
        let keys = RosterKeys.read(try String(contentsOfFile: loaded.path, encoding: .utf8))
        let reported = Set(result.findings.map(\.key))
        var expected = 0
        for written in keys.services {
            let path = "\(written.isJob ? "jobs" : "characters").\(written.name)"
            #expect(reported.contains(path), "no line for \(path)")
            for (key, fromDefaults) in keys.effective(for: written.name) {
                expected += 1
                let label = "\(path).\(key.path)" + (fromDefaults ? " (defaults)" : "")
                #expect(reported.contains(label), "no line for \(label)")
                #expect(result.findings.first { $0.key == label }?.line == key.line)
            }
        }
        for key in keys.top { #expect(reported.contains(key.path), "no line for \(key.path)") }
        #expect(expected > 50, "a rich roster: \(expected) keys")
        #expect(result.findings.allSatisfy { !$0.detail.isEmpty })
    }

    // MARK: - Secrets

    static let secretRoster = """
        version: 1
        characters:
          bot:
            command: [/bin/sleep, "60"]
            health: {ready: started}
            port: 8100
            env:
              DISCORD_TOKEN: tok-s3cret-1
              DATABASE_URL: postgres://app:pw-s3cret-2@127.0.0.1:5433/app
              PLAIN: visible
              SELF_URL: "http://127.0.0.1:8100/health"
              ELSEWHERE: "localhost:9999"
          db:
            command: [/bin/sleep, "60"]
            health: {ready: started}
            port: 5433
        """

    @Test func secrets_areOnlyInSecretObjects_neverInTheReport() throws {
        directory.write(".env", "LLM_API_KEY=key-s3cret-3\n", mode: 0o600)
        let result = try exportRoster(Self.secretRoster)
        for document in result.yaml.components(separatedBy: "\n---\n") where document.contains("s3cret") {
            #expect(document.contains("kind: Secret"), "a secret outside a Secret:\n\(document)")
        }
        #expect(result.yaml.contains("DISCORD_TOKEN: tok-s3cret-1"))
        #expect(result.yaml.contains("postgres://app:pw-s3cret-2@db:5433/app"), "the secret URL's host is the Service too")
        #expect(result.yaml.contains("LLM_API_KEY: key-s3cret-3"))
        #expect(!report(result).contains("s3cret"))
        let bot = try deployment(result, "bot").spec.template.spec.containers[0]
        #expect(env(bot, "DISCORD_TOKEN")?.valueFrom?.secretKeyRef.map { [$0.name, $0.key] } == ["bot-env", "DISCORD_TOKEN"])
        #expect(env(bot, "DISCORD_TOKEN")?.value == nil)
        #expect(env(bot, "PLAIN")?.value == "visible")
        #expect(report(result).contains("characters.bot.env.DATABASE_URL: mapped: env from Secret bot-env, key DATABASE_URL; 127.0.0.1:5433 → db:5433"))
        // Loopback is warned about unless it is the service's own port (itself, in its pod too).
        #expect(report(result).contains("characters.bot.env.ELSEWHERE: warning: names a loopback address"))
        #expect(!report(result).contains("characters.bot.env.SELF_URL: warning"))
    }

    @Test func secretsFrom_writesNoValueAtAll_andNamesTheSecretsToCreate() throws {
        directory.write(".env", "LLM_API_KEY=key-s3cret-3\n", mode: 0o600)
        let result = try exportRoster(Self.secretRoster, KubernetesExportOptions(secretsFrom: "prod", selfExecutable: Self.whisperd))
        #expect(!result.yaml.contains("s3cret") && !report(result).contains("s3cret"))
        #expect(!result.objects.contains { $0.kind == "Secret" })
        let bot = try deployment(result, "bot").spec.template.spec.containers[0]
        #expect(env(bot, "DISCORD_TOKEN")?.valueFrom?.secretKeyRef.map { [$0.name, $0.key] } == ["prod-bot", "DISCORD_TOKEN"])
        #expect(env(bot, "LLM_API_KEY")?.valueFrom?.secretKeyRef.map { [$0.name, $0.key] } == ["prod-bot", "LLM_API_KEY"])
        #expect(report(result).contains("Secret prod-bot, not written: create it with keys DATABASE_URL, DISCORD_TOKEN, LLM_API_KEY"))
    }

    // MARK: - Bad input

    @Test func namesKubernetesCannotUse_areAllRefusedAtOnce() throws {
        directory.write("roster.yaml", """
            version: 1
            characters:
              my_bot: {command: [/bin/true], health: {ready: started}}
              9lives: {command: [/bin/true], health: {ready: started}}
              fine: {command: [/bin/true], health: {ready: started}}
            """)
        let loaded = try load(directory.path + "/roster.yaml")
        let text = try String(contentsOfFile: loaded.path, encoding: .utf8)
        guard case .failure(let error) = KubernetesExport.translate(loaded, rosterText: text, characterFiles: [:], options: .init(selfExecutable: Self.whisperd))
        else {
            Issue.record("exported names Kubernetes refuses")
            return
        }
        #expect(error.problems.count == 2, "\(error)")
        #expect(error.description.contains("roster.yaml:3: characters.my_bot: `my_bot` cannot name Kubernetes objects"))
        #expect(error.description.contains("characters.9lives"))
        #expect(!error.description.contains("fine"))
        for options in [
            KubernetesExportOptions(namespace: "Bad_NS", selfExecutable: Self.whisperd), KubernetesExportOptions(selfExecutable: Self.whisperd, storageSize: "lots"),
            KubernetesExportOptions(image: "two words", selfExecutable: Self.whisperd), KubernetesExportOptions(secretsFrom: "-x", selfExecutable: Self.whisperd),
        ] {
            let fine = try load(directory.write("fine.yaml", "version: 1\ncharacters:\n  fine: {command: [/bin/true], health: {ready: started}}\n"))
            guard case .failure = KubernetesExport.translate(fine, rosterText: "", characterFiles: [:], options: options) else {
                Issue.record("accepted \(options)")
                continue
            }
        }
    }

    // MARK: - Replicas and jobs

    @Test func replicas_areAStatefulSetsPods_eachRunOneFindsItsInstance() throws {
        let result = try exportRoster("""
            version: 1
            characters:
              shard:
                command: [/bin/sleep, "60"]
                health: {ready: started}
                replicas: 3
                port: [8100, 8101, 8102]
                env: {DATABASE_URL: "postgres://h/db"}
            """)
        let shard = try statefulSet(result, "shard")
        #expect(shard.spec.replicas == 3 && shard.spec.podManagementPolicy == "Parallel")
        #expect(shard.spec.volumeClaimTemplates == nil, "a PostgreSQL store: nothing to keep in the pod")
        let main = shard.spec.template.spec.containers[0]
        #expect(env(main, "REPLICA_INDEX")?.valueFrom?.fieldRef?.fieldPath == "metadata.labels['apps.kubernetes.io/pod-index']")
        #expect(main.ports?.first?.containerPort == 8100)
        let config = try configMap(result, "shard-config")
        let second = try loadPodRoster(config, "shard", replicaIndex: 2).get()
        let instance = try #require(second.roster.services.first)
        #expect(second.roster.names.map(\.rawValue) == ["shard"])
        #expect(instance.launch.environment["REPLICA_INDEX"] == "2" && instance.launch.environment["REPLICA_COUNT"] == "3")
        #expect(instance.port == 8100, "every pod listens on the first port")
        guard case .failure(let error) = loadPodRoster(config, "shard") else {
            Issue.record("run-one of a replicated character without its ordinal")
            return
        }
        #expect(error.description.contains("run-one needs the pod's ordinal"))
        guard case .failure(let outOfRange) = loadPodRoster(config, "shard", replicaIndex: 3) else {
            Issue.record("instance 3 of 3")
            return
        }
        #expect(outOfRange.description.contains("instance 3 is not in 0...2"))
    }

    @Test func oncePerRevisionJob_isNamedByTheRevisionWhisperdComputes() throws {
        directory.write("roster.yaml", """
            version: 1
            jobs:
              seed: {command: [/bin/true]}
              once: {command: [/bin/false], restart: "no", run: every-start}
            characters: {}
            """)
        let loaded = try load(directory.path + "/roster.yaml")
        let result = try export(loaded)
        let revision = try #require(loaded.roster.services.first { $0.name.rawValue == "seed" }).revision
        let seed = try job(result, "seed-\(revision)")
        #expect(seed.spec.template.spec.restartPolicy == "OnFailure" && seed.spec.backoffLimit == 6)
        #expect(seed.spec.template.spec.containers[0].readinessProbe == nil)
        let once = try job(result, "once")
        #expect(once.spec.template.spec.restartPolicy == "Never" && once.spec.backoffLimit == 0)
        #expect(report(result).contains("jobs.seed: mapped: Job seed-\(revision)"))
    }

    @Test func scheduledJobs_areCronJobs_everyOnlyWhenCronCanSayIt() throws {
        let result = try exportRoster("""
            version: 1
            jobs:
              nightly: {command: [/bin/true], schedule: "30 3 * * *", timezone: Europe/Berlin, jitter: 10m}
              quarter: {command: [/bin/true], every: 15m, catch_up: true}
              sixhours: {command: [/bin/true], every: 6h}
              odd: {command: [/bin/true], every: 7m}
            characters: {}
            """)
        var cronJobs: [String: Kubernetes.CronJob] = [:]
        for case .cronJob(let object) in result.objects { cronJobs[object.metadata.name] = object }
        #expect(cronJobs["nightly"]?.spec.schedule == "30 3 * * *" && cronJobs["nightly"]?.spec.timeZone == "Europe/Berlin")
        #expect(cronJobs["nightly"]?.spec.concurrencyPolicy == "Forbid" && cronJobs["nightly"]?.spec.startingDeadlineSeconds == 300)
        #expect(cronJobs["quarter"]?.spec.schedule == "*/15 * * * *" && cronJobs["quarter"]?.spec.startingDeadlineSeconds == nil)
        #expect(cronJobs["sixhours"]?.spec.schedule == "0 */6 * * *")
        #expect(cronJobs["odd"] == nil && !result.objects.contains { $0.kind == "Job" })
        let text = report(result)
        #expect(text.contains("jobs.odd.every: not mappable: every 7m"), "\(text)")
        #expect(text.contains("jobs.nightly.jitter: not mappable"))
        #expect(text.contains("jobs.quarter.every: mapped: CronJob quarter schedule \"*/15 * * * *\""))
        // The pod runs the job once, now: its roster has no schedule.
        let pod = try loadPodRoster(try configMap(result, "nightly-config"), "nightly").get()
        #expect(pod.roster.services.first?.schedule == nil && pod.roster.services.first?.kind == .job(.everyStart))
    }

    @Test func theSameRoster_givesTheSameBytes() throws {
        let loaded = try load(Self.root + "/etc/stack.yaml")
        #expect(try export(loaded).yaml == (try export(loaded)).yaml)
    }

    // MARK: - YAML

    @Test func yaml_everyStringReadsBackAsItself() throws {
        let strings = [
            "yes", "No", "off", "~", "null", "", " ", "0755", "1e3", "1.5", ".inf", "-", "- item", "a: b", "#note", "@at", "`tick`",
            "*alias", "&anchor", "!tag", "%percent", "{x}", "[y]", "tab\there", "quote\"d", "back\\slash", "é and ü", "bell\u{7}",
            "line\nbreak", "two lines\nend\n", "trailing blank lines\n\n\n", "\nleading newline", "  indented\nnext", "trailing space \nx",
            "crlf\r\nline", "0x1F", "2001-12-14", "=", "<<", "?", "plain-word", "/usr/bin/whisperd", "http://local-llm:8080/v1",
        ]
        struct Document: Encodable {
            var values: [String]
            var map: Kubernetes.OrderedStrings
        }
        let document = Document(values: strings, map: Kubernetes.OrderedStrings(strings.enumerated().map { (key: "k\($0.offset)", value: $0.element) }))
        let yaml = try YAMLEncoder.encode(document)
        let decoded = try #require(try Yams.load(yaml: yaml) as? [String: Any], "\(yaml)")
        #expect(decoded["values"] as? [String] == strings, "\(yaml)")
        let map = try #require(decoded["map"] as? [String: String])
        for (index, text) in strings.enumerated() { #expect(map["k\(index)"] == text, "k\(index): \(text.debugDescription)\n\(yaml)") }
    }

    @Test func yaml_randomStringsOfTrickyCharacters_readBackAsThemselves() throws {
        let alphabet: [Character] = [
            "a", "Z", "y", "n", "0", "7", ".", "-", "_", "/", ":", "#", " ", " ", "\n", "\n", "\t", "\r", "'", "\"", "\\", "{", "}", "[",
            "]", ",", "&", "*", "!", "|", ">", "%", "@", "`", "?", "=", "~", "é", "\u{85}", "\u{2028}", "\u{FEFF}", "\u{1}", "\u{7F}", "😀",
        ]
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        // A byte-order mark first is lost by the reader's string decoding (not by YAML): kept inside.
        let strings = (0..<1000).map { _ in "a" + String((0..<next(12)).map { _ in alphabet[next(alphabet.count)] }) }
            + (0..<1000).map { _ in String((0..<next(12)).map { _ in alphabet[next(alphabet.count)] }) }.filter { $0.first != "\u{FEFF}" }
        let map = Kubernetes.OrderedStrings(strings.enumerated().map { (key: "k\($0.offset)", value: $0.element) })
        let yaml = try YAMLEncoder.encode(map)
        let decoded = try #require(try Yams.load(yaml: yaml) as? [String: String])
        for (index, text) in strings.enumerated() {
            #expect(decoded["k\(index)"] == text, "\(text.debugDescription) came back as \(decoded["k\(index)"].debugDescription)")
        }
    }

    @Test func yaml_keepsDeclarationOrder_andWritesEmptyBlocks() throws {
        struct Inner: Encodable {
            var zeta = 1
            var alpha = true
            var nothing: String? = nil
        }
        struct Outer: Encodable {
            var name = "x"
            var inner = Inner()
            var empty: [String] = []
            var emptyMap = Kubernetes.OrderedStrings([])
        }
        #expect(try YAMLEncoder.encode(Outer()) == "name: x\ninner:\n  zeta: 1\n  alpha: true\nempty: []\nemptyMap: {}\n")
    }
}
