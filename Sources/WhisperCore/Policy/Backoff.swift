/// The restart delay curve: `delay × 2^(n-1)`, capped, with ±10 % jitter.
public enum Backoff {
    /// - Parameters:
    ///   - consecutiveFailures: 1 for the first crash after a stable run.
    ///   - jitter: a sample in `-1...1` (injected so tests are deterministic).
    public static func delay(for policy: RestartPolicy, consecutiveFailures: Int, jitter: Double) -> Duration {
        let baseNanos = Double(policy.delay.nanoseconds)
        let capNanos = Double(policy.delayMax.nanoseconds)
        guard baseNanos > 0 else { return .zero }
        let exponent = Double(max(0, min(consecutiveFailures - 1, 62)))
        let raw = min(baseNanos * pow2(exponent), capNanos)
        let jittered = raw * (1 + 0.1 * max(-1, min(1, jitter)))
        return .nanoseconds(Int64(min(jittered, capNanos).rounded()))
    }

    private static func pow2(_ exponent: Double) -> Double {
        var result = 1.0
        var remaining = Int(exponent)
        while remaining > 0 {
            result *= 2
            remaining -= 1
        }
        return result
    }
}
