import Testing
import WhisperRandom

@testable import WhisperCore

private func at(_ seconds: Int64) -> Instant { Instant(nanoseconds: seconds * 1_000_000_000) }

@Suite struct DeadlineQueueTests {
    @Test func earliestFollowsChangesAndRemovals() {
        var queue = DeadlineQueue<String>()
        #expect(queue.earliest == nil)
        queue.schedule("a", at: at(30))
        queue.schedule("b", at: at(10))
        queue.schedule("c", at: at(20))
        #expect(queue.earliest == at(10))
        // A deadline that moves later: the next one becomes the earliest.
        queue.schedule("b", at: at(40))
        #expect(queue.earliest == at(20))
        #expect(queue.deadline(of: "b") == at(40))
        // One that moves earlier.
        queue.schedule("a", at: at(5))
        #expect(queue.earliest == at(5))
        // Removed.
        queue.schedule("a", at: nil)
        #expect(queue.earliest == at(20))
        queue.schedule("c", at: nil)
        queue.schedule("b", at: nil)
        #expect(queue.earliest == nil)
        #expect(queue.count == 0)
    }

    @Test func equalDeadlines_areAllDue_andRemovingOneKeepsTheOthers() {
        var queue = DeadlineQueue<String>()
        for key in ["a", "b", "c"] { queue.schedule(key, at: at(10)) }
        queue.schedule("later", at: at(11))
        #expect(Set(queue.due(at: at(10))) == ["a", "b", "c"])
        queue.schedule("b", at: nil)
        #expect(queue.earliest == at(10))
        #expect(Set(queue.due(at: at(10))) == ["a", "c"])
        #expect(queue.due(at: at(9)).isEmpty)
    }

    /// A key moved away and back to the same instant leaves an old entry at that instant
    /// behind: the key is still due once, not twice, and removing it removes it.
    @Test func aDeadlineMovedAwayAndBack_isDueOnce() {
        var queue = DeadlineQueue<String>()
        queue.schedule("a", at: at(10))
        queue.schedule("a", at: at(20))
        queue.schedule("a", at: at(10))
        #expect(queue.due(at: at(30)) == ["a"])
        queue.schedule("a", at: nil)
        #expect(queue.earliest == nil)
        #expect(queue.due(at: at(30)).isEmpty)
    }

    /// Many keys changing, moving and going at random, against a recount after every change.
    @Test func manyKeys_matchARecount() {
        var queue = DeadlineQueue<Int>()
        var truth: [Int: Instant] = [:]
        var random = SplitMix64(seed: 7)
        for step in 0..<20_000 {
            let key = Int.random(in: 0..<500, using: &random)
            // A few distinct instants, so that equal deadlines are common.
            let deadline: Instant? = Int.random(in: 0..<5, using: &random) == 0 ? nil : at(Int64.random(in: 0..<50, using: &random))
            queue.schedule(key, at: deadline)
            truth[key] = deadline
            #expect(queue.earliest == truth.values.min())
            if step % 1000 == 0 {
                let now = at(Int64.random(in: 0..<50, using: &random))
                #expect(queue.due(at: now).sorted() == truth.filter { $0.value <= now }.keys.sorted())
                #expect(queue.count == truth.count)
            }
        }
    }

    /// A deadline pushed forward again and again (a watchdog ping) does not grow the heap.
    @Test func aDeadlinePushedForwardRepeatedly_keepsTheHeapSmall() {
        var queue = DeadlineQueue<String>()
        queue.schedule("other", at: at(0))
        for second in 1...10_000 { queue.schedule("pinged", at: at(Int64(second))) }
        #expect(queue.storedEntries <= 2 * queue.count + 32)
        #expect(queue.earliest == at(0))
        #expect(queue.deadline(of: "pinged") == at(10_000))
    }
}

/// The supervisor's deadlines and summary, with the hand-advanced clock of ``Harness``.
/// (In debug builds every `handle` also checks them against a recount of all records.)
@Suite struct SupervisorDeadlineAndSummaryTests {
    @Test func aWatchdogPing_movesTheServicesDeadline_andStoppingRemovesIt() {
        var harness = Harness([.character("elena", watchdog: .seconds(3)), .character("aria")])
        var ping = NotifyMessage()
        ping.watchdog = .ping
        harness.send(.notified(.n("elena"), ping))
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(3)))
        harness.now = harness.now.advanced(by: .seconds(2))
        harness.send(.notified(.n("elena"), ping))
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(3)))
        // The old deadline passes: nothing is due.
        #expect(harness.advance(.seconds(2)).signals.isEmpty)
        // An operator stop: the watchdog deadline goes, the stop grace's comes.
        harness.send(.operatorRequested(.stop, .n("elena")))
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(10)))
        harness.exit("elena", .signaled(.term))
        #expect(harness.supervisor.nextDeadline == nil)
    }

    @Test func manyServicesWithEqualDeadlines_allFireInOneTimer_inRosterOrder() {
        let names = (0..<200).map { "c\($0)" }
        var harness = Harness(names.reversed().map { .character($0, ready: .notify, grace: .seconds(1)) })
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(5)))
        // Half become ready: their ready deadline goes; the other half time out together.
        var ready = NotifyMessage()
        ready.isReady = true
        for name in names where Int(name.dropFirst())! % 2 == 0 { harness.send(.notified(.n(name), ready)) }
        let timedOut = harness.advance(.seconds(5))
        let expected = names.reversed().filter { Int($0.dropFirst())! % 2 == 1 }
        #expect(timedOut.signals.map(\.0) == expected)
        #expect(harness.supervisor.nextDeadline == harness.now.advanced(by: .seconds(1)))
        #expect(harness.supervisor.summary == "100/200 characters ready")
    }

    @Test func summary_namesCrashLoopsAndFailures_inRosterOrder_asTheyComeAndGo() {
        let looping = RestartPolicy(mode: .always, delay: .seconds(1), delayMax: .seconds(5), budgetMax: 0)
        let once = RestartPolicy(mode: .no)
        var harness = Harness([
            .character("a", restart: once), .character("b", restart: looping), .character("c", restart: once),
            .character("d", restart: looping),
        ])
        #expect(harness.supervisor.summary == "4/4 characters ready")
        harness.exit("d")
        harness.exit("c")
        harness.exit("b")
        harness.exit("a")
        #expect(harness.supervisor.summary == "0/4 characters ready; crash loop: b, d; failed: a, c")
        harness.send(.operatorRequested(.stop, .n("d")))
        #expect(harness.supervisor.summary == "0/3 characters ready; crash loop: b; failed: a, c")
        harness.send(.operatorRequested(.start, .n("c")))
        #expect(harness.supervisor.summary == "1/3 characters ready; crash loop: b; failed: a")
        // c leaves the roster: counted until its process is gone, then forgotten.
        harness.send(.rosterLoaded(Roster(services: [.character("b", restart: looping), .character("a", restart: once)])))
        #expect(harness.supervisor.summary == "0/3 characters ready; crash loop: b; failed: a")
        harness.exit("c", .signaled(.term))
        #expect(harness.supervisor.status(of: .n("c")) == nil)
        #expect(harness.supervisor.summary == "0/2 characters ready; crash loop: b; failed: a")
        harness.send(.shutdownRequested)
        #expect(harness.supervisor.summary.hasPrefix("stopping; "))
    }
}
