/// Everything that can happen to the supervisor; the shell turns OS events into these.
public enum SupervisorEvent: Hashable, Sendable {
    /// A roster was read and validated: the first one at start, later ones on reload.
    case rosterLoaded(Roster)
    /// The shell carried out a `spawn` action.
    case spawnSucceeded(ServiceName, pid: Int32)
    case spawnFailed(ServiceName, errno: Int32)
    /// The spawned process's program runs: its exec succeeded (`ready: started` is ready now).
    /// The shell's spawn returns before the child's exec, so this comes after `spawnSucceeded`.
    case programStarted(ServiceName, pid: Int32)
    /// The spawned process exited before its program ran: a step of its set-up failed.
    case startFailed(ServiceName, pid: Int32, errno: Int32)
    /// The main process of a service ended (and, with a cgroup, every other process of it too).
    /// `peakMemoryBytes` is the run's peak from its memory cgroup, when there is one.
    case childExited(ServiceName, pid: Int32, ProcessTermination, peakMemoryBytes: UInt64? = nil)
    /// A datagram from inside the service's process tree arrived on its notify socket.
    case notified(ServiceName, NotifyMessage)
    /// A probe started by a `probe` action finished.
    case probeFinished(ServiceName, succeeded: Bool)
    /// `ready: log`: the service wrote a line matching its `ready_log_line`.
    case readyLineSeen(ServiceName)
    /// The kernel OOM-killed a process of this service (whatever process it was).
    case oomKilled(ServiceName)
    /// The earliest deadline (``Supervisor/nextDeadline``) has passed.
    case timerFired
    case operatorRequested(OperatorCommand, ServiceName)
    /// A scheduled job's time has come (``JobTimetable``): it runs unless its last run is
    /// still going (then the run is skipped and reported) or an operator stopped it.
    case scheduledRunDue(ServiceName)
    /// Rolling restart: the shell started the new process (or could not).
    case successorSpawned(ServiceName, pid: Int32)
    case successorSpawnFailed(ServiceName, errno: Int32)
    /// Rolling restart: the new process said `READY=1` (or passed its readiness check).
    case successorReady(ServiceName)
    /// SIGTERM/SIGINT; a second one forces SIGKILL for everything still running.
    case shutdownRequested
}

public enum OperatorCommand: String, Hashable, Sendable {
    case start
    case stop
    case restart
    /// Run a job once now (`whisperctl run JOB`); nothing when it is already running.
    case run
    /// `whisperctl restart --rolling`: the new process beside the old one, then the old one
    /// drained; an ordinary restart when the service is not running and ready.
    case rollingRestart = "rolling-restart"
}

/// What the shell must do; the core never touches a pid or a file itself.
public enum SupervisorAction: Hashable, Sendable {
    case spawn(ServiceSpec)
    /// Rolling restart: start a second process of the service, beside its running one.
    case spawnSuccessor(ServiceSpec)
    /// SIGKILL one process group of the service (a side process of a rolling restart), not its
    /// whole cgroup.
    case killProcessGroup(ServiceName, pid: Int32)
    /// Send `signal` to the service's whole process group (or cgroup).
    case signal(ServiceName, pid: Int32, Signal)
    /// SIGKILL everything left in the service's group (or cgroup): its main process is gone or
    /// its grace period is over.
    case killAll(ServiceName, pid: Int32)
    /// Run one check now; answer with `probeFinished`. `port` is the service's `port:` (for HTTP).
    case probe(ServiceName, ProbeCheck, port: Int?, timeout: Duration)
    case applyLimits(ServiceName, Limits)
    case persistIntent(ServiceName, Intent)
    case recordJobCompleted(ServiceName, revision: String)
    /// A removed service has fully stopped: release its socket and log file.
    case forget(ServiceName)
    /// A state change, with a human reason, for the log and listeners.
    case transitioned(ServiceName, from: ServiceState, to: ServiceState, detail: String)
    /// Something an operator must see once (crash loop entered, job failed).
    case alert(ServiceName, String)
    /// The initial start has settled: tell systemd `READY=1`.
    case startupCompleted
    /// Shutdown finished: every process is gone.
    case shutdownCompleted
}
