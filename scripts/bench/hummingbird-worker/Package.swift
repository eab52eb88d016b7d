// swift-tools-version: 6.1
// Bench only (issue 22): the worker's chat path served by Hummingbird 2 instead of the worker's
// own HTTP server, for scripts/bench/chat.sh and hostile.sh (--hummingbird). Not part of the
// product's build or CI: built on demand by scripts/bench/build-hummingbird.sh.
import Foundation
import PackageDescription

// A path dependency's identity is its directory's name (whatever the checkout is called).
let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../..").standardized
let repositoryIdentity = repository.lastPathComponent.lowercased()

let package = Package(
    name: "whisperd-hummingbird",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: repository.path),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "whisperd-hummingbird",
            dependencies: [
                .product(name: "WhisperWorker", package: repositoryIdentity),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny"), .enableUpcomingFeature("MemberImportVisibility")]
        )
    ]
)
