import Foundation
import Glibc
import WhisperCore
import WhisperSystem

/// A health check command (Compose's `test:`), run as the service runs — its user, cgroup,
/// environment and sandbox — in a session of its own, so that at its timeout, and after it
/// exits, its whole process group is killed: nothing it forked outlives it. Its output's last
/// bytes are kept for the incident.
final class ExecProbe: RunningProbe {
    /// Output kept, from the end.
    static let tailBytes = 2048

    let deadline: Int64
    private let loop: EventLoop
    private let pid: Int32
    private var pidFD: Int32
    private let child: ProcessSpawner.Child
    private let spawner: ProcessSpawner
    private var outputFDs: [Int32]
    private var output: [UInt8] = []
    private var timedOut = false
    private var completion: ((_ succeeded: Bool, _ detail: String) -> Void)?

    /// Done for the timer once it has its verdict or has been killed (the reap then reports).
    var isDone: Bool { completion == nil || timedOut }

    init(
        loop: EventLoop, spawner: ProcessSpawner, child: ProcessSpawner.Child, deadline: Int64,
        completion: @escaping (Bool, String) -> Void
    ) {
        self.loop = loop
        self.spawner = spawner
        self.child = child
        self.deadline = deadline
        self.pid = child.pid
        self.pidFD = child.pidFD
        self.outputFDs = [child.stdoutFD, child.stderrFD]
        self.completion = completion
        // Weak: the daemon owns the probe until its verdict; a whisperd that exits with one in
        // flight drops it (deinit kills the group) instead of keeping a cycle through the loop.
        for fd in outputFDs {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            try? loop.add(fd, .readable) { [weak self] _ in self?.readOutput(fd) }
        }
        do {
            try loop.add(pidFD, .readable) { [weak self] _ in self?.exited() }
        } catch {
            killGroup()
            var info = siginfo_t()
            _ = waitid(P_PIDFD, id_t(pidFD), &info, WEXITED)
            finish(false, "cannot watch the probe process: \(error)")
        }
    }

    deinit {
        if pidFD >= 0 { killGroup() }
        for fd in outputFDs {
            loop.remove(fd)
            close(fd)
        }
        if pidFD >= 0 {
            loop.remove(pidFD)
            close(pidFD)
        }
    }

    /// Before a re-exec: the probe's group is killed and its leader reaped now (the next
    /// whisperd would not know the child), with no verdict.
    func abandon() {
        completion = nil
        guard pidFD >= 0 else { return }
        killGroup()
        var info = siginfo_t()
        _ = waitid(P_PIDFD, id_t(pidFD), &info, WEXITED)
        finish(false, "abandoned")
    }

    /// The timeout: the whole group is killed; the verdict comes when the process is reaped.
    func expire() {
        guard !isDone, !timedOut else { return }
        timedOut = true
        killGroup()
    }

    /// Its group; the process itself when it has no group yet (killed before its `setsid`, as
    /// the spawn does not wait for the child's exec).
    private func killGroup() {
        if kill(-pid, SIGKILL) != 0, pidFD >= 0 { _ = ChildReaper.signal(pidFD: pidFD, SIGKILL) }
    }

    private func readOutput(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count > 0 {
            output += buffer[0..<count]
            if output.count > Self.tailBytes { output.removeFirst(output.count - Self.tailBytes) }
        } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
            closeOutput(fd)
        }
    }

    private func closeOutput(_ fd: Int32) {
        guard let index = outputFDs.firstIndex(of: fd) else { return }
        loop.remove(fd)
        close(fd)
        outputFDs.remove(at: index)
    }

    private func exited() {
        // What it forked into its group goes with it: killed before the leader is reaped, while
        // the zombie leader still holds the group's id (after, it could be someone else's).
        kill(-pid, SIGKILL)
        guard let result = ChildReaper.reap(pidFD: pidFD) else { return }
        for fd in outputFDs { readOutput(fd) }
        let verdict: (Bool, String) =
            if let failure = spawner.startFailure(of: child) {
                (false, "cannot start \(failure)")
            } else if timedOut {
                (false, "timed out")
            } else if let signal = result.signal {
                (false, "killed by signal \(signal)")
            } else {
                (result.code == 0, "exit code \(result.code ?? -1)")
            }
        finish(verdict.0, verdict.1)
    }

    private func finish(_ succeeded: Bool, _ detail: String) {
        for fd in outputFDs { closeOutput(fd) }
        if pidFD >= 0 {
            loop.remove(pidFD)
            close(pidFD)
            pidFD = -1
        }
        guard let completion else { return }
        self.completion = nil
        let text = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        completion(succeeded, text.isEmpty ? detail : "\(detail): \(text)")
    }
}
