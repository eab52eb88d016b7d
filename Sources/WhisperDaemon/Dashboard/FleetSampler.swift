import Foundation
import Glibc
import Synchronization
import WhisperConcurrency
import WhisperCore
import WhisperSystem

/// The dashboard's charts: every `ResourceHistory.interval` the loop hands the sampler what
/// to read (each character's open cgroup files and its restart count, taken on the loop: a
/// few hundred dictionary reads); one long-lived thread at idle priority reads the files and
/// appends to the histories, so the loop never waits on a cgroup file (what a fleet's reads
/// cost: `docs/bench/history.md`, "the dashboard's sampler").
final class FleetSampler: Sendable {
    struct Target: Sendable {
        var name: String
        var probe: CgroupUsageProbe?
        var restarts: Int
    }

    private struct Batch: Sendable {
        var at: Instant
        var targets: [Target]
    }

    /// The latest batch not yet read (an older unread one is replaced: the thread is behind).
    private let mailbox = Locked<Batch?>(nil)
    private let wake = DispatchSemaphore(value: 0)
    private let histories = Locked<[String: ResourceHistory]>([:])

    init() {
        Thread { [self] in self.run() }.start()
    }

    /// Called on the loop.
    func sample(_ targets: [Target], at: Instant) {
        mailbox.withLock { $0 = Batch(at: at, targets: targets) }
        wake.signal()
    }

    func points(_ name: String) -> [ResourcePoint] {
        histories.withLock { $0[name]?.points() ?? [] }
    }

    /// A character that left the roster takes its history with it.
    func forget(keeping names: Set<String>) {
        histories.withLock { histories in
            for name in histories.keys where !names.contains(name) { histories[name] = nil }
        }
    }

    private func run() {
        // Its name in /proc/PID/task/*/comm (15 bytes at most): scripts/bench/sampler.py reads its CPU.
        let comm = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
        if comm >= 0 {
            _ = write(comm, "whisperd-sample", 15)
            close(comm)
        }
        lowerCurrentThreadPriority()
        while true {
            wake.wait()
            guard let batch = mailbox.withLock({ slot in defer { slot = nil }; return slot }) else { continue }
            var samples: [(String, ResourceSample)] = []
            samples.reserveCapacity(batch.targets.count)
            for (offset, target) in batch.targets.enumerated() {
                // Sharing a core with the loop: hand it back often (as the metrics thread does).
                if offset % 16 == 15 { sched_yield() }
                let usage = target.probe?.read()
                samples.append(
                    (
                        target.name,
                        ResourceSample(
                            at: batch.at, memoryBytes: usage?.memoryBytes, cpuMicroseconds: usage?.cpuMicroseconds,
                            restarts: target.restarts)
                    ))
            }
            histories.withLock { histories in
                for (name, sample) in samples { histories[name, default: ResourceHistory()].record(sample) }
            }
        }
    }
}
