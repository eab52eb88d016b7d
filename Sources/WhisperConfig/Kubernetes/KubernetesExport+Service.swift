import WhisperCore

/// The environment a service's containers get: what the roster gave it (env files, `env:`),
/// without whisperd's own layer (run-one sets it in the pod) or the exporting host's base.
struct PodEnvironment {
    var plain: [(name: String, value: String)] = []
    var secret: [(name: String, value: String)] = []
    /// Variable → what changed (`127.0.0.1:5433 → postgres:5433`).
    var rewritten: [String: String] = [:]
    /// Variables that still name loopback after the rewrite.
    var loopback: [String] = []
}

extension KubernetesExporter {
    typealias K = Kubernetes

    static let loopbackHosts = ["127.0.0.1", "localhost", "[::1]"]

    func environment(of service: ExportedService) -> PodEnvironment {
        var result = PodEnvironment()
        for (name, value) in service.spec.launch.environment.sorted(by: { $0.key < $1.key }) {
            let origin = service.origins[name] ?? "env"
            if origin == "base" || origin == "whisperd" { continue }
            let (text, changes) = Self.pointingLoopbackAtServices(value, owners: portOwners, except: service.name)
            if !changes.isEmpty { result.rewritten[name] = changes.joined(separator: ", ") }
            if Self.namesOtherLoopback(text, ownPort: service.spec.port) { result.loopback.append(name) }
            if Secrets.displayed(name, text).isSecret {
                result.secret.append((name, text))
            } else {
                result.plain.append((name, text))
            }
        }
        return result
    }

    /// `127.0.0.1:5433` where another character has port 5433 → `postgres:5433`: its Service
    /// in the cluster. The changes, for the report.
    static func pointingLoopbackAtServices(_ value: String, owners: [Int: String], except: String) -> (String, [String]) {
        var output = ""
        var changes: [String] = []
        var rest = Substring(value)
        scanning: while let next = rest.first {
            for host in loopbackHosts where rest.hasPrefix(host + ":") {
                let afterHost = rest.dropFirst(host.count + 1)
                let digits = afterHost.prefix { $0.isASCII && $0.isNumber }
                if let port = Int(digits), let owner = owners[port], owner != except {
                    output += owner + ":"
                    changes.append("\(host):\(port) → \(owner):\(port)")
                    rest = afterHost
                    continue scanning
                }
            }
            output.append(next)
            rest = rest.dropFirst()
        }
        return (output, changes)
    }

    /// Whether the text names a loopback address other than the service's own port (which is
    /// still itself in its pod).
    static func namesOtherLoopback(_ value: String, ownPort: Int?) -> Bool {
        var rest = Substring(value)
        while !rest.isEmpty {
            for host in loopbackHosts where rest.hasPrefix(host) {
                let afterHost = rest.dropFirst(host.count)
                let digits = afterHost.first == ":" ? afterHost.dropFirst().prefix { $0.isASCII && $0.isNumber } : ""
                if ownPort == nil || Int(digits) != ownPort { return true }
            }
            rest = rest.dropFirst()
        }
        return false
    }

    func secretName(_ service: ExportedService) -> String {
        options.secretsFrom.map { "\($0)-\(service.name)" } ?? "\(service.name)-env"
    }

    func envVars(_ service: ExportedService, _ environment: PodEnvironment) -> [K.EnvVar] {
        var vars = environment.plain.map { K.EnvVar(name: $0.name, value: $0.value) }
        if !service.isJob, service.spec.port != nil, !environment.plain.contains(where: { $0.name == "API_HOST" }),
            !environment.secret.contains(where: { $0.name == "API_HOST" })
        {
            vars.append(K.EnvVar(name: "API_HOST", value: "0.0.0.0"))
        }
        if service.replicas != nil {
            vars.append(
                K.EnvVar(name: "REPLICA_INDEX", valueFrom: .init(fieldRef: .init(fieldPath: "metadata.labels['apps.kubernetes.io/pod-index']"))))
        }
        vars += environment.secret.map {
            K.EnvVar(name: $0.name, valueFrom: .init(secretKeyRef: .init(name: secretName(service), key: $0.name)))
        }
        return vars.sorted { $0.name < $1.name }
    }

    // MARK: - Quantities

    static func memoryQuantity(_ bytes: UInt64) -> String {
        for (shift, suffix) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] where bytes % (UInt64(1) << UInt64(shift)) == 0 {
            return "\(bytes >> UInt64(shift))\(suffix)"
        }
        return String(bytes)
    }

    static func cpuQuantity(_ cpus: Double) -> String {
        let millicores = max(1, Int((cpus * 1000).rounded()))
        return millicores % 1000 == 0 ? String(millicores / 1000) : "\(millicores)m"
    }

    func resources(_ spec: ServiceSpec) -> K.ResourceRequirements? {
        var limits: [(key: String, value: String)] = []
        var requests: [(key: String, value: String)] = []
        if let cpus = spec.limits.cpus { limits.append((key: "cpu", value: Self.cpuQuantity(cpus))) }
        if let memory = spec.limits.memoryBytes { limits.append((key: "memory", value: Self.memoryQuantity(memory))) }
        if let request = requestedMemory(spec) { requests.append((key: "memory", value: Self.memoryQuantity(request))) }
        guard !limits.isEmpty || !requests.isEmpty else { return nil }
        return K.ResourceRequirements(
            limits: limits.isEmpty ? nil : K.OrderedStrings(limits), requests: requests.isEmpty ? nil : K.OrderedStrings(requests))
    }

    /// memory_low, else memory_high; never above the limit (the API refuses that).
    func requestedMemory(_ spec: ServiceSpec) -> UInt64? {
        guard let wanted = spec.limits.memoryLowBytes ?? spec.limits.memoryHighBytes else { return nil }
        return spec.limits.memoryBytes.map { min($0, wanted) } ?? wanted
    }

    // MARK: - The pod's roster

    /// The roster `whisperd run-one` reads in the pod: the service (and the jobs it waits
    /// for) with what whisperd still does there; limits, user, env and order are the pod's.
    func podRoster(_ service: ExportedService, jobs: [ExportedService]) -> String {
        var roster = "# Written by `whisperd export kubernetes` for the pod of \(service.name): read by `whisperd run-one`.\n"
        roster += "# Limits, user, environment and `after:` are the pod's (its resources, securityContext, env, init containers).\n"
        roster += "version: 1\ncharacters_dir: ../characters\n"
        let jobEntries = (service.isJob ? [service] : jobs).map { ($0.name, RosterValue.map(rosterEntry($0))) }
        if !jobEntries.isEmpty { roster += "jobs:\n" + RosterValue.render(entries: jobEntries, indent: 1) }
        if service.isJob {
            roster += "characters: {}\n"
        } else {
            roster += "characters:\n" + RosterValue.render(entries: [(service.name, .map(rosterEntry(service)))], indent: 1)
        }
        return roster
    }

    func isBuiltInWorker(_ service: ExportedService) -> Bool {
        !service.isJob && service.spec.launch.arguments == [options.selfExecutable, "worker", service.name]
    }

    func writtenCommand(_ service: ExportedService) -> [String] {
        var arguments = service.spec.launch.arguments
        if arguments.first == options.selfExecutable { arguments[0] = "whisperd" }
        return arguments
    }

    func rosterEntry(_ service: ExportedService) -> [(String, RosterValue)] {
        let spec = service.spec
        let format = { (duration: Duration) in duration.humanReadable }
        var entry: [(String, RosterValue)] = []
        if !isBuiltInWorker(service) { entry.append(("command", .list(writtenCommand(service)))) }
        // A scheduled job's pod runs it once, now: the CronJob is its clock.
        if case .job(let mode) = spec.kind { entry.append(("run", .scalar(spec.schedule == nil ? mode.rawValue : JobRunMode.everyStart.rawValue))) }
        if let port = spec.port, !service.isJob { entry.append(("port", .scalar(String(port)))) }
        if let replicas = service.replicas { entry.append(("replicas", .scalar(String(replicas)))) }
        entry += [
            ("restart", .scalar(spec.restart.mode.rawValue)), ("restart_delay", .scalar(format(spec.restart.delay))),
            ("restart_delay_max", .scalar(format(spec.restart.delayMax))), ("restart_reset_after", .scalar(format(spec.restart.resetAfter))),
            (
                "restart_budget",
                .map([("max", .scalar(String(spec.restart.budgetMax))), ("window", .scalar(format(spec.restart.budgetWindow)))])
            ),
            ("stop_signal", .scalar(spec.stopSignal.name)), ("stop_grace", .scalar(format(spec.stopGrace))),
            ("env_file", .list([])),
            ("logs", .map([("max_size", .scalar(Units.formatSize(spec.logs.maxSizeBytes))), ("max_files", .scalar(String(spec.logs.maxFiles)))])),
        ]
        if !service.isJob { entry.append(("health", .map(healthEntry(spec.health)))) }
        var sandbox: [(String, RosterValue)] = [("filesystem", .scalar(spec.launch.tenant.sandbox.filesystem.rawValue))]
        if !spec.launch.tenant.sandbox.bindPorts.isEmpty {
            sandbox.append(("bind_ports", .list(spec.launch.tenant.sandbox.bindPorts.map(String.init))))
        }
        entry.append(("sandbox", .map(sandbox)))
        return entry
    }

    func healthEntry(_ health: HealthPolicy) -> [(String, RosterValue)] {
        let format = { (duration: Duration) in duration.humanReadable }
        var entry: [(String, RosterValue)] = [
            ("ready", .scalar(health.ready.rawValue)), ("ready_timeout", .scalar(format(health.readyTimeout))),
            ("watchdog", .scalar(health.watchdog.map(format) ?? "off")), ("on_unhealthy", .scalar(health.onUnhealthy.rawValue)),
        ]
        if let pattern = health.readyLogPattern { entry.append(("ready_log_line", .scalar(pattern))) }
        if let probe = health.probe {
            var schedule: [(String, RosterValue)] = [
                ("interval", .scalar(format(probe.interval))), ("timeout", .scalar(format(probe.timeout))),
                ("retries", .scalar(String(probe.retries))), ("start_period", .scalar(format(probe.startPeriod))),
            ]
            switch probe.check {
            case .http(let path):
                entry.append(("http", .map([("path", .scalar(path))] + schedule)))
            case .exec(let arguments):
                schedule.append(("start_interval", .scalar(format(probe.startInterval))))
                entry.append(("exec", .map([("test", .list(["CMD"] + arguments))] + schedule)))
            case .tcp(let port):
                schedule.append(("start_interval", .scalar(format(probe.startInterval))))
                entry.append(("tcp", .map([("port", .scalar(String(port)))] + schedule)))
            }
        }
        return entry
    }

    // MARK: - Containers

    static let rosterInPod = KubernetesExportOptions.rosterDirectory + "/roster.yaml"

    /// `whisperd run-one NAME` with its three directories under the pod's volumes (each a
    /// directory of its own: whisperd refuses a group-writable volume root as its own).
    func runOneCommand(_ name: String, stateDirectory: String, http: Bool) -> [String] {
        [
            KubernetesExportOptions.binary, "run-one", name, "--roster", Self.rosterInPod, "--state-dir", stateDirectory,
            "--runtime-dir", "/run/whisperd/\(name)", "--log-dir", "/var/log/whisperd/\(name)", "--http",
            http ? "0.0.0.0:\(KubernetesExportOptions.statusPort)" : "off",
        ]
    }

    func mounts(_ service: ExportedService, hasCharacterFiles: Bool) -> [K.VolumeMount] {
        var mounts = [K.VolumeMount(name: "config", mountPath: KubernetesExportOptions.rosterDirectory, readOnly: true)]
        if hasCharacterFiles {
            mounts.append(K.VolumeMount(name: "character", mountPath: "\(KubernetesExportOptions.charactersDirectory)/\(service.name)", readOnly: true))
        }
        return mounts + [
            K.VolumeMount(name: "state", mountPath: "/var/lib/whisperd"), K.VolumeMount(name: "run", mountPath: "/run/whisperd"),
            K.VolumeMount(name: "logs", mountPath: "/var/log/whisperd"), K.VolumeMount(name: "tmp", mountPath: "/tmp"),
        ]
    }

    func volumes(_ service: ExportedService, hasCharacterFiles: Bool, stateOnClaim: Bool) -> [K.Volume] {
        // The log file's rotation bounds it: every file, and the one being written.
        let logBytes = service.spec.logs.maxSizeBytes * UInt64(service.spec.logs.maxFiles + 1)
        var volumes = [K.Volume(name: "config", configMap: .init(name: "\(service.name)-config"))]
        if hasCharacterFiles { volumes.append(K.Volume(name: "character", configMap: .init(name: "\(service.name)-character"))) }
        if !stateOnClaim { volumes.append(K.Volume(name: "state", emptyDir: .init())) }
        volumes += [
            K.Volume(name: "run", emptyDir: .init()),
            K.Volume(name: "logs", emptyDir: .init(sizeLimit: Self.memoryQuantity(roundedUp(logBytes, to: 1 << 20)))),
            K.Volume(name: "tmp", emptyDir: .init()),
        ]
        return volumes
    }

    func roundedUp(_ value: UInt64, to unit: UInt64) -> UInt64 { (value + unit - 1) / unit * unit }

    func container(_ service: ExportedService, name: String, command: [String], probes: Bool, mounts: [K.VolumeMount]) -> K.Container {
        let environment = environment(of: service)
        var container = K.Container(
            name: name, image: options.image, command: command, env: envVars(service, environment), resources: resources(service.spec),
            securityContext: K.SecurityContext(), volumeMounts: mounts)
        if container.env?.isEmpty == true { container.env = nil }
        if probes {
            var ports = [K.ContainerPort(name: "whisperd", containerPort: KubernetesExportOptions.statusPort)]
            if let port = service.spec.port, !service.isJob { ports.insert(K.ContainerPort(name: "api", containerPort: port), at: 0) }
            container.ports = ports
            container.readinessProbe = K.Probe(httpGet: .init(path: "/health", port: "whisperd"), periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 2)
            container.livenessProbe = K.Probe(
                httpGet: .init(path: "/v1/characters", port: "whisperd"), periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 3)
        }
        return container
    }

    /// What a service waits for, in the order to wait: the characters (whose own `after:`
    /// their pods keep) and the jobs, each after what it waits for in turn.
    func awaited(_ service: ExportedService) -> [ExportedService] {
        var order: [ExportedService] = []
        func visit(_ waiting: ExportedService) {
            for dependency in dependencies(of: waiting) where dependency.required {
                guard let target = self.service(named: dependency.name.rawValue), !order.contains(where: { $0.name == target.name }) else { continue }
                if target.isJob { visit(target) }
                order.append(target)
            }
        }
        visit(service)
        return order
    }

    /// What a service waits for, as containers that run before it: `whisperd wait` for a
    /// character, the job itself (`run-one JOB`) for a job.
    func initContainers(_ service: ExportedService, mounts: [K.VolumeMount]) -> [K.Container] {
        awaited(service).map { target in
            if target.isJob {
                let command = runOneCommand(target.name, stateDirectory: "/run/whisperd/\(target.name)-state", http: false)
                return container(target, name: "job-\(target.name)", command: command, probes: false, mounts: mounts)
            }
            // The condition of the first `after:` naming it (a job waited for in turn may name it too).
            let condition = ([service] + awaited(service)).lazy.compactMap { waiting in
                dependencies(of: waiting).first { $0.name.rawValue == target.name }?.condition
            }.first
            let check =
                condition == .started
                ? ["--tcp", "\(target.name):\(KubernetesExportOptions.statusPort)"]
                : ["--http", "http://\(target.name):\(KubernetesExportOptions.statusPort)/health"]
            var wait = K.Container(
                name: "wait-\(target.name)", image: options.image,
                command: [KubernetesExportOptions.binary, "wait"] + check + ["--timeout", "10m"], securityContext: K.SecurityContext())
            wait.resources = K.ResourceRequirements(
                limits: K.OrderedStrings([(key: "cpu", value: "100m"), (key: "memory", value: "32Mi")]), requests: nil)
            return wait
        }
    }

    func podSecurity(_ service: ExportedService) -> K.PodSecurityContext {
        let user: Int
        if case .id(let id) = service.spec.launch.tenant.user, id != 0 { user = Int(id) } else { user = options.imageUser }
        var group = user == options.imageUser ? options.imageUser : user
        if case .id(let id) = service.spec.launch.tenant.group, id != 0 { group = Int(id) }
        return K.PodSecurityContext(runAsUser: user, runAsGroup: group, fsGroup: group)
    }

    func gracePeriod(_ spec: ServiceSpec) -> Int {
        let seconds = spec.stopGrace.components.seconds + (spec.stopGrace.components.attoseconds > 0 ? 1 : 0)
        return Int(seconds) + 5
    }

    // MARK: - Objects

    mutating func translate(_ service: ExportedService) throws -> [K.Object] {
        let component = service.isJob ? "job" : "character"
        let environment = environment(of: service)
        let waitedJobs = awaited(service).filter(\.isJob)
        var characterData: [(key: String, value: String)] = []
        var fileNotes: [String] = []
        for file in (service.isJob ? [] : files[service.name] ?? []).sorted(by: { $0.name < $1.name }) {
            let validKey = !file.name.isEmpty && file.name.utf8.count <= 253 && file.name != "." && file.name != ".."
                && file.name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "-._".unicodeScalars.contains($0)) }
            guard validKey, let text = file.text else {
                fileNotes.append("\(file.name): left out (\(validKey ? "not UTF-8 text" : "not a ConfigMap key: a-z A-Z 0-9 - . _"))")
                continue
            }
            characterData.append((key: file.name, value: text))
        }
        let characterSize = characterData.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        if characterSize > 1_000_000 {
            throw KubernetesExportError(problems: ["\(service.path): its files come to \(characterSize) bytes; a ConfigMap holds at most 1 MiB"])
        }
        let hasCharacterFiles = !characterData.isEmpty
        let mounts = mounts(service, hasCharacterFiles: hasCharacterFiles)
        var objects: [K.Object] = [
            .configMap(
                K.ConfigMap(
                    metadata: meta("\(service.name)-config", component: component, of: service.name),
                    data: K.OrderedStrings([(key: "roster.yaml", value: podRoster(service, jobs: waitedJobs))])))
        ]
        if hasCharacterFiles {
            objects.append(
                .configMap(K.ConfigMap(metadata: meta("\(service.name)-character", component: component, of: service.name), data: K.OrderedStrings(characterData))))
        }
        if !environment.secret.isEmpty, options.secretsFrom == nil {
            objects.append(
                .secret(
                    K.Secret(
                        metadata: meta(secretName(service), component: component, of: service.name),
                        stringData: K.OrderedStrings(environment.secret.map { (key: $0.name, value: $0.value) }))))
        }
        let stateOnClaim = service.isStateful && !service.usesPostgreSQL
        let pod = K.PodSpec(
            restartPolicy: service.isJob ? (service.spec.restart.mode == .no ? "Never" : "OnFailure") : nil,
            terminationGracePeriodSeconds: gracePeriod(service.spec), securityContext: podSecurity(service),
            initContainers: nilIfEmpty(initContainers(service, mounts: mounts)),
            containers: [
                container(
                    service, name: service.name, command: runOneCommand(service.name, stateDirectory: "/var/lib/whisperd/\(service.name)", http: !service.isJob),
                    probes: !service.isJob, mounts: mounts)
            ],
            volumes: volumes(service, hasCharacterFiles: hasCharacterFiles, stateOnClaim: stateOnClaim))
        let template = K.PodTemplate(metadata: .init(labels: labels(service.name, component: component)), spec: pod)
        var summary: [String] = []
        if let schedule = service.spec.schedule {
            let jobSpec = K.Job.Spec(backoffLimit: service.spec.restart.mode == .no ? 0 : 6, template: template)
            if let cron = Self.cronSchedule(schedule) {
                objects.append(
                    .cronJob(K.CronJob(metadata: meta(service.name, component: component, of: service.name), spec: .init(schedule: cron, timeZone: schedule.timeZone, concurrencyPolicy: "Forbid", startingDeadlineSeconds: schedule.catchUp ? nil : 300, jobTemplate: .init(spec: jobSpec)))))
                summary.append("CronJob \(service.name) (\(cron)\(schedule.timeZone.map { " \($0)" } ?? ""))")
            } else {
                summary.append("no CronJob: \(schedule) has no cron equivalent (see every)")
            }
        } else if service.isJob {
            let jobName: String
            if case .job(.oncePerRevision) = service.spec.kind { jobName = "\(service.name)-\(service.spec.revision)" } else { jobName = service.name }
            objects.append(
                .job(K.Job(metadata: meta(jobName, component: component, of: service.name), spec: .init(backoffLimit: service.spec.restart.mode == .no ? 0 : 6, template: template))))
            summary.append("Job \(jobName)")
        } else {
            var ports = [K.Service.ServicePort(name: "whisperd", port: KubernetesExportOptions.statusPort, targetPort: "whisperd")]
            if let port = service.spec.port { ports.insert(K.Service.ServicePort(name: "api", port: port, targetPort: "api"), at: 0) }
            objects.append(
                .service(K.Service(metadata: meta(service.name, component: component, of: service.name), spec: .init(clusterIP: service.isStateful ? "None" : nil, selector: selector(service.name), ports: ports))))
            let replicas = service.replicas ?? 1
            if service.isStateful {
                let claims = stateOnClaim
                    ? [K.PersistentVolumeClaim(metadata: .init(name: "state"), spec: .init(accessModes: ["ReadWriteOnce"], resources: .init(requests: K.OrderedStrings([(key: "storage", value: options.storageSize)]))))]
                    : nil
                objects.append(
                    .statefulSet(K.StatefulSet(metadata: meta(service.name, component: component, of: service.name), spec: .init(serviceName: service.name, replicas: replicas, podManagementPolicy: "Parallel", selector: .init(matchLabels: selector(service.name)), template: template, volumeClaimTemplates: claims))))
                summary.append(
                    "StatefulSet \(service.name) (\(counted(replicas, "replica"))"
                        + (stateOnClaim
                            ? "; its state directory (a built-in worker's SQLite store) on a \(options.storageSize) volume claim `state` per pod"
                            : "; PostgreSQL store, state on an emptyDir") + ")")
                summary.append("Service \(service.name) (headless: DNS lists only ready pods)")
            } else {
                objects.append(
                    .deployment(K.Deployment(metadata: meta(service.name, component: component, of: service.name), spec: .init(replicas: 1, selector: .init(matchLabels: selector(service.name)), strategy: .init(type: "Recreate"), template: template))))
                summary.append("Deployment \(service.name) (PostgreSQL store; strategy Recreate: never two at once on one bot token)")
                summary.append("Service \(service.name)")
            }
        }
        summary.append("ConfigMap \(service.name)-config (its roster)")
        if hasCharacterFiles { summary.append("ConfigMap \(service.name)-character (\(counted(characterData.count, "file")))") }
        if !environment.secret.isEmpty {
            summary.append(
                options.secretsFrom == nil
                    ? "Secret \(secretName(service)) (\(counted(environment.secret.count, "variable")))"
                    : "Secret \(secretName(service)), not written: create it with keys \(environment.secret.map(\.name).joined(separator: ", "))")
        }
        var envText = "environment: "
        envText += environment.plain.isEmpty ? "none in the pod's env" : "\(environment.plain.map(\.name).joined(separator: ", ")) in the pod's env"
        if !environment.secret.isEmpty { envText += "; \(environment.secret.map(\.name).joined(separator: ", ")) from the Secret" }
        summary.append(envText)
        note(service.line, service.path, .mapped(summary.joined(separator: "; ")))
        for text in fileNotes { note(service.line, service.path + ".files", .notMappable(text)) }
        if !isBuiltInWorker(service), writtenCommand(service).contains(where: { argument in Self.loopbackHosts.contains { argument.contains($0) } }) {
            note(
                writtenLine("command", of: service), "\(service.path).command",
                .warning("names a loopback address: in a pod, a program that listens there is unreachable from other pods, and one that connects there reaches only its own pod"))
        }
        for name in environment.loopback {
            note(
                writtenLine("env.\(name)", of: service), "\(service.path).env.\(name)",
                .warning("names a loopback address: in a pod that is the pod itself; point it at a Service (another character's name)"))
        }
        reportKeys(service, environment: environment)
        return objects
    }

    /// The line of a key the service (or `defaults:`) writes; the service's own line when neither does.
    func writtenLine(_ path: String, of service: ExportedService) -> Int? {
        keys.effective(for: service.name).first { $0.key.path == path }?.key.line ?? service.line
    }

    /// A CronJob's schedule: cron as written; `every:` only when it divides an hour or a day
    /// evenly (then at multiples past the hour or midnight, cron's phase), else nil.
    static func cronSchedule(_ schedule: JobSchedule) -> String? {
        switch schedule.rule {
        case .cron(let expression):
            return expression.text
        case .every(let interval):
            let seconds = interval.components.seconds
            guard interval.components.attoseconds == 0, seconds % 60 == 0 else { return nil }
            let minutes = seconds / 60
            if minutes < 60 { return 60 % minutes == 0 ? (minutes == 1 ? "* * * * *" : "*/\(minutes) * * * *") : nil }
            guard minutes % 60 == 0 else { return nil }
            let hours = minutes / 60
            if hours < 24 { return 24 % hours == 0 ? (hours == 1 ? "0 * * * *" : "0 */\(hours) * * *") : nil }
            return hours == 24 ? "0 0 * * *" : hours == 168 ? "0 0 * * 0" : nil
        }
    }

    func nilIfEmpty<T>(_ items: [T]) -> [T]? { items.isEmpty ? nil : items }
}
