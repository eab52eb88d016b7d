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
