import Testing

@testable import WhisperCore

/// A zone shaped like Europe/Berlin in 2026: +1h, +2h from 2026-03-29 01:00Z to 2026-10-25 01:00Z.
struct BerlinLike: UTCOffsets {
    static let summerStarts: UnixSeconds = 1_774_746_000  // 2026-03-29T01:00:00Z
    static let summerEnds: UnixSeconds = 1_792_890_000  // 2026-10-25T01:00:00Z
    func secondsEastOfUTC(at instant: UnixSeconds) -> Int {
        instant >= Self.summerStarts && instant < Self.summerEnds ? 7200 : 3600
    }
}

private let utc = FixedOffset(seconds: 0)

private func at(_ year: Int, _ month: Int, _ day: Int, _ hour: Int, _ minute: Int, _ zone: any UTCOffsets = utc) -> UnixSeconds {
    zone.instant(of: CivilMinute(year: year, month: month, day: day, hour: hour, minute: minute))
}

private func cron(_ text: String) -> CronExpression { try! CronExpression(text) }

@Suite struct CivilTimeTests {
    @Test func daysAndWeekdaysMatchTheCalendar() {
        #expect(CivilMinute(year: 1970, month: 1, day: 1, hour: 0, minute: 0).localSeconds == 0)
        #expect(at(2026, 12, 6, 11, 30) == 1_796_556_600)
        #expect(CivilMinute(year: 2026, month: 12, day: 6, hour: 0, minute: 0).weekday == 0)  // a Sunday
        #expect(CivilMinute(year: 2000, month: 2, day: 29, hour: 0, minute: 0).weekday == 2)
        #expect(CivilMinute(year: 1969, month: 12, day: 31, hour: 23, minute: 59).localSeconds == -60)
        for seconds in stride(from: Int64(-100_000_000), to: 4_000_000_000, by: 7_777_777) {
            let minute = CivilMinute(localSeconds: seconds)
            #expect(minute.localSeconds == seconds - ((seconds % 60) + 60) % 60)
        }
        #expect(CivilMinute.daysInMonth(year: 2100, month: 2) == 28)
        #expect(CivilMinute.daysInMonth(year: 2000, month: 2) == 29)
    }

    @Test func wallClockTimesMapToInstantsAcrossDaylightSaving() {
        let berlin = BerlinLike()
        #expect(at(2026, 1, 15, 3, 30, berlin) == at(2026, 1, 15, 2, 30))
        #expect(at(2026, 7, 15, 3, 30, berlin) == at(2026, 7, 15, 1, 30))
        // 02:30 does not exist on 2026-03-29 in Berlin: read with the winter offset, 03:30 summer time.
        #expect(at(2026, 3, 29, 2, 30, berlin) == at(2026, 3, 29, 1, 30))
        #expect(berlin.civilMinute(at: at(2026, 3, 29, 1, 30)) == CivilMinute(year: 2026, month: 3, day: 29, hour: 3, minute: 30))
        // 02:30 happens twice on 2026-10-25: the first (summer time, 00:30Z).
        #expect(at(2026, 10, 25, 2, 30, berlin) == at(2026, 10, 25, 0, 30))
    }
}

@Suite struct CronExpressionTests {
    @Test func readsFieldsListsRangesStepsAndNames() throws {
        let expression = try CronExpression("*/15 9-17/4 1,15 jan-mar,DEC mon-fri")
        #expect(expression.minutes == [0, 15, 30, 45])
        #expect(expression.hours == [9, 13, 17])
        #expect(expression.daysOfMonth == [1, 15])
        #expect(expression.months == [1, 2, 3, 12])
        #expect(expression.weekdays == [1, 2, 3, 4, 5])
        #expect(try CronExpression("0 0 * * 7").weekdays == [0])
        #expect(try CronExpression("5/20 * * * *").minutes == [5, 25, 45])
        #expect(try CronExpression("@daily").next(after: CivilMinute(year: 2026, month: 12, day: 6, hour: 11, minute: 0))
            == CivilMinute(year: 2026, month: 12, day: 7, hour: 0, minute: 0))
    }

    @Test(arguments: [
        "", "* * * *", "* * * * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "*/0 * * * *",
        "5-1 * * * *", "a * * * *", "1,,2 * * * *", "1-2-3 * * * *", "@reboot", "* * * foo *", "*/61 * * * *",
    ])
    func refusesWhatCronRefuses(_ text: String) {
        #expect(throws: CronExpression.ParseError.self) { try CronExpression(text) }
    }

    @Test func eitherDayFieldMatchesWhenBothAreRestricted() {
        // The 13th, or any Friday (cron's rule), in February 2026.
        let expression = cron("0 12 13 * fri")
        var time = CivilMinute(year: 2026, month: 2, day: 1, hour: 0, minute: 0)
        var days: [Int] = []
        while let next = expression.next(after: time), next.month == 2 {
            days.append(next.day)
            time = next
        }
        #expect(days == [6, 13, 20, 27])
        // A leading * keeps the day-of-month unrestricted: only Fridays.
        #expect(cron("0 12 */1 * fri").next(after: CivilMinute(year: 2026, month: 2, day: 13, hour: 12, minute: 0))?.day == 20)
    }

    @Test func findsRareTimesAndKnowsWhenThereAreNone() {
        let leap = cron("0 0 29 2 *")
        #expect(leap.next(after: CivilMinute(year: 2026, month: 3, day: 1, hour: 0, minute: 0))
            == CivilMinute(year: 2028, month: 2, day: 29, hour: 0, minute: 0))
        #expect(cron("0 0 30 2 *").next(after: CivilMinute(year: 2026, month: 1, day: 1, hour: 0, minute: 0)) == nil)
        #expect(cron("59 23 31 12 *").next(after: CivilMinute(year: 2026, month: 12, day: 31, hour: 23, minute: 59))
            == CivilMinute(year: 2027, month: 12, day: 31, hour: 23, minute: 59))
    }
}

@Suite struct JobScheduleTests {
    @Test func cronRunsOnTheZonesWallClock() {
        let schedule = JobSchedule(rule: .cron(cron("30 3 * * *")), timeZone: "Europe/Berlin")
        let berlin = BerlinLike()
        #expect(schedule.nextFire(after: at(2026, 1, 15, 12, 0), offsets: berlin) == at(2026, 1, 16, 2, 30))
        #expect(schedule.nextFire(after: at(2026, 7, 15, 12, 0), offsets: berlin) == at(2026, 7, 16, 1, 30))
        // Exactly at a run's time: the next one, not this one again.
        #expect(schedule.nextFire(after: at(2026, 1, 16, 2, 30), offsets: berlin) == at(2026, 1, 17, 2, 30))
    }

    @Test func aTimeInTheRepeatedHourRunsOnce() {
        let schedule = JobSchedule(rule: .cron(cron("30 2 * * *")))
        let berlin = BerlinLike()
        let first = schedule.nextFire(after: at(2026, 10, 24, 12, 0), offsets: berlin)!
        #expect(first == at(2026, 10, 25, 0, 30))
        #expect(schedule.nextFire(after: first, offsets: berlin) == at(2026, 10, 26, 1, 30))
        // In the skipped hour of spring: once, an hour later on the wall clock.
        let spring = schedule.nextFire(after: at(2026, 3, 28, 12, 0), offsets: berlin)!
        #expect(spring == at(2026, 3, 29, 1, 30))
        #expect(schedule.nextFire(after: spring, offsets: berlin) == at(2026, 3, 30, 0, 30))
    }

    @Test func everyKeepsItsCadenceFromTheLastRun() {
        let schedule = JobSchedule(rule: .every(.seconds(3600)))
        #expect(schedule.nextFire(after: 10_000, offsets: utc) == 13_600)
        #expect(schedule.nextFire(after: 10_000, anchor: 9_000, offsets: utc) == 12_600)
        #expect(schedule.nextFire(after: 20_000, anchor: 9_000, offsets: utc) == 23_400)
        #expect(schedule.nextFire(after: 12_600, anchor: 9_000, offsets: utc) == 16_200)
    }

    @Test func jitterIsStableAndWithinItsRange() {
        let schedule = JobSchedule(rule: .every(.seconds(60)), jitter: .seconds(300))
        var delays: Set<Int64> = []
        for minute in 0..<200 {
            let delay = schedule.jitterDelay(for: .n("nightly"), at: Int64(minute) * 60)
            #expect((0..<300).contains(delay))
            #expect(delay == schedule.jitterDelay(for: .n("nightly"), at: Int64(minute) * 60))
            delays.insert(delay)
        }
        #expect(delays.count > 100)
        #expect(JobSchedule(rule: .every(.seconds(60))).jitterDelay(for: .n("nightly"), at: 0) == 0)
    }
}

@Suite struct JobTimetableTests {
    let hourly = JobSchedule(rule: .cron(cron("0 * * * *")))
    let start = at(2026, 12, 6, 11, 20)

    @Test func plansEachJobAndHandsOutWhatIsDue() {
        var timetable = JobTimetable()
        let missed = timetable.load(
            [(.n("hourly"), hourly), (.n("ping"), JobSchedule(rule: .every(.seconds(600))))], lastScheduled: [:], now: start,
            offsets: { _ in utc })
        #expect(missed.isEmpty)
        #expect(timetable.nextDue == start + 600)
        #expect(timetable.takeDue(now: start + 599).isEmpty)
        #expect(timetable.takeDue(now: start + 600) == [.n("ping")])
        #expect(timetable.nextDue == start + 1200)
        // Late (the machine slept through two runs): each due job runs once, then plans ahead.
        #expect(timetable.takeDue(now: at(2026, 12, 6, 13, 5)) == [.n("hourly"), .n("ping")])
        #expect(timetable.entry(.n("hourly"))?.nextScheduled == at(2026, 12, 6, 14, 0))
        #expect(timetable.entry(.n("ping"))?.nextScheduled == start + 600 * 11)
        #expect(timetable.entry(.n("hourly"))?.lastScheduled == at(2026, 12, 6, 12, 0))
    }

    @Test func missedRunsAreReplayedOnceAndOnlyWithCatchUp() {
        var catchUp = hourly
        catchUp.catchUp = true
        let lastRun = at(2026, 12, 6, 9, 0)
        var timetable = JobTimetable()
        let missed = timetable.load(
            [(.n("plain"), hourly), (.n("caught"), catchUp), (.n("recent"), catchUp)],
            lastScheduled: [.n("plain"): lastRun, .n("caught"): lastRun, .n("recent"): at(2026, 12, 6, 11, 0)], now: start,
            offsets: { _ in utc })
        #expect(missed == [.n("caught")])
        #expect(timetable.entry(.n("caught"))?.lastScheduled == start)
        #expect(timetable.entry(.n("plain"))?.nextScheduled == at(2026, 12, 6, 12, 0))
        // A reload is not a restart: nothing is caught up again, unchanged plans are kept.
        let again = timetable.load([(.n("caught"), catchUp)], lastScheduled: [:], now: start + 60, offsets: { _ in utc })
        #expect(again.isEmpty)
        #expect(timetable.entry(.n("plain")) == nil)
        #expect(timetable.entry(.n("caught"))?.lastScheduled == start)
    }

    @Test func aChangedScheduleIsPlannedAgain() {
        var timetable = JobTimetable()
        _ = timetable.load([(.n("job"), hourly)], lastScheduled: [:], now: start, offsets: { _ in utc })
        let daily = JobSchedule(rule: .cron(cron("@daily")))
        _ = timetable.load([(.n("job"), daily)], lastScheduled: [:], now: start + 60, offsets: { _ in utc })
        #expect(timetable.entry(.n("job"))?.nextScheduled == at(2026, 12, 7, 0, 0))
    }
}

@Suite struct ScheduledJobSupervisionTests {
    static func scheduled(_ name: String) -> ServiceSpec {
        var spec = ServiceSpec.job(name)
        spec.schedule = JobSchedule(rule: .every(.seconds(60)))
        return spec
    }

    @Test func runsOnlyWhenItsTimeComesAndNeverTwiceAtOnce() {
        var harness = Harness([Self.scheduled("report"), .character("elena")])
        #expect(harness.pid("report") == nil)
        #expect(harness.state("report") == .exited)
        harness.send(.scheduledRunDue(.n("report")))
        let pid = harness.pid("report")
        #expect(pid != nil)
        let actions = harness.send(.scheduledRunDue(.n("report")))
        #expect(harness.pid("report") == pid)
        #expect(harness.status("report").skippedScheduledRuns == 1)
        #expect(actions.contains { if case .alert(let name, let text) = $0 { name == .n("report") && text.contains("skipped") } else { false } })
        harness.exit("report", .exited(code: 0))
        #expect(harness.state("report") == .exited)
        harness.send(.scheduledRunDue(.n("report")))
        #expect(harness.pid("report") != nil && harness.pid("report") != pid)
    }

    @Test func aStoppedScheduledJobIsNotRunByItsSchedule() {
        var harness = Harness([Self.scheduled("report")])
        harness.send(.operatorRequested(.stop, .n("report")))
        harness.send(.scheduledRunDue(.n("report")))
        #expect(harness.pid("report") == nil)
        #expect(harness.status("report").skippedScheduledRuns == 0)
    }

    @Test func runNowRunsAJobOnceAndIgnoresCharacters() {
        var harness = Harness([.job("migrate"), Self.scheduled("report"), .character("elena")])
        harness.exit("migrate", .exited(code: 0))
        #expect(harness.state("migrate") == .exited)
        harness.send(.operatorRequested(.run, .n("migrate")))
        #expect(harness.pid("migrate") != nil)
        harness.send(.operatorRequested(.run, .n("report")))
        #expect(harness.pid("report") != nil)
        let elena = harness.pid("elena")
        harness.send(.operatorRequested(.run, .n("elena")))
        #expect(harness.pid("elena") == elena)
    }
}
