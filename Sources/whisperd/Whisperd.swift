import ArgumentParser
import Foundation
import Glibc
import WhisperConfig
import WhisperCore
import WhisperDaemon
import WhisperSystem
import WhisperWorker

struct Whisperd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whisperd",
        abstract: "Supervise a fleet of AI character bots, each in its own process and cgroup.",
        discussion: """
            Runs in the foreground (systemd does the daemonising). Without flags it reads \
            /etc/whisperd/roster.yaml and uses /var/lib/whisperd, /run/whisperd and \
            /var/log/whisperd (or systemd's $STATE_DIRECTORY, $RUNTIME_DIRECTORY and \
            $LOGS_DIRECTORY when set). With --roster elsewhere, state, runtime and log directories \
            default to .whisperd/ next to the roster, so a checkout needs no root-owned paths.

            SIGHUP reloads the roster (diff-apply); SIGTERM/SIGINT stop every service in \
            reverse dependency order, letting each finish what is in flight within its \
            stop_grace (a second signal kills at once).
            """,
        version: WhisperdVersion.current,
        subcommands: [
            Worker.self, Notify.self, Migrate.self, MigrateStore.self, BackupCommand.self, RestoreCommand.self, Import.self,
            Export.self, RunOne.self, Wait.self,
        ]
    )

    static let productionRoster = "/etc/whisperd/roster.yaml"

    @Option(name: .long, help: "The roster file.")
    var roster: String = Whisperd.productionRoster

    @Option(name: .long, help: "Persisted intents and job records (default: see above).")
    var stateDir: String?

    @Option(name: .long, help: "Notify sockets, the control socket (control.sock) and the lock file (default: see above).")
    var runtimeDir: String?

    @Option(name: .long, help: "Per-character log files (default: see above).")
    var logDir: String?

    @Option(name: .long, help: "Read-only endpoint (/health, /metrics, /v1/characters): ADDR:PORT on loopback, or off.")
    var http: String = "127.0.0.1:9464"

    @Flag(name: .long, help: "Allow --http on a non-loopback address.")
    var httpAllowRemote = false

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Cgroup backend: auto (per function: v2 if delegated, else writable v1), v2, v1, or none (process groups, limits not enforced).",
            valueName: "auto|v2|v1|none"))
    var cgroupBackend: String = "auto"

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Base cgroup for the characters inside each hierarchy (default: whisperd's own cgroup, or /whisperd if that is the root).",
            valueName: "PATH"))
    var cgroup: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "How long a dashboard login lasts; its log streams end with it (default 12h).", valueName: "DURATION"))
    var dashboardSessionLifetime: String?

    @Option(name: .long, help: "The group whose members may use the control socket (<runtime-dir>/control.sock); created if missing.")
    var controlGroup: String = "whisperd"

    @Flag(
        inversion: .prefixedNo,
        help: "Also send each character's lines to the journal with CHARACTER=<name> (default: on when run by systemd, i.e. INVOCATION_ID or JOURNAL_STREAM is set).")
    var journal: Bool?

    @Flag(name: .long, help: "Validate the roster, print every problem, exit 0 (valid) or 1.")
    var check = false

    /// Given by whisperd itself to the binary it re-executes (`whisperctl reexec`).
    @Option(name: .long, help: .hidden)
    var handover: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Activate a profile: services with `profiles:` run only when one of theirs is active; services without always run. Repeatable, or comma-separated.",
            valueName: "NAME"))
    var profile: [String] = []

    /// `--profile a --profile b,c` → {a, b, c}, each a valid profile name.
    func activeProfiles() throws -> Set<String> {
        let names = profile.flatMap { $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }
        for name in names where !RosterLoader.isValidProfile(name) {
            throw ValidationError("--profile: `\(name.prefix(40))` is not a profile name (a letter or digit, then letters, digits, _ . -)")
        }
        return Set(names)
    }

    func run() throws {
        let selfPath = Whisperd.executablePath()
        let profiles = try activeProfiles()
        let loader = RosterLoader(selfExecutable: selfPath, hostEnvironment: ProcessInfo.processInfo.environment, profiles: profiles)
        var loaded: LoadedRoster
        switch loader.load(path: roster) {
        case .failure(let error):
            FileHandle.standardError.write(Data("whisperd: \(roster): \(error)\n".utf8))
            throw ExitCode(1)
        case .success(let result):
            loaded = result
        }
        for warning in loaded.warnings {
            FileHandle.standardError.write(Data("whisperd: warning: \(warning)\n".utf8))
        }
        if check {
            print("\(roster): ok (\(loaded.summary))")
            return
        }
        let address: (host: String, port: Int)?
        switch DaemonConfiguration.parseHTTPAddress(http, allowNonLoopback: httpAllowRemote) {
        case .failure(let message):
            throw ValidationError("--http: \(message)")
        case .success(let parsed):
            address = parsed
        }
        guard let cgroupMode = CgroupMode(rawValue: cgroupBackend) else {
            throw ValidationError("--cgroup-backend: expected auto, v2, v1 or none, got \(cgroupBackend)")
        }
        if let cgroup, !cgroup.hasPrefix("/") || cgroup.split(separator: "/").contains("..") {
            throw ValidationError("--cgroup: expected an absolute cgroup path like /whisperd, got \(cgroup)")
        }
        var sessionLifetime = DashboardSessions.defaultLifetime
        if let dashboardSessionLifetime {
            guard let parsed = Units.parseDuration(dashboardSessionLifetime), parsed >= .seconds(1) else {
                throw ValidationError("--dashboard-session-lifetime: expected a duration of at least 1s like 15m or 12h, got \(dashboardSessionLifetime)")
            }
            sessionLifetime = parsed
        }
        let isProduction = Paths.normalize(loaded.path) == Whisperd.productionRoster
        let localBase = Paths.directory(of: loaded.path) + "/.whisperd"
        let environment = ProcessInfo.processInfo.environment
        // Under systemd, the unit's StateDirectory= etc. (first entry) win over the built-in paths.
        func systemdDirectory(_ variable: String) -> String? {
            environment[variable].flatMap { $0.split(separator: ":").first.map(String.init) }
        }
        var configuration = DaemonConfiguration(
            rosterPath: loaded.path,
            stateDirectory: absolute(
                stateDir ?? systemdDirectory("STATE_DIRECTORY") ?? (isProduction ? "/var/lib/whisperd" : localBase + "/state")),
            runtimeDirectory: absolute(
                runtimeDir ?? systemdDirectory("RUNTIME_DIRECTORY") ?? (isProduction ? "/run/whisperd" : localBase + "/run")),
            logDirectory: absolute(
                logDir ?? systemdDirectory("LOGS_DIRECTORY") ?? (isProduction ? "/var/log/whisperd" : localBase + "/logs")),
            httpAddress: address, selfExecutable: selfPath, cgroupMode: cgroupMode,
            cgroupBase: cgroup.map(Paths.normalize), controlGroup: controlGroup,
            journal: journal ?? (Journal.isServiceEnvironment(environment) && Journal.isRunning))
        // Profiles switched with whisperctl while a previous whisperd ran are kept.
        let store = try? StateStore(directory: configuration.stateDirectory)
        let active = store?.activeProfiles(flags: profiles) ?? profiles
        let scaled = store?.replicaOverrides() ?? [:]
        configuration.profiles = active
        configuration.replicaOverrides = scaled
        configuration.handoverPath = handover
        configuration.dashboardSessionLifetime = sessionLifetime
        if active != profiles || !scaled.isEmpty {
            var runtimeLoader = RosterLoader(selfExecutable: selfPath, hostEnvironment: environment, profiles: active)
            runtimeLoader.replicaOverrides = scaled
            switch runtimeLoader.load(path: roster) {
            case .failure(let error):
                // The roster changed since: it wins (the fleet starts as --check saw it), said loudly.
                FileHandle.standardError.write(
                    Data(
                        "whisperd: WARNING: ignoring the profiles and scale switched at run time (\(active.sorted().joined(separator: ", ")); \(scaled.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: ", "))): with them \(roster) is invalid: \(error)\n"
                            .utf8))
                configuration.profiles = profiles
                configuration.replicaOverrides = [:]
            case .success(let result):
                loaded = result
            }
        }
        let code = try DaemonLauncher.launch(configuration, loaded: loaded)
        if code != 0 { throw ExitCode(code) }
    }

    private func absolute(_ path: String) -> String {
        Paths.absolute(path, from: FileManager.default.currentDirectoryPath)
    }

    /// The signals this invocation reads from a signalfd: the supervisor (also with `--check`,
    /// `--help`: harmless, they exit at once), `worker`, or nil for the short-lived subcommands,
    /// which keep the default dispositions.
    static func handledSignals(arguments: [String]) -> HandledSignals? {
        guard let first = arguments.dropFirst().first else { return .supervisor }
        if first == Worker._commandName { return .worker }
        // run-one is the supervisor, narrowed to one service.
        if first == RunOne._commandName { return .supervisor }
        let others = configuration.subcommands.map { $0._commandName } + ["help"]
        return others.contains(first) ? nil : .supervisor
    }

    static func executablePath() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        if count > 0 { return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return CommandLine.arguments[0]
    }
}

extension Whisperd {
    struct Worker: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "worker",
            abstract: "Run the built-in character worker (normally spawned by whisperd).",
            discussion: """
                Reads the character folder $WHISPERD_CHARACTERS_DIR/NAME (default ./characters/NAME: \
                character.md, optional core/goals/evolution/ux/background.yaml) and serves \
                WhisperEngine v2's API on $API_HOST:$API_PORT (default host 127.0.0.1): /health, \
                /api/chat, /api/conversation, /api/user-state, /api/clear-user-data, \
                /api/diagnostics, /metrics. LLM: LLM_BASE_URL or LLM_PROVIDER, LLM_MODEL_NAME, \
                LLM_API_KEY, LLM_TEMPERATURE, LLM_MAX_TOKENS (512), LLM_TIMEOUT. Store: PostgreSQL \
                with POSTGRES_URL or DATABASE_URL, else SQLite at $WHISPERD_SQLITE_PATH, \
                $STATE_DIRECTORY/memory.sqlite3 (its own directory, given by whisperd) or \
                $WHISPERD_STATE_DIR/memory/NAME.sqlite3. Readiness, watchdog pings and the \
                api/llm/store facets go to $NOTIFY_SOCKET. With DISCORD_TOKEN (or \
                DISCORD_BOT_TOKEN) it is also that Discord bot (facet discord; docs/discord.md). \
                See docs/worker.md.
                """)

        @Argument(help: "The character's name (its folder under the characters directory).")
        var name: String

        func run() throws {
            do {
                let worker = try WhisperWorker.Worker(name: name, environment: ProcessInfo.processInfo.environment)
                let code = try worker.run()
                if code != 0 { throw ExitCode(code) }
            } catch let failure as WhisperWorker.Worker.Failure {
                FileHandle.standardError.write(Data("whisperd worker \(name): \(failure)\n".utf8))
                throw ExitCode(2)
            }
        }
    }
}

extension Whisperd {
    struct Notify: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "notify",
            abstract: "Send sd_notify lines to $NOTIFY_SOCKET (like systemd-notify), for shell-script characters.",
            discussion: """
                Example: whisperd notify READY=1 STATUS=warming-up. Waits (up to 5 s) until the \
                supervisor has handled the message (BARRIER=1, as sd_notify_barrier). Exits 1 if \
                NOTIFY_SOCKET is unset, the send fails, or the supervisor does not confirm.
                """)

        @Argument(help: "KEY=VALUE lines, e.g. READY=1, WATCHDOG=1, STATUS=text.")
        var lines: [String]

        func run() throws {
            guard let socket = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !socket.isEmpty else {
                FileHandle.standardError.write(Data("whisperd notify: NOTIFY_SOCKET is not set\n".utf8))
                throw ExitCode(1)
            }
            guard NotifySocket.send(lines.joined(separator: "\n"), to: socket) else {
                FileHandle.standardError.write(Data("whisperd notify: cannot send to \(socket): \(String(cString: strerror(errno)))\n".utf8))
                throw ExitCode(1)
            }
            // Stay alive until whisperd has read it: it checks the sender's pid, and a sender
            // that has already exited cannot be checked (systemd-notify has the same race).
            guard NotifySocket.barrier(socket) else {
                FileHandle.standardError.write(Data("whisperd notify: \(socket) did not confirm: \(String(cString: strerror(errno)))\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}

extension Whisperd {
    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "migrate",
            abstract: "Apply the conversation store's schema migrations (idempotent; safe when several run at once).",
            discussion: """
                With POSTGRES_URL (or DATABASE_URL) set: that database, under an advisory lock. Otherwise \
                the SQLite files given, or every $WHISPERD_STATE_DIR/memory/*.sqlite3. Run by the sample \
                roster as a job before the characters start.
                """)

        @Option(name: .customLong("sqlite"), help: "A SQLite store to migrate (repeatable).")
        var sqlitePaths: [String] = []

        func run() throws {
            do {
                for line in try StoreCommands.migrate(environment: ProcessInfo.processInfo.environment, sqlitePaths: sqlitePaths) {
                    print("whisperd migrate: \(line)")
                }
            } catch {
                FileHandle.standardError.write(Data("whisperd migrate: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }

    struct MigrateStore: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "migrate-store",
            abstract: "Copy a character's SQLite store into PostgreSQL (one transaction).",
            discussion: """
                Example: whisperd migrate-store --from sqlite:/var/lib/whisperd/memory/elena.sqlite3 \\
                  --to postgres://whisperd@127.0.0.1/whisperd
                Refuses (and copies nothing) when the database already holds messages of a character in \
                the file, unless --append.
                """)

        @Option(help: "sqlite:PATH")
        var from: String

        @Option(help: "postgres://… (or postgresql://…)")
        var to: String

        @Flag(help: "Copy even when the database already has messages of these characters.")
        var append = false

        func validate() throws {
            guard from.hasPrefix("sqlite:") else { throw ValidationError("--from: expected sqlite:PATH, got \(from)") }
            guard to.hasPrefix("postgres://") || to.hasPrefix("postgresql://") else {
                throw ValidationError("--to: expected postgres://…")
            }
        }

        func run() throws {
            do {
                print("whisperd migrate-store: " + (try StoreCommands.copy(sqlitePath: String(from.dropFirst("sqlite:".count)), to: to, append: append)))
            } catch {
                FileHandle.standardError.write(Data("whisperd migrate-store: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
    }
}
