import Glibc
import WhisperConfig
import WhisperCore
import WhisperSystem

/// Carrying out what the core decided. Each action is one small OS operation.
extension Daemon {
    func execute(_ action: SupervisorAction) {
        switch action {
        case .spawn(let spec):
            spawn(spec)
        case .spawnSuccessor(let spec):
            enableListenerMigration()
            spawn(spec, asSuccessor: true)
        case .killProcessGroup(let name, let pid):
            guard let run = sideRuns[name]?[pid] ?? runs[name].flatMap({ $0.pid == pid ? $0 : nil }), run.pidFD >= 0 else { break }
            if kill(-pid, SIGKILL) != 0 { _ = ChildReaper.signal(pidFD: run.pidFD, SIGKILL) }
        case .signal(let name, let pid, let signal):
            // The whole process group: shell wrappers do not forward signals.
            guard let run = runs[name].flatMap({ $0.pid == pid ? $0 : nil }) ?? sideRuns[name]?[pid], run.pidFD >= 0 else { break }
            if kill(-pid, signal.rawValue) != 0 { _ = ChildReaper.signal(pidFD: run.pidFD, signal.rawValue) }
        case .killAll(let name, let pid):
            killAll(name, pid: pid)
        case .probe(let name, let check, let port, let timeout):
            startProbe(name, check, port: port, timeout: timeout)
        case .applyLimits(let name, let limits):
            cgroups.applyLive(name, limits)
        case .persistIntent(let name, let intent):
            do { try stateStore.setIntent(name.rawValue, down: intent == .down) } catch {
                log.log(.error, character: name, "could not persist intent \(intent.rawValue): \(error)")
            }
        case .recordJobCompleted(let name, let revision):
            do { try stateStore.recordJobCompleted(name.rawValue, revision: revision) } catch {
                log.log(.error, character: name, "could not record job success: \(error)")
            }
        case .forget(let name):
            notifySockets.removeValue(forKey: name).map {
                loop.remove($0.fd)
                $0.close()
            }
            tenants.forget(name)
            removeCgroup(of: name)
            status.forget(name)
            log.log(.info, character: name, "removed")
        case .transitioned(let name, let from, let to, let detail):
            let pid = core.pid(of: name).map { " pid=\($0)" } ?? ""
            log.log(.info, character: name, "\(from.rawValue) -> \(to.rawValue)\(pid): \(detail)")
            if from == .starting, to == .running, let started = core.status(of: name)?.startedAt {
                let seconds = Double(Clock.monotonicNanoseconds() - started.nanoseconds) / 1e9
                status.recordTimeToReady(name, seconds: seconds)
            }
            // Down for good (until someone starts it): its empty cgroups go away.
            // At shutdown too, one by one as characters finish, rather than all at the end.
            let isDownForGood =
                to == .exited || to == .failed
                || (to == .stopped && (core.isShuttingDown || core.status(of: name)?.desired == .down))
            if isDownForGood, runs[name] == nil, !cgroups.isDraining(name) { removeCgroup(of: name) }
            endIfTheOneServiceIsDone(name, to)
        case .alert(let name, let message):
            log.log(.error, character: name, message)
        case .startupCompleted:
            log.log(.info, "whisperd", "startup complete: \(core.summary)")
            systemd.ready(status: core.summary)
            // Parsing the roster and the start-up burst leave freed heap and code pages that
            // are not needed again behind: give them back, since whisperd then lives for
            // months at its idle size.
            // The start-up burst's uids are saved first: encoding them after the release would
            // bring back the pages just released (docs/performance.md, the PSS row).
            saveDynamicIDs()
            releaseFreedMemory()
            releaseStartupCodePages()
        case .shutdownCompleted:
            log.log(.info, "whisperd", "every service stopped")
            loop.stop()
        }
    }

    /// One check of `name`; its verdict comes back as `probeFinished`.
    private func startProbe(_ name: ServiceName, _ check: ProbeCheck, port: Int?, timeout: Duration) {
        let deadline = Clock.monotonicNanoseconds() + timeout.nanoseconds
        let finished: (Bool) -> Void = { [unowned self] succeeded in
            self.probes[name] = nil
            self.post(.probeFinished(name, succeeded: succeeded))
        }
        let probe: any RunningProbe
        switch check {
        case .http(let path):
            guard let port else { return finished(false) }
            probe = LoopbackProbe(loop: loop, host: "127.0.0.1", port: port, path: path, deadline: deadline, completion: finished)
        case .tcp(let port):
            probe = LoopbackProbe(loop: loop, host: "127.0.0.1", port: port, path: nil, deadline: deadline, completion: finished)
        case .exec(let arguments):
            guard let spec = loaded.roster[name], let child = spawnProbe(spec, arguments) else { return finished(false) }
            probe = ExecProbe(loop: loop, spawner: spawner, child: child, deadline: deadline) { [unowned self] succeeded, detail in
                if succeeded {
                    self.lastProbeFailure[name] = nil
                } else {
                    self.lastProbeFailure[name] = detail
                    // The probe's output is the character's: no control character (a forged log line) gets through.
                    let printable = String(detail.prefix(300).unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7f ? " " : Character($0) })
                    self.log.log(.info, character: name, "health check failed (\(printable))")
                }
                finished(succeeded)
            }
        }
        // A refused connect completes inside the initialiser: nothing left to track then.
        if !probe.isDone { probes[name] = probe }
    }

    /// The exec probe's process: as the service runs (user, cgroup, environment, sandbox), but
    /// without its notify socket (a probe does not speak for the service).
    private func spawnProbe(_ spec: ServiceSpec, _ arguments: [String]) -> ProcessSpawner.Child? {
        let name = spec.name
        do {
            let placement = try cgroups.prepare(for: spec)
            let tenant = try tenants.prepare(
                spec, charactersDirectory: loaded.charactersDirectory,
                homeIsInherited: loaded.environmentOrigins[name]?["HOME"] == "base", notifySocket: nil)
            var environment = childEnvironment(spec, notifySocket: "")
            environment["NOTIFY_SOCKET"] = nil
            environment.merge(tenant.environment) { _, own in own }
            let request = ProcessSpawner.Request(
                arguments: arguments, environment: environment, workingDirectory: spec.launch.workingDirectory,
                placement: placement, dataLimitBytes: cgroups.backend.memory == nil ? spec.limits.memoryBytes : nil,
                identity: tenant.identity, dropsCapabilities: tenant.identity != nil, noNewPrivileges: true,
                landlockRulesetFD: tenant.rulesetFD, oomScoreAdjust: nil,
                resourceLimits: spec.launch.tenant.resourceLimits.map(ResourceLimitSetting.init))
            switch spawner.spawn(request) {
            case .success(let child): return child
            case .failure(let failure):
                lastProbeFailure[name] = "cannot start \(arguments.first ?? ""): \(failure)"
                log.log(.warning, character: name, "health check: cannot start \(arguments.first ?? ""): \(failure)")
                return nil
            }
        } catch {
            lastProbeFailure[name] = "\(error)"
            log.log(.warning, character: name, "health check: \(error)")
            return nil
        }
    }

    private func spawn(_ spec: ServiceSpec, asSuccessor: Bool = false) {
        let name = spec.name
        func failed(_ errno: Int32) { post(asSuccessor ? .successorSpawnFailed(name, errno: errno) : .spawnFailed(name, errno: errno)) }
        if spec.isJob { jobRunStartedAt[name] = Self.wallClockSeconds() }
        let socket: NotifySocket
        do {
            socket = try notifySocket(for: name)
        } catch {
            log.log(.error, character: name, "cannot create its notify socket: \(error)")
            failed((error as? SystemError)?.errno ?? EIO)
            return
        }
        let placement: CgroupPlacement
        do {
            placement = try cgroups.prepare(for: spec)
        } catch {
            log.log(.error, character: name, "cannot prepare its cgroup: \(error)")
            failed(error.errno)
            return
        }
        let tenant: Tenants.Prepared
        do {
            tenant = try tenants.prepare(
                spec, charactersDirectory: loaded.charactersDirectory,
                homeIsInherited: loaded.environmentOrigins[name]?["HOME"] == "base", notifySocket: socket.path)
        } catch {
            log.log(.error, character: name, "refused to start: \(error)")
            failed((error as? SystemError)?.errno ?? EPERM)
            return
        }
        var environment = childEnvironment(spec, notifySocket: socket.path)
        environment.merge(tenant.environment) { _, own in own }
        // The new process of a rolling restart (the worker then waits for its Discord session).
        if asSuccessor { environment["WHISPERD_SUCCESSOR"] = "1" }
        let settings = spec.launch.tenant
        var request = ProcessSpawner.Request(
            arguments: spec.launch.arguments, environment: environment, workingDirectory: spec.launch.workingDirectory,
            placement: placement, dataLimitBytes: cgroups.backend.memory == nil ? spec.limits.memoryBytes : nil,
            identity: tenant.identity, dropsCapabilities: tenant.identity != nil, noNewPrivileges: true,
            landlockRulesetFD: tenant.rulesetFD, oomScoreAdjust: settings.oomScoreAdjust.map { Int32($0) },
            resourceLimits: settings.resourceLimits.map(ResourceLimitSetting.init))
        request.reportsExec = true
        switch spawner.spawn(request) {
        case .failure(let failure):
            log.log(.error, character: name, "cannot start \(spec.launch.arguments.first ?? ""): \(failure)")
            failed(failure.errno)
            if !asSuccessor { recordIncident(name) }
        case .success(let child):
            let run = LiveRun(child)
            if asSuccessor { sideRuns[name, default: [:]][child.pid] = run } else { runs[name] = run }
            let policy = logPolicy(for: spec)
            readyLogMatchers[name] = spec.health.ready == .log ? spec.health.readyLogPattern.flatMap { try? Regex($0) } : nil
            watchOutput(child.stdoutFD, stream: "stdout", of: name, run: run, policy: policy)
            watchOutput(child.stderrFD, stream: "stderr", of: name, run: run, policy: policy)
            do {
                try loop.add(child.pidFD, .readable) { [unowned self] _ in self.reap(name, run) }
            } catch {
                log.log(.error, character: name, "cannot watch pid \(child.pid): \(error)")
            }
            post(asSuccessor ? .successorSpawned(name, pid: child.pid) : .spawnSucceeded(name, pid: child.pid))
            do {
                try loop.add(child.execFD, .readable) { [unowned self] _ in
                    self.programStartedOrNot(name, run, spec: spec, asSuccessor: asSuccessor)
                }
            } catch {
                close(child.execFD)
                log.log(.error, character: name, "cannot watch pid \(child.pid)'s exec: \(error)")
            }
        }
    }

    /// The child's exec pipe hung up: its program runs, or a step before it failed (the spawn
    /// does not wait for the child's exec).
    private func programStartedOrNot(_ name: ServiceName, _ run: LiveRun, spec: ServiceSpec, asSuccessor: Bool) {
        guard let child = run.child else { return }
        loop.remove(child.execFD)
        close(child.execFD)
        // Reaped already: the reap said what happened.
        guard run.pidFD >= 0 else { return }
        if let failure = spawner.startFailure(of: child) {
            run.startFailure = failure
            log.log(.error, character: name, "cannot start \(child.program): \(failure)")
            return  // the reap that follows reports it
        }
        if asSuccessor {
            // `ready: started`: up is ready (a rolling restart is offered for notify and started only).
            if spec.health.ready == .started { markSuccessorReady(name) }
        } else {
            post(.programStarted(name, pid: child.pid))
        }
    }

    /// Rolling restart: when the old process closes its listener, connections the kernel queued
    /// on it move to the new one's (same port, `SO_REUSEPORT`) instead of being reset — only with
    /// `net.ipv4.tcp_migrate_req` (Linux 5.14+), which whisperd turns on (root, once) and says so.
    func enableListenerMigration() {
        let path = "/proc/sys/net/ipv4/tcp_migrate_req"
        guard readSmallFile(path)?.first == "0" else { return }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        let written = fd >= 0 && write(fd, "1", 1) == 1
        if fd >= 0 { close(fd) }
        log.log(
            written ? .info : .warning, "whisperd",
            written
                ? "set net.ipv4.tcp_migrate_req=1: a rolling restart hands the old listener's queued connections to the new one"
                : "cannot set net.ipv4.tcp_migrate_req=1 (\(String(cString: strerror(errno)))): connections queued on a draining listener may be reset")
    }

    /// Rolling restart: the new process is ready; once the core made it the service's process,
    /// the old one becomes a side run, draining.
    func markSuccessorReady(_ name: ServiceName) {
        post(.successorReady(name))
        guard let pid = core.pid(of: name), runs[name]?.pid != pid, let next = sideRuns[name]?.removeValue(forKey: pid) else { return }
        if let old = runs[name] { sideRuns[name, default: [:]][old.pid] = old }
        runs[name] = next
    }

    func logPolicy(for spec: ServiceSpec) -> LogWriter.FilePolicy {
        LogWriter.FilePolicy(
            path: "\(configuration.logDirectory)/\(spec.name.rawValue).log", maxSizeBytes: spec.logs.maxSizeBytes,
            maxFiles: spec.logs.maxFiles)
    }

    func reap(_ name: ServiceName, _ run: LiveRun) {
        guard let result = ChildReaper.reap(pidFD: run.pidFD) else { return }
        loop.remove(run.pidFD)
        close(run.pidFD)
        run.pidFD = -1
        let termination: ProcessTermination =
            if let signal = result.signal { .signaled(Signal(rawValue: signal)) } else {
                .exited(code: result.code ?? -1)
            }
        // The spawn does not wait for exec: a step that failed in the child is known by now
        // (through the exec pipe, or here if the exit came first).
        var startFailure = run.startFailure
        if startFailure == nil, let child = run.child, let failure = spawner.startFailure(of: child) {
            startFailure = failure
            log.log(.error, character: name, "cannot start \(child.program): \(failure)")
        }
        if sideRuns[name]?.removeValue(forKey: run.pid) != nil {
            // A side process of a rolling restart: the other one still runs in the cgroup.
            if sideRuns[name]?.isEmpty == true { sideRuns[name] = nil }
            post(.childExited(name, pid: run.pid, termination))
            return
        }
        if let startFailure {
            finishRun(name, run, termination, startErrno: startFailure.errno)
        } else if cgroups.drainIfPopulated(name, run, termination) {
            // Like a container whose first process ended: the rest of the character goes too,
            // and the run is over only when its cgroup is empty (the keeper's `drained`).
        } else {
            finishRun(name, run, termination)
        }
    }

    /// Reads a child's stdout or stderr into its log file. Outlives the main process while a
    /// grandchild still holds the pipe.
    func watchOutput(
        _ fd: Int32, stream: String, of name: ServiceName, run: LiveRun, policy: LogWriter.FilePolicy, unfinishedLine: [UInt8] = []
    ) {
        run.outputs[fd] = OutputPipe(assembler: LineAssembler(stream: stream, partial: unfinishedLine))
        do {
            try loop.add(fd, .readable) { [unowned self] _ in self.drainOutput(fd, name, run, policy) }
        } catch {
            close(fd)
            run.outputs[fd] = nil
        }
    }

    /// `ready: log`: the first line (text after the time and stream) that matches makes it ready.
    private func matchReadyLine(_ name: ServiceName, in formatted: [UInt8]) {
        guard let pattern = readyLogMatchers[name] else { return }
        for line in formatted.split(separator: 0x0A) {
            let fields = line.split(separator: 0x20, maxSplits: 2, omittingEmptySubsequences: false)
            guard fields.count == 3 else { continue }
            if String(decoding: fields[2], as: UTF8.self).contains(pattern) {
                readyLogMatchers[name] = nil
                post(.readyLineSeen(name))
                return
            }
        }
    }

    private func drainOutput(_ fd: Int32, _ name: ServiceName, _ run: LiveRun, _ policy: LogWriter.FilePolicy) {
        guard var pipe = run.outputs[fd] else { return }
        // One read per wake-up: a child writing as fast as it can (`yes`) gets 64 KiB a turn of
        // the loop, so /health and the other children wait for one chunk, not four.
        for _ in 0..<1 {
            let count = outputBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            let now = Clock.realtimeNanoseconds()
            if count > 0 {
                let (bytes, lines) = pipe.assembler.feed(outputBuffer[0..<count], now: now)
                if lines > 0 {
                    if readyLogMatchers[name] != nil { matchReadyLine(name, in: bytes) }
                    logWriter.append(name.rawValue, policy: policy, bytes: bytes, lines: lines, stream: pipe.assembler.stream, pid: run.pid)
                    control.forward(name, bytes)
                    forwardToDashboards(name, bytes)
                }
                continue
            }
            if count < 0, errno == EAGAIN || errno == EINTR { break }
            let (bytes, lines) = pipe.assembler.flush(now: now)
            if lines > 0 {
                logWriter.append(name.rawValue, policy: policy, bytes: bytes, lines: lines, stream: pipe.assembler.stream, pid: run.pid)
            }
            loop.remove(fd)
            close(fd)
            run.outputs[fd] = nil
            return
        }
        run.outputs[fd] = pipe
    }

    /// The roster's layered environment plus what only the running whisperd knows.
    func childEnvironment(_ spec: ServiceSpec, notifySocket path: String) -> [String: String] {
        var environment = spec.launch.environment
        environment["NOTIFY_SOCKET"] = path
        environment["WHISPERD_STATE_DIR"] = configuration.stateDirectory
        if spec.isJob {
            // For jobs that act on the fleet's files, such as `whisperd backup --all` run by a schedule.
            environment["WHISPERD_ROSTER"] = configuration.rosterPath
            environment["WHISPERD_CHARACTERS_DIR"] = loaded.charactersDirectory
        }
        // How long the child has after its stop signal: the worker drains within it.
        environment["WHISPERD_STOP_GRACE_MS"] = String(spec.stopGrace.nanoseconds / 1_000_000)
        if ProcessSpawner.isSanitizerBuild {
            // A sanitizer build's children (its own workers, instrumented too) report where it does.
            for key in ["TSAN_OPTIONS", "ASAN_OPTIONS", "LSAN_OPTIONS"] {
                if let value = getenv(key) { environment[key] = String(cString: value) }
            }
        }
        return environment
    }

    func notifySocketPath(_ name: ServiceName) -> String {
        "\(configuration.runtimeDirectory)/notify/\(name.rawValue).sock"
    }

    func notifySocket(for name: ServiceName) throws -> NotifySocket {
        if let existing = notifySockets[name] { return existing }
        let path = notifySocketPath(name)
        guard path.utf8.count < 108 else {
            throw SystemError("notify socket path \(path) is longer than 107 bytes; use a shorter --runtime-dir", errno: ENAMETOOLONG)
        }
        let socket = try NotifySocket(path: path)
        try listenForNotifications(name, socket)
        return socket
    }

    func listenForNotifications(_ name: ServiceName, _ socket: NotifySocket) throws {
        notifySockets[name] = socket
        try loop.add(socket.fd, .readable) { [unowned self] _ in self.receiveNotifications(name, socket) }
    }

    private func receiveNotifications(_ name: ServiceName, _ socket: NotifySocket) {
        socket.drain { datagram in handleNotification(name, datagram) }
    }

    private func handleNotification(_ name: ServiceName, _ datagram: NotifySocket.Datagram) {
        // During a rolling restart, a datagram from the new process's session is about the new
        // process (its READY=1 hands over); one from the draining old process is not news.
        if let side = sideRuns[name], !side.isEmpty {
            let session = getsid(datagram.senderPID)
            if let run = side[datagram.senderPID] ?? side[session], isMember(datagram.senderPID, uid: datagram.senderUID, of: name, run: run) {
                if case .success(let message) = NotifyMessage.parse(datagram.bytes), message.isReady, !message.isStopping,
                    core.pid(of: name) != run.pid
                {
                    markSuccessorReady(name)
                }
                return
            }
        }
        guard let run = runs[name], isMember(datagram.senderPID, uid: datagram.senderUID, of: name, run: run) else {
            status.countRejectedDatagram(name)
            log.log(.debug, character: name, "notify datagram from pid \(datagram.senderPID) rejected: not one of its processes")
            return
        }
        if datagram.isTruncated {
            status.countMalformedDatagram(name)
            return
        }
        switch NotifyMessage.parse(datagram.bytes) {
        case .failure(let error):
            status.countMalformedDatagram(name)
            log.log(.debug, character: name, "malformed notify datagram: \(error)")
        case .success(let message):
            post(.notified(name, message))
        }
    }

}
