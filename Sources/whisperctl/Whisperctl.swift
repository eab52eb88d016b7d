import ArgumentParser
import Foundation
import Glibc
import WhisperAPI
import WhisperConfig
import WhisperCore

/// Exit codes of DESIGN.md section 6.
enum Exit {
    static let failed: Int32 = 1
    static let usage: Int32 = 2
    static let unreachable: Int32 = 3
}

struct OperationFailed: Error, CustomStringConvertible {
    let description: String
}

@main
struct Whisperctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whisperctl",
        abstract: "Control a running whisperd through its control socket.",
        discussion: """
            Exit codes: 0 ok, 1 the operation failed (or, with status --check, a character \
            that should be up is not ready), 2 usage, 3 whisperd not reachable.

            The socket is --socket, else $WHISPERD_SOCKET, else /run/whisperd/control.sock.
            """,
        version: "0.1.0",
        subcommands: [Status.self, Start.self, Stop.self, Restart.self, Run.self, Scale.self, Logs.self, Reload.self, Reexec.self, Backup.self, Restore.self, Why.self, Env.self, Check.self, Top.self, Dashboard.self]
    )

    static func main() {
        do {
            var command = try parseAsRoot(movingSocketOption(Array(CommandLine.arguments.dropFirst())))
            try command.run()
        } catch let error as ControlClient.Unreachable {
            FileHandle.standardError.write(Data("whisperctl: \(error)\n".utf8))
            Glibc.exit(Exit.unreachable)
        } catch let error as OperationFailed {
            FileHandle.standardError.write(Data("whisperctl: \(error)\n".utf8))
            Glibc.exit(Exit.failed)
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Glibc.exit(Exit.usage)
            }
            exit(withError: error)
        }
    }
}

extension Whisperctl {
    /// `whisperctl --socket S status` reads as well as `whisperctl status --socket S`:
    /// a `--socket` before the verb is moved after it — or dropped for a verb that does not talk
    /// to whisperd (`check` reads the file), so a socket set once (an alias) works with every verb.
    static func movingSocketOption(_ arguments: [String]) -> [String] {
        var moved: [String] = []
        var others: [String] = []
        var index = 0
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--socket", index + 1 < arguments.count {
                moved = [argument, arguments[index + 1]]
                index += 2
            } else if argument.hasPrefix("--socket=") {
                moved = [argument]
                index += 1
            } else if argument.hasPrefix("-") {
                others.append(argument)
                index += 1
            } else {
                // The verb: the socket option goes right after it.
                let socket = argument == Check._commandName ? [] : moved
                return others + [argument] + socket + arguments[(index + 1)...]
            }
        }
        return arguments
    }
}

/// JSON for a person and for `jq`: indented, keys sorted.
func prettyJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

struct Connection: ParsableArguments {
    @Option(name: .long, help: "The control socket (default: $WHISPERD_SOCKET or /run/whisperd/control.sock).")
    var socket: String?

    var client: ControlClient {
        ControlClient(socketPath: socket ?? ProcessInfo.processInfo.environment["WHISPERD_SOCKET"] ?? "/run/whisperd/control.sock")
    }
}

/// Helpers shared by the verbs.
extension ControlClient {
    func characters() throws -> [CharacterStatus] {
        let response = try get("/v1/characters")
        guard response.status == 200 else {
            throw OperationFailed(description: "unexpected answer (\(response.status)): \(response.errorMessage)")
        }
        return try response.decode(CharacterList.self).characters
    }

    func character(_ name: String) throws -> CharacterStatus {
        let response = try get("/v1/characters/\(name)")
        if response.status == 404 { throw OperationFailed(description: "no character named \(name)") }
        guard response.status == 200 else {
            throw OperationFailed(description: "unexpected answer (\(response.status)): \(response.errorMessage)")
        }
        return try response.decode(CharacterStatus.self)
    }

    /// `/health` answers 503 with the same body while something is not ready.
    func health() throws -> HealthReport {
        let response = try get("/health")
        guard response.status == 200 || response.status == 503 else {
            throw OperationFailed(description: "unexpected answer (\(response.status)): \(response.errorMessage)")
        }
        return try response.decode(HealthReport.self)
    }

    /// An answer to a reload, scale or profile switch: its result, or every problem of the roster.
    func applied<Result: APIModel>(_ response: Response, _ type: Result.Type, _ what: String) throws -> Result {
        switch response.status {
        case 200: return try response.decode(type)
        case 422:
            let problems = try response.decode(RosterRejected.self).problems
            throw OperationFailed(description: "\(what): roster rejected:\n  " + problems.joined(separator: "\n  "))
        default: throw OperationFailed(description: "\(what): \(response.errorMessage)")
        }
    }

    /// The names given, or every character with `--all`; unknown names are a failure.
    /// The services named; a character with `replicas:` named as the roster names it stands for
    /// its instances (`elena` → `elena-0`, `elena-1` …).
    func resolve(_ names: [String], all: Bool) throws -> [String] {
        let characters = try characters()
        let known = characters.map(\.name)
        if all { return known }
        guard !names.isEmpty else { throw ValidationError("name at least one character, or --all") }
        var resolved: [String] = []
        var unknown: [String] = []
        for name in names {
            if known.contains(name) {
                resolved.append(name)
                continue
            }
            let instances = characters.filter { $0.replica?.of == name }.sorted { ($0.replica?.index ?? 0) < ($1.replica?.index ?? 0) }
            if instances.isEmpty { unknown.append(name) } else { resolved += instances.map(\.name) }
        }
        if !unknown.isEmpty { throw OperationFailed(description: "no character named \(unknown.joined(separator: ", "))") }
        return resolved
    }
}

extension Whisperctl {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show characters: NAME STATE READY PID USER SANDBOX UPTIME RESTARTS MEM/LIMIT CPU LAST-EXIT.")

        @OptionGroup var connection: Connection
        @Flag(name: .long, help: "Print JSON (the same objects as GET /v1/characters).")
        var json = false
        @Flag(
            name: .long,
            help: "Also exit 1 if a character that should be up is not ready (as GET /health's 503); without it, status exits 0 whenever whisperd answers.")
        var check = false
        @Argument(help: "Only these characters.")
        var names: [String] = []

        func run() throws {
            var list = try connection.client.characters()
            if !names.isEmpty {
                let unknown = names.filter { name in !list.contains { $0.name == name } }
                if !unknown.isEmpty { throw OperationFailed(description: "no character named \(unknown.joined(separator: ", "))") }
                list = list.filter { names.contains($0.name) }
            }
            let health = try connection.client.health()
            if json {
                print(try prettyJSON(list))
            } else {
                if names.isEmpty { print(StatusTable.header(health.supervisor)) }
                print(StatusTable.render(list))
                let facets = StatusTable.facetLines(list)
                if !facets.isEmpty { print("\n" + facets.joined(separator: "\n")) }
                let schedules = StatusTable.scheduleLines(list)
                if !schedules.isEmpty { print("\nscheduled jobs:\n" + schedules.joined(separator: "\n")) }
            }
            guard check else { return }
            let notReady = (health.notReady ?? []).filter { names.isEmpty || names.contains($0) }
            if !notReady.isEmpty { throw OperationFailed(description: "not ready: \(notReady.joined(separator: ", "))") }
        }
    }

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start characters and wait until they are ready.")
        @OptionGroup var connection: Connection
        @OptionGroup var target: Target
        func run() throws { try Operation.run("start", target, connection.client) }
    }

    struct Scale: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run N instances of a character (NAME-0 … NAME-(N-1)), live; remembered across whisperd restarts.")
        @OptionGroup var connection: Connection
        @Option(name: .long, help: "Seconds to wait for the new instances to be ready.")
        var timeout: Double = 60
        @Argument(help: "The character, as the roster names it.")
        var name: String
        @Argument(help: "How many instances (0 stops them all).")
        var replicas: Int

        func run() throws {
            let client = connection.client
            let result = try client.applied(client.post("/v1/scale/\(name)/\(replicas)"), ScaleResult.self, "scale \(name)")
            for line in result.plan { print(line) }
            var target = try Target.parse(["--timeout", String(timeout)] + ["--all"])
            target.all = false
            try Operation.wait("start", result.services, before: [:], target, client)
        }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop characters (kept stopped across whisperd restarts) and wait until they are down.")
        @OptionGroup var connection: Connection
        @OptionGroup var target: Target
        func run() throws { try Operation.run("stop", target, connection.client) }
    }

    struct Restart: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Restart characters and wait until each is ready again with a new process.")
        @OptionGroup var connection: Connection
        @Flag(
            name: .long,
            help: "Zero downtime: start the new process beside the old one, hand over when it is ready, then drain the old one (one character at a time).")
        var rolling = false
        @OptionGroup var target: Target
        func run() throws { try Operation.run(rolling ? "rolling-restart" : "restart", target, connection.client) }
    }

    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run a job once now (scheduled or not) and wait for its result; fails when the job fails.")
        @OptionGroup var connection: Connection
        @Option(name: .long, help: "Seconds to wait for the job to finish before failing.")
        var timeout: Double = 3600
        @Flag(name: .long, help: "Return once whisperd started it, without waiting.")
        var noWait = false
        @Argument(help: "The job, as the roster names it under jobs:.")
        var job: String

        func validate() throws {
            guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
        }

        func run() throws {
            let client = connection.client
            let response = try client.post("/v1/characters/\(job)/run")
            guard response.status == 202 else {
                throw OperationFailed(description: "run \(job): \(response.errorMessage)")
            }
            guard !noWait else { return }
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                let status = try client.character(job)
                let state = status.state
                let reason = status.lastExit?.reason
                if status.pid == nil, !["starting", "running", "waiting", "stopping"].contains(state) {
                    guard state == "exited" else {
                        throw OperationFailed(description: "\(job) failed: state \(state)" + (reason.map { ", last exit \($0)" } ?? ""))
                    }
                    print("\(job): done" + (reason.map { " (\($0))" } ?? ""))
                    return
                }
                if Date() >= deadline { throw OperationFailed(description: "\(job) still \(state) after \(Int(timeout))s (it keeps running)") }
                usleep(50_000)
            }
        }
    }

    struct Logs: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a character's log (stdout and stderr, timestamped).")
        @OptionGroup var connection: Connection
        @Flag(name: .shortAndLong, help: "Keep printing new lines as they are written.")
        var follow = false
        @Option(name: .short, help: "How many lines from the end (0 to 10000).")
        var n: Int = 20
        @Argument(help: "The character.")
        var name: String

        func validate() throws {
            guard (0...10_000).contains(n) else { throw ValidationError("-n must be in 0...10000") }
        }

        func run() throws {
            let client = connection.client
            let path = "/v1/characters/\(name)/logs?lines=\(n)" + (follow ? "&follow=1" : "")
            // Only a 200's body is the log; an error's body (JSON) is not printed as if it were.
            let response = try client.send("GET", path) { chunk in
                FileHandle.standardOutput.write(chunk)
            }
            if response.status == 404 { throw OperationFailed(description: "no character named \(name)") }
            guard response.status == 200 else {
                throw OperationFailed(description: "logs failed (\(response.status)): \(response.errorMessage)")
            }
        }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-read the roster and apply the difference (or, with --dry-run, print the plan).")
        @OptionGroup var connection: Connection
        @Flag(name: .long, help: "Only print what would change.")
        var dryRun = false

        func run() throws {
            let response = try connection.client.post("/v1/reload" + (dryRun ? "?dry_run=1" : ""))
            if response.status == 422 {
                let problems = try response.decode(RosterRejected.self).problems
                for problem in problems { FileHandle.standardError.write(Data("  \(problem)\n".utf8)) }
                throw OperationFailed(description: "roster rejected (\(counted(problems.count, "problem"))); the running fleet is unchanged")
            }
            guard response.status == 200 else {
                throw OperationFailed(description: "reload failed (\(response.status)): \(response.errorMessage)")
            }
            let plan = try response.decode(ReloadResult.self).plan
            if plan.isEmpty { print(dryRun ? "nothing would change" : "roster unchanged") }
            for line in plan { print(dryRun ? "would \(line)" : line) }
        }
    }

    struct Reexec: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Upgrade whisperd in place: it execs its binary (the new one after an upgrade) and keeps every character running (same pids).",
            discussion: "Also SIGUSR2 to whisperd. `systemctl reload` still means: re-read the roster.")
        @OptionGroup var connection: Connection
        @Option(name: .long, help: "Seconds to wait for the new process to answer.")
        var timeout: Double = 30

        func run() throws {
            let client = connection.client
            let response = try client.post("/v1/reexec")
            guard response.status == 202 else { throw OperationFailed(description: "reexec refused: \(response.errorMessage)") }
            let before = try response.decode(ReexecScheduled.self).reexecs
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                // The socket is not answered for the moment of the exec itself: retry.
                let supervisor: HealthReport.Supervisor
                do { supervisor = try client.health().supervisor } catch is ControlClient.Unreachable {
                    usleep(20_000)
                    continue
                }
                if let error = supervisor.reexecError { throw OperationFailed(description: "reexec failed: \(error)") }
                if supervisor.reexecs > before {
                    print("whisperd re-executed: version \(supervisor.version), pid \(supervisor.pid), \(supervisor.summary)")
                    return
                }
                usleep(20_000)
            }
            throw OperationFailed(description: "whisperd did not answer as the new process within \(Int(timeout))s")
        }
    }

    struct Why: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recent incidents of a character: abnormal exits with reason, peak memory and last log lines.")
        @OptionGroup var connection: Connection
        @Flag(name: .long, help: "Print JSON.")
        var json = false
        @Argument(help: "The character.")
        var name: String

        func run() throws {
            let response = try connection.client.get("/v1/characters/\(name)/incidents")
            if response.status == 404 { throw OperationFailed(description: "no character named \(name)") }
            let incidents = try response.decode(IncidentList.self).incidents
            if json {
                print(try prettyJSON(incidents))
                return
            }
            guard !incidents.isEmpty else {
                print("\(name): no incidents recorded")
                return
            }
            for incident in incidents.reversed() {
                var line = "\(incident.at)  \(incident.reason)  after \(StatusTable.duration(incident.uptimeSeconds))"
                if let peak = incident.peakMemoryBytes { line += "  peak \(ByteCount.humanReadable(peak))" }
                line += "  -> \(incident.stateAfter)"
                print(line)
                if let health = incident.health, !health.isEmpty {
                    print("    health: " + health.keys.sorted().map { "\($0)=\(health[$0] ?? "")" }.joined(separator: " "))
                }
                for logLine in incident.lastLogLines { print("    | \(logLine)") }
            }
        }
    }

    struct Env: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "A character's effective environment (secrets redacted); --explain says which layer set each.")
        @OptionGroup var connection: Connection
        @Flag(name: .long, help: "Show where each variable came from (base, an env file and line, env:, whisperd).")
        var explain = false
        @Argument(help: "The character.")
        var name: String

        func run() throws {
            let response = try connection.client.get("/v1/characters/\(name)/env")
            if response.status == 404 { throw OperationFailed(description: "no character named \(name)") }
            let entries = try response.decode(EnvironmentReport.self).environment
            let width = entries.map(\.name.count).max() ?? 0
            let originWidth = entries.map(\.origin.count).max() ?? 0
            for entry in entries {
                if explain {
                    print("\(entry.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(entry.origin.padding(toLength: originWidth, withPad: " ", startingAt: 0))  \(entry.value)")
                } else {
                    print("\(entry.name)=\(entry.value)")
                }
            }
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate a roster (default /etc/whisperd/roster.yaml) and list every problem; exit 0 or 1.")
        @Argument(help: "The roster file.")
        var roster: String = "/etc/whisperd/roster.yaml"

        func run() throws {
            // Built-in workers are this installation's whisperd, next to whisperctl.
            let selfPath = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
            let whisperd = (selfPath as NSString).deletingLastPathComponent + "/whisperd"
            let loader = RosterLoader(selfExecutable: whisperd, hostEnvironment: ProcessInfo.processInfo.environment)
            switch loader.load(path: roster) {
            case .failure(let error):
                throw OperationFailed(description: "\(roster): \(error)")
            case .success(let loaded):
                print("\(roster): ok (\(loaded.summary))")
            }
        }
    }
}

struct Target: ParsableArguments {
    @Flag(name: .long, help: "Every character.")
    var all = false
    @Option(name: .long, help: "Seconds to wait for the result before failing.")
    var timeout: Double = 60
    @Flag(name: .long, help: "Return once whisperd accepted the request, without waiting.")
    var noWait = false
    @Option(
        name: .long,
        help: "start/stop: switch this profile on or off (its services start or stop; remembered across whisperd restarts).")
    var profile: String?
    @Argument(help: "Characters to act on.")
    var names: [String] = []

    func validate() throws {
        let given = [all, !names.isEmpty, profile != nil].filter { $0 }.count
        if given > 1 { throw ValidationError("give names, --all or --profile, one of them") }
        if given == 0 { throw ValidationError("name at least one character, or --all, or --profile") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }
}

enum Operation {
    /// Sends the operation for each character, then waits for each to reach its goal: ready
    /// (with a new pid, for restart) or down. On timeout, says where it is stuck and why.
    static func run(_ verb: String, _ target: Target, _ client: ControlClient) throws {
        let names: [String]
        if let profile = target.profile {
            guard verb == "start" || verb == "stop" else { throw OperationFailed(description: "--profile works with start and stop") }
            let result = try client.applied(
                client.post("/v1/profiles/\(profile)/\(verb)"), ProfileResult.self, "\(verb) --profile \(profile)")
            for line in result.plan { print(line) }
            // Starting waits for the profile's services; stopping, for those that were running.
            let members = result.services
            let present = Set(try client.resolve([], all: true))
            names = verb == "start" ? members.filter(present.contains) : []
            guard !names.isEmpty else { return }
            return try wait(verb, names, before: [:], target, client)
        }
        names = try client.resolve(target.names, all: target.all)
        var before: [String: Int] = [:]
        // A rolling restart goes one character at a time: the next starts once the last handed
        // over. Replicas are always restarted so (the others keep serving meanwhile).
        var batches: [(verb: String, names: [String])] = [(verb, names)]
        if verb == "rolling-restart" {
            batches = names.map { (verb, [$0]) }
        } else if verb == "restart" {
            let replicas = Set(try client.characters().filter { $0.replica != nil }.map(\.name))
            let others = names.filter { !replicas.contains($0) }
            batches = (others.isEmpty ? [] : [(verb, others)]) + names.filter(replicas.contains).map { ("rolling-restart", [$0]) }
        }
        for (verb, batch) in batches {
            for name in batch {
                if let pid = try client.character(name).pid { before[name] = pid }
                let response = try client.post("/v1/characters/\(name)/\(verb)")
                guard response.status == 202 else {
                    throw OperationFailed(description: "\(verb) \(name): \(response.errorMessage)")
                }
            }
            try wait(verb, batch, before: before, target, client)
        }
    }

    /// Waits for each character to reach the operation's goal, or says where it is stuck.
    static func wait(_ verb: String, _ names: [String], before: [String: Int], _ target: Target, _ client: ControlClient) throws {
        guard !target.noWait else { return }
        let deadline = Date().addingTimeInterval(target.timeout)
        var failures: [String] = []
        for name in names {
            while true {
                let character = try client.character(name)
                let state = character.state
                let pid = character.pid
                let done: Bool =
                    switch verb {
                    case "stop": state == "stopped" && pid == nil
                    case "restart", "rolling-restart": character.ready && pid != nil && pid != before[name]
                    default: character.ready || (character.kind == "job" && state == "exited")
                    }
                if done {
                    print("\(name): \(state)\(pid.map { " (pid \($0))" } ?? "")")
                    break
                }
                let gaveUp = ["failed", "crashloop"].contains(state) && verb != "stop"
                if gaveUp || Date() >= deadline {
                    let last = character.lastExit?.reason
                    failures.append(
                        "\(name): \(gaveUp ? "" : "timed out, ")state \(state)" + (last.map { ", last exit \($0)" } ?? ""))
                    break
                }
                usleep(50_000)
            }
        }
        if !failures.isEmpty { throw OperationFailed(description: "\(verb) did not complete: " + failures.joined(separator: "; ")) }
    }
}
