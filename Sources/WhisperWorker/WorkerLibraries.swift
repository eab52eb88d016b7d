import CWorkerLibs

/// libcurl, libsqlite3 and libpq, each loaded on first use (see `worker_libs.h` for why they
/// are not linked): a worker maps libcurl and its own store's library, never the other's.
/// Loading twice is a no-op.
public enum WorkerLibraries {
    public struct Set: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let curl = Set(rawValue: UInt32(WL_LIBRARY_CURL))
        public static let sqlite = Set(rawValue: UInt32(WL_LIBRARY_SQLITE))
        public static let postgres = Set(rawValue: UInt32(WL_LIBRARY_POSTGRES))
    }

    public static func load(_ libraries: Set) throws {
        var message = [CChar](repeating: 0, count: 512)
        guard whisper_worker_libs_load(libraries.rawValue, &message, message.count) == 0 else {
            throw StoreError(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }
}
