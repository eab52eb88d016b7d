import CWhisperLinux
import Glibc

/// Who is on the other end of a Unix socket, as the kernel recorded it at connect()
/// (SO_PEERCRED, SO_PEERGROUPS): no /proc lookup, so it works under `ProtectProc=invisible`
/// and cannot race with the peer exiting.
public struct PeerCredentials: Sendable {
    public let pid: Int32
    public let uid: UInt32
    public let gid: UInt32
    public let supplementaryGroups: [UInt32]

    public init?(socket fd: Int32) {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        guard whisper_peer_credentials(fd, &pid, &uid, &gid) == 0 else { return nil }
        self.pid = pid
        self.uid = uid
        self.gid = gid
        var groups = [gid_t](repeating: 0, count: 256)
        var count = whisper_peer_groups(fd, &groups, Int32(groups.count))
        if count > groups.count {  // More than 256 groups: ask again with room for all.
            groups = [gid_t](repeating: 0, count: Int(count))
            count = whisper_peer_groups(fd, &groups, Int32(groups.count))
        }
        supplementaryGroups = count > 0 ? Array(groups[0..<min(Int(count), groups.count)]) : []
    }

    /// Whether the peer is in group `gid`, as primary or supplementary group.
    public func isMember(ofGroup gid: UInt32) -> Bool {
        self.gid == gid || supplementaryGroups.contains(gid)
    }
}
