/// The counts behind ``Supervisor/summary``, kept per transition rather than counted per event.
///
/// Each service contributes a ``Membership``; when a service's membership changes, the counts
/// and name sets are adjusted by the difference, so rendering costs O(crash-looping + failed
/// services), not O(fleet).
struct FleetSummary: Equatable, Sendable {
    /// What one service adds to the summary.
    struct Membership: Equatable, Sendable {
        /// A character wanted up (jobs and stopped services are not counted).
        var isWanted: Bool
        var isReady: Bool
        var isCrashLooping: Bool
        /// Failed and not restarted (jobs too).
        var isFailed: Bool

        static let none = Membership(isWanted: false, isReady: false, isCrashLooping: false, isFailed: false)

        init(isWanted: Bool, isReady: Bool, isCrashLooping: Bool, isFailed: Bool) {
            self.isWanted = isWanted
            self.isReady = isReady
            self.isCrashLooping = isCrashLooping
            self.isFailed = isFailed
        }

        init(_ record: ServiceRecord) {
            let isWanted = !record.spec.isJob && record.desired == .up
            self.init(
                isWanted: isWanted, isReady: isWanted && record.isReady,
                isCrashLooping: isWanted && record.isCrashLooping, isFailed: record.state == .failed)
        }
    }

    private(set) var wanted = 0
    private(set) var ready = 0
    private(set) var crashLooping: Set<ServiceName> = []
    private(set) var failed: Set<ServiceName> = []
    private var memberships: [ServiceName: Membership] = [:]

    /// Records `name`'s membership now; `.none` (or `nil`) for a service that is gone.
    mutating func update(_ name: ServiceName, _ membership: Membership?) {
        let new = membership ?? .none
        let old = memberships[name] ?? .none
        guard new != old else { return }
        memberships[name] = new == .none ? nil : new
        wanted += (new.isWanted ? 1 : 0) - (old.isWanted ? 1 : 0)
        ready += (new.isReady ? 1 : 0) - (old.isReady ? 1 : 0)
        if new.isCrashLooping { crashLooping.insert(name) } else { crashLooping.remove(name) }
        if new.isFailed { failed.insert(name) } else { failed.remove(name) }
    }

    mutating func removeAll() { self = FleetSummary() }

    /// `3/3 characters ready; crash loop: a; failed: b`, names in `order` (roster order).
    func text(isShuttingDown: Bool, order: (ServiceName) -> Int) -> String {
        var text = "\(ready)/\(wanted) characters ready"
        if !crashLooping.isEmpty {
            text += "; crash loop: " + crashLooping.sorted { order($0) < order($1) }.map(\.rawValue).joined(separator: ", ")
        }
        if !failed.isEmpty { text += "; failed: " + failed.sorted { order($0) < order($1) }.map(\.rawValue).joined(separator: ", ") }
        if isShuttingDown { text = "stopping; " + text }
        return text
    }
}
