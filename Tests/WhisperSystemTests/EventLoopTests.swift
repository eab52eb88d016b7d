import Glibc
import Testing
import WhisperSystem

/// The epoll loop on the test's own thread, with real eventfds.
@Suite struct EventLoopTests {
    /// Two descriptors ready in one `epoll_wait` batch. Whichever handler runs first stops
    /// watching the other, puts a fresh eventfd at the other's number (`dup2`, so the number is
    /// reused for certain) and watches it with a new handler. The batch still holds the old
    /// descriptor's event; dispatched by number alone it would reach the new handler, which
    /// never became readable. It must be dropped, and the new handler must still hear its own.
    @Test func aStaleEventForAReusedNumberIsDropped() throws {
        let loop = try EventLoop()
        let first = EventFD.make()
        let second = EventFD.make()
        try #require(first >= 0 && second >= 0)
        defer {
            close(first)
            close(second)
        }
        var originalHandlerCalls = 0
        var replacementCallsWhileQuiet = 0
        var replacementCallsAfterSignal = 0
        var replacementIsSignalled = false
        var reusedNumber: Int32?
        var stoppedByGuard = false

        // Ends the test if the loop never reaches its last step (the assertions then fail).
        func armGuard() {
            loop.setDeadline(Clock.monotonicNanoseconds() + 10_000_000_000) {
                stoppedByGuard = true
                loop.stop()
            }
        }

        func takeOver(own: Int32, other: Int32) {
            originalHandlerCalls += 1
            EventFD.drain(own)
            guard reusedNumber == nil else { return }
            loop.remove(other)
            let fresh = EventFD.make()
            let reused = dup2(fresh, other)
            close(fresh)
            reusedNumber = reused
            try? loop.add(other, .readable) { _ in
                guard replacementIsSignalled else {
                    replacementCallsWhileQuiet += 1
                    return
                }
                replacementCallsAfterSignal += 1
                EventFD.drain(other)
                loop.stop()
            }
            // The timer fires in a later batch than this one: then the replacement gets a real event.
            loop.setDeadline(Clock.monotonicNanoseconds()) {
                replacementIsSignalled = true
                EventFD.signal(other)
                armGuard()
            }
        }

        try loop.add(first, .readable) { _ in takeOver(own: first, other: second) }
        try loop.add(second, .readable) { _ in takeOver(own: second, other: first) }
        EventFD.signal(first)
        EventFD.signal(second)
        armGuard()
        loop.run()

        #expect(!stoppedByGuard)
        #expect(reusedNumber == first || reusedNumber == second)
        #expect(originalHandlerCalls == 1, "the replaced descriptor's own handler was removed before its event")
        #expect(replacementCallsWhileQuiet == 0, "the old descriptor's event reached the new handler")
        #expect(replacementCallsAfterSignal == 1)
    }

    /// `modify` keeps the registration: the new interest's events still reach the handler.
    @Test func modifyKeepsTheRegistration() throws {
        let loop = try EventLoop()
        let fd = EventFD.make()
        try #require(fd >= 0)
        defer { close(fd) }
        var calls = 0
        // Never signalled, so never readable; an eventfd is always writable.
        try loop.add(fd, .readable) { events in
            calls += 1
            #expect(events & EventLoop.Interest.writable.rawValue != 0)
            loop.stop()
        }
        loop.modify(fd, .writable)
        loop.setDeadline(Clock.monotonicNanoseconds() + 10_000_000_000) { loop.stop() }
        loop.run()
        #expect(calls == 1)
    }

    /// A brief wait ends when its descriptor is ready, when the loop has another event waiting,
    /// or at its bound.
    @Test func waitBriefly_endsAtItsDescriptor_atAnotherEvent_orAtItsBound() throws {
        let loop = try EventLoop()
        var watched: [Int32] = [-1, -1]
        var other: [Int32] = [-1, -1]
        try #require(pipe(&watched) == 0 && pipe(&other) == 0)
        defer { for fd in watched + other { close(fd) } }
        try loop.add(other[0], .readable) { _ in }
        #expect(!loop.waitBriefly(for: watched[0], milliseconds: 20), "nothing ready: the bound")
        #expect(write(other[1], "x", 1) == 1)
        var started = timespec()
        clock_gettime(CLOCK_MONOTONIC, &started)
        #expect(!loop.waitBriefly(for: watched[0], milliseconds: 10_000), "another event waits: at once")
        var ended = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ended)
        #expect(ended.tv_sec - started.tv_sec < 5, "not the 10 s bound")
        close(watched[1])
        watched[1] = -1
        #expect(loop.waitBriefly(for: watched[0], milliseconds: 10_000), "hung up: ready")
        loop.remove(other[0])
    }

    /// The thread's wake-ups stop taking the CPU (`SCHED_BATCH`) and take it again
    /// (`SCHED_OTHER`); a thread under another policy is left alone.
    @Test func wakeUpPreemption_switchesBetweenOtherAndBatch_only() throws {
        let wakeUps = WakeUpPreemption()
        try #require(sched_getscheduler(0) == SCHED_OTHER, "the test thread runs under SCHED_OTHER")
        #expect(wakeUps.stopPreempting())
        #expect(sched_getscheduler(0) == 3)  // SCHED_BATCH
        wakeUps.preemptAgain()
        #expect(sched_getscheduler(0) == SCHED_OTHER)
        // An operator's batch (or any other) policy: neither switch touches it.
        var parameters = sched_param(sched_priority: 0)
        try #require(sched_setscheduler(0, 3, &parameters) == 0)
        defer { _ = sched_setscheduler(0, SCHED_OTHER, &parameters) }
        #expect(!wakeUps.stopPreempting())
        try #require(sched_setscheduler(0, 5, &parameters) == 0)  // SCHED_IDLE
        wakeUps.preemptAgain()
        #expect(sched_getscheduler(0) == 5, "an operator's policy stays")
        #expect(!wakeUps.stopPreempting())
        #expect(sched_getscheduler(0) == 5)
    }
}
