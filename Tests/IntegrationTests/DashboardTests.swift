import Foundation
import Glibc
import Testing

/// The web dashboard's routes on the real binary, without a browser (scripts/e2e-dashboard.sh
/// drives Chromium): the charts' samples, the session gate, the character-file writer.
extension IntegrationTests {
    @Suite struct DashboardSection {
        struct Samples: Decodable {
            struct Point: Decodable {
                var age_seconds: Double
                var memory_bytes: UInt64?
                var cpu_percent: Double?
                var restarts: Int
            }
            var interval_seconds: Double
            var memory_limit_bytes: UInt64?
            var points: [Point]
        }

        struct Session: Decodable {
            var logged_in: Bool
            var csrf: String?
        }

        /// An HTTP exchange: status and body.
        static func exchange(_ port: Int, _ method: String, _ path: String, headers: [String] = [], body: String = "") -> (Int, String) {
            let head = (["\(method) \(path) HTTP/1.1", "Host: 127.0.0.1:\(port)", "Content-Length: \(body.utf8.count)", "Connection: close"] + headers)
                .joined(separator: "\r\n")
            let response = rawHTTP(port: port, head + "\r\n\r\n" + body) ?? ""
            let status = Int(response.split(separator: " ").dropFirst().first ?? "") ?? 0
            let parts = response.components(separatedBy: "\r\n\r\n")
            return (status, parts.dropFirst().joined(separator: "\r\n\r\n"))
        }

        /// Logs in with the URL `whisperctl dashboard` prints: the headers a change needs.
        static func logIn(_ whisperd: WhisperdProcess) throws -> [String] {
            let printed = try whisperd.ctl("dashboard")
            #expect(printed.code == 0, "\(printed.stderr)")
            let url = try #require(URL(string: printed.stdout.trimmingCharacters(in: .whitespacesAndNewlines)))
            let response = rawHTTP(
                port: whisperd.httpPort, "GET \(url.path)?\(url.query ?? "") HTTP/1.1\r\nHost: 127.0.0.1:\(whisperd.httpPort)\r\nConnection: close\r\n\r\n") ?? ""
            let cookieLine = try #require(response.components(separatedBy: "\r\n").first { $0.hasPrefix("Set-Cookie: ") })
            let cookie = "Cookie: " + String(cookieLine.dropFirst("Set-Cookie: ".count).prefix { $0 != ";" })
            let (_, body) = exchange(whisperd.httpPort, "GET", "/dashboard/api/session", headers: [cookie])
            let session = try JSONDecoder().decode(Session.self, from: Data(body.utf8))
            #expect(session.logged_in)
            return [cookie, "X-CSRF-Token: \(session.csrf ?? "")", "Origin: http://127.0.0.1:\(whisperd.httpPort)"]
        }

        @Test func samplesFillTheCharts_everyFiveSeconds() throws {
            let scratch = Scratch()
            scratch.write(
                "roster.yaml",
                fastDefaults + "characters:\n  elena: {command: [sh, -c, 'while :; do :; done'], limits: {memory: 64M, cpus: 0.2}}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            _ = whisperd.waitFor("elena: starting -> running")
            var samples: Samples?
            // The sampler reads every 5 s: two points (the second with a CPU share) within 12 s.
            #expect(
                eventually(timeout: 12) {
                    let (code, body) = Self.exchange(whisperd.httpPort, "GET", "/dashboard/api/characters/elena/samples")
                    guard code == 200 else { return false }
                    samples = try? JSONDecoder().decode(Samples.self, from: Data(body.utf8))
                    return (samples?.points.count ?? 0) >= 2
                })
            let points = try #require(samples?.points)
            #expect(samples?.interval_seconds == 5)
            #expect(samples?.memory_limit_bytes == 64 << 20)
            #expect(points.allSatisfy { ($0.memory_bytes ?? 0) > 0 && $0.restarts == 0 })
            #expect(zip(points, points.dropFirst()).allSatisfy { $0.age_seconds > $1.age_seconds }, "oldest first")
            // A busy loop held to 0.2 CPUs: its CPU share is near 20 %, not 0 and not a whole core.
            let cpu = try #require(points.last?.cpu_percent)
            #expect(cpu > 5 && cpu < 40, "\(cpu)")
            #expect(Self.exchange(whisperd.httpPort, "GET", "/dashboard/api/characters/nobody/samples").0 == 404)
            // A Host without whisperd's port is not whisperd's own name (a rebound name).
            #expect(whisperd.get("/dashboard/api/characters/elena/samples")?.0 == 421)
        }

        @Test func edits_areValidated_keepOwnerAndMode_refuseSymlinks_andRestart() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters_dir: characters\ncharacters:\n  elena: {command: [sleep, '300']}\n")
            let persona = scratch.write("characters/elena/character.md", "You are Elena.\n")
            chown(persona, 65534, 65534)
            chmod(persona, 0o604)
            scratch.write("outside.txt", "not a character file\n")
            symlink(scratch.path + "/outside.txt", scratch.path + "/characters/elena/goals.yaml")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            let first = try #require(WhisperdProcess.pid(in: whisperd.waitFor("elena: starting -> running")))
            let port = whisperd.httpPort
            let put = { (file: String, text: String, headers: [String]) in
                Self.exchange(port, "PUT", "/dashboard/api/characters/elena/files/\(file)", headers: headers, body: text)
            }

            // Without a session: refused, nothing written.
            #expect(put("character.md", "Marker: EVIL", ["Origin: http://127.0.0.1:\(port)"]).0 == 401)
            #expect(Self.exchange(port, "GET", "/dashboard/api/characters/elena/files").0 == 401)
            let headers = try Self.logIn(whisperd)
            let before = try FileManager.default.attributesOfItem(atPath: persona)

            // Not a character file, a path, an empty character.md, bad YAML: refused, nothing written.
            #expect(put("roster.yaml", "x", headers).0 == 404)
            #expect([400, 404].contains(put("..%2F..%2Froster.yaml", "x", headers).0))
            #expect([400, 404].contains(put("../outside.txt", "x", headers).0))
            let empty = put("character.md", "", headers)
            #expect(empty.0 == 422 && empty.1.contains("character.md"), "\(empty)")
            let badYAML = put("core.yaml", "purpose: [unclosed", headers)
            #expect(badYAML.0 == 422 && badYAML.1.contains("core.yaml"), "\(badYAML)")
            #expect(scratch.read("characters/elena/core.yaml") == nil)
            // A symlink is neither followed nor replaced.
            let throughLink = put("goals.yaml", "goals: []\n", headers)
            #expect(throughLink.0 == 500 && throughLink.1.contains("not a regular file"), "\(throughLink)")
            #expect(scratch.read("outside.txt") == "not a character file\n")
            #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: scratch.path + "/characters/elena/goals.yaml")) != nil)
            #expect(scratch.read("characters/elena/character.md") == "You are Elena.\n")
            #expect(whisperd.character("elena")?["pid"] as? Int == Int(first), "nothing was restarted")

            // A good edit: same owner and mode, a new inode, no temporary left, elena restarted.
            let saved = put("character.md", "You are Elena, edited.\n", headers)
            #expect(saved.0 == 200 && saved.1.contains("\"restarted\":[\"elena\"]"), "\(saved)")
            #expect(scratch.read("characters/elena/character.md") == "You are Elena, edited.\n")
            let after = try FileManager.default.attributesOfItem(atPath: persona)
            #expect(after[.ownerAccountID] as? Int == 65534 && after[.groupOwnerAccountID] as? Int == 65534)
            #expect(after[.posixPermissions] as? Int == 0o604)
            #expect(after[.systemFileNumber] as? Int != before[.systemFileNumber] as? Int, "replaced by rename, not rewritten")
            let entries = try FileManager.default.contentsOfDirectory(atPath: scratch.path + "/characters/elena")
            #expect(Set(entries) == ["character.md", "goals.yaml"], "\(entries)")
            #expect(whisperd.waitFor("elena: starting -> running", occurrence: 2) != nil)
            #expect(whisperd.waitFor("dashboard: session", "saved", "character.md", "restarting elena") != nil)
        }

        @Test func theLogStreams_andALogoutEndsThem() throws {
            let scratch = Scratch()
            let (whisperd, headers) = try Self.talker(scratch)
            defer { whisperd.terminate() }
            let fd = try #require(Self.followTalker(whisperd, headers, receiveTimeout: 5))
            defer { close(fd) }
            var received = ""
            var buffer = [UInt8](repeating: 0, count: 4096)
            // Live lines arrive as events, one `data:` a line.
            while received.components(separatedBy: "data: ").count < 6 {
                let count = recv(fd, &buffer, buffer.count, 0)
                guard count > 0 else { break }
                received += String(decoding: buffer[0..<count], as: UTF8.self)
            }
            #expect(received.hasPrefix("HTTP/1.1 200") && received.contains("Content-Type: text/event-stream"), "\(received.prefix(300))")
            #expect(received.contains("stdout tick\n\ndata: "), "\(received.suffix(300))")
            #expect(Self.exchange(whisperd.httpPort, "POST", "/logout", headers: headers).0 == 200)
            // The stream ends (EOF) within the receive timeout, not at it.
            let started = Date()
            while recv(fd, &buffer, buffer.count, 0) > 0 {}
            #expect(Date().timeIntervalSince(started) < 4, "the stream outlived the logout")
        }

        /// whisperd with one character that writes a line every 0.2 s, and a logged-in session.
        static func talker(_ scratch: Scratch, extraArguments: [String] = []) throws -> (WhisperdProcess, [String]) {
            scratch.write(
                "roster.yaml", fastDefaults + "characters:\n  talker: {command: [sh, -c, 'while :; do echo tick; sleep 0.2; done']}\n")
            let whisperd = try WhisperdProcess(scratch: scratch, extraArguments: extraArguments)
            _ = whisperd.waitFor("talker: starting -> running")
            do {
                return (whisperd, try logIn(whisperd))
            } catch {
                whisperd.terminate()
                throw error
            }
        }

        /// A connection following the talker's log (the request sent); nil when none connects.
        static func followTalker(_ whisperd: WhisperdProcess, _ headers: [String], receiveTimeout seconds: Int) -> Int32? {
            guard let fd = connectLoopback(port: whisperd.httpPort) else { return nil }
            var timeout = timeval(tv_sec: seconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let request = "GET /dashboard/api/characters/talker/logs HTTP/1.1\r\nHost: 127.0.0.1:\(whisperd.httpPort)\r\n\(headers[0])\r\n\r\n"
            _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
            return fd
        }

        /// A log tail lives no longer than its login: once the session expires, the stream
        /// ends (at the character's next line) and the cookie reads nothing more.
        @Test func aLogStream_endsWhenItsSessionExpires() throws {
            let scratch = Scratch()
            let (whisperd, headers) = try Self.talker(scratch, extraArguments: ["--dashboard-session-lifetime", "3s"])
            defer { whisperd.terminate() }
            let loggedIn = Date()
            let fd = try #require(Self.followTalker(whisperd, headers, receiveTimeout: 2))
            defer { close(fd) }
            var received = ""
            var buffer = [UInt8](repeating: 0, count: 4096)
            var ended = false
            // The talker writes every 0.2 s: a stream that never ends is given up on at 12 s.
            while Date().timeIntervalSince(loggedIn) < 12 {
                let count = recv(fd, &buffer, buffer.count, 0)
                if count == 0 { ended = true }
                guard count > 0 else { break }
                received += String(decoding: buffer[0..<count], as: UTF8.self)
            }
            let lived = Date().timeIntervalSince(loggedIn)
            #expect(received.hasPrefix("HTTP/1.1 200") && received.contains("data: "), "\(received.prefix(300))")
            #expect(ended, "the stream did not end within the receive timeout")
            #expect(lived >= 2.5 && lived < 9, "the stream lived \(lived) s for a 3 s session")
            let after = Self.exchange(whisperd.httpPort, "GET", "/dashboard/api/characters/talker/logs", headers: headers)
            #expect(after.0 == 401, "an expired session still reads logs: \(after.0)")
        }

        @Test func aWhisperdThatIsNotRoot_writesNoTokenFile_butTheSocketGivesTheURL() throws {
            let scratch = Scratch()
            chmod(scratch.path, 0o777)
            let roster = scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            chmod(roster, 0o644)
            let whisperd = try WhisperdProcess(scratch: scratch, asNobody: true)
            defer { whisperd.terminate() }
            _ = whisperd.waitFor("elena: starting -> running")
            let printed = try whisperd.ctl("dashboard")
            #expect(printed.code == 0 && printed.stdout.contains("/login?token="), "\(printed)")
            #expect(!printed.stderr.contains("dashboard.token"))
            #expect(access(scratch.path + "/run/dashboard.token", F_OK) != 0)
            // The token printed logs in.
            _ = try Self.logIn(whisperd)
        }

        @Test func theOldReadOnlyRoutesStayReadOnly_andAForeignHostIsRefused() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", fastDefaults + "characters:\n  elena: {command: [sleep, '300']}\n")
            let whisperd = try WhisperdProcess(scratch: scratch)
            defer { whisperd.terminate() }
            _ = whisperd.waitFor("elena: starting -> running")
            let headers = try Self.logIn(whisperd)
            // A session opens the dashboard's routes, not the control routes on this port (405: GET, HEAD only).
            #expect(Self.exchange(whisperd.httpPort, "POST", "/v1/characters/elena/restart", headers: headers).0 == 405)
            #expect(Self.exchange(whisperd.httpPort, "POST", "/v1/reload", headers: headers).0 == 405)
            // The dashboard's own routes: a method the contract does not list is 405 with `Allow`.
            let deleted = rawHTTP(
                port: whisperd.httpPort,
                "DELETE /dashboard/api/characters/elena/files/character.md HTTP/1.1\r\nHost: 127.0.0.1:\(whisperd.httpPort)\r\nConnection: close\r\n\r\n") ?? ""
            #expect(deleted.hasPrefix("HTTP/1.1 405") && deleted.contains("\r\nAllow: PUT\r\n"), "\(deleted)")
            #expect(Self.exchange(whisperd.httpPort, "GET", "/dashboard/api/characters/elena/restart", headers: headers).0 == 405)
            #expect(Self.exchange(whisperd.httpPort, "POST", "/dashboard/api/session", headers: headers).0 == 405)
            // HEAD of the live log tail: its head, and the connection ends (no stream is left open).
            let head = Self.exchange(whisperd.httpPort, "HEAD", "/dashboard/api/characters/elena/logs", headers: headers)
            #expect(head.0 == 200 && head.1.isEmpty, "\(head)")
            // Start, stop and restart only: the control socket's other operations stay there.
            for operation in ["run", "rolling-restart"] {
                let refused = Self.exchange(whisperd.httpPort, "POST", "/dashboard/api/characters/elena/\(operation)", headers: headers)
                #expect(refused.0 == 404 && refused.1.contains("start, stop, restart"), "\(operation): \(refused)")
            }
            let foreign = rawHTTP(port: whisperd.httpPort, "GET / HTTP/1.1\r\nHost: rebound.example:\(whisperd.httpPort)\r\nConnection: close\r\n\r\n")
            #expect(foreign?.hasPrefix("HTTP/1.1 421") == true, "\(foreign ?? "")")
            let page = rawHTTP(port: whisperd.httpPort, "GET / HTTP/1.1\r\nHost: localhost:\(whisperd.httpPort)\r\nConnection: close\r\n\r\n") ?? ""
            #expect(page.hasPrefix("HTTP/1.1 200") && page.contains("Content-Security-Policy: default-src 'none'; script-src 'self'"))
            #expect(page.contains("<script src=\"/dashboard/app.js\" defer></script>") && !page.contains("<script>"))
        }
    }
}
