/// Which cgroup hierarchies are mounted and where this process sits in each: parsed from
/// `/proc/self/mountinfo` and `/proc/self/cgroup`. Pure, so a fake layout can be tested.
public struct CgroupLayout: Hashable, Sendable {
    /// One mounted hierarchy and this process's cgroup in it.
    public struct Hierarchy: Hashable, Sendable {
        public var mountPoint: String
        /// This process's cgroup, relative to the mount point (always starts with "/").
        public var ownPath: String

        public init(mountPoint: String, ownPath: String) {
            self.mountPoint = mountPoint
            self.ownPath = ownPath
        }

        /// The directory of `path` (a cgroup path relative to this hierarchy's root).
        public func directory(_ path: String) -> String {
            path == "/" ? mountPoint : mountPoint + path
        }
    }

    /// The cgroup2 hierarchy, if mounted.
    public var unified: Hierarchy?
    /// v1 controller name → its hierarchy (co-mounted controllers share one).
    public var controllers: [String: Hierarchy]

    public init(unified: Hierarchy? = nil, controllers: [String: Hierarchy] = [:]) {
        self.unified = unified
        self.controllers = controllers
    }

    /// The controllers whisperd uses from v1 hierarchies.
    public static let v1Controllers = ["freezer", "memory", "cpu", "cpuacct", "pids", "cpuset"]

    public static func current() -> CgroupLayout {
        parse(mountinfo: readSmallFile("/proc/self/mountinfo", limit: 1 << 20) ?? "", selfCgroup: readSmallFile("/proc/self/cgroup") ?? "")
    }

    public static func parse(mountinfo: String, selfCgroup: String) -> CgroupLayout {
        // hierarchy-ID:controllers:path; v2 is "0::/path".
        var unifiedPath: String?
        var v1Paths: [String: String] = [:]
        for line in selfCgroup.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let path = String(parts[2])
            if parts[0] == "0", parts[1].isEmpty {
                unifiedPath = path
            } else {
                for controller in parts[1].split(separator: ",") { v1Paths[String(controller)] = path }
            }
        }

        var layout = CgroupLayout()
        for line in mountinfo.split(separator: "\n") {
            // id parent major:minor root mountpoint options [optional…] - fstype source superoptions
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let dash = fields.firstIndex(of: "-"), dash >= 6, fields.count > dash + 3 else { continue }
            let root = unescape(fields[3])
            let mountPoint = unescape(fields[4])
            let fsType = fields[dash + 1]
            let superOptions = fields[dash + 3].split(separator: ",").map(String.init)
            if fsType == "cgroup2" {
                guard layout.unified == nil, let own = unifiedPath else { continue }
                layout.unified = Hierarchy(mountPoint: mountPoint, ownPath: relative(own, toMountRoot: root))
            } else if fsType == "cgroup" {
                for controller in superOptions where v1Controllers.contains(controller) {
                    guard layout.controllers[controller] == nil, let own = v1Paths[controller] else { continue }
                    layout.controllers[controller] = Hierarchy(mountPoint: mountPoint, ownPath: relative(own, toMountRoot: root))
                }
            }
        }
        return layout
    }

    /// A bind-mounted subtree (e.g. a container without a cgroup namespace) has a mount root
    /// that prefixes the paths in /proc/self/cgroup.
    private static func relative(_ path: String, toMountRoot root: String) -> String {
        guard root != "/", path == root || path.hasPrefix(root + "/") else { return path }
        let rest = String(path.dropFirst(root.count))
        return rest.isEmpty ? "/" : rest
    }

    /// mountinfo escapes space, tab, newline and backslash as octal.
    private static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        var iterator = Array(field.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "\\"), iterator.count >= 3,
                let value = UInt8(String(decoding: iterator.prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                iterator = iterator.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
