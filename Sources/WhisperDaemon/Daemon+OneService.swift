import Glibc
import WhisperCore

/// `whisperd run-one NAME` (a pod's entrypoint): whisperd supervises one service as it would
/// on one host — restarts, backoff, readiness, watchdog — and exits once that service is done
/// for good, so the container engine sees the end (0: completed; 1: failed).
extension Daemon {
    func endIfTheOneServiceIsDone(_ name: ServiceName, _ state: ServiceState) {
        guard configuration.oneService != nil, !core.isShuttingDown, state == .exited || state == .failed else { return }
        exitCode = state == .exited ? 0 : 1
        log.log(.info, character: name, "\(state.rawValue) and not restarted by its policy: whisperd run-one exits (\(exitCode))")
        post(.shutdownRequested)
    }
}

extension Daemon {
    /// Without cgroups and without a user of its own (`--cgroup-backend none`, whisperd not
    /// root: run-one in a container), a process of the character is one in the session its main
    /// process leads (each character starts in a session of its own): `whisperd notify` from a
    /// shell script, say. A process can leave a session but never join another, so no other
    /// character's process can be counted in.
    func isInSession(of run: LiveRun, pid: Int32, uid: UInt32) -> Bool {
        guard pid > 0, uid == geteuid() else { return false }
        let session = getsid(pid)
        return session > 0 && session == run.pid
    }
}
