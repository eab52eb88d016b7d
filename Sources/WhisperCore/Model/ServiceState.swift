/// The observed lifecycle state of one character or job (DESIGN §4).
public enum ServiceState: String, Hashable, Sendable, CaseIterable {
    /// Not running and not wanted (or not yet started).
    case stopped
    /// Wanted, but an `after:` dependency is not ready or has not succeeded yet.
    case waiting
    /// Spawned, not ready yet.
    case starting
    /// Running; ready unless a health check says otherwise.
    case running
    /// Stop signal sent, waiting for the process to go (SIGKILL after the grace period).
    case stopping
    /// Crashed; waiting out the restart delay.
    case backoff
    /// Crashed more often than the restart budget allows; still retrying, at the capped delay.
    case crashloop
    /// Ended and, by policy, not restarted: a job that succeeded or a character that completed.
    case exited
    /// Ended with a failure and, by policy, not restarted.
    case failed
}

/// What the operator (or the roster) wants, kept apart from what is observed (s6's `flagwantup`).
public enum Intent: String, Hashable, Sendable {
    case up
    case down
}
