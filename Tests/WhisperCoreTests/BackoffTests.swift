import Testing
import WhisperCore
import WhisperRandom

@Suite struct BackoffTests {
    let policy = RestartPolicy(delay: .milliseconds(100), delayMax: .seconds(1))

    @Test(arguments: [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (40, 1000)])
    func delayDoublesUpToTheCap(failures: Int, expectedMilliseconds: Int) {
        let delay = Backoff.delay(for: policy, consecutiveFailures: failures, jitter: 0)
        #expect(delay == .milliseconds(expectedMilliseconds))
    }

    @Test func jitterStaysWithinTenPercentAndNeverPassesTheCap() {
        #expect(Backoff.delay(for: policy, consecutiveFailures: 1, jitter: 1) == .milliseconds(110))
        #expect(Backoff.delay(for: policy, consecutiveFailures: 1, jitter: -1) == .milliseconds(90))
        #expect(Backoff.delay(for: policy, consecutiveFailures: 9, jitter: 1) == .seconds(1))
        #expect(Backoff.delay(for: policy, consecutiveFailures: 9, jitter: -1) == .milliseconds(900))
    }

    @Test func zeroDelayMeansImmediate() {
        let immediate = RestartPolicy(delay: .zero, delayMax: .seconds(60))
        #expect(Backoff.delay(for: immediate, consecutiveFailures: 7, jitter: 1) == .zero)
    }

    @Test func seededGeneratorIsReproducible() {
        var a = SplitMix64(seed: 9)
        var b = SplitMix64(seed: 9)
        #expect((0..<5).map { _ in a.next() } == (0..<5).map { _ in b.next() })
    }
}
