import Testing
import WhisperCore

@Suite struct SupervisorLifecycleTests {
    @Test func rosterLoaded_spawnsEveryCharacter_andAnnouncesStartup() {
        let harness = Harness([.character("elena"), .character("aria")])
        #expect(harness.log.spawned == ["elena", "aria"])
        #expect(harness.state("elena") == .running)
        #expect(harness.status("elena").isReady)
        #expect(harness.log.containsStartupCompleted)
    }

    @Test(arguments: [
        (ProcessTermination.exited(code: 0), ExitReason.completed),
        (.exited(code: 3), .error(code: 3)),
        (.signaled(.kill), .signaled(.kill)),
        (.signaled(.term), .signaled(.term)),
    ])
    func exitReasonFollowsTheTermination(termination: ProcessTermination, expected: ExitReason) {
        var harness = Harness([.character("elena")])
        harness.exit("elena", termination)
        #expect(harness.status("elena").lastExit?.reason == expected)
    }

    @Test func oomKill_isReportedAsOOMKilled() {
        var harness = Harness([.character("elena")])
        let actions = harness.send(.oomKilled(.n("elena")))
        #expect(actions.alerts.count == 1)
        harness.exit("elena", .signaled(.kill))
        #expect(harness.status("elena").lastExit?.reason == .oomKilled)
        #expect(harness.status("elena").oomKills == 1)
    }

    @Test func oomKillOfAChild_countsWhileTheMainRuns_andIsTheReasonWhenTheRunThenFails() {
        var harness = Harness([.character("elena")])
        let pid = harness.pid("elena")
        harness.send(.oomKilled(.n("elena")))
        #expect(harness.pid("elena") == pid, "an OOM kill of a child alone does not restart the character")
        #expect(harness.status("elena").oomKills == 1)
        harness.exit("elena", .exited(code: 137))
        #expect(harness.status("elena").lastExit?.reason == .oomKilled)
    }

    @Test func oomKill_thenACleanExit_isStillACompletion() {
        var harness = Harness([.character("elena")])
        harness.send(.oomKilled(.n("elena")))
        harness.exit("elena", .exited(code: 0))
        #expect(harness.status("elena").lastExit?.reason == .completed)
    }

    @Test func peakMemory_isKeptWithTheExit_andNamedInTheTransition() {
        var harness = Harness([.character("elena")])
        harness.send(.oomKilled(.n("elena")))
        let actions = harness.send(
            .childExited(.n("elena"), pid: harness.pid("elena")!, .signaled(.kill), peakMemoryBytes: 64 << 20))
        #expect(harness.status("elena").lastExit?.peakMemoryBytes == 64 << 20)
        let details = actions.compactMap { if case .transitioned(_, _, _, let detail) = $0 { detail } else { nil } }
        #expect(details.contains { $0.contains("OOMKilled (peak 64.0 MiB)") })
    }

    @Test func byteCounts_readLikeAPerson() {
        #expect(ByteCount.humanReadable(512) == "512 B")
        #expect(ByteCount.humanReadable(1536) == "1.5 KiB")
        #expect(ByteCount.humanReadable(64 << 20) == "64.0 MiB")
        #expect(ByteCount.humanReadable(3 << 30) == "3.0 GiB")
    }

    @Test func spawnFailure_isAnExitWithItsErrno_andFollowsPolicy() {
        var supervisor = Supervisor(seed: 1)
        let now = Instant.zero
        _ = supervisor.handle(.rosterLoaded(Roster(services: [.character("elena")])), now: now)
        let actions = supervisor.handle(.spawnFailed(.n("elena"), errno: 2), now: now)
        #expect(supervisor.status(of: .n("elena"))?.lastExit?.reason == .spawnFailed(errno: 2))
        #expect(supervisor.status(of: .n("elena"))?.state == .backoff)
        #expect(actions.spawned.isEmpty)
    }

    /// The shell's spawn returns before the child's exec; a set-up step that then fails is the
    /// same exit as a spawn that failed at once, for the pid it was given and no other.
    @Test func startFailureAfterTheSpawnReturned_isASpawnFailure_forItsOwnPidOnly() {
        var harness = Harness([.character("elena")])
        let pid = harness.pid("elena")!
        #expect(harness.send(.startFailed(.n("elena"), pid: pid + 1, errno: 13)).isEmpty)
        #expect(harness.pid("elena") == pid)
        _ = harness.send(.startFailed(.n("elena"), pid: pid, errno: 13))
        #expect(harness.supervisor.status(of: .n("elena"))?.lastExit?.reason == .spawnFailed(errno: 13))
        #expect(harness.supervisor.status(of: .n("elena"))?.state == .backoff)
        #expect(harness.pid("elena") == nil)
    }

    /// `ready: started` is the exec, not the fork (systemd's `Type=exec`): the shell's spawn
    /// returns before the exec, and says when the program runs.
    @Test func readyStarted_waitsForTheProgramToStart_ofItsOwnPid() {
        var supervisor = Supervisor(seed: 1)
        let now = Instant.zero
        _ = supervisor.handle(.rosterLoaded(Roster(services: [.character("elena")])), now: now)
        _ = supervisor.handle(.spawnSucceeded(.n("elena"), pid: 10), now: now)
        #expect(supervisor.status(of: .n("elena"))?.state == .starting)
        _ = supervisor.handle(.programStarted(.n("elena"), pid: 11), now: now)
        #expect(supervisor.status(of: .n("elena"))?.state == .starting)
        _ = supervisor.handle(.programStarted(.n("elena"), pid: 10), now: now)
        #expect(supervisor.status(of: .n("elena"))?.state == .running)
        #expect(supervisor.status(of: .n("elena"))?.isReady == true)
    }

    @Test func exitFromAStalePid_isIgnored() {
        var harness = Harness([.character("elena")])
        let pid = harness.pid("elena")!
        let actions = harness.send(.childExited(.n("elena"), pid: pid + 999, .exited(code: 1)))
        #expect(actions.isEmpty)
        #expect(harness.pid("elena") == pid)
    }

    @Test(arguments: [
        (RestartMode.no, ProcessTermination.exited(code: 0), ServiceState.exited),
        (.no, .exited(code: 1), .failed),
        (.onFailure, .exited(code: 0), .exited),
        (.onFailure, .exited(code: 1), .backoff),
        (.always, .exited(code: 0), .backoff),
        (.unlessStopped, .signaled(.kill), .backoff),
    ])
    func restartPolicy_decidesWhatFollowsAnExit(mode: RestartMode, termination: ProcessTermination, expected: ServiceState) {
        var harness = Harness([.character("elena", restart: RestartPolicy(mode: mode))])
        harness.exit("elena", termination)
        #expect(harness.state("elena") == expected)
    }

    @Test func crashingChild_backsOffWithGrowingDelays_thenCrashLoops() {
        let policy = RestartPolicy(
            mode: .always, delay: .milliseconds(100), delayMax: .seconds(10), resetAfter: .seconds(60), budgetMax: 3,
            budgetWindow: .seconds(60))
        var harness = Harness([.character("elena", restart: policy)])
        var delays: [Duration] = []
        for _ in 0..<3 {
            harness.exit("elena")
            #expect(harness.state("elena") == .backoff)
            let exitAt = harness.now
            let actions = harness.fireNextDeadline()
            #expect(actions.spawned == ["elena"])
            delays.append(harness.now.duration(since: exitAt))
        }
        // 100 ms, 200 ms, 400 ms, each within ±10 %.
        for (delay, base) in zip(delays, [100.0, 200.0, 400.0]) {
            #expect(delay.milliseconds >= base * 0.9 && delay.milliseconds <= base * 1.1)
        }
        let fourth = harness.exit("elena")
        #expect(harness.state("elena") == .crashloop)
        #expect(fourth.alerts.count == 1)
        #expect(harness.status("elena").isCrashLooping)
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(10)))
        #expect(harness.supervisor.summary.contains("crash loop: elena"))
        // Still retrying, at the cap, and alerting only once.
        harness.fireNextDeadline()
        let fifth = harness.exit("elena")
        #expect(fifth.alerts.isEmpty)
        #expect(harness.state("elena") == .crashloop)
        #expect(harness.status("elena").restarts == 4)
        #expect(harness.status("elena").restartsByReason["Error"] == 5)
    }

    @Test func aLongRun_resetsTheDelayAndTheCrashLoop() {
        let policy = RestartPolicy(delay: .seconds(1), delayMax: .seconds(30), resetAfter: .seconds(60), budgetMax: 1)
        var harness = Harness([.character("elena", restart: policy)])
        harness.exit("elena")
        harness.fireNextDeadline()
        harness.exit("elena")
        #expect(harness.state("elena") == .crashloop)
        harness.fireNextDeadline()
        harness.now = harness.now.advanced(by: .seconds(61))
        harness.exit("elena")
        #expect(harness.state("elena") == .backoff)
        #expect(!harness.status("elena").isCrashLooping)
        let wait = harness.supervisor.nextDeadline!.duration(since: harness.now)
        #expect(wait >= .milliseconds(900) && wait <= .milliseconds(1100))
    }

    @Test func zeroRestartDelay_respawnsInTheSameStep() {
        let policy = RestartPolicy(delay: .zero, delayMax: .seconds(60))
        var harness = Harness([.character("elena", restart: policy)])
        let actions = harness.exit("elena", .signaled(.kill))
        #expect(actions.spawned == ["elena"])
        #expect(harness.state("elena") == .running)
    }
}

@Suite struct SupervisorHealthTests {
    @Test func notifyReadiness_waitsForREADY() {
        var harness = Harness([.character("elena", ready: .notify)])
        #expect(harness.state("elena") == .starting)
        #expect(!harness.log.containsStartupCompleted)
        var ready = NotifyMessage()
        ready.isReady = true
        let actions = harness.send(.notified(.n("elena"), ready))
        #expect(harness.state("elena") == .running)
        #expect(actions.containsStartupCompleted)
    }

    @Test func readyTimeout_stopsTheChild_withReasonReadyTimeout() {
        var harness = Harness([.character("elena", ready: .notify, grace: .seconds(2))])
        let actions = harness.advance(.seconds(5))
        #expect(actions.signals.map(\.0) == ["elena"])
        #expect(harness.state("elena") == .stopping)
        let kill = harness.advance(.seconds(2))
        #expect(kill.killed == ["elena"])
        harness.exit("elena", .signaled(.kill))
        #expect(harness.status("elena").lastExit?.reason == .readyTimeout)
        #expect(harness.state("elena") == .backoff)
    }

    @Test func extendTimeout_pushesTheReadyDeadline() {
        var harness = Harness([.character("elena", ready: .notify)])
        var extend = NotifyMessage()
        extend.extendTimeout = .seconds(30)
        harness.now = harness.now.advanced(by: .seconds(4))
        harness.send(.notified(.n("elena"), extend))
        #expect(harness.advance(.seconds(2)).signals.isEmpty)
        #expect(harness.state("elena") == .starting)
    }

    @Test func watchdogSilence_restartsWithWatchdogTimeout() {
        var harness = Harness([.character("elena", watchdog: .seconds(3))])
        // Not armed until the child pings once: programs that never speak sd_notify are safe.
        #expect(harness.supervisor.nextDeadline == nil)
        var ping = NotifyMessage()
        ping.watchdog = .ping
        harness.send(.notified(.n("elena"), ping))
        #expect(harness.advance(.seconds(2)).signals.isEmpty)
        harness.send(.notified(.n("elena"), ping))
        let actions = harness.advance(.seconds(3))
        #expect(actions.signals.map(\.0) == ["elena"])
        harness.exit("elena", .signaled(.term))
        #expect(harness.status("elena").lastExit?.reason == .watchdogTimeout)
    }

    @Test func watchdogUsecFromTheChild_setsItsOwnInterval_andTriggerActsAtOnce() {
        var harness = Harness([.character("elena")])
        var message = NotifyMessage()
        message.watchdogInterval = .seconds(1)
        harness.send(.notified(.n("elena"), message))
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(1)))
        var trigger = NotifyMessage()
        trigger.watchdog = .trigger
        #expect(harness.send(.notified(.n("elena"), trigger)).signals.count == 1)
    }

    @Test func httpReadiness_probesUntilAnswered_thenAtTheInterval() {
        var harness = Harness([.character("ryan", ready: .http, port: 8002)])
        let first = harness.fireNextDeadline()
        #expect(first.contains(.probe(.n("ryan"), .http(path: "/health"), port: 8002, timeout: .seconds(1))))
        harness.send(.probeFinished(.n("ryan"), succeeded: false))
        #expect(harness.state("ryan") == .starting)
        harness.fireNextDeadline()
        let ready = harness.send(.probeFinished(.n("ryan"), succeeded: true))
        #expect(harness.state("ryan") == .running)
        #expect(ready.containsStartupCompleted)
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(10)))
    }

    @Test func failedProbes_afterStartPeriod_restartWithHealthCheckFailed() {
        var harness = Harness([.character("ryan", ready: .http, port: 8002)])
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("ryan"), succeeded: true))
        harness.now = harness.now.advanced(by: .seconds(30))
        for _ in 0..<3 {
            harness.fireNextDeadline()
            harness.send(.probeFinished(.n("ryan"), succeeded: false))
        }
        #expect(harness.state("ryan") == .stopping)
        harness.exit("ryan", .signaled(.term))
        #expect(harness.status("ryan").lastExit?.reason == .healthCheckFailed)
    }

    @Test func onUnhealthyReport_marksNotReady_withoutRestarting() {
        var harness = Harness([.character("ryan", ready: .http, port: 8002, onUnhealthy: .report)])
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("ryan"), succeeded: true))
        harness.now = harness.now.advanced(by: .seconds(30))
        for _ in 0..<3 {
            harness.fireNextDeadline()
            harness.send(.probeFinished(.n("ryan"), succeeded: false))
        }
        #expect(harness.state("ryan") == .running)
        #expect(!harness.status("ryan").isReady)
        #expect(harness.status("ryan").isUnhealthy)
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("ryan"), succeeded: true))
        #expect(harness.status("ryan").isReady)
    }

    @Test func facetsAndInflight_areStored_andDegradedFacetsDoNotRestart() {
        var harness = Harness([.character("elena")])
        var message = NotifyMessage()
        message.facets = [Facet(name: "llm", level: .down, detail: "connection refused")]
        message.inflight = 2
        message.status = "waiting for the LLM"
        let actions = harness.send(.notified(.n("elena"), message))
        #expect(actions.signals.isEmpty)
        #expect(harness.status("elena").facets.first?.level == .down)
        #expect(harness.status("elena").inflight == 2)
        #expect(harness.status("elena").statusText == "waiting for the LLM")
    }
}

/// Compose's healthcheck schedule for exec and tcp probes, on a fake clock.
@Suite struct SupervisorProbeScheduleTests {
    static func postgres(startPeriod: Duration = .zero, ready: ReadinessMode = .exec, onUnhealthy: UnhealthyAction = .restart) -> ServiceSpec {
        var spec = ServiceSpec.character("postgres", ready: ready, onUnhealthy: onUnhealthy)
        spec.health.probe = ProbePolicy(
            check: .exec(arguments: ["pg_isready"]), interval: .seconds(10), timeout: .seconds(3), retries: 3,
            startPeriod: startPeriod, startInterval: .seconds(1))
        spec.health.readyTimeout = .seconds(60)
        return spec
    }

    static func probes(_ actions: [SupervisorAction]) -> [ProbeCheck] {
        actions.compactMap { if case .probe(_, let check, _, _) = $0 { check } else { nil } }
    }

    @Test func whileStarting_probesEveryStartInterval_withItsTimeout_thenEveryInterval() {
        var harness = Harness([Self.postgres()])
        let started = harness.now
        let first = harness.fireNextDeadline()
        #expect(harness.now == started.advanced(by: .seconds(1)), "the first check after start_interval")
        #expect(first.contains(.probe(.n("postgres"), .exec(arguments: ["pg_isready"]), port: nil, timeout: .seconds(3))))
        // At most one at a time: while it runs, no deadline asks for another.
        #expect(harness.supervisor.nextDeadline != harness.now)
        harness.send(.probeFinished(.n("postgres"), succeeded: false))
        #expect(harness.state("postgres") == .starting)
        let second = harness.fireNextDeadline()
        #expect(harness.now == started.advanced(by: .seconds(2)))
        #expect(Self.probes(second).count == 1)
        harness.send(.probeFinished(.n("postgres"), succeeded: true))
        #expect(harness.state("postgres") == .running)
        #expect(harness.status("postgres").isReady)
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(10)), "liveness at the interval")
    }

    @Test func failuresWithinStartPeriod_doNotCount_thenRetriesInARowRestart() {
        var harness = Harness([Self.postgres(startPeriod: .seconds(100))])
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("postgres"), succeeded: true))
        for _ in 0..<5 {
            harness.fireNextDeadline()
            harness.send(.probeFinished(.n("postgres"), succeeded: false))
        }
        #expect(harness.state("postgres") == .running, "within start_period: failures do not count")
        harness.now = harness.now.advanced(by: .seconds(100))
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("postgres"), succeeded: false))
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("postgres"), succeeded: true))
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("postgres"), succeeded: false))
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("postgres"), succeeded: false))
        #expect(harness.state("postgres") == .running, "a success in between starts the count again")
        harness.fireNextDeadline()
        let third = harness.send(.probeFinished(.n("postgres"), succeeded: false))
        #expect(harness.state("postgres") == .stopping)
        #expect(third.signals.map(\.0) == ["postgres"])
    }

    @Test func onUnhealthyReport_keepsItRunning_notReady_andItRecovers() {
        var harness = Harness([Self.postgres(onUnhealthy: .report)])
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("postgres"), succeeded: true))
        for _ in 0..<3 {
            harness.fireNextDeadline()
            harness.send(.probeFinished(.n("postgres"), succeeded: false))
        }
        #expect(harness.state("postgres") == .running)
        #expect(!harness.status("postgres").isReady)
        harness.fireNextDeadline()
        harness.send(.probeFinished(.n("postgres"), succeeded: true))
        #expect(harness.status("postgres").isReady)
    }

    @Test func aProbeGivenWithNotifyReadiness_isLivenessAfterReadyOnly() {
        var harness = Harness([Self.postgres(ready: .notify)])
        #expect(Self.probes(harness.log).isEmpty)
        var ready = NotifyMessage()
        ready.isReady = true
        harness.send(.notified(.n("postgres"), ready))
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(10)))
        #expect(Self.probes(harness.fireNextDeadline()).count == 1)
    }

    @Test func readyLog_aMatchingLineMakesItReady_onlyWhileStarting() {
        var spec = ServiceSpec.character("lavalink", ready: .log)
        spec.health.readyLogPattern = "Lavalink is ready"
        var harness = Harness([spec])
        #expect(harness.state("lavalink") == .starting)
        harness.send(.readyLineSeen(.n("lavalink")))
        #expect(harness.state("lavalink") == .running)
        #expect(harness.status("lavalink").isReady)
        // A character in another mode ignores it.
        var other = Harness([.character("elena", ready: .notify)])
        other.send(.readyLineSeen(.n("elena")))
        #expect(other.state("elena") == .starting)
    }
}

@Suite struct SupervisorDependencyTests {
    @Test func after_waitsForACharacterToBeReady() {
        var harness = Harness([.character("llm", ready: .notify), .character("elena", after: ["llm"])])
        #expect(harness.state("elena") == .waiting)
        var ready = NotifyMessage()
        ready.isReady = true
        let actions = harness.send(.notified(.n("llm"), ready))
        #expect(actions.spawned == ["elena"])
    }

    @Test func after_waitsForAJobToSucceed_andFailureKeepsWaiting() {
        var harness = Harness([.job("migrate"), .character("elena", after: ["migrate"])])
        #expect(harness.state("elena") == .waiting)
        harness.exit("migrate", .exited(code: 1))
        #expect(harness.state("elena") == .waiting)
        harness.fireNextDeadline()
        let actions = harness.exit("migrate", .exited(code: 0))
        #expect(actions.contains { if case .recordJobCompleted(.n("migrate"), _) = $0 { true } else { false } })
        #expect(actions.spawned == ["elena"])
        #expect(harness.state("migrate") == .exited)
    }

    @Test func oncePerRevisionJob_alreadyDone_isNotRerun() {
        let job = ServiceSpec.job("migrate")
        let harness = Harness([job, .character("elena", after: ["migrate"])], completedJobs: [.n("migrate"): job.revision])
        #expect(harness.log.spawned == ["elena"])
        #expect(harness.state("migrate") == .exited)
    }

    @Test func oncePerRevisionJob_withANewDefinition_runsAgain() {
        let old = ServiceSpec.job("migrate", arguments: ["/bin/true", "v1"])
        let harness = Harness([.job("migrate", arguments: ["/bin/true", "v2"])], completedJobs: [.n("migrate"): old.revision])
        #expect(harness.log.spawned == ["migrate"])
    }

    @Test func everyStartJob_runsEachTime() {
        let job = ServiceSpec.job("warmup", run: .everyStart)
        let harness = Harness([job], completedJobs: [.n("warmup"): job.revision])
        #expect(harness.log.spawned == ["warmup"])
    }
}

/// `after:` in Compose's map form: conditions, `required: false`, `restart: true`.
@Suite struct SupervisorDependencyConditionTests {
    static func waiting(_ name: String, for dependencies: [Dependency], ready: ReadinessMode = .started) -> ServiceSpec {
        var spec = ServiceSpec.character(name, ready: ready)
        spec.dependencies = dependencies
        return spec
    }

    var ready: NotifyMessage {
        var message = NotifyMessage()
        message.isReady = true
        return message
    }

    @Test func started_startsTheDependentOnceTheDependencyIsSpawned_notReady() {
        let harness = Harness([
            .character("lavalink", ready: .notify), Self.waiting("elena", for: [Dependency(.n("lavalink"), condition: .started)]),
        ])
        #expect(harness.state("lavalink") == .starting)
        #expect(harness.log.spawned == ["lavalink", "elena"])
    }

    @Test func healthy_waitsForReadiness() {
        var harness = Harness([
            .character("postgres", ready: .notify), Self.waiting("elena", for: [Dependency(.n("postgres"), condition: .healthy)]),
        ])
        #expect(harness.state("elena") == .waiting)
        #expect(harness.send(.notified(.n("postgres"), ready)).spawned == ["elena"])
    }

    @Test func completedSuccessfully_waitsForTheJobsExitZero() {
        var harness = Harness([.job("migrate"), Self.waiting("elena", for: [Dependency(.n("migrate"), condition: .completedSuccessfully)])])
        #expect(harness.state("elena") == .waiting)
        #expect(harness.exit("migrate", .exited(code: 0)).spawned == ["elena"])
    }

    @Test func started_onAJob_isMetWhileItRuns() {
        let harness = Harness([.job("warmup"), Self.waiting("elena", for: [Dependency(.n("warmup"), condition: .started)])])
        #expect(harness.state("warmup") == .running)
        #expect(harness.state("elena") == .running)
    }

    @Test func notRequired_anAbsentDependency_doesNotHoldItBack() {
        let harness = Harness([Self.waiting("elena", for: [Dependency(.n("redis"), required: false)])])
        #expect(harness.state("elena") == .running)
    }

    @Test func required_anAbsentDependency_holdsItBack() {
        let harness = Harness([Self.waiting("elena", for: [Dependency(.n("redis"))])])
        #expect(harness.state("elena") == .waiting)
    }

    @Test func notRequired_aDependencyStoppedByTheOperator_doesNotHoldItBack_aRequiredOneDoes() {
        var harness = Harness([
            .character("redis", ready: .notify), Self.waiting("elena", for: [Dependency(.n("redis"), required: false)]),
            Self.waiting("aria", for: [Dependency(.n("redis"))]),
        ])
        #expect(harness.state("elena") == .waiting)
        harness.send(.operatorRequested(.stop, .n("redis")))
        harness.exit("redis", .signaled(.term))
        #expect(harness.state("elena") == .running)
        #expect(harness.state("aria") == .waiting)
    }

    @Test func restartTrue_anOperatorRestartOfTheDependency_restartsTheDependentAfterIt() {
        var harness = Harness([
            .character("postgres", ready: .notify),
            Self.waiting("elena", for: [Dependency(.n("postgres"), restartsWithIt: true)]),
            Self.waiting("aria", for: [Dependency(.n("postgres"))]),
        ])
        harness.send(.notified(.n("postgres"), ready))
        let elena = harness.pid("elena")
        let aria = harness.pid("aria")
        let actions = harness.send(.operatorRequested(.restart, .n("postgres")))
        #expect(actions.signals.map(\.0).sorted() == ["elena", "postgres"], "aria did not ask to restart with it")
        harness.exit("postgres", .signaled(.term))
        harness.exit("elena", .signaled(.term))
        // elena waits for postgres again before it starts.
        #expect(harness.state("elena") == .waiting)
        #expect(harness.send(.notified(.n("postgres"), ready)).spawned == ["elena"])
        #expect(harness.pid("elena") != elena)
        #expect(harness.pid("aria") == aria)
    }

    @Test func restartTrue_aCrashOfTheDependency_restartsNothingElse() {
        var harness = Harness([
            .character("postgres", ready: .notify, restart: RestartPolicy(mode: .always, delay: .zero)),
            Self.waiting("elena", for: [Dependency(.n("postgres"), restartsWithIt: true)]),
        ])
        harness.send(.notified(.n("postgres"), ready))
        let elena = harness.pid("elena")
        let actions = harness.exit("postgres", .signaled(.kill))
        #expect(actions.signals.isEmpty)
        #expect(harness.pid("elena") == elena)
    }
}

@Suite struct SupervisorOperatorTests {
    @Test func stop_persistsIntent_andTheServiceStaysDown() {
        var harness = Harness([.character("elena")])
        let actions = harness.send(.operatorRequested(.stop, .n("elena")))
        #expect(actions.contains(.persistIntent(.n("elena"), .down)))
        #expect(actions.signals.map(\.1) == [.term])
        harness.exit("elena", .signaled(.term))
        #expect(harness.state("elena") == .stopped)
        #expect(harness.status("elena").lastExit?.reason == .stopped)
        #expect(harness.supervisor.nextDeadline == nil)
    }

    @Test func persistedDownIntent_keepsAServiceStoppedAtStart() {
        let harness = Harness([.character("elena"), .character("aria")], persistedDown: [.n("elena")])
        #expect(harness.log.spawned == ["aria"])
        #expect(harness.state("elena") == .stopped)
        #expect(!harness.status("elena").isUnhealthy)
    }

    @Test func restart_stopsThenStartsAtOnce() {
        var harness = Harness([.character("elena")])
        let old = harness.pid("elena")!
        harness.send(.operatorRequested(.restart, .n("elena")))
        let actions = harness.exit("elena", .signaled(.term))
        #expect(actions.spawned == ["elena"])
        #expect(harness.pid("elena") != old)
        #expect(harness.status("elena").restarts == 1)
    }

    @Test func start_afterStop_persistsUp() {
        var harness = Harness([.character("elena")], persistedDown: [.n("elena")])
        let actions = harness.send(.operatorRequested(.start, .n("elena")))
        #expect(actions.contains(.persistIntent(.n("elena"), .up)))
        #expect(actions.spawned == ["elena"])
    }
}

@Suite struct SupervisorReloadTests {
    @Test func reload_startsAdded_stopsRemoved_restartsChanged_updatesLimitsLive() {
        var harness = Harness([.character("elena"), .character("aria"), .character("ryan")])
        var changed = ServiceSpec.character("aria")
        changed.launch.environment["MOOD"] = "bright"
        var limited = ServiceSpec.character("ryan")
        limited.limits.memoryBytes = 64 << 20
        let ryanPID = harness.pid("ryan")
        let actions = harness.send(.rosterLoaded(Roster(services: [changed, limited, .character("nova")])))
        #expect(actions.spawned == ["nova"])
        #expect(Set(actions.signals.map(\.0)) == ["elena", "aria"])
        #expect(actions.contains(.applyLimits(.n("ryan"), limited.limits)))
        #expect(harness.pid("ryan") == ryanPID)

        let removal = harness.exit("elena", .signaled(.term))
        #expect(removal.contains(.forget(.n("elena"))))
        #expect(harness.supervisor.status(of: .n("elena")) == nil)
        let relaunch = harness.exit("aria", .signaled(.term))
        #expect(relaunch.spawned == ["aria"])
    }

    @Test func reload_ofAFailedCharacterWithANewCommand_startsIt() {
        var harness = Harness([.character("elena", restart: RestartPolicy(mode: .no))])
        harness.exit("elena")
        #expect(harness.state("elena") == .failed)
        var fixed = ServiceSpec.character("elena", restart: RestartPolicy(mode: .no))
        fixed.launch.arguments = ["/bin/sleep", "100"]
        #expect(harness.send(.rosterLoaded(Roster(services: [fixed]))).spawned == ["elena"])
    }
}

@Suite struct SupervisorShutdownTests {
    @Test func shutdown_stopsDependentsFirst_inParallelWhereIndependent() {
        var harness = Harness([
            .character("llm"), .character("elena", after: ["llm"]), .character("aria", after: ["llm"]),
        ])
        let first = harness.send(.shutdownRequested)
        #expect(Set(first.signals.map(\.0)) == ["elena", "aria"])
        harness.exit("elena", .signaled(.term))
        #expect(harness.state("llm") == .running)
        let second = harness.exit("aria", .signaled(.term))
        #expect(second.signals.map(\.0) == ["llm"])
        let last = harness.exit("llm", .signaled(.term))
        #expect(last.containsShutdownCompleted)
        #expect(last.spawned.isEmpty)
    }

    @Test func shutdown_escalatesToSIGKILLAfterTheGrace_andASecondRequestKillsAtOnce() {
        var harness = Harness([.character("elena", grace: .seconds(3)), .character("aria", grace: .seconds(30))])
        harness.send(.shutdownRequested)
        #expect(harness.advance(.seconds(3)).killed == ["elena"])
        #expect(harness.send(.shutdownRequested).killed.sorted() == ["aria", "elena"])
    }

    @Test func shutdown_cancelsPendingRestarts() {
        var harness = Harness([.character("elena"), .character("aria")])
        harness.exit("elena")
        #expect(harness.state("elena") == .backoff)
        harness.send(.shutdownRequested)
        #expect(harness.state("elena") == .stopped)
        let done = harness.exit("aria", .signaled(.term))
        #expect(done.containsShutdownCompleted)
        #expect(harness.supervisor.nextDeadline == nil)
    }
}
