import Foundation
import Glibc
import WhisperConfig
import WhisperCore
import WhisperSystem

/// `whisperctl reexec` / SIGUSR2: whisperd `execve`s its binary (a new one, after an upgrade)
/// and the new process adopts every running character — same pids, the same notify sockets,
/// log pipes and listeners, no restart counted. A failed exec leaves this process running.
extension Daemon {
    /// Why a re-exec cannot happen now, or nil (then it is scheduled for the loop's next turn).
    func requestReexec(by requester: String) -> String? {
        if core.isShuttingDown { return "whisperd is shutting down" }
        if pendingReexec != nil { return "a re-exec is already under way" }
        if let drain = cgroups.anyDraining { return "\(drain)'s processes are being drained; try again in a moment" }
        if let rolling = sideRuns.keys.first { return "a rolling restart of \(rolling) is under way; try again when it is done" }
        if let stopping = core.statuses().first(where: { $0.state == .stopping }) {
            return "\(stopping.name) is stopping; try again when it is down"
        }
        pendingReexec = requester
        lastReexecError = nil
        armTimerSoon()
        return nil
    }

    /// Hands everything over and execs; returns only when the exec failed.
    func reexec(requestedBy requester: String) {
        if let refusal = reexecRefusalNow() {
            lastReexecError = refusal
            status.dropRenderings()
            log.log(.error, "whisperd", "re-exec (\(requester)) refused: \(refusal)")
            return
        }
        guard let control = control.server else { return }
        // A probe in flight gives no verdict across the exec; the next one is scheduled as usual.
        for probe in probes.values { (probe as? ExecProbe)?.abandon() }
        probes.removeAll()
        var services: [Handover.Service] = []
        for status in core.statuses() {
            guard let pid = status.pid, let run = runs[status.name], run.pidFD >= 0, let socket = notifySockets[status.name] else { continue }
            services.append(
                Handover.Service(
                    name: status.name.rawValue, pid: pid, pidFD: run.pidFD, notifyFD: socket.fd,
                    outputs: run.outputs.map { fd, pipe in
                        Handover.Output(fd: fd, stream: pipe.assembler.stream, unfinishedLine: pipe.assembler.unfinishedLine)
                    },
                    startedAtNanoseconds: status.startedAt?.nanoseconds ?? Clock.monotonicNanoseconds(), isReady: status.isReady,
                    restarts: status.restarts, restartsByReason: status.restartsByReason, oomKills: status.oomKills,
                    statusText: status.statusText,
                    facets: status.facets.map { Handover.FacetValue(name: $0.name, level: $0.level.rawValue, detail: $0.detail) },
                    jobRunStartedAt: jobRunStartedAt[status.name]))
        }
        var handover = Handover(
            controlFD: control.listeningDescriptor, statusFD: statusServer?.listeningDescriptor, reexecs: reexecs + 1,
            services: services)
        handover.createdCgroupBases = cgroups.backend.createdBases
        let path = Handover.path(runtimeDirectory: configuration.runtimeDirectory)
        do { try handover.write(to: path) } catch {
            lastReexecError = "\(error)"
            status.dropRenderings()
            log.log(.error, "whisperd", "re-exec (\(requester)) failed: \(error)")
            return
        }
        let executable = configuration.selfExecutable
        log.log(
            .info, "whisperd",
            "re-exec (\(requester)): \(executable), handing over \(counted(services.count, "running service"))")
        systemd.reloading(monotonicMicroseconds: Clock.monotonicNanoseconds() / 1000)
        // Every line read so far is on disk before the exec; unread output waits in the pipes.
        logWriter.flush()
        let descriptors = handover.descriptors
        setCloseOnExec(descriptors, false)
        var arguments = Array(CommandLine.arguments.dropFirst())
        if let index = arguments.firstIndex(of: "--handover"), index + 1 < arguments.count { arguments.removeSubrange(index...index + 1) }
        arguments = [executable] + arguments + ["--handover", path]
        let failure = Self.exec(executable, arguments)
        // Still here: the exec failed, and this process carries on as before.
        setCloseOnExec(descriptors, true)
        unlink(path)
        lastReexecError = "exec \(executable): \(String(cString: strerror(failure)))"
        log.log(.error, "whisperd", "re-exec failed, still running the old binary: \(lastReexecError!)")
        status.dropRenderings()
        systemd.send("READY=1")
    }

    private func reexecRefusalNow() -> String? {
        if core.isShuttingDown { return "whisperd is shutting down" }
        if let drain = cgroups.anyDraining { return "\(drain)'s processes are being drained" }
        if let rolling = sideRuns.keys.first { return "a rolling restart of \(rolling) is under way" }
        if let stopping = core.statuses().first(where: { $0.state == .stopping }) { return "\(stopping.name) is stopping" }
        return nil
    }

    /// `execve` with this process's environment; returns errno when it fails.
    private static func exec(_ path: String, _ arguments: [String]) -> Int32 {
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        argv.append(nil)
        defer { for pointer in argv { free(pointer) } }
        execve(path, argv, environ)
        return errno
    }

    /// After a re-exec: takes the processes the previous whisperd handed over as this one's
    /// runs (their pidfds, notify sockets and output pipes), before the roster is applied. A
    /// process whose service is no longer in the roster is stopped.
    func adoptHandedOverRuns() {
        guard let handover else { return }
        self.handover = nil
        let roster = loaded.roster
        for service in handover.services {
            guard let name = ServiceName(service.name), let spec = roster[name] else {
                log.log(.warning, service.name, "no longer in the roster: stopping pid \(service.pid) (handed over by the re-exec)")
                kill(-service.pid, SIGKILL)
                var info = siginfo_t()
                _ = waitid(P_PIDFD, id_t(service.pidFD), &info, WEXITED)
                for fd in [service.pidFD, service.notifyFD] + service.outputs.map(\.fd) { close(fd) }
                continue
            }
            setCloseOnExec([service.pidFD, service.notifyFD] + service.outputs.map(\.fd), true)
            let socket = NotifySocket(path: notifySocketPath(name), inheritedFD: service.notifyFD)
            do { try listenForNotifications(name, socket) } catch {
                log.log(.error, character: name, "cannot watch its handed-over notify socket: \(error)")
            }
            do { _ = try cgroups.prepare(for: spec) } catch {
                log.log(.warning, character: name, "cannot reopen its cgroup after the re-exec: \(error)")
            }
            _ = try? tenants.prepare(
                spec, charactersDirectory: loaded.charactersDirectory,
                homeIsInherited: loaded.environmentOrigins[name]?["HOME"] == "base", notifySocket: socket.path)
            let run = LiveRun(pid: service.pid, pidFD: service.pidFD)
            runs[name] = run
            let policy = logPolicy(for: spec)
            for output in service.outputs {
                watchOutput(output.fd, stream: output.stream, of: name, run: run, policy: policy, unfinishedLine: output.unfinishedLine)
            }
            do {
                try loop.add(service.pidFD, .readable) { [unowned self] _ in self.reap(name, run) }
            } catch {
                log.log(.error, character: name, "cannot watch pid \(service.pid): \(error)")
            }
            if let started = service.jobRunStartedAt { jobRunStartedAt[name] = started }
        }
        log.log(
            .info, "whisperd",
            "re-exec #\(handover.reexecs) done: adopted \(counted(handover.services.count, "running service")), pid \(getpid())")
    }
}
