/// A connection's peer, what the per-peer limit and the turns between peers are keyed on: an
/// IPv4 address (in its v4-mapped form), an IPv6 address's /64 network (one subscriber's: a
/// client given a /64 has 2^64 addresses to connect from), all zeros for a Unix socket's peer
/// (so all of those are one peer).
public struct PeerAddress: Hashable, Sendable, CustomStringConvertible {
    public let high: UInt64
    public let low: UInt64

    public static let unix = PeerAddress(high: 0, low: 0)

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// From the 16 bytes of an address in network order (an IPv6 address keeps its /64).
    public init(bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) {
        let array = withUnsafeBytes(of: bytes) { Array($0) }
        high = array[0..<8].reduce(0) { $0 << 8 | UInt64($1) }
        let low = array[8..<16].reduce(0) { $0 << 8 | UInt64($1) }
        self.low = high == 0 && low >> 32 == 0xffff ? low : 0
    }

    /// `a.b.c.d` for an IPv4 peer, the eight groups in hex for IPv6 (its /64, the rest zeros),
    /// `unix` for a Unix socket's (and for IPv6 loopback, whose /64 is all zeros).
    public var description: String {
        if self == .unix { return "unix" }
        if high == 0, low >> 32 == 0xffff {
            return (0..<4).map { String((low >> (24 - 8 * UInt64($0))) & 0xff) }.joined(separator: ".")
        }
        return (0..<8).map { index in
            let word = index < 4 ? high : low
            return String((word >> (48 - 16 * UInt64(index % 4))) & 0xffff, radix: 16)
        }.joined(separator: ":")
    }
}
