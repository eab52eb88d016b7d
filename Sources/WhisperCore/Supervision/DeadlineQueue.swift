/// The earliest of many deadlines, each owned by a key, in O(log N) per change.
///
/// A binary min-heap with lazy invalidation: changing or removing a key's deadline does not
/// search the heap; it records the key's current deadline (with a generation, so an old entry
/// for the same instant is told apart) and leaves the old entry to be discarded when it
/// reaches the top. The top is kept valid after every change, so ``earliest`` is O(1); the heap
/// is rebuilt from the current deadlines when stale entries outnumber them, so it stays O(N).
struct DeadlineQueue<Key: Hashable & Sendable>: Sendable {
    private struct Entry: Sendable {
        var at: Instant
        var key: Key
        var generation: UInt64
    }

    private var heap: [Entry] = []
    private var current: [Key: (at: Instant, generation: UInt64)] = [:]
    private var nextGeneration: UInt64 = 0

    /// The earliest deadline of any key.
    var earliest: Instant? { heap.first?.at }

    /// How many keys have a deadline.
    var count: Int { current.count }

    /// Entries held, stale ones included (bounded by ``count``; for tests).
    var storedEntries: Int { heap.count }

    func deadline(of key: Key) -> Instant? { current[key]?.at }

    /// Sets `key`'s deadline, or removes it (`nil`). Nothing changes if it is the same.
    mutating func schedule(_ key: Key, at deadline: Instant?) {
        guard current[key]?.at != deadline else { return }
        guard let deadline else {
            current[key] = nil
            discardStaleTop()
            return
        }
        nextGeneration += 1
        current[key] = (deadline, nextGeneration)
        push(Entry(at: deadline, key: key, generation: nextGeneration))
        discardStaleTop()
        if heap.count > 2 * current.count + 32 { rebuild() }
    }

    /// Forgets every key.
    mutating func removeAll() {
        heap.removeAll(keepingCapacity: true)
        current.removeAll(keepingCapacity: true)
    }

    /// The keys whose deadline is at or before `now`, in no particular order: visits only the
    /// entries at or before `now` (and their direct children), not the whole heap.
    func due(at now: Instant) -> [Key] {
        var keys: [Key] = []
        var pending = heap.isEmpty ? [] : [0]
        while let position = pending.popLast() {
            let entry = heap[position]
            guard entry.at <= now else { continue }
            if isCurrent(entry) { keys.append(entry.key) }
            let left = 2 * position + 1
            if left < heap.count { pending.append(left) }
            if left + 1 < heap.count { pending.append(left + 1) }
        }
        return keys
    }

    // MARK: - The heap

    private func isCurrent(_ entry: Entry) -> Bool { current[entry.key]?.generation == entry.generation }

    private mutating func discardStaleTop() {
        while let top = heap.first, !isCurrent(top) { popTop() }
    }

    private mutating func rebuild() {
        heap = current.map { Entry(at: $0.value.at, key: $0.key, generation: $0.value.generation) }
        // Floyd's heap construction: sift down every parent, last first; O(N).
        for position in stride(from: heap.count / 2 - 1, through: 0, by: -1) { siftDown(position) }
    }

    private mutating func push(_ entry: Entry) {
        heap.append(entry)
        var child = heap.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].at < heap[parent].at else { break }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func popTop() {
        let last = heap.removeLast()
        guard !heap.isEmpty else { return }
        heap[0] = last
        siftDown(0)
    }

    private mutating func siftDown(_ start: Int) {
        var parent = start
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < heap.count, heap[left].at < heap[smallest].at { smallest = left }
            if right < heap.count, heap[right].at < heap[smallest].at { smallest = right }
            guard smallest != parent else { return }
            heap.swapAt(parent, smallest)
            parent = smallest
        }
    }
}
