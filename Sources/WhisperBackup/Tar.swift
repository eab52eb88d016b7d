/// The ustar format (POSIX.1-1988), enough for a backup: regular files with a mode, in order.
/// Written and read in memory: backups of character stores are megabytes, not gigabytes.
public enum Tar {
    public struct Entry: Equatable, Sendable {
        public var path: String
        public var mode: Int
        public var bytes: [UInt8]

        public init(path: String, mode: Int, bytes: [UInt8]) {
            self.path = path
            self.mode = mode
            self.bytes = bytes
        }
    }

    public struct Damaged: Error, CustomStringConvertible {
        public var description: String
    }

    /// The longest path a plain ustar header holds (no prefix field, no PAX).
    public static let maxPathBytes = 100

    public static func write(_ entries: [Entry], mtime: Int) -> [UInt8] {
        var archive: [UInt8] = []
        for entry in entries {
            var header = [UInt8](repeating: 0, count: 512)
            func put(_ text: String, at offset: Int, width: Int) {
                for (index, byte) in text.utf8.prefix(width).enumerated() { header[offset + index] = byte }
            }
            func octal(_ value: Int, at offset: Int, width: Int) {
                put(String(value, radix: 8).leftPadded(to: width - 1), at: offset, width: width - 1)
            }
            put(entry.path, at: 0, width: 100)
            octal(entry.mode, at: 100, width: 8)
            octal(0, at: 108, width: 8)
            octal(0, at: 116, width: 8)
            octal(entry.bytes.count, at: 124, width: 12)
            octal(mtime, at: 136, width: 12)
            header[156] = UInt8(ascii: "0")
            put("ustar", at: 257, width: 6)
            put("00", at: 263, width: 2)
            for offset in 148..<156 { header[offset] = 0x20 }
            let checksum = header.reduce(0) { $0 + Int($1) }
            put(String(checksum, radix: 8).leftPadded(to: 6), at: 148, width: 6)
            header[154] = 0
            archive += header
            archive += entry.bytes
            archive += [UInt8](repeating: 0, count: (512 - entry.bytes.count % 512) % 512)
        }
        archive += [UInt8](repeating: 0, count: 1024)
        return archive
    }

    /// Every entry, or `Damaged` for a bad checksum, a short file, a missing end, or a path that
    /// is absolute or climbs (`..`): nothing of a damaged archive is used.
    public static func read(_ archive: [UInt8]) throws(Damaged) -> [Entry] {
        var entries: [Entry] = []
        var offset = 0
        while true {
            guard offset + 512 <= archive.count else { throw Damaged(description: "the archive is cut short (no end marker)") }
            let header = archive[offset..<offset + 512]
            if header.allSatisfy({ $0 == 0 }) { return entries }
            func field(_ start: Int, _ width: Int) -> String {
                let bytes = header[(offset + start)..<(offset + start + width)].prefix { $0 != 0 }
                return String(decoding: bytes, as: UTF8.self).trimmingSpaces
            }
            var sum = 0
            for (index, byte) in header.enumerated() { sum += (148..<156).contains(index) ? 0x20 : Int(byte) }
            guard Int(field(148, 8), radix: 8) == sum else { throw Damaged(description: "entry \(entries.count + 1): bad header checksum") }
            let sizeText = field(124, 12)
            let modeText = field(100, 8)
            guard !sizeText.isEmpty, sizeText.count <= 11, sizeText.allSatisfy({ ("0"..."7").contains($0) }),
                !modeText.isEmpty, modeText.allSatisfy({ ("0"..."7").contains($0) }),
                let size = Int(sizeText, radix: 8), let mode = Int(modeText, radix: 8), size <= archive.count - offset - 512
            else { throw Damaged(description: "entry \(entries.count + 1): bad size or mode") }
            let path = field(0, 100)
            guard !path.isEmpty, !path.hasPrefix("/"), !path.split(separator: "/").contains("..") else {
                throw Damaged(description: "entry \(entries.count + 1): refused path `\(path.prefix(100))`")
            }
            guard header[offset + 156] == UInt8(ascii: "0") || header[offset + 156] == 0 else {
                throw Damaged(description: "\(path): only regular files are expected")
            }
            let start = offset + 512
            guard start + size <= archive.count else { throw Damaged(description: "\(path): cut short") }
            entries.append(Entry(path: path, mode: mode, bytes: Array(archive[start..<start + size])))
            offset = start + size + (512 - size % 512) % 512
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }

    fileprivate var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
