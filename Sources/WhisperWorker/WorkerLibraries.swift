import CWorkerLibs

/// libcurl, libsqlite3 and libpq, loaded on first use (see `worker_libs.h` for why they are
/// not linked). Loading twice is a no-op.
public enum WorkerLibraries {
    public static func load() throws {
        var message = [CChar](repeating: 0, count: 512)
        guard whisper_worker_libs_load(&message, message.count) == 0 else {
            throw StoreError(String(decoding: message.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
    }
}
