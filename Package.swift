// swift-tools-version: 6.1
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "whisperd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "whisperd", targets: ["whisperd"]),
        .executable(name: "whisperctl", targets: ["whisperctl"]),
        // For scripts/bench/hummingbird-worker only (the chat path behind another HTTP layer); an
        // automatic library adds nothing to this package's build.
        .library(name: "WhisperWorker", targets: ["WhisperWorker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Discord's gateway is a WebSocket (Debian's libcurl has none); TLS through swift-nio-ssl.
        .package(url: "https://github.com/hummingbird-project/swift-websocket", from: "1.6.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        // A seedable random number generator (SplitMix64), so jitter and backoff reproduce from a seed.
        .target(name: "WhisperRandom", swiftSettings: strictSettings),
        // Pure: the supervisor's model and state machine. No Foundation, no Glibc, no clock, no lock
        // or other blocking primitive. Everything here is a function of its inputs.
        .target(name: "WhisperCore", dependencies: ["WhisperRandom"], swiftSettings: strictSettings),
        // Shared by the threads of the adapters and the worker: `Locked` (a value behind a mutex;
        // a pthread mutex in the TSan build) and `GroupCommit` (blocking: callers wait for a batch).
        .target(name: "WhisperConcurrency", swiftSettings: strictSettings),
        // JSON, the one way every module writes it (`JSONText`: trees, `Encodable`, strings for
        // hand-written hot paths; keys in byte order) and the worker reads it (`JSONValue.parse`,
        // strict RFC 8259 from bytes). Pure: no Foundation.
        .target(name: "WhisperJSON", swiftSettings: strictSettings),
        // Reading a file whole (Foundation, without FileManager's leak): the one way for every module.
        .target(name: "WhisperFiles", swiftSettings: strictSettings),
        // Backups: the archive (ustar), its manifest and SHA-256 checksums, and the restore.
        .target(name: "WhisperBackup", dependencies: ["WhisperFiles"], swiftSettings: strictSettings),
        // The typed API contract: a Codable type (with its JSON Schema) for every payload of the
        // control socket and the HTTP port, and the routes; the OpenAPI documents are made from
        // them. Pure: no Foundation, shared by whisperd and whisperctl.
        .target(name: "WhisperAPI", swiftSettings: strictSettings),
        // Roster file -> WhisperCore types; every problem reported at once.
        .target(
            name: "WhisperConfig",
            dependencies: ["WhisperCore", "WhisperFiles", .product(name: "Yams", package: "Yams")],
            swiftSettings: strictSettings
        ),
        // The one place that calls vfork/execve, pidfd, epoll and friends.
        .target(name: "CWhisperLinux"),
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // libcurl, libsqlite3 and libpq through dlopen: only the worker maps them, never the supervisor.
        .target(name: "CWorkerLibs"),
        // Thin OS adapters: event loop, spawner, notify sockets, log files, tiny HTTP.
        .target(
            name: "WhisperSystem",
            dependencies: ["WhisperCore", "WhisperConcurrency", "WhisperFiles", "WhisperJSON", "CWhisperLinux", "CSystemd", "CZlib"],
            swiftSettings: strictSettings
        ),
        // The imperative shell that runs the core against the OS: `Daemon` wiring `Fleet`
        // (the fleet's lifecycle), `CgroupKeeper`, `StatusPublisher` and `ControlService`.
        .target(
            name: "WhisperDaemon",
            dependencies: [
                "WhisperAPI", "WhisperCore", "WhisperConcurrency", "WhisperConfig", "WhisperFiles", "WhisperJSON", "WhisperSystem",
                // The dashboard validates a character file as the worker reads it (pure: no I/O).
                "WhisperChat",
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            // The web dashboard's files, compiled into the binary as byte arrays (`PackageResources`).
            resources: [
                .embedInCode("Dashboard/assets/index.html"), .embedInCode("Dashboard/assets/app.js"),
                .embedInCode("Dashboard/assets/app.css"),
            ],
            swiftSettings: strictSettings
        ),
        // The character worker's pure part: character files, prompts, history windows, trust,
        // request validation. No I/O: a function of its inputs and a given time.
        .target(
            name: "WhisperChat",
            dependencies: ["WhisperConcurrency", "WhisperJSON", "WhisperRandom", .product(name: "Yams", package: "Yams")],
            swiftSettings: strictSettings
        ),
        // The worker's adapters: HTTP API, LLM client (libcurl), conversation store (SQLite, libpq).
        .target(
            name: "WhisperWorker",
            dependencies: [
                "WhisperChat", "WhisperSystem", "WhisperConcurrency", "WhisperFiles", "WhisperJSON", "CWorkerLibs",
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "WSClient", package: "swift-websocket"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "whisperd",
            dependencies: [
                "WhisperDaemon", "WhisperWorker", "WhisperConfig", "WhisperCore", "WhisperSystem", "WhisperBackup",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        // The operator's command line: talks to whisperd over its control socket.
        .executableTarget(
            name: "whisperctl",
            dependencies: [
                "WhisperAPI", "WhisperConfig", "WhisperCore", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strictSettings
        ),
        // Fuzz targets (scripts/fuzz.sh builds it with -sanitize=fuzzer -DFUZZING; a normal
        // build replays the committed corpora).
        .executableTarget(
            name: "whisperd-fuzz",
            dependencies: ["WhisperChat", "WhisperConfig", "WhisperCore", "WhisperFiles", "WhisperJSON", "WhisperSystem"],
            swiftSettings: strictSettings
        ),
        .testTarget(name: "WhisperCoreTests", dependencies: ["WhisperCore", "WhisperRandom"], swiftSettings: strictSettings),
        // `whisperctl top`'s pure parts: keys, sorting, the frame on any terminal size.
        .testTarget(name: "WhisperctlTests", dependencies: ["whisperctl"], swiftSettings: strictSettings),
        .testTarget(
            name: "WhisperAPITests", dependencies: ["WhisperAPI", "WhisperJSON", "WhisperSystem", "WhisperConfig", "WhisperCore", "WhisperChat"],
            swiftSettings: strictSettings),
        // The daemon's logic that is not a syscall: the re-exec hand-over, incidents, metrics, flags.
        .testTarget(
            name: "WhisperDaemonTests", dependencies: ["WhisperDaemon", "WhisperAPI", "WhisperCore", "WhisperSystem"],
            swiftSettings: strictSettings),
        .testTarget(name: "WhisperConcurrencyTests", dependencies: ["WhisperConcurrency"], swiftSettings: strictSettings),
        .testTarget(name: "WhisperBackupTests", dependencies: ["WhisperBackup"], swiftSettings: strictSettings),
        .testTarget(name: "WhisperChatTests", dependencies: ["WhisperChat", "WhisperJSON"], swiftSettings: strictSettings),
        .testTarget(name: "WhisperJSONTests", dependencies: ["WhisperJSON"], swiftSettings: strictSettings),
        .testTarget(
            name: "WhisperConfigTests", dependencies: ["WhisperConfig", "WhisperCore", .product(name: "Yams", package: "Yams")],
            swiftSettings: strictSettings),
        .testTarget(
            name: "WhisperSystemTests", dependencies: ["WhisperSystem", "WhisperCore", "WhisperFiles", "WhisperRandom"],
            swiftSettings: strictSettings),
        .testTarget(
            name: "WhisperWorkerTests", dependencies: ["WhisperWorker", "WhisperCore", "WhisperConcurrency"],
            swiftSettings: strictSettings),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "WhisperSystem", "WhisperWorker", "WhisperFiles", .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
            ], exclude: ["Support/test_llm_server.py", "Support/hostile_character.py"],
            swiftSettings: strictSettings),
    ]
)
