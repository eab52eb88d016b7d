import Foundation
import Glibc

/// Removes empty cgroup directories on a thread of its own, used while the whole fleet stops:
/// each `rmdir` in cgroupfs takes tens of microseconds under the kernel's cgroup mutex, and
/// hundreds of them need not hold up the loop that is still reaping the other characters.
/// (Not during normal operation: a character started again must never find its directory
/// removed from under it.)
public final class CgroupRemover: @unchecked Sendable {
    // @unchecked: `pending`, `busy` and `failures` are only touched with `condition` locked.
    private let condition = NSCondition()
    private var pending: [String] = []
    private var busy = false
    private var failures: [String] = []
    private var thread: Thread?

    public init() {}

    public func remove(_ directories: [String]) {
        condition.lock()
        pending += directories
        if thread == nil {
            let worker = Thread { [unowned self] in self.work() }
            worker.name = "cgroup-remover"
            thread = worker
            worker.start()
        }
        condition.signal()
        condition.unlock()
    }

    /// Waits until every queued directory was handled; returns the ones that could not be removed.
    public func finish() -> [String] {
        condition.lock()
        defer { condition.unlock() }
        while !pending.isEmpty || busy { condition.wait() }
        let result = failures
        failures = []
        return result
    }

    private func work() {
        while true {
            condition.lock()
            while pending.isEmpty {
                busy = false
                condition.broadcast()
                condition.wait()
            }
            busy = true
            let batch = pending
            pending = []
            condition.unlock()
            var failed: [String] = []
            for directory in batch where rmdir(directory) != 0 && errno != ENOENT {
                failed.append("\(directory): \(String(cString: strerror(errno)))")
            }
            if !failed.isEmpty {
                condition.lock()
                failures += failed
                condition.unlock()
            }
        }
    }
}
