import ArgumentParser
import Foundation
import Glibc
import WhisperConfig
import WhisperCore
import WhisperDaemon
import WhisperSystem

extension Whisperd {
    struct RunOne: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run-one",
            abstract: "Supervise one service of the roster, as a container's entrypoint (the pods of `whisperd export kubernetes`).",
            discussion: """
                whisperd runs NAME as on one host — restart policy and backoff, sd_notify readiness, \
                watchdog, health checks, stop signal and grace — and serves GET /health on --http \
                (200 once NAME is ready, 503 otherwise: the kubelet's readiness probe). Left to the pod: \
                its `after:` (init containers run `whisperd wait`), its limits (the container's \
                resources; --cgroup-backend none by default) and its user (the pod's). The environment \
                whisperd is given is NAME's base layer (the pod's env and Secrets), under its env \
                files and env:. With `replicas: N`, this pod's instance is $REPLICA_INDEX or the number \
                ending $HOSTNAME (a StatefulSet pod's ordinal); every instance listens on the first \
                port. Its output also goes to stdout, each line prefixed with NAME. Works as any user, \
                with a read-only root: only the three directories are written. Exits when NAME is done \
                for good: 0 when it completed (a job that succeeded), 1 when it failed; SIGTERM stops \
                it within its stop_grace. See docs/kubernetes.md.
                """)

        @Argument(help: "The character or job to run.")
        var name: String

        @Option(name: .long, help: "The roster file.")
        var roster: String = Whisperd.productionRoster

        @Option(name: .long, help: "State (the character's STATE_DIRECTORY: its SQLite store): a volume.")
        var stateDir: String = "/var/lib/whisperd"

        @Option(name: .long, help: "Notify and control sockets: an emptyDir.")
        var runtimeDir: String = "/run/whisperd"

        @Option(name: .long, help: "The character's log file (its lines also go to stdout): an emptyDir.")
        var logDir: String = "/var/log/whisperd"

        @Option(name: .long, help: "Where /health, /metrics and /v1/characters are served: ADDR:PORT (the pod's network), or off.")
        var http: String = "0.0.0.0:9464"

        @Option(name: .long, help: ArgumentHelp("Cgroup backend (a container's are not writable; the pod's limits apply).", valueName: "none|auto|v2|v1"))
        var cgroupBackend: String = "none"

        /// A value given after `run-one` that the root command took (see `valuesTakenByTheRoot`).
        static func valueTakenByTheRoot(_ option: String, _ arguments: [String]) -> String? {
            Whisperd.valuesTakenByTheRoot(after: _commandName, option, arguments).last
        }

        /// This pod's instance: `REPLICA_INDEX` (the downward API's pod-index label) or the
        /// number after the last `-` of the host name (a StatefulSet pod is `NAME-<ordinal>`).
        static func replicaIndex(environment: [String: String]) -> Int? {
            if let given = environment["REPLICA_INDEX"], let index = Int(given), index >= 0 { return index }
            var hostname = environment["HOSTNAME"] ?? ""
            if hostname.isEmpty {
                var buffer = [CChar](repeating: 0, count: 256)
                if gethostname(&buffer, buffer.count - 1) == 0 {
                    hostname = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                }
            }
            guard let dash = hostname.lastIndex(of: "-") else { return nil }
            let digits = hostname[hostname.index(after: dash)...]
            guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
            return Int(digits)
        }

        func run() throws {
            let arguments = CommandLine.arguments
            let rosterPath = Self.valueTakenByTheRoot("--roster", arguments) ?? roster
            let httpText = Self.valueTakenByTheRoot("--http", arguments) ?? http
            let backendText = Self.valueTakenByTheRoot("--cgroup-backend", arguments) ?? cgroupBackend
            func directory(_ option: String, _ value: String) -> String {
                Paths.absolute(Self.valueTakenByTheRoot(option, arguments) ?? value, from: FileManager.default.currentDirectoryPath)
            }
            guard ServiceName.isValid(name) else { throw ValidationError("`\(name.prefix(63))` is not a service name (1-63 of a-z 0-9 _ -)") }
            guard let cgroupMode = CgroupMode(rawValue: backendText) else {
                throw ValidationError("--cgroup-backend: expected none, auto, v2 or v1, got \(backendText)")
            }
            let address: (host: String, port: Int)?
            switch DaemonConfiguration.parseHTTPAddress(httpText, allowNonLoopback: true) {
            case .failure(let message): throw ValidationError("--http: \(message)")
            case .success(let parsed): address = parsed
            }
            let environment = ProcessInfo.processInfo.environment
            let selfPath = Whisperd.executablePath()
            var loader = RosterLoader(selfExecutable: selfPath, hostEnvironment: environment)
            let one = RosterLoader.OneService(name: name, replicaIndex: Self.replicaIndex(environment: environment))
            loader.oneService = one
            let loaded: LoadedRoster
            switch loader.load(path: rosterPath) {
            case .failure(let error):
                FileHandle.standardError.write(Data("whisperd run-one: \(rosterPath): \(error)\n".utf8))
                throw ExitCode(1)
            case .success(let result):
                loaded = result
            }
            for warning in loaded.warnings {
                FileHandle.standardError.write(Data("whisperd run-one: warning: \(warning)\n".utf8))
            }
            var configuration = DaemonConfiguration(
                rosterPath: loaded.path, stateDirectory: directory("--state-dir", stateDir),
                runtimeDirectory: directory("--runtime-dir", runtimeDir), logDirectory: directory("--log-dir", logDir),
                httpAddress: address, selfExecutable: selfPath, cgroupMode: cgroupMode, journal: false)
            configuration.oneService = one
            let code = try DaemonLauncher.launch(configuration, loaded: loaded)
            if code != 0 { throw ExitCode(code) }
        }
    }
}
