import Testing
import WhisperCore

@Suite struct RosterDiffTests {
    @Test func classifiesEveryKindOfChange() {
        var changedCommand = ServiceSpec.character("aria")
        changedCommand.launch.arguments = ["/bin/sleep", "5"]
        var changedEnv = ServiceSpec.character("ryan")
        changedEnv.launch.environment["MODE"] = "fast"
        var changedLimits = ServiceSpec.character("nova")
        changedLimits.limits.memoryBytes = 1 << 30
        var changedHealth = ServiceSpec.character("mira")
        changedHealth.health.readyTimeout = .seconds(99)

        let old = Roster(services: ["elena", "aria", "ryan", "nova", "mira", "gone"].map { .character($0) })
        let new = Roster(services: [.character("elena"), changedCommand, changedEnv, changedLimits, changedHealth, .character("fresh")])
        let diff = RosterDiff(old: old, new: new)
        #expect(diff.added == [.n("fresh")])
        #expect(diff.removed == [.n("gone")])
        #expect(diff.relaunched == [.n("aria"), .n("ryan")])
        #expect(diff.limitsChanged == [.n("nova")])
        #expect(diff.updatedInPlace == [.n("mira")])
        #expect(diff.plan.count == 6)
    }

    @Test func identicalRostersDiffToNothing() {
        let roster = Roster(services: [.character("elena"), .job("migrate")])
        #expect(RosterDiff(old: roster, new: roster).isEmpty)
    }

    @Test func jobRevisionFollowsItsDefinitionOnly() {
        var job = ServiceSpec.job("migrate")
        let first = job.revision
        job.restart.delay = .seconds(3)
        #expect(job.revision == first)
        job.launch.environment["SCHEMA"] = "2"
        #expect(job.revision != first)
        #expect(job.revision.count == 16)
    }

    @Test func serviceNamesAreRestricted() {
        for good in ["elena", "a", "bot-7", "x_y", String(repeating: "a", count: 63)] { #expect(ServiceName(good) != nil) }
        for bad in ["", "Elena", "-x", "_x", "a/b", "../etc", "a b", String(repeating: "a", count: 64), "é"] {
            #expect(ServiceName(bad) == nil)
        }
    }
}
