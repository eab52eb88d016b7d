import Foundation
import Glibc
import Testing

/// A throwaway PostgreSQL 15 cluster: `initdb` in a temp dir, the server on a loopback port
/// (run as user `postgres` through `setpriv`, which execs, so the pid is the postmaster's),
/// stopped and removed when the test lets go of it.
final class TestPostgres {
    static let bin = "/usr/lib/postgresql/15/bin"
    let directory: String
    let port: Int
    private(set) var server: ChildProcess

    var url: String { "postgresql://whisperd@127.0.0.1:\(port)/whisperd" }

    init() throws {
        var template = Array("/tmp/wd-pg-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        guard let account = getpwnam("postgres") else { throw TestFailure("no postgres user (install postgresql-15)") }
        chown(directory, account.pointee.pw_uid, account.pointee.pw_gid)
        let asPostgres = ["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
        let initdb = try runCommand(
            "/usr/bin/setpriv", asPostgres + [Self.bin + "/initdb", "-D", directory + "/data", "-A", "trust", "-U", "whisperd", "--no-sync", "-E", "UTF8"])
        guard initdb.code == 0 else { throw TestFailure("initdb failed: \(initdb.stderr)") }
        port = freePortBelowEphemeralRange()
        server = try Self.startServer(directory: directory, port: port)
        let created = try runCommand("/usr/bin/createdb", ["-h", "127.0.0.1", "-p", String(port), "-U", "whisperd", "whisperd"])
        guard created.code == 0 else { throw TestFailure("createdb failed: \(created.stderr)") }
    }

    private static func startServer(directory: String, port: Int) throws -> ChildProcess {
        let server = try ChildProcess(
            "/usr/bin/setpriv",
            [
                "--reuid=postgres", "--regid=postgres", "--init-groups", "--", bin + "/postgres", "-D", directory + "/data", "-p", String(port),
                "-k", directory, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
            ], environment: ["PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"])
        guard server.waitFor("database system is ready to accept connections", timeout: 30) != nil else {
            throw TestFailure("postgres did not start: \(server.output)")
        }
        return server
    }

    /// Starts the stopped server again, same data, same port.
    func restart() throws {
        server = try Self.startServer(directory: directory, port: port)
    }

    /// One SQL statement through psql; its rows, `|`-separated.
    func query(_ sql: String) throws -> [String] {
        let result = try runCommand("/usr/bin/psql", [url, "-At", "-c", sql])
        guard result.code == 0 else { throw TestFailure("psql: \(result.stderr)") }
        return result.stdout.split(separator: "\n").map(String.init)
    }

    /// A trigger that makes every insert of a message whose content starts "refuse" fail
    /// (a statement failing inside a batch, on demand); `allowAllMessages` drops it.
    func refuseMessagesStartingRefuse() throws {
        _ = try query(
            """
            CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
              IF NEW.content LIKE 'refuse%' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION refuse();
            """)
    }

    func allowAllMessages() throws {
        _ = try query("DROP TRIGGER refuse ON messages; DROP FUNCTION refuse()")
    }

    /// Stops the server (fast shutdown) and waits, so the data directory can go.
    func stop() {
        server.kill(SIGINT)
        _ = server.waitForExit(timeout: 20)
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }
}
