/// Discord's REST rate limits, kept as Discord describes them: per-route buckets learnt from
/// `X-RateLimit-*` headers (routes that share a bucket hash share the budget, per major
/// parameter — the channel), a 429's `retry_after` (for the bucket, or for everything when
/// global), and the global cap of 50 requests a second. Pure: it is told the time.
public struct DiscordRateLimits: Sendable {
    struct Bucket: Sendable {
        var remaining: Int
        var resetAt: Double
    }

    /// Route (`POST /channels/{id}/messages`) → Discord's bucket hash.
    var hashOfRoute: [String: String] = [:]
    /// `hash:major` (or the route itself until its hash is known) → state.
    var buckets: [String: Bucket] = [:]
    var globalResetAt: Double = 0
    /// When the last requests were sent, for the per-second cap.
    var recentSends: [Double] = []
    public let globalPerSecond: Int

    public init(globalPerSecond: Int = 50) { self.globalPerSecond = globalPerSecond }

    /// A request's route: its method and path with ids other than the major parameter (the
    /// first id after `channels`, `guilds` or `webhooks`) replaced.
    public struct Route: Sendable, Hashable {
        public var template: String
        public var major: String

        public init(method: String, path: String) {
            var segments: [String] = []
            var major = ""
            var previous = ""
            for segment in path.split(separator: "/").map(String.init) {
                let isID = !segment.isEmpty && segment.allSatisfy(\.isNumber)
                if isID, major.isEmpty, ["channels", "guilds", "webhooks"].contains(previous) {
                    major = segment
                    segments.append("{major}")
                } else {
                    segments.append(isID ? "{id}" : segment)
                }
                previous = segment
            }
            self.template = method.uppercased() + " /" + segments.joined(separator: "/")
            self.major = major
        }
    }

    private func bucketKey(_ route: Route) -> String {
        (hashOfRoute[route.template] ?? route.template) + ":" + route.major
    }

    /// Seconds to wait before sending on `route` (0: now).
    public func delay(for route: Route, now: Double) -> Double {
        var wait = max(0, globalResetAt - now)
        if let bucket = buckets[bucketKey(route)], bucket.remaining <= 0, bucket.resetAt > now {
            wait = max(wait, bucket.resetAt - now)
        }
        let window = recentSends.filter { $0 > now - 1 }
        if window.count >= globalPerSecond, let oldest = window.first {
            wait = max(wait, oldest + 1 - now)
        }
        return wait
    }

    /// A request is going out now (call right after `delay` said 0).
    public mutating func willSend(_ route: Route, now: Double) {
        recentSends.removeAll { $0 <= now - 1 }
        recentSends.append(now)
        let key = bucketKey(route)
        if var bucket = buckets[key] {
            if bucket.resetAt <= now { bucket.remaining = max(bucket.remaining, 1) }
            bucket.remaining -= 1
            buckets[key] = bucket
        }
    }

    /// What the answer said. `headers` with lower-case names; `retryAfter` and `isGlobal`
    /// from a 429's JSON body when it had them.
    public mutating func record(
        _ route: Route, status: Int, headers: [String: String], retryAfter bodyRetryAfter: Double?, isGlobal: Bool, now: Double
    ) {
        if let hash = headers["x-ratelimit-bucket"], !hash.isEmpty, hashOfRoute[route.template] != hash {
            let previous = bucketKey(route)
            hashOfRoute[route.template] = hash
            if let state = buckets.removeValue(forKey: previous) { buckets[bucketKey(route)] = state }
        }
        let key = bucketKey(route)
        if let remaining = headers["x-ratelimit-remaining"].flatMap(Int.init) {
            let resetAfter = headers["x-ratelimit-reset-after"].flatMap(Double.init) ?? 1
            buckets[key] = Bucket(remaining: remaining, resetAt: now + resetAfter)
        }
        guard status == 429 else { return }
        let retryAfter = bodyRetryAfter ?? headers["retry-after"].flatMap(Double.init) ?? 1
        let global = isGlobal || headers["x-ratelimit-global"] == "true" || headers["x-ratelimit-scope"] == "global"
        if global {
            globalResetAt = max(globalResetAt, now + retryAfter)
        } else {
            buckets[key] = Bucket(remaining: 0, resetAt: now + retryAfter)
        }
    }
}
