import Foundation
import WhisperAPI
import WhisperCore
import WhisperSystem

/// A time zone from the system's zone database, for cron schedules.
struct SystemTimeZone: UTCOffsets {
    let zone: TimeZone

    func secondsEastOfUTC(at instant: UnixSeconds) -> Int {
        zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(instant)))
    }

    /// The roster's `timezone:` (checked when the roster was read), or the host's.
    static func named(_ identifier: String?) -> any UTCOffsets {
        SystemTimeZone(zone: identifier.flatMap(TimeZone.init(identifier:)) ?? .current)
    }
}

/// Scheduled jobs (`schedule:` / `every:`): the pure ``JobTimetable`` says which are due on the
/// wall clock; each due run goes to the core as `scheduledRunDue`, which runs it unless its last
/// run is still going. The loop's timer is never set more than a minute ahead for a schedule,
/// so a step of the wall clock (NTP, a suspended VM) delays a run by a minute at most.
extension Daemon {
    static func wallClockSeconds() -> UnixSeconds { Clock.realtimeNanoseconds() / 1_000_000_000 }

    /// Hands a roster to the core, with its schedules planned; runs, once each, the jobs with
    /// `catch_up: true` whose scheduled run was missed while whisperd was down.
    func apply(_ roster: Roster) {
        let schedules = roster.services.compactMap { spec in spec.schedule.map { (spec.name, $0) } }
        var stored: [ServiceName: UnixSeconds] = [:]
        for (name, at) in stateStore.lastScheduledRuns() { if let name = ServiceName(name) { stored[name] = at } }
        let missed = timetable.load(schedules, lastScheduled: stored, now: Self.wallClockSeconds(), offsets: SystemTimeZone.named)
        saveLastScheduledRuns()
        post(.rosterLoaded(roster))
        for name in missed {
            log.log(.info, character: name, "a scheduled run was missed while whisperd was down: running it now (catch_up)")
            post(.scheduledRunDue(name))
        }
    }

    /// From the timer: the jobs whose time has come.
    func runDueSchedules() {
        let due = timetable.takeDue(now: Self.wallClockSeconds())
        guard !due.isEmpty else { return }
        saveLastScheduledRuns()
        for name in due { post(.scheduledRunDue(name)) }
    }

    /// When the loop must wake for the next scheduled run (monotonic nanoseconds).
    func nextScheduleWakeUp(monotonicNow: Int64) -> Int64? {
        guard let due = timetable.nextDue else { return nil }
        let wait = min(max(due - Self.wallClockSeconds(), 0), 60)
        return monotonicNow + wait * 1_000_000_000
    }

    private func saveLastScheduledRuns() {
        var runs: [String: Int64] = [:]
        for (name, entry) in timetable.entries { if let at = entry.lastScheduled { runs[name.rawValue] = at } }
        guard runs != stateStore.lastScheduledRuns() else { return }
        do { try stateStore.setLastScheduledRuns(runs) } catch {
            log.log(.error, "whisperd", "cannot save the scheduled jobs' last runs: \(error)")
        }
    }
}

extension Daemon {
    /// A scheduled job's rule, next run, last run and its result, for status and `/metrics`.
    func scheduleDescription(_ status: ServiceStatus) -> CharacterStatus.Schedule? {
        guard let entry = timetable.entry(status.name) else { return nil }
        var schedule = CharacterStatus.Schedule(rule: entry.schedule.description, skippedRuns: status.skippedScheduledRuns)
        if let next = entry.nextDue {
            schedule.nextRun = Clock.iso8601(realtimeNanoseconds: next * 1_000_000_000)
            schedule.nextRunUnix = Int(next)
        }
        if let started = jobRunStartedAt[status.name] {
            schedule.lastRun = Clock.iso8601(realtimeNanoseconds: started * 1_000_000_000)
            schedule.lastRunUnix = Int(started)
            schedule.lastResult =
                status.pid != nil ? "running" : (status.lastExit.map { $0.reason.isSuccess ? "ok" : "failed: \($0.reason)" } ?? "running")
        }
        return schedule
    }
}
