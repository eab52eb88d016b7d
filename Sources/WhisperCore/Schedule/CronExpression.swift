/// A five-field cron expression (`minute hour day-of-month month day-of-week`) as Vixie cron
/// and Kubernetes CronJobs read it: `*`, lists, ranges, steps, month and weekday names,
/// weekday 7 for Sunday, and the macros `@yearly` `@annually` `@monthly` `@weekly` `@daily`
/// `@midnight` `@hourly`. When both day fields are restricted a day matching either runs
/// (cron's rule); a field written with a leading `*` (also `*/2`) counts as unrestricted.
public struct CronExpression: Hashable, Sendable, CustomStringConvertible {
    public let text: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    /// 0 = Sunday … 6 = Saturday.
    let weekdays: Set<Int>
    let daysOfMonthRestricted: Bool
    let weekdaysRestricted: Bool

    public struct ParseError: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    static let macros = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let weekdayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    public init(_ text: String) throws(ParseError) {
        let trimmed = text.trimmingWhitespace()
        let expanded = trimmed.hasPrefix("@") ? Self.macros[trimmed.lowercased()] : trimmed
        guard let expanded else {
            throw ParseError(description: "`\(trimmed.prefix(40))` is not a cron macro (@yearly, @monthly, @weekly, @daily, @hourly)")
        }
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ParseError(description: "a cron schedule has 5 fields (minute hour day-of-month month day-of-week), found \(fields.count)")
        }
        self.text = trimmed
        minutes = try Self.field(fields[0], "minute", 0...59, names: [])
        hours = try Self.field(fields[1], "hour", 0...23, names: [])
        daysOfMonth = try Self.field(fields[2], "day-of-month", 1...31, names: [])
        months = try Self.field(fields[3], "month", 1...12, names: Self.monthNames, firstNameValue: 1)
        weekdays = Set(try Self.field(fields[4], "day-of-week", 0...7, names: Self.weekdayNames, firstNameValue: 0).map { $0 % 7 })
        daysOfMonthRestricted = !fields[2].hasPrefix("*")
        weekdaysRestricted = !fields[4].hasPrefix("*")
    }

    public var description: String { text }

    private static func field(
        _ text: String, _ name: String, _ range: ClosedRange<Int>, names: [String], firstNameValue: Int = 0
    ) throws(ParseError) -> Set<Int> {
        func value(_ token: Substring) throws(ParseError) -> Int {
            if let number = Int(token), range.contains(number) { return number }
            if let index = names.firstIndex(of: token.lowercased()) { return index + firstNameValue }
            throw ParseError(description: "\(name) `\(token.prefix(20))` is not in \(range.lowerBound)–\(range.upperBound)")
        }
        var values: Set<Int> = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count <= 2, !parts[0].isEmpty else {
                throw ParseError(description: "\(name) `\(item.prefix(20))` is not a value, range or step")
            }
            var step = 1
            if parts.count == 2 {
                guard let parsed = Int(parts[1]), parsed >= 1, parsed <= range.upperBound else {
                    throw ParseError(description: "\(name) step `\(parts[1].prefix(20))` is not a whole number from 1 to \(range.upperBound)")
                }
                step = parsed
            }
            let span: ClosedRange<Int>
            if parts[0] == "*" {
                span = range
            } else {
                let bounds = parts[0].split(separator: "-", omittingEmptySubsequences: false)
                guard bounds.count <= 2 else { throw ParseError(description: "\(name) `\(item.prefix(20))` is not a range") }
                let low = try value(bounds[0])
                // `5/15` means from 5 to the end, every 15 (as Vixie cron reads it).
                let high = bounds.count == 2 ? try value(bounds[1]) : (parts.count == 2 ? range.upperBound : low)
                guard low <= high else { throw ParseError(description: "\(name) range `\(item.prefix(20))` runs backwards") }
                span = low...high
            }
            values.formUnion(stride(from: span.lowerBound, through: span.upperBound, by: step))
        }
        return values
    }

    func matchesDay(_ time: CivilMinute) -> Bool {
        let dayOfMonth = daysOfMonth.contains(time.day)
        let weekday = weekdays.contains(time.weekday)
        switch (daysOfMonthRestricted, weekdaysRestricted) {
        case (true, true): return dayOfMonth || weekday
        case (true, false): return dayOfMonth
        case (false, true): return weekday
        case (false, false): return true
        }
    }

    public func matches(_ time: CivilMinute) -> Bool {
        months.contains(time.month) && matchesDay(time) && hours.contains(time.hour) && minutes.contains(time.minute)
    }

    /// The first wall-clock minute after `time` (strictly) that matches; nil when none does in
    /// the next 28 years (an expression such as `0 0 30 2 *` never fires).
    public func next(after time: CivilMinute) -> CivilMinute? {
        var t = CivilMinute(localSeconds: time.localSeconds + 60)
        let lastYear = time.year + 28
        while t.year <= lastYear {
            if !months.contains(t.month) {
                t = t.month == 12
                    ? CivilMinute(year: t.year + 1, month: 1, day: 1, hour: 0, minute: 0)
                    : CivilMinute(year: t.year, month: t.month + 1, day: 1, hour: 0, minute: 0)
                continue
            }
            if !matchesDay(t) {
                t = CivilMinute(localSeconds: CivilMinute(year: t.year, month: t.month, day: t.day, hour: 0, minute: 0).localSeconds + 86_400)
                continue
            }
            if !hours.contains(t.hour) {
                t = CivilMinute(localSeconds: CivilMinute(year: t.year, month: t.month, day: t.day, hour: t.hour, minute: 0).localSeconds + 3600)
                continue
            }
            if !minutes.contains(t.minute) {
                t = CivilMinute(localSeconds: t.localSeconds + 60)
                continue
            }
            return t
        }
        return nil
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        return String(scalars)
    }
}
