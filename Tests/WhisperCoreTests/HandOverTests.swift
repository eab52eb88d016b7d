import Testing

@testable import WhisperCore

/// A process handed from one owner to the next: adopted after a re-exec, or replaced by a
/// rolling restart.
@Suite struct AdoptionTests {
    @Test func adoptedRunsKeepTheirPidReadinessAndCounts_andNothingIsSpawned() {
        var supervisor = Supervisor(
            adopted: [
                .n("elena"): AdoptedRun(pid: 4242, startedAt: Instant(nanoseconds: 5), isReady: true, restarts: 3, restartsByReason: ["crash": 3]),
                .n("aria"): AdoptedRun(pid: 4343, startedAt: Instant(nanoseconds: 7), isReady: false),
            ], seed: 1)
        let actions = supervisor.handle(
            .rosterLoaded(Roster(services: [.character("elena", ready: .notify), .character("aria", ready: .notify), .character("ryan")])),
            now: Instant(nanoseconds: 1_000_000_000))
        let spawned = actions.compactMap { if case .spawn(let spec) = $0 { spec.name.rawValue } else { nil } }
        #expect(spawned == ["ryan"])
        let elena = supervisor.status(of: .n("elena"))!
        #expect(elena.pid == 4242 && elena.isReady && elena.state == .running && elena.restarts == 3)
        #expect(elena.startedAt == Instant(nanoseconds: 5))
        let aria = supervisor.status(of: .n("aria"))!
        #expect(aria.pid == 4343 && !aria.isReady && aria.state == .starting)
        // Still waiting for READY=1, with a fresh ready_timeout from the adoption.
        #expect(supervisor.nextDeadline != nil)
        _ = supervisor.handle(.childExited(.n("elena"), pid: 4242, .exited(code: 1)), now: Instant(nanoseconds: 2_000_000_000))
        #expect(supervisor.status(of: .n("elena"))!.restarts == 3)
        #expect(supervisor.status(of: .n("elena"))!.pid == nil)
    }
}

@Suite struct RollingRestartTests {
    static func ready(_ harness: inout Harness, _ name: String) {
        var message = NotifyMessage()
        message.isReady = true
        harness.send(.notified(.n(name), message))
    }

    @Test func theNewProcessTakesOverAtItsReadiness_andTheOldOneIsStopped() {
        var harness = Harness([.character("elena", ready: .notify)])
        Self.ready(&harness, "elena")
        let old = harness.pid("elena")!
        let actions = harness.send(.operatorRequested(.rollingRestart, .n("elena")))
        #expect(actions.contains { if case .spawnSuccessor = $0 { true } else { false } })
        harness.send(.successorSpawned(.n("elena"), pid: 9000))
        // Until the new one is ready, the old one is the character, ready.
        #expect(harness.pid("elena") == old && harness.status("elena").isReady)
        let handOver = harness.send(.successorReady(.n("elena")))
        #expect(harness.pid("elena") == 9000 && harness.status("elena").isReady && harness.status("elena").restarts == 1)
        #expect(handOver.contains(.signal(.n("elena"), pid: old, .term)))
        // The old one's exit is not the character's: no restart, no state change.
        harness.send(.childExited(.n("elena"), pid: old, .exited(code: 0)))
        #expect(harness.pid("elena") == 9000 && harness.state("elena") == .running && harness.status("elena").restarts == 1)
    }

    @Test func aDrainingOldProcessIsKilledAtStopGrace_itsGroupOnly() {
        var harness = Harness([.character("elena", ready: .notify, grace: .seconds(2))])
        Self.ready(&harness, "elena")
        let old = harness.pid("elena")!
        harness.send(.operatorRequested(.rollingRestart, .n("elena")))
        harness.send(.successorSpawned(.n("elena"), pid: 9000))
        harness.send(.successorReady(.n("elena")))
        let actions = harness.advance(.seconds(3))
        #expect(actions.contains(.killProcessGroup(.n("elena"), pid: old)))
        #expect(!actions.contains { if case .killAll = $0 { true } else { false } })
    }

    @Test func aNewProcessNotReadyInTime_orExiting_isAbandoned() {
        var harness = Harness([.character("elena", ready: .notify)])
        Self.ready(&harness, "elena")
        let old = harness.pid("elena")!
        harness.send(.operatorRequested(.rollingRestart, .n("elena")))
        harness.send(.successorSpawned(.n("elena"), pid: 9000))
        let late = harness.advance(.seconds(6))  // ready_timeout 5s
        #expect(late.contains(.killProcessGroup(.n("elena"), pid: 9000)))
        #expect(harness.pid("elena") == old && harness.status("elena").restarts == 0)

        harness.send(.operatorRequested(.rollingRestart, .n("elena")))
        harness.send(.successorSpawned(.n("elena"), pid: 9001))
        let exited = harness.send(.childExited(.n("elena"), pid: 9001, .exited(code: 1)))
        #expect(exited.contains { if case .alert(_, let text) = $0 { text.contains("abandoned") } else { false } })
        #expect(harness.pid("elena") == old && harness.state("elena") == .running)
    }

    @Test func notReady_orProbedReadiness_getsAnOrdinaryRestart() {
        var harness = Harness([.character("ryan", ready: .http), .character("aria", ready: .notify)])
        let actions = harness.send(.operatorRequested(.rollingRestart, .n("ryan")))
        #expect(!actions.contains { if case .spawnSuccessor = $0 { true } else { false } })
        #expect(actions.contains { if case .signal(.n("ryan"), _, _) = $0 { true } else { false } })
        let notReady = harness.send(.operatorRequested(.rollingRestart, .n("aria")))
        #expect(!notReady.contains { if case .spawnSuccessor = $0 { true } else { false } })
    }
}
