import Testing
import WhisperConfig

@Suite struct UnitsTests {
    @Test(arguments: [("512M", UInt64(512 << 20)), ("1G", 1 << 30), ("1.5G", 3 << 29), ("64K", 65536), ("1048576", 1 << 20),
        ("2GiB", 2 << 30), ("10MB", 10 << 20)])
    func sizes(_ text: String, _ bytes: UInt64) { #expect(Units.parseSize(text) == bytes) }

    @Test(arguments: ["", "M", "1Q", "-1M", "1.2.3G", "lots", "1e99G"])
    func badSizes(_ text: String) { #expect(Units.parseSize(text) == nil) }

    @Test(arguments: [("250ms", Duration.milliseconds(250)), ("10s", .seconds(10)), ("5m", .seconds(300)), ("1h", .seconds(3600)),
        ("1.5s", .milliseconds(1500)), ("1m30s", .seconds(90)), ("0", .zero), ("0s", .zero), ("100us", .microseconds(100))])
    func durations(_ text: String, _ duration: Duration) { #expect(Units.parseDuration(text) == duration) }

    @Test(arguments: ["", "10", "s", "5 minutes", "-1s", "1x", "99999999d"])
    func badDurations(_ text: String) { #expect(Units.parseDuration(text) == nil) }
}
