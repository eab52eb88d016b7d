import Foundation
import Glibc
import Testing

/// Issue 25 with the real binary: `whisperd run-one` as an unprivileged user (as in a pod),
/// `whisperd wait` against listeners that come late, and `whisperd export kubernetes` whose
/// manifests pass kubernetes-validate --strict for Kubernetes 1.31.
extension IntegrationTests {
    @Suite struct KubernetesSection {
        /// Installed by scripts/install-deps.sh test (pinned there), or `$KUBERNETES_VALIDATE`.
        static let validator =
            ProcessInfo.processInfo.environment["KUBERNETES_VALIDATE"] ?? "/var/cache/whisperd-test/kubernetes-validate/bin/kubernetes-validate"
        static let kubernetesVersion = "1.31.0"

        /// Volumes as a pod's emptyDirs are: world-writable, whisperd makes its own directories in them.
        func volume(_ scratch: Scratch) -> String {
            let path = scratch.path + "/volume"
            mkdir(path, 0o777)
            chmod(path, 0o777)
            return path
        }

        func directoryFlags(_ volume: String) -> [String] {
            ["--state-dir", volume + "/state", "--runtime-dir", volume + "/run", "--log-dir", volume + "/logs"]
        }

        // MARK: - run-one

        @Test func runOne_asNobody_readinessOnHealth_outputOnStdout_stopsOnSIGTERM() throws {
            let scratch = Scratch()
            let volume = volume(scratch)
            // Ready only once the test says so: /health must say 503 until then.
            scratch.write("roster.yaml", """
                version: 1
                characters:
                  greeter:
                    command: [/bin/sh, -c, 'echo "greeter says $GREETING"; while [ ! -e "$STATE_DIRECTORY/go" ]; do sleep 0.05; done; whisperd notify READY=1; exec sleep 60']
                    health: {ready: notify, watchdog: off}
                    stop_grace: 2s
                """)
            let whisperd = try WhisperdProcess(
                scratch: scratch, extraArguments: directoryFlags(volume), environment: ["GREETING": "hello from the pod's env"], asNobody: true,
                directoryFlags: false, subcommand: ["run-one", "greeter"], readsStandardOutput: true)
            defer { whisperd.terminate() }
            // Its output on whisperd's stdout, prefixed with its name: the pod's log.
            let line = whisperd.waitFor("greeter ", "stdout greeter says hello from the pod's env")
            #expect(line?.hasPrefix("greeter ") == true, "\(line ?? "")")
            #expect(eventually { whisperd.get("/health")?.0 == 503 }, "not ready yet: 503")
            let character = try #require(whisperd.character("greeter"))
            let tenant = try #require(character["tenant"] as? [String: Any])
            #expect(tenant["uid"] as? Int == 65534, "the character runs as whisperd's own unprivileged user")
            #expect(eventually { FileManager.default.fileExists(atPath: volume + "/state/greeter") })
            #expect(FileManager.default.createFile(atPath: volume + "/state/greeter/go", contents: nil))
            whisperd.waitFor("greeter: starting -> running", "READY=1")
            #expect(eventually { whisperd.get("/health")?.0 == 200 }, "ready: 200 for the kubelet")
            whisperd.signal(SIGTERM)
            #expect(whisperd.waitForExit() == 0)
            #expect(whisperd.count("greeter: running -> stopping") == 1)
        }

        @Test func runOne_ofAJob_exitsWithItsOutcome() throws {
            let scratch = Scratch()
            let volume = volume(scratch)
            scratch.write("roster.yaml", """
                version: 1
                jobs:
                  works: {command: [/bin/sh, -c, 'echo migrated'], run: every-start}
                  breaks: {command: [/bin/sh, -c, 'echo no database >&2; exit 3'], restart: "no"}
                  retries: {command: [/bin/sh, -c, 'test -e "$STATE_DIRECTORY/tried" || { touch "$STATE_DIRECTORY/tried"; exit 1; }'], restart: on-failure, restart_delay: 50ms}
                characters:
                  other: {command: [/bin/false], health: {ready: started}}
                """)
            func runOne(_ name: String) throws -> CommandResult {
                try runCommand(
                    "/usr/bin/setpriv",
                    ["--reuid=65534", "--regid=65534", "--clear-groups", "--", whisperdBinary(), "run-one", name, "--roster", scratch.path + "/roster.yaml",
                     "--http", "off"] + directoryFlags(volume + "/" + name))
            }
            let works = try runOne("works")
            #expect(works.code == 0, "\(works.stderr)")
            #expect(works.stdout.contains("works ") && works.stdout.contains("stdout migrated"), "\(works.stdout)")
            #expect(!works.stderr.contains("other"), "only the service asked for runs")
            let breaks = try runOne("breaks")
            #expect(breaks.code == 1, "\(breaks.stderr)")
            #expect(breaks.stdout.contains("stderr no database"))
            let retries = try runOne("retries")
            #expect(retries.code == 0, "\(retries.stderr)")
            #expect(retries.stderr.contains("retries: backoff") || retries.stderr.contains("-> backoff"), "\(retries.stderr)")
            let unknown = try runOne("nobody-here")
            #expect(unknown.code == 1 && unknown.stderr.contains("no character or job `nobody-here` in this roster"), "\(unknown.stderr)")
        }

        @Test func runOne_ofAReplica_takesItsIndexFromTheHostName() throws {
            let scratch = Scratch()
            let volume = volume(scratch)
            scratch.write("roster.yaml", """
                version: 1
                characters:
                  shard:
                    command: [/bin/sh, -c, 'echo "index $REPLICA_INDEX of $REPLICA_COUNT on port $API_PORT"']
                    health: {ready: started}
                    restart: "no"
                    replicas: 3
                    port: 8100
                """)
            func runOne(_ environment: [String: String]) throws -> CommandResult {
                var base = ProcessInfo.processInfo.environment
                base.merge(environment) { _, new in new }
                return try runCommand(
                    whisperdBinary(), ["run-one", "shard", "--roster", scratch.path + "/roster.yaml", "--http", "off"] + directoryFlags(volume),
                    environment: base)
            }
            // A StatefulSet's pod: the downward API's label is empty where the engine does not set it.
            let second = try runOne(["HOSTNAME": "shard-2", "REPLICA_INDEX": ""])
            #expect(second.code == 0, "\(second.stderr)")
            #expect(second.stdout.contains("stdout index 2 of 3 on port 8100"), "\(second.stdout)")
            let labelled = try runOne(["HOSTNAME": "shard-2", "REPLICA_INDEX": "1"])
            #expect(labelled.stdout.contains("stdout index 1 of 3"), "\(labelled.stdout)")
            let nameless = try runOne(["HOSTNAME": "shard", "REPLICA_INDEX": ""])
            #expect(nameless.code == 1 && nameless.stderr.contains("run-one needs the pod's ordinal"), "\(nameless.stderr)")
        }

        // MARK: - wait

        @Test func wait_tcp_succeedsWhenTheListenerAppearsLate() throws {
            let port = freePort()
            let process = Process()
            process.executableURL = URL(fileURLWithPath: whisperdBinary())
            process.arguments = ["wait", "--tcp", "127.0.0.1:\(port)", "--timeout", "20s"]
            let output = Pipe()
            process.standardOutput = output
            try process.run()
            defer { if process.isRunning { process.terminate() } }
            // The scenario: nothing listens for a while (several refused attempts), then it does.
            usleep(400_000)
            #expect(process.isRunning, "nothing listens yet: still waiting")
            let listener = try Listener(port: port, answers: [])
            defer { listener.close() }
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(text.contains("tcp 127.0.0.1:\(port) answered after"), "\(text)")
            #expect(!text.contains("(1 attempt)"), "the first attempts were refused: \(text)")
        }

        @Test func wait_http_needsA2xx_notJustAnAnswer() throws {
            let port = freePort()
            // Up at once, but not ready: two 503s, then 200.
            let listener = try Listener(port: port, answers: ["503 Service Unavailable", "503 Service Unavailable", "200 OK"])
            defer { listener.close() }
            let result = try runCommand(whisperdBinary(), ["wait", "--http", "http://127.0.0.1:\(port)/health", "--timeout", "20s"])
            #expect(result.code == 0, "\(result.stderr)")
            #expect(result.stdout.contains("(3 attempts)"), "\(result.stdout)")
            #expect(listener.paths.value.allSatisfy { $0 == "/health" } && listener.paths.value.count == 3)
        }

        @Test func wait_timesOutWithTheLastFailure_andRefusesBadTargets() throws {
            let closed = freePort()
            let timedOut = try runCommand(whisperdBinary(), ["wait", "--tcp", "127.0.0.1:\(closed)", "--timeout", "600ms"])
            #expect(timedOut.code == 1)
            #expect(timedOut.stderr.contains("did not answer within 600ms") && timedOut.stderr.contains("Connection refused"), "\(timedOut.stderr)")
            let https = try runCommand(whisperdBinary(), ["wait", "--http", "https://db/health"])
            #expect(https.code != 0 && https.stderr.contains("https is not supported"), "\(https.stderr)")
            let both = try runCommand(whisperdBinary(), ["wait", "--tcp", "a:1", "--http", "http://a/"])
            #expect(both.code != 0 && both.stderr.contains("exactly one"), "\(both.stderr)")
            let badTimeout = try runCommand(whisperdBinary(), ["wait", "--tcp", "a:1", "--timeout", "soon"])
            #expect(badTimeout.code != 0 && badTimeout.stderr.contains("not a duration"), "\(badTimeout.stderr)")
        }

        // MARK: - export kubernetes

        func validate(_ manifests: String, _ name: String) throws {
            guard FileManager.default.isExecutableFile(atPath: Self.validator) else {
                Issue.record("\(Self.validator) is missing: run scripts/install-deps.sh test")
                return
            }
            let scratch = Scratch()
            let file = scratch.write(name, manifests)
            let result = try runCommand(Self.validator, ["--strict", "--kubernetes-version", Self.kubernetesVersion, "--quiet", file])
            #expect(result.code == 0, "\(name): \(result.stdout)\(result.stderr)")
            #expect(!(result.stdout + result.stderr).contains("ERROR"), "\(result.stdout)\(result.stderr)")
        }

        @Test(arguments: ["etc/roster.yaml", "etc/stack.yaml"])
        func export_samples_passKubernetesValidateStrict(roster: String) throws {
            let result = try runCommand(whisperdBinary(), ["export", "kubernetes", "--roster", repositoryRoot() + "/" + roster, "--namespace", "whisper"])
            #expect(result.code == 0, "\(result.stderr)")
            #expect(result.stdout.components(separatedBy: "\n---\n").count > 10)
            #expect(result.stdout.contains("namespace: whisper"))
            // The report ends with the counts; every line is `file:line: key: outcome: detail`.
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.last?.hasPrefix("whisperd export kubernetes: ") == true, "\(lines.last ?? "")")
            for line in lines.dropLast() {
                #expect([": mapped: ", ": ignored: ", ": not mappable: ", ": warning: "].contains { line.contains($0) }, "\(line)")
            }
            try validate(result.stdout, (roster as NSString).lastPathComponent)
        }

        @Test func export_secrets_neverInTheReport_andNotAtAllWithSecretsFrom() throws {
            let scratch = Scratch()
            scratch.write(".env.bot", "DISCORD_TOKEN=tok-s3cret-77\nLLM_API_KEY=key-s3cret-78\nLLM_MODEL_NAME=small\n")
            scratch.write("roster.yaml", """
                version: 1
                characters:
                  bot:
                    command: [/bin/sleep, "60"]
                    env_file: [.env.bot]
                    health: {ready: started}
                    replicas: 2
                    port: 8100
                """)
            let embedded = try runCommand(whisperdBinary(), ["export", "kubernetes", "--roster", scratch.path + "/roster.yaml"])
            #expect(embedded.code == 0, "\(embedded.stderr)")
            #expect(!embedded.stderr.contains("s3cret"))
            #expect(embedded.stdout.contains("kind: Secret") && embedded.stdout.contains("DISCORD_TOKEN: tok-s3cret-77"))
            try validate(embedded.stdout, "embedded.yaml")
            let referenced = try runCommand(
                whisperdBinary(), ["export", "kubernetes", "--roster", scratch.path + "/roster.yaml", "--secrets-from", "prod"])
            #expect(referenced.code == 0, "\(referenced.stderr)")
            #expect(!referenced.stdout.contains("s3cret") && !referenced.stderr.contains("s3cret"))
            #expect(!referenced.stdout.contains("kind: Secret"))
            #expect(referenced.stdout.contains("name: prod-bot"))
            #expect(referenced.stderr.contains("create it with keys DISCORD_TOKEN, LLM_API_KEY"), "\(referenced.stderr)")
            try validate(referenced.stdout, "referenced.yaml")
        }

        @Test func export_badInput_exits1WithTheReason_andPrintsNoManifest() throws {
            let scratch = Scratch()
            scratch.write("roster.yaml", "version: 1\ncharacters:\n  my_bot: {command: [/bin/true], health: {ready: started}}\n")
            let badName = try runCommand(whisperdBinary(), ["export", "kubernetes", "--roster", scratch.path + "/roster.yaml"])
            #expect(badName.code == 1 && badName.stdout.isEmpty)
            #expect(badName.stderr.contains("characters.my_bot: `my_bot` cannot name Kubernetes objects"), "\(badName.stderr)")
            let missing = try runCommand(whisperdBinary(), ["export", "kubernetes", "--roster", scratch.path + "/absent.yaml"])
            #expect(missing.code == 1 && missing.stdout.isEmpty && missing.stderr.contains("cannot read"), "\(missing.stderr)")
            scratch.write("typo.yaml", "version: 1\ncharacters:\n  bot: {comand: [/bin/true]}\n")
            let typo = try runCommand(whisperdBinary(), ["export", "kubernetes", "--roster", scratch.path + "/typo.yaml"])
            #expect(typo.code == 1 && typo.stdout.isEmpty && typo.stderr.contains("did you mean `command`"), "\(typo.stderr)")
            let namespace = try runCommand(
                whisperdBinary(), ["export", "kubernetes", "--roster", repositoryRoot() + "/etc/roster.yaml", "--namespace", "No_Such"])
            #expect(namespace.code == 1 && namespace.stdout.isEmpty && namespace.stderr.contains("--namespace"), "\(namespace.stderr)")
        }
    }
}

/// A loopback TCP listener for `whisperd wait`: accepts on a thread of its own; each
/// connection gets the next scripted status line (HTTP), or is just accepted (none scripted).
final class Listener: @unchecked Sendable {
    // @unchecked: `fd` is written once before the thread starts; `paths` is a ThreadSafeBox.
    let fd: Int32
    let paths = ThreadSafeBox([String]())

    init(port: Int, answers: [String]) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.fd = fd
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 16) == 0 else { throw POSIXError(.EADDRINUSE) }
        let paths = self.paths
        Thread {
            var remaining = answers
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                if !remaining.isEmpty {
                    var buffer = [UInt8](repeating: 0, count: 2048)
                    let count = read(client, &buffer, buffer.count)
                    let request = String(decoding: buffer[0..<max(0, count)], as: UTF8.self)
                    paths.update { $0.append(String(request.split(separator: " ").dropFirst().first ?? "")) }
                    let status = remaining.count > 1 ? remaining.removeFirst() : remaining[0]
                    let response = "HTTP/1.1 \(status)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    _ = response.withCString { write(client, $0, strlen($0)) }
                }
                Glibc.close(client)
            }
        }.start()
    }

    func close() {
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}
