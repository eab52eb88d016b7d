import CWhisperLinux
import Foundation
import Glibc
import Dispatch
import Synchronization
import WhisperConcurrency

/// Writes every character's log file on its own thread, so a slow or full disk never stalls the
/// event loop — and so never a child's pipe. When the queue is over budget, lines are dropped
/// and counted instead. With `journal`, each line also becomes a journal entry (same thread,
/// same budget: a stuck journald drops lines, it never stalls a child).
public final class LogWriter: Sendable {
    public struct FilePolicy: Sendable, Equatable {
        public var path: String
        public var maxSizeBytes: UInt64
        public var maxFiles: Int

        public init(path: String, maxSizeBytes: UInt64, maxFiles: Int) {
            self.path = path
            self.maxSizeBytes = maxSizeBytes
            self.maxFiles = max(1, maxFiles)
        }
    }

    private struct Entry: Sendable {
        var name: String
        var policy: FilePolicy
        var bytes: [UInt8]
        var lines: Int
        var stream: String
        var pid: Int32
        /// A mark, not lines (see `mark(path:)`): its number.
        var mark: Int? = nil
    }

    private struct Queue: Sendable {
        var pending: [Entry] = []
        var pendingBytes = 0
        var dropped: [String: Int] = [:]
        var isClosed = false
        /// `flush` callers waiting for the queue to be written.
        var flushWaiters = 0
        var nextMark = 0
        /// Each mark the writer reached: the file's length there.
        var markedLengths: [Int: Int64] = [:]
    }

    private let queue = Locked(Queue())
    private let wakeFD: Int32
    /// Posted by the writer thread when it has written its last batch and exits.
    private let finished = DispatchSemaphore(value: 0)
    /// Posted once per `flush` caller when everything queued before it is written.
    private let flushed = DispatchSemaphore(value: 0)
    private let budgetBytes: Int
    private let spaceRotationInterval: Int64
    public let sendsToJournal: Bool
    private let mirrorFD: Int32?

    /// - Parameters:
    ///   - budgetBytes: how much may wait for the disk before lines are dropped.
    ///   - journal: also send every line to the journal, with `CHARACTER=<name>`.
    ///   - spaceRotationInterval: how often (seconds) a file may be rotated early because the
    ///     disk is full (see `OpenLogFile.write`).
    ///   - mirror: a descriptor every line is also written to, prefixed with the character's
    ///     name (run-one: whisperd's stdout, which the container engine keeps).
    public init(budgetBytes: Int = 8 << 20, journal: Bool = false, mirror: Int32? = nil, spaceRotationInterval: Double = 1) throws {
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC))
        guard wakeFD >= 0 else { throw SystemError("eventfd") }
        self.mirrorFD = mirror
        self.budgetBytes = budgetBytes
        self.spaceRotationInterval = Int64(spaceRotationInterval * 1e9)
        self.sendsToJournal = journal
        let thread = Thread { [self] in self.writerLoop() }
        thread.name = "whisperd-logs"
        thread.start()
    }

    /// Lines dropped per character (queue over budget, or the disk refused them).
    public func droppedLines() -> [String: Int] { queue.withLock { $0.dropped } }

    /// Queues complete lines (each already formatted by `LineAssembler` and newline-terminated)
    /// that the process `pid` wrote on `stream`. Never blocks on I/O.
    public func append(_ name: String, policy: FilePolicy, bytes: [UInt8], lines: Int, stream: String, pid: Int32) {
        let wake: Bool = queue.withLock { state in
            guard !state.isClosed else { return false }
            if state.pendingBytes + bytes.count > budgetBytes {
                state.dropped[name, default: 0] += lines
                return false
            }
            let wasEmpty = state.pending.isEmpty
            state.pending.append(Entry(name: name, policy: policy, bytes: bytes, lines: lines, stream: stream, pid: pid))
            state.pendingBytes += bytes.count
            return wasEmpty
        }
        if wake {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
    }

    /// Marks the file at `path` where every line queued so far for it ends: once the writer has
    /// got there (in order, after those lines), ``takeMarkedLength(_:)`` answers the file's
    /// length at that point. Never blocks.
    public func mark(path: String) -> Int {
        let (mark, wake): (Int, Bool) = queue.withLock { state in
            state.nextMark += 1
            let wasEmpty = state.pending.isEmpty
            state.pending.append(
                Entry(
                    name: "", policy: FilePolicy(path: path, maxSizeBytes: 0, maxFiles: 1), bytes: [], lines: 0, stream: "", pid: 0,
                    mark: state.nextMark))
            return (state.nextMark, wasEmpty)
        }
        if wake {
            var one: UInt64 = 1
            _ = write(wakeFD, &one, 8)
        }
        return mark
    }

    /// The length ``mark(path:)`` noted, once the writer has reached the mark (nil before); asked once.
    public func takeMarkedLength(_ mark: Int) -> Int64? {
        queue.withLock { $0.markedLengths.removeValue(forKey: mark) }
    }

    /// Waits (at most `timeout`) until every line queued so far is written, and keeps going:
    /// before whisperd re-executes itself, so no line waits in memory across the exec.
    @discardableResult
    public func flush(timeout: Double = 2) -> Bool {
        queue.withLock { $0.flushWaiters += 1 }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        return flushed.wait(timeout: .now() + timeout) == .success
    }

    /// Stops accepting lines, waits (at most `timeout`) until the queue is written, and
    /// stops the thread. For shutdown: the last lines of a stopping fleet are not lost.
    public func close(timeout: Double = 2) {
        queue.withLock { $0.isClosed = true }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
        _ = finished.wait(timeout: .now() + timeout)
    }

    private func writerLoop() {
        var files: [String: OpenLogFile] = [:]
        while true {
            var counter: UInt64 = 0
            let count = read(wakeFD, &counter, 8)
            if count < 0, errno == EINTR { continue }
            let (batch, closed): ([Entry], Bool) = queue.withLock { state in
                let batch = state.pending
                state.pending = []
                state.pendingBytes = 0
                return (batch, state.isClosed)
            }
            for entry in batch {
                if let mark = entry.mark {
                    var info = stat()
                    let length = stat(entry.policy.path, &info) == 0 ? Int64(info.st_size) : 0
                    queue.withLock { $0.markedLengths[mark] = length }
                    continue
                }
                let file: OpenLogFile
                if let existing = files[entry.name], existing.policy == entry.policy {
                    file = existing
                } else {
                    files[entry.name]?.close()
                    file = OpenLogFile(policy: entry.policy, spaceRotationInterval: spaceRotationInterval)
                    files[entry.name] = file
                }
                if !file.write(entry.bytes) {
                    queue.withLock { $0.dropped[entry.name, default: 0] += entry.lines }
                }
                if sendsToJournal { sendToJournal(entry) }
                if let mirrorFD { mirror(entry, to: mirrorFD) }
            }
            let waiters = queue.withLock { state -> Int in
                guard state.pending.isEmpty else { return 0 }
                defer { state.flushWaiters = 0 }
                return state.flushWaiters
            }
            for _ in 0..<waiters { flushed.signal() }
            if closed {
                for file in files.values { file.close() }
                finished.signal()
                return
            }
        }
    }
}

extension LogWriter {
    /// Each line as `<name> <time> <stream> text`. Blocking on this thread only: a stalled
    /// reader makes lines wait (and then be dropped, counted), never a child.
    private func mirror(_ entry: Entry, to fd: Int32) {
        let prefix = Array((entry.name + " ").utf8)
        var output: [UInt8] = []
        output.reserveCapacity(entry.bytes.count + entry.lines * prefix.count)
        var start = entry.bytes.startIndex
        while start < entry.bytes.endIndex {
            let end = entry.bytes[start...].firstIndex(of: 0x0A).map { $0 + 1 } ?? entry.bytes.endIndex
            output += prefix
            output += entry.bytes[start..<end]
            start = end
        }
        var written = 0
        while written < output.count {
            let count = output[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if count > 0 {
                written += count
            } else if count < 0, errno == EINTR {
                continue
            } else {
                queue.withLock { $0.dropped[entry.name, default: 0] += entry.lines }
                return
            }
        }
    }

    /// One entry per line: the text without whisperd's `<time> <stream> ` stamp (the journal
    /// keeps its own time), the character, the stream and the child's pid.
    private func sendToJournal(_ entry: Entry) {
        let common = [
            Journal.field("CHARACTER", entry.name), Journal.field("SYSLOG_IDENTIFIER", entry.name),
            Journal.field("SYSLOG_PID", String(entry.pid)), Journal.field("CHARACTER_STREAM", entry.stream),
        ]
        var start = entry.bytes.startIndex
        while start < entry.bytes.endIndex {
            let end = entry.bytes[start...].firstIndex(of: 0x0A) ?? entry.bytes.endIndex
            var text = entry.bytes[start..<end]
            // Skip the two stamp fields LineAssembler put in front.
            for _ in 0..<2 {
                if let space = text.firstIndex(of: 0x20) { text = text[(space + 1)...] }
            }
            let (priority, message) = Journal.priority(of: text, stream: entry.stream)
            Journal.send(common + [Journal.field("PRIORITY", String(priority)), Array("MESSAGE=".utf8) + message])
            start = end + 1
        }
    }
}

/// One log file with size-based rotation: `name.log`, `name.log.1`, … `name.log.(maxFiles-1)`.
final class OpenLogFile {
    let policy: LogWriter.FilePolicy
    private var fd: Int32 = -1
    private var size: UInt64 = 0
    /// When the disk last refused a write and this file was rotated early for it.
    private var lastRotationForSpace: Int64 = .min
    private let spaceRotationInterval: Int64

    init(policy: LogWriter.FilePolicy, spaceRotationInterval: Int64 = 1_000_000_000) {
        self.policy = policy
        self.spaceRotationInterval = spaceRotationInterval
    }

    /// Appends whole lines, rotating whenever the next line would pass the size limit, so no
    /// file grows past it (a single line longer than the limit gets a file to itself).
    /// `false`: bytes lost.
    ///
    /// When the disk is full, the file is rotated early (at most once a second) and the write
    /// tried again: rotating drops this character's oldest file, so the newest lines win, as
    /// with journald's vacuuming. Without it a character whose own logs filled the disk kept
    /// its old lines and lost every new one for good, since its current file never reached
    /// the size that rotates it.
    func write(_ bytes: [UInt8]) -> Bool {
        if writeLines(bytes) { return true }
        guard errno == ENOSPC || errno == EDQUOT else { return false }
        let now = Clock.monotonicNanoseconds()
        guard lastRotationForSpace == .min || now - lastRotationForSpace >= spaceRotationInterval else { return false }
        lastRotationForSpace = now
        if fd < 0, !reopen() { return false }
        guard size > 0 || policy.maxFiles > 1 else { return false }
        rotate()
        return writeLines(bytes)
    }

    private func writeLines(_ bytes: [UInt8]) -> Bool {
        if fd < 0, !reopen() { return false }
        var start = 0
        while start < bytes.count {
            let room = policy.maxSizeBytes > size ? Int(policy.maxSizeBytes - size) : 0
            // The longest run of whole lines that fits in the room left.
            var end = start
            var scan = start
            while scan < bytes.count, scan - start < room {
                if bytes[scan] == 0x0A { end = scan + 1 }
                scan += 1
            }
            if end == start {
                if size > 0 {
                    rotate()
                    if fd < 0 { return false }
                    continue
                }
                end = bytes[start...].firstIndex(of: 0x0A).map { $0 + 1 } ?? bytes.count
            }
            guard writeAll(bytes[start..<end]) else { return false }
            start = end
        }
        return true
    }

    private func writeAll(_ slice: ArraySlice<UInt8>) -> Bool {
        var offset = slice.startIndex
        while offset < slice.endIndex {
            let written = slice[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                // ENOSPC and friends: drop, and try a fresh file next time (errno kept for `write`).
                let failure = errno
                Glibc.close(fd)
                fd = -1
                errno = failure
                return false
            }
            offset += written
        }
        size += UInt64(slice.count)
        return true
    }

    private func reopen() -> Bool {
        fd = open(policy.path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { return false }
        var info = stat()
        size = fstat(fd, &info) == 0 ? UInt64(info.st_size) : 0
        return true
    }

    private func rotate() {
        Glibc.close(fd)
        fd = -1
        if policy.maxFiles <= 1 {
            unlink(policy.path)
        } else {
            unlink("\(policy.path).\(policy.maxFiles - 1)")
            var index = policy.maxFiles - 2
            while index >= 1 {
                rename("\(policy.path).\(index)", "\(policy.path).\(index + 1)")
                index -= 1
            }
            rename(policy.path, "\(policy.path).1")
        }
        _ = reopen()
    }

    func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}

/// Cuts a child's output into lines and stamps each with time and stream.
public struct LineAssembler: Sendable {
    public let stream: String
    private var partial: [UInt8] = []
    private let maxLine: Int

    public init(stream: String, maxLine: Int = 16 * 1024, partial: [UInt8] = []) {
        self.stream = stream
        self.maxLine = maxLine
        self.partial = partial
    }

    /// Bytes of a line not finished yet (handed over across a re-exec).
    public var unfinishedLine: [UInt8] { partial }

    /// Returns formatted lines (`<time> <stream> <text>\n`) and how many there are.
    public mutating func feed(_ chunk: ArraySlice<UInt8>, now realtimeNanoseconds: Int64) -> (bytes: [UInt8], lines: Int) {
        var output: [UInt8] = []
        var lines = 0
        let prefix = Array((Clock.iso8601(realtimeNanoseconds: realtimeNanoseconds) + " " + stream + " ").utf8)
        var start = chunk.startIndex
        for index in chunk.indices where chunk[index] == 0x0A {
            output += prefix
            output += partial
            output += chunk[start..<index]
            output.append(0x0A)
            partial.removeAll(keepingCapacity: true)
            lines += 1
            start = index + 1
        }
        partial += chunk[start...]
        while partial.count >= maxLine {
            output += prefix
            output += partial[0..<maxLine]
            output.append(0x0A)
            partial.removeFirst(maxLine)
            lines += 1
        }
        return (output, lines)
    }

    /// The unterminated rest, at EOF.
    public mutating func flush(now realtimeNanoseconds: Int64) -> (bytes: [UInt8], lines: Int) {
        guard !partial.isEmpty else { return ([], 0) }
        let prefix = Array((Clock.iso8601(realtimeNanoseconds: realtimeNanoseconds) + " " + stream + " ").utf8)
        let output = prefix + partial + [0x0A]
        partial.removeAll()
        return (output, 1)
    }
}
