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
        if fleet.isShuttingDown { return "whisperd is shutting down" }
        if pendingReexec != nil { return "a re-exec is already under way" }
        if let drain = cgroups.anyDraining { return "\(drain)'s processes are being drained; try again in a moment" }
        if let rolling = fleet.anyRollingRestart { return "a rolling restart of \(rolling) is under way; try again when it is done" }
        if let stopping = fleet.statuses().first(where: { $0.state == .stopping }) {
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
        writePendingIncidents()
        let services = fleet.handOverRuns()
        var handover = Handover(
            controlFD: control.listeningDescriptor, statusFD: statusServer?.listeningDescriptor, reexecs: reexecs + 1,
            services: services)
        handover.createdCgroupBases = cgroups.backend.createdBases
        handover.loopAtStartedNice = true
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
        if fleet.isShuttingDown { return "whisperd is shutting down" }
        if let drain = cgroups.anyDraining { return "\(drain)'s processes are being drained" }
        if let rolling = fleet.anyRollingRestart { return "a rolling restart of \(rolling) is under way" }
        if let stopping = fleet.statuses().first(where: { $0.state == .stopping }) { return "\(stopping.name) is stopping" }
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
}
