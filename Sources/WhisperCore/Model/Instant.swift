/// A point on the monotonic clock, in nanoseconds from an arbitrary origin.
///
/// The core never reads a clock: the shell passes `now` into every call (CLOCK_MONOTONIC in
/// production, a hand-advanced value in tests).
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = Instant(nanoseconds: 0)

    public func advanced(by duration: Duration) -> Instant {
        Instant(nanoseconds: nanoseconds &+ duration.nanoseconds)
    }

    public func duration(since earlier: Instant) -> Duration {
        .nanoseconds(nanoseconds - earlier.nanoseconds)
    }

    public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
    public var description: String { "t+\(Duration.nanoseconds(nanoseconds).humanReadable)" }
}

extension Duration {
    /// Whole nanoseconds, saturating at Int64's range (durations here are far below it).
    public var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? Int64.min : Int64.max }
        return scaled &+ attoseconds / 1_000_000_000
    }

    public var milliseconds: Double { Double(nanoseconds) / 1_000_000 }
    public var seconds: Double { Double(nanoseconds) / 1_000_000_000 }

    /// `250ms`, `10s`, `5m`, `1h`, `1.5s`: the roster's own notation.
    public var humanReadable: String {
        let ns = nanoseconds
        if ns == 0 { return "0s" }
        if ns % 3_600_000_000_000 == 0 { return "\(ns / 3_600_000_000_000)h" }
        if ns % 60_000_000_000 == 0 { return "\(ns / 60_000_000_000)m" }
        if ns % 1_000_000_000 == 0 { return "\(ns / 1_000_000_000)s" }
        if ns % 1_000_000 == 0 { return "\(ns / 1_000_000)ms" }
        if ns % 1_000 == 0, ns < 1_000_000 { return "\(ns / 1_000)us" }
        if ns < 1_000 { return "\(ns)ns" }
        // Jittered delays: one decimal of the largest unit that fits.
        if ns >= 1_000_000_000 { return Duration.decimal(ns, per: 1_000_000_000) + "s" }
        if ns >= 1_000_000 { return Duration.decimal(ns, per: 1_000_000) + "ms" }
        return Duration.decimal(ns, per: 1_000) + "us"
    }

    private static func decimal(_ value: Int64, per unit: Int64) -> String {
        let tenths = (value * 10 + unit / 2) / unit
        return "\(tenths / 10).\(tenths % 10)"
    }
}
