import WhisperRandom

/// When a job runs by the clock (`schedule:` or `every:` on a `jobs:` entry).
public struct JobSchedule: Hashable, Sendable, CustomStringConvertible {
    public enum Rule: Hashable, Sendable {
        case cron(CronExpression)
        /// Runs a whole number of intervals after the last run (or after whisperd first saw it).
        case every(Duration)
    }

    public var rule: Rule
    /// An IANA zone name for cron fields; nil reads them on the host's local time.
    public var timeZone: String?
    /// Each run is delayed by a stable pseudo-random part of this, so a fleet's jobs spread out.
    public var jitter: Duration
    /// Run once at start when a run was due while whisperd was down.
    public var catchUp: Bool

    public init(rule: Rule, timeZone: String? = nil, jitter: Duration = .zero, catchUp: Bool = false) {
        self.rule = rule
        self.timeZone = timeZone
        self.jitter = jitter
        self.catchUp = catchUp
    }

    /// `30 3 * * * (Europe/Berlin)`, `every 1h`.
    public var description: String {
        switch rule {
        case .cron(let expression): return expression.text + (timeZone.map { " (\($0))" } ?? "")
        case .every(let interval): return "every \(interval.humanReadable)"
        }
    }

    /// The first scheduled time strictly after `instant` (before jitter). For `every:`, the
    /// cadence is kept from `anchor`, the last scheduled run, when there is one.
    public func nextFire(after instant: UnixSeconds, anchor: UnixSeconds? = nil, offsets: any UTCOffsets) -> UnixSeconds? {
        switch rule {
        case .every(let interval):
            let step = max(1, interval.nanoseconds / 1_000_000_000)
            guard let anchor, anchor <= instant else { return instant + step }
            return anchor + (floorDivide(instant - anchor, step) + 1) * step
        case .cron(let expression):
            var local = offsets.civilMinute(at: instant)
            // A wall-clock time in an hour that repeats maps to its first occurrence, which may
            // already be past: look further.
            for _ in 0..<4 {
                guard let candidate = expression.next(after: local) else { return nil }
                let at = offsets.instant(of: candidate)
                if at > instant { return at }
                local = candidate
            }
            return nil
        }
    }

    /// How long after `nominal` a run actually starts: stable for one job and one time.
    public func jitterDelay(for job: ServiceName, at nominal: UnixSeconds) -> Int64 {
        let range = jitter.nanoseconds / 1_000_000_000
        guard range > 0 else { return 0 }
        var random = SplitMix64(seed: stableHash(job.rawValue) ^ UInt64(bitPattern: nominal))
        return Int64(random.next() % UInt64(range))
    }
}

/// Which scheduled jobs are due, and when the next one is: the clock-driven half of jobs,
/// kept apart from ``Supervisor`` (which runs on the monotonic clock) because schedules are
/// read on the wall clock. Pure: the shell passes the wall-clock time into every call.
public struct JobTimetable: Sendable {
    public struct Entry: Sendable {
        public var schedule: JobSchedule
        public var offsets: any UTCOffsets
        /// The scheduled time of the next run, and when it starts (with jitter).
        public var nextScheduled: UnixSeconds?
        public var nextDue: UnixSeconds?
        /// The scheduled time of the last run started by the schedule (persisted).
        public var lastScheduled: UnixSeconds?
    }

    public private(set) var entries: [ServiceName: Entry] = [:]

    public init() {}

    /// A roster was loaded (at start or on reload). Jobs whose schedule is unchanged keep their
    /// place; the others are planned from `now`. Returns the jobs to run at once: those with
    /// `catch_up: true` that missed a scheduled run while whisperd was down (once each,
    /// however many runs were missed).
    public mutating func load(
        _ schedules: [(ServiceName, JobSchedule)], lastScheduled: [ServiceName: UnixSeconds], now: UnixSeconds,
        offsets: (String?) -> any UTCOffsets
    ) -> [ServiceName] {
        var next: [ServiceName: Entry] = [:]
        var catchUp: [ServiceName] = []
        for (name, schedule) in schedules {
            if let kept = entries[name], kept.schedule == schedule {
                next[name] = kept
                continue
            }
            let zone = offsets(schedule.timeZone)
            let last = lastScheduled[name]
            var entry = Entry(schedule: schedule, offsets: zone, nextScheduled: nil, nextDue: nil, lastScheduled: last)
            let isFirstLoad = entries[name] == nil
            if isFirstLoad, schedule.catchUp, let last,
                let missed = schedule.nextFire(after: last, anchor: last, offsets: zone), missed <= now
            {
                catchUp.append(name)
                entry.lastScheduled = now
            }
            plan(&entry, name, after: now)
            next[name] = entry
        }
        entries = next
        return catchUp
    }

    /// The jobs due at `now`, each moved on to its next run.
    public mutating func takeDue(now: UnixSeconds) -> [ServiceName] {
        var due: [ServiceName] = []
        for name in entries.keys.sorted(by: { $0.rawValue < $1.rawValue }) {
            guard var entry = entries[name], let at = entry.nextDue, at <= now else { continue }
            entry.lastScheduled = entry.nextScheduled
            plan(&entry, name, after: max(now, entry.nextScheduled ?? now))
            entries[name] = entry
            due.append(name)
        }
        return due
    }

    /// The earliest start of a scheduled run.
    public var nextDue: UnixSeconds? { entries.values.compactMap(\.nextDue).min() }

    public func entry(_ name: ServiceName) -> Entry? { entries[name] }

    private func plan(_ entry: inout Entry, _ name: ServiceName, after instant: UnixSeconds) {
        entry.nextScheduled = entry.schedule.nextFire(after: instant, anchor: entry.lastScheduled, offsets: entry.offsets)
        entry.nextDue = entry.nextScheduled.map { $0 + entry.schedule.jitterDelay(for: name, at: $0) }
    }
}
