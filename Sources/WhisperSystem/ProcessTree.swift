/// Which process tree a pid belongs to, read from /proc.
public enum ProcessTree {
    /// The process group id of `pid`, from /proc/PID/stat (field 5).
    public static func processGroup(of pid: Int32) -> Int32? {
        guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is state, [1] ppid, [2] pgrp
        guard fields.count > 2 else { return nil }
        return Int32(fields[2])
    }

    /// Whether `pid` is `mainPID` or in its process group (the `none` backend's notion of a tree).
    public static func isMember(_ pid: Int32, ofGroupLedBy mainPID: Int32) -> Bool {
        if pid == mainPID { return true }
        return processGroup(of: pid) == mainPID
    }
}
