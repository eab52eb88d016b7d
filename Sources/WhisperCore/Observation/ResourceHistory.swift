/// A fixed-capacity ring: once full, each append overwrites the oldest element. Storage grows
/// with the elements appended (a character sampled for a minute holds a minute), never past
/// `capacity`.
public struct RingBuffer<Element: Sendable>: Sendable {
    public let capacity: Int
    private var storage: [Element] = []
    /// Where the next append goes once full (then also the oldest element).
    private var next = 0

    public init(capacity: Int) {
        precondition(capacity > 0, "a ring needs room for one element")
        self.capacity = capacity
    }

    public var count: Int { storage.count }
    public var isEmpty: Bool { storage.isEmpty }

    public mutating func append(_ element: Element) {
        if storage.count < capacity {
            storage.append(element)
            return
        }
        storage[next] = element
        next = (next + 1) % capacity
    }

    /// Oldest first.
    public var elements: [Element] {
        storage.count < capacity ? storage : Array(storage[next...] + storage[..<next])
    }

    public var last: Element? {
        guard !storage.isEmpty else { return nil }
        return storage.count < capacity ? storage.last : storage[(next + capacity - 1) % capacity]
    }
}

/// One reading of a character's cgroup files and its restart count, as the sampler took it.
public struct ResourceSample: Sendable, Equatable {
    public var at: Instant
    public var memoryBytes: UInt64?
    /// The cgroup's cumulative CPU counter (it survives restarts: the cgroup is kept).
    public var cpuMicroseconds: UInt64?
    public var restarts: Int

    public init(at: Instant, memoryBytes: UInt64?, cpuMicroseconds: UInt64?, restarts: Int) {
        self.at = at
        self.memoryBytes = memoryBytes
        self.cpuMicroseconds = cpuMicroseconds
        self.restarts = restarts
    }
}

/// A point of a chart: memory, the CPU used since the previous point (100 = one core), and
/// the restart count.
public struct ResourcePoint: Sendable, Equatable {
    public var at: Instant
    public var memoryBytes: UInt64?
    public var cpuPercent: Double?
    public var restarts: Int

    public init(at: Instant, memoryBytes: UInt64?, cpuPercent: Double?, restarts: Int) {
        self.at = at
        self.memoryBytes = memoryBytes
        self.cpuPercent = cpuPercent
        self.restarts = restarts
    }
}

/// One character's last hour of samples, kept small: 16 bytes a point (times in tenths of a
/// second from the first sample, memory in KiB, CPU as the delta since the previous sample).
public struct ResourceHistory: Sendable {
    /// The sampler's period and the depth kept: one hour.
    public static let interval = Duration.seconds(5)
    public static let depth = Duration.seconds(3600)
    public static var defaultCapacity: Int { Int(depth.nanoseconds / interval.nanoseconds) }

    private struct Entry: Sendable {
        var deciseconds: UInt32
        var memoryKiB: UInt32
        var cpuDeltaMicroseconds: UInt32
        var restarts: UInt32
    }

    private static let missing = UInt32.max
    private static let tick: Int64 = 100_000_000

    private var ring: RingBuffer<Entry>
    private var origin: Instant?
    private var lastCPU: UInt64?
    private var lastAt: Instant?

    public init(capacity: Int = ResourceHistory.defaultCapacity) {
        ring = RingBuffer(capacity: capacity)
    }

    public var count: Int { ring.count }

    /// Samples must come in time order; one that does not (a clock that went back) is dropped.
    public mutating func record(_ sample: ResourceSample) {
        if let lastAt, sample.at <= lastAt { return }
        let origin = self.origin ?? sample.at
        self.origin = origin
        var cpuDelta = Self.missing
        if let now = sample.cpuMicroseconds, let before = lastCPU, now >= before {
            cpuDelta = UInt32(clamping: min(now - before, UInt64(Self.missing - 1)))
        }
        lastCPU = sample.cpuMicroseconds
        let memory = sample.memoryBytes.map { UInt32(clamping: min($0 / 1024, UInt64(Self.missing - 1))) } ?? Self.missing
        let ticks = (sample.at.nanoseconds - origin.nanoseconds) / Self.tick
        ring.append(
            Entry(
                deciseconds: UInt32(clamping: ticks), memoryKiB: memory, cpuDeltaMicroseconds: cpuDelta,
                restarts: UInt32(clamping: max(0, sample.restarts))))
        lastAt = sample.at
    }

    /// Oldest first; a point's CPU is nil for the first sample kept and wherever a counter
    /// was missing or went back (the cgroup was made anew).
    public func points() -> [ResourcePoint] {
        guard let origin else { return [] }
        var previous: UInt32?
        return ring.elements.map { entry in
            defer { previous = entry.deciseconds }
            var cpu: Double?
            if let previous, entry.cpuDeltaMicroseconds != Self.missing, entry.deciseconds > previous {
                let elapsedMicroseconds = Double(entry.deciseconds - previous) * Double(Self.tick / 1000)
                cpu = Double(entry.cpuDeltaMicroseconds) / elapsedMicroseconds * 100
            }
            return ResourcePoint(
                at: Instant(nanoseconds: origin.nanoseconds + Int64(entry.deciseconds) * Self.tick),
                memoryBytes: entry.memoryKiB == Self.missing ? nil : UInt64(entry.memoryKiB) * 1024,
                cpuPercent: cpu, restarts: Int(entry.restarts))
        }
    }

    /// Bytes a full history holds (for docs/performance.md's figure).
    public static var bytesPerPoint: Int { MemoryLayout<Entry>.stride }
}
