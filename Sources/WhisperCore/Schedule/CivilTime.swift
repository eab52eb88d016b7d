/// Seconds since 1970-01-01T00:00:00Z: the wall clock, as schedules see it.
public typealias UnixSeconds = Int64

/// A time zone as schedules need it: the offset from UTC in force at an instant. The shell
/// answers from the system's zone database; tests answer with fixed rules.
public protocol UTCOffsets: Sendable {
    func secondsEastOfUTC(at instant: UnixSeconds) -> Int
}

/// UTC itself.
public struct FixedOffset: UTCOffsets, Hashable {
    public var seconds: Int
    public init(seconds: Int) { self.seconds = seconds }
    public func secondsEastOfUTC(at instant: UnixSeconds) -> Int { seconds }
}

/// A date and time on a wall clock, to the minute (what cron fields name).
public struct CivilMinute: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var year: Int
    public var month: Int
    public var day: Int
    public var hour: Int
    public var minute: Int

    public init(year: Int, month: Int, day: Int, hour: Int, minute: Int) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
    }

    /// The wall-clock minute that contains `seconds` (seconds counted on that wall clock).
    public init(localSeconds seconds: Int64) {
        let days = floorDivide(seconds, 86_400)
        let secondOfDay = Int(seconds - days * 86_400)
        let date = Self.civil(fromDays: days)
        self.init(year: date.year, month: date.month, day: date.day, hour: secondOfDay / 3600, minute: secondOfDay % 3600 / 60)
    }

    /// Seconds on this wall clock since its 1970-01-01 00:00.
    public var localSeconds: Int64 {
        Self.days(year: year, month: month, day: day) * 86_400 + Int64(hour * 3600 + minute * 60)
    }

    /// 0 = Sunday … 6 = Saturday.
    public var weekday: Int { Int(floorModulo(Self.days(year: year, month: month, day: day) + 4, 7)) }

    public static func daysInMonth(year: Int, month: Int) -> Int {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    public static func isLeap(_ year: Int) -> Bool { year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
    public static func days(year: Int, month: Int, day: Int) -> Int64 {
        let y = Int64(month <= 2 ? year - 1 : year)
        let era = floorDivide(y, 400)
        let yearOfEra = y - era * 400
        let m = Int64(month)
        let dayOfYear = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + Int64(day) - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int64) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = floorDivide(z, 146_097)
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * mp + 2) / 5 + 1)
        let month = Int(mp < 10 ? mp + 3 : mp - 9)
        let year = Int(yearOfEra + era * 400) + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    public static func < (a: Self, b: Self) -> Bool { a.localSeconds < b.localSeconds }

    public var description: String {
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(year)-\(two(month))-\(two(day)) \(two(hour)):\(two(minute))"
    }
}

extension UTCOffsets {
    /// The wall-clock minute at an instant.
    public func civilMinute(at instant: UnixSeconds) -> CivilMinute {
        CivilMinute(localSeconds: instant + Int64(secondsEastOfUTC(at: instant)))
    }

    /// The instant a wall-clock time happens. Twice in a repeated hour (clocks set back): the
    /// first. Never, in a skipped hour (clocks set forward): read with the offset in force
    /// before the change, which lands as far past the gap as the time was into it — the
    /// POSIX `mktime` answer. Assumes at most one change of offset within a day.
    public func instant(of local: CivilMinute) -> UnixSeconds {
        let seconds = local.localSeconds
        let before = secondsEastOfUTC(at: seconds - 86_400)
        let after = secondsEastOfUTC(at: seconds + 86_400)
        // The larger offset gives the earlier instant.
        for offset in [max(before, after), min(before, after)] {
            let candidate = seconds - Int64(offset)
            if secondsEastOfUTC(at: candidate) == offset { return candidate }
        }
        return seconds - Int64(before)
    }
}

func floorDivide(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }
func floorModulo(_ a: Int64, _ b: Int64) -> Int64 { a - floorDivide(a, b) * b }
