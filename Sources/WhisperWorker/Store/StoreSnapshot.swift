import CWorkerLibs
import Foundation

/// A consistent copy of a live SQLite store, for `whisperctl backup`: `VACUUM INTO` on a
/// read-only connection reads one snapshot of the database (the worker's WAL included), while
/// the worker goes on writing, and writes a compact copy.
public enum StoreSnapshot {
    public static func copy(sqlite source: String, to destination: String) throws {
        try WorkerLibraries.load(.sqlite)
        var handle: OpaquePointer?
        // SQLITE_OPEN_NOFOLLOW (3.31+): the store's directory is a character's; no symlink there.
        let noFollow: Int32 = 0x0100_0000
        guard wl_sqlite3_open_v2(source, &handle, SQLITE_OPEN_READONLY | noFollow, nil) == SQLITE_OK, let handle else {
            let message = handle.map { String(cString: wl_sqlite3_errmsg($0)) } ?? "out of memory"
            if let handle { wl_sqlite3_close_v2(handle) }
            throw StoreError("cannot open \(source): \(message)")
        }
        defer { wl_sqlite3_close_v2(handle) }
        wl_sqlite3_busy_timeout(handle, 5000)
        var statement: OpaquePointer?
        guard wl_sqlite3_prepare_v3(handle, "VACUUM INTO ?1", -1, 0, &statement, nil) == SQLITE_OK, let statement else {
            throw StoreError("sqlite: \(String(cString: wl_sqlite3_errmsg(handle)))")
        }
        defer { wl_sqlite3_finalize(statement) }
        _ = wl_sqlite3_bind_text_transient(statement, 1, destination, -1)
        guard wl_sqlite3_step(statement) == SQLITE_DONE else {
            throw StoreError("snapshot of \(source): \(String(cString: wl_sqlite3_errmsg(handle)))")
        }
    }
}
