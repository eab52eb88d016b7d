import Glibc

/// A failed system call: what was attempted and the errno, turned into text once, here.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Int32

    public init(_ operation: String, errno: Int32 = Glibc.errno) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String { "\(operation): \(String(cString: strerror(errno)))" }
}

/// Calls a libc function that returns -1 and sets errno on failure, retrying on EINTR.
@discardableResult
func syscallRetrying<T: FixedWidthInteger>(_ operation: @autoclosure () -> String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result != -1 { return result }
        if errno == EINTR { continue }
        throw SystemError(operation())
    }
}

public enum Clock {
    public static func monotonicNanoseconds() -> Int64 { whisperMonotonic() }
    public static func realtimeNanoseconds() -> Int64 { whisperRealtime() }

    /// `2026-11-23T12:00:00.123Z` (UTC, milliseconds), without Foundation's formatter cost.
    public static func iso8601(realtimeNanoseconds ns: Int64) -> String {
        var seconds = time_t(ns / 1_000_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let millis = Int((ns / 1_000_000) % 1000)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(millis), 3))Z"
    }
}
