import WhisperCore

/// What became of each roster key of a service: the mapping table of docs/kubernetes.md, key
/// by key. Values of environment variables are never printed.
extension KubernetesExporter {
    /// Said of every key whisperd still carries out inside the pod.
    static let inPod = "kept: whisperd runs it in the pod (its roster in ConfigMap"

    mutating func reportKeys(_ service: ExportedService, environment: PodEnvironment) {
        for (key, fromDefaults) in keys.effective(for: service.name) {
            let label = "\(service.path).\(key.path)" + (fromDefaults ? " (defaults)" : "")
            note(key.line, label, outcome(key.path, service, environment))
        }
    }

    func kept(_ service: ExportedService, _ what: String = "") -> ComposeFinding.Outcome {
        .mapped("\(Self.inPod) \(service.name)-config)" + (what.isEmpty ? "" : ": " + what))
    }

    func outcome(_ path: String, _ service: ExportedService, _ environment: PodEnvironment) -> ComposeFinding.Outcome {
        let spec = service.spec
        let parts = path.split(separator: ".", maxSplits: 1).map(String.init)
        let rest = parts.count > 1 ? parts[1] : ""
        switch parts[0] {
        case "command":
            if isBuiltInWorker(service) { return .mapped("the built-in worker of the image (whisperd worker \(service.name))") }
            let program = writtenCommand(service).first ?? ""
            if writtenCommand(service).prefix(2) == ["whisperd", "backup"] {
                return .warning(
                    "whisperd backup reads the stores of one host's fleet; in Kubernetes each is in its pod's volume claim (or PostgreSQL): back those up instead (volume snapshots, pg_dump)")
            }
            return kept(service, program == "whisperd" ? "whisperd of the image" : "`\(program)` must exist in the image (\(options.image))")
        case "port":
            guard let port = spec.port else { return .ignored("not a character's") }
            var text = "containerPort `api` \(port), Service \(service.name) port \(port); API_PORT=\(port), API_HOST=0.0.0.0 (listen on the pod's address)"
            if service.replicas != nil { text += "; every replica listens on \(port) in its own pod (the roster's port + i is not needed)" }
            return .mapped(text)
        case "replicas":
            return .mapped(
                "StatefulSet replicas \(service.replicas ?? 0) (podManagementPolicy Parallel); REPLICA_INDEX = the pod's ordinal (label apps.kubernetes.io/pod-index, or the -N of its name), REPLICA_COUNT = \(service.replicas ?? 0): Discord shards spread across pods")
        case "after":
            return afterOutcome(rest, service)
        case "profiles":
            return .mapped("exported (one of its profiles is active, or none is asked for); profiles do not exist in Kubernetes: apply what you want")
        case "working_dir":
            return .notMappable("a directory of this host; in the pod the service runs in \(KubernetesExportOptions.rosterDirectory) (its roster's directory)")
        case "schedule", "every", "timezone", "jitter", "catch_up":
            return scheduleOutcome(parts[0], service)
        case "run":
            if case .job(.oncePerRevision) = spec.kind {
                return .mapped("Job \(service.name)-\(spec.revision): named by its revision, so a changed job is a new Job and an unchanged one is not run again")
            }
            return .mapped("Job \(service.name): runs when applied (delete it to run it again); and before each pod that waits for it starts (an init container)")
        case "restart":
            return restartOutcome(service)
        case "restart_delay", "restart_delay_max", "restart_reset_after", "restart_budget":
            return kept(service, "restarts inside the pod keep this backoff; the kubelet restarts only whisperd itself")
        case "stop_signal":
            return kept(service, "on the kubelet's SIGTERM whisperd sends \(spec.stopSignal.name) to the service")
        case "stop_grace":
            return kept(service, "terminationGracePeriodSeconds \(gracePeriod(spec)) (the grace and 5s for whisperd)")
        case "limits":
            return limitOutcome(rest, spec)
        case "memory_low":
            return .mapped("resources.requests.memory \(Self.memoryQuantity(requestedMemory(spec) ?? 0)) (the scheduler reserves it)")
        case "cpu_weight":
            return .notMappable("a share under contention; Kubernetes derives shares from requests.cpu, which also reserves CPUs for scheduling: set requests.cpu yourself")
        case "cpuset":
            return .notMappable("node-level: pinning CPUs is the kubelet's CPU manager (static policy, Guaranteed QoS), not a pod field")
        case "oom_score_adj":
            return .notMappable("node-level: the kubelet sets oom_score_adj from the pod's QoS class")
        case "ulimits":
            return .notMappable("Kubernetes has no per-container rlimits: the container runtime's defaults apply")
        case "health":
            return healthOutcome(rest, service)
        case "env":
            return envOutcome(rest, service, environment)
        case "env_file":
            let names = (environment.plain + environment.secret).filter { (service.origins[$0.name] ?? "").contains(":") }.map(\.name)
            return .mapped(
                "read at export: \(names.isEmpty ? "no variable" : names.joined(separator: ", ")) into the pod's env (secret ones from the Secret \(secretName(service))); the files are not in the pod")
        case "logs":
            return kept(service, "the log file in the emptyDir `logs` (sizeLimit from max_size × (max_files + 1)); every line also on whisperd's stdout: kubectl logs")
        case "user":
            return userOutcome(spec.launch.tenant.user)
        case "group":
            if case .id(let id) = spec.launch.tenant.group, id != 0 { return .mapped("securityContext.runAsGroup and fsGroup \(id)") }
            return .notMappable("a group name is not known in the image: the pod runs as group \(podSecurity(service).runAsGroup); give a gid")
        case "supplementary_groups":
            return .notMappable("not carried: the pod has its own groups (securityContext.supplementalGroups, if needed)")
        case "sandbox":
            switch rest {
            case "filesystem", "bind_ports":
                return kept(service, "Landlock in the container, under its securityContext (non-root, no capabilities, RuntimeDefault seccomp, read-only root)")
            default:
                return .notMappable("paths of this host; in the pod the filesystem is the image's, read-only but for its volumes")
            }
        default:
            return .notMappable("unknown key")
        }
    }

    func afterOutcome(_ name: String, _ service: ExportedService) -> ComposeFinding.Outcome {
        guard let written = ServiceName(name), let dependency = service.spec.dependencies.first(where: { $0.name == written })
            ?? dependencies(of: service).first(where: { $0.name == written })
        else {
            return .ignored("`\(name)` is not exported (not in the active profiles); required: false")
        }
        guard dependency.required else {
            return .mapped("not waited for (required: false): Kubernetes starts pods in no order")
        }
        guard let target = self.service(named: name) else { return .ignored("`\(name)` is not exported") }
        var text: String
        if target.isJob {
            text = "init container job-\(name) runs it (`whisperd run-one \(name)`) before each start of this pod: Kubernetes cannot make a pod wait for a Job without API access; the job must be idempotent"
        } else if dependency.condition == .started {
            text = "init container wait-\(name): whisperd wait --tcp \(name):\(KubernetesExportOptions.statusPort) (its whisperd is up, which starts it)"
        } else {
            text = "init container wait-\(name): whisperd wait --http http://\(name):\(KubernetesExportOptions.statusPort)/health (200 once it is ready)"
        }
        if dependency.restartsWithIt {
            text += "; restart: true is not mappable (Kubernetes does not restart a pod when another restarts)"
            return .notMappable(text)
        }
        return .mapped(text)
    }

    func scheduleOutcome(_ key: String, _ service: ExportedService) -> ComposeFinding.Outcome {
        guard let schedule = service.spec.schedule else { return .ignored("no schedule") }
        guard let cron = Self.cronSchedule(schedule) else {
            return .notMappable(
                "\(schedule): a CronJob's schedule is cron, and this interval does not divide an hour or a day evenly: no CronJob is written; give `schedule:` (cron) instead")
        }
        switch key {
        case "schedule":
            return .mapped(
                "CronJob \(service.name) schedule \"\(cron)\" (concurrencyPolicy Forbid: never two runs at once)"
                    + (schedule.timeZone == nil ? "; without timezone: the controller's zone (usually UTC), where whisperd read this host's" : ""))
        case "every":
            return .mapped("CronJob \(service.name) schedule \"\(cron)\": runs at multiples of \(Duration.seconds(Self.seconds(schedule)).humanReadable) past the hour or midnight, not that long after the last run")
        case "timezone":
            return .mapped("CronJob spec.timeZone \(schedule.timeZone ?? "")")
        case "jitter":
            return .notMappable("the CronJob controller starts every run on time: no jitter")
        default:
            return schedule.catchUp
                ? .mapped("no startingDeadlineSeconds: the controller starts a run it missed (the last one) when it can")
                : .mapped("startingDeadlineSeconds 300: a run that cannot start within 5 minutes of its time is skipped")
        }
    }

    static func seconds(_ schedule: JobSchedule) -> Int64 {
        if case .every(let interval) = schedule.rule { return interval.components.seconds }
        return 0
    }

    func restartOutcome(_ service: ExportedService) -> ComposeFinding.Outcome {
        let mode = service.spec.restart.mode
        if service.isJob {
            return mode == .no
                ? .mapped("Job restartPolicy Never, backoffLimit 0")
                : .mapped("whisperd in the pod retries until it succeeds (as on one host); Job restartPolicy OnFailure, backoffLimit 6 for whisperd itself")
        }
        switch mode {
        case .always, .unlessStopped:
            return kept(
                service,
                "whisperd restarts it in the pod with its backoff; the pod's restartPolicy Always restarts whisperd"
                    + (mode == .unlessStopped ? "; a stop by the operator is `kubectl scale --replicas 0`" : ""))
        case .onFailure, .no:
            return .notMappable(
                "\(mode.rawValue): whisperd in the pod does not restart it then, and run-one exits; but a \(service.isStateful ? "StatefulSet" : "Deployment")'s pods are always restarted (restartPolicy Always is the only one allowed), after the kubelet's backoff")
        }
    }

    func limitOutcome(_ key: String, _ spec: ServiceSpec) -> ComposeFinding.Outcome {
        switch key {
        case "memory":
            return .mapped("resources.limits.memory \(Self.memoryQuantity(spec.limits.memoryBytes ?? 0)) (the container's cgroup; OOM kills whisperd and the service together)")
        case "memory_high":
            if spec.limits.memoryLowBytes != nil {
                return .notMappable("Kubernetes has one memory request, memory_low's; memory.high throttling has no pod field")
            }
            return .mapped("resources.requests.memory \(Self.memoryQuantity(requestedMemory(spec) ?? 0)) (what the scheduler reserves; the throttling of memory.high is not kept)")
        case "cpus":
            return .mapped("resources.limits.cpu \(Self.cpuQuantity(spec.limits.cpus ?? 0)) (requests.cpu defaults to it)")
        case "pids":
            return .notMappable("node-level: the kubelet's podPidsLimit, not a pod field")
        default:
            return .notMappable("unknown key")
        }
    }

    func healthOutcome(_ key: String, _ service: ExportedService) -> ComposeFinding.Outcome {
        guard !service.isJob else { return .ignored("a job has no readiness") }
        let probes = "the kubelet's readinessProbe reads whisperd's GET /health (200 once ready), its livenessProbe GET /v1/characters (whisperd answering)"
        switch key {
        case "ready":
            return kept(service, "\(service.spec.health.ready.rawValue) readiness, as on one host; \(probes)")
        case "watchdog":
            return kept(service, "a silent service is restarted by whisperd; \(probes)")
        case _ where key.hasPrefix("exec"):
            return kept(service, "the check runs in the container: its program must exist in the image")
        default:
            return kept(service, probes)
        }
    }

    func envOutcome(_ name: String, _ service: ExportedService, _ environment: PodEnvironment) -> ComposeFinding.Outcome {
        guard !name.isEmpty else { return .ignored("empty") }
        var text: String
        if environment.secret.contains(where: { $0.name == name }) {
            text = options.secretsFrom == nil
                ? "env from Secret \(secretName(service)), key \(name)" : "env from Secret \(secretName(service)) (yours), key \(name)"
        } else if environment.plain.contains(where: { $0.name == name }) {
            text = "container env \(name)"
        } else {
            return .ignored("overridden by whisperd's own variable in the pod")
        }
        if let change = environment.rewritten[name] { text += "; \(change) (that character's Service)" }
        return .mapped(text)
    }

    func userOutcome(_ user: UserSpec?) -> ComposeFinding.Outcome {
        switch user {
        case .id(let id) where id != 0:
            return .mapped("securityContext.runAsUser \(id) (runAsNonRoot)")
        case .dynamic, nil:
            return .mapped(
                "securityContext: runAsUser \(options.imageUser) (the image's user), runAsNonRoot, no privilege escalation, capabilities dropped, RuntimeDefault seccomp, read-only root: the pod is the tenant (its own filesystem, network and no API token)"
            )
        case .root, .id:
            return .notMappable("root: pods run as non-root (runAsNonRoot); it runs as \(options.imageUser)")
        case .named(let name):
            return .notMappable("user `\(name)` is a name of this host, not known in the image: it runs as \(options.imageUser); give a uid")
        }
    }
}
