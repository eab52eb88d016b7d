import ArgumentParser
import Foundation
import Glibc
import WhisperConfig
import WhisperFiles

extension Whisperd {
    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Translate another tool's configuration into a roster.",
            subcommands: [Compose.self])
    }
}

extension Whisperd.Import {
    struct Compose: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "compose",
            abstract: "Translate Compose files into a roster: the roster to stdout, a report to stderr.",
            discussion: """
                Later files override earlier ones (as `docker compose -f a -f b`). ${VAR} and friends \
                are interpolated from the environment over --env-file (default: .env beside the first \
                file, if there is one). The report names, with file and line, every key mapped (and \
                to what), ignored on purpose (networks, volumes, container_name, images…) or not \
                mappable (an `image:` with no `command:` is left out). Writes nothing but stdout and \
                stderr; exits 1 with the reason when a file is unreadable or not Compose. Check the \
                result with `whisperd --roster FILE --check`. See docs/compose.md.
                """)

        @Argument(help: "Compose files (compose.yaml, docker-compose.override.yml…).")
        var files: [String]

        @Option(
            name: .long,
            help: ArgumentHelp(
                "Import only services without profiles or with this one (repeatable, or comma-separated); without it, every service, with its profiles: kept.",
                valueName: "NAME"))
        var profile: [String] = []

        @Option(name: .long, help: "The dotenv file for interpolation (default: .env beside the first file, optional).")
        var envFile: String?

        @Option(
            name: .long,
            help: ArgumentHelp(
                "Services with this image (any tag when none is given) become the built-in worker, named by their DISCORD_BOT_NAME or the service.",
                valueName: "IMAGE"))
        var workerImage: String?

        /// ArgumentParser lets the root command take its options from anywhere on the line, and
        /// `whisperd --profile` is the root's: `whisperd import compose F --profile P` fills the
        /// root's, not this one's. So the values after `compose` are read here too.
        static func profilesTakenByTheRoot(_ arguments: [String]) -> [String] {
            Whisperd.valuesTakenByTheRoot(after: "compose", "--profile", arguments)
        }

        func fail(_ message: String) -> ExitCode {
            FileHandle.standardError.write(Data("whisperd import compose: \(message)\n".utf8))
            return ExitCode(1)
        }

        func readText(_ path: String) throws -> String {
            var info = stat()
            guard stat(path, &info) == 0 else { throw fail("\(path): cannot read: \(String(cString: strerror(errno)))") }
            guard (info.st_mode & S_IFMT) == S_IFREG else { throw fail("\(path): not a regular file") }
            guard info.st_size <= RosterLoader.maxFileSize else { throw fail("\(path): \(info.st_size) bytes; the limit is \(RosterLoader.maxFileSize)") }
            guard let data = readFileContents(path) else { throw fail("\(path): cannot read") }
            guard let text = String(data: data, encoding: .utf8) else { throw fail("\(path): not valid UTF-8") }
            return text
        }

        func run() throws {
            let directory = FileManager.default.currentDirectoryPath
            var profiles: Set<String> = []
            for name in (profile + Self.profilesTakenByTheRoot(CommandLine.arguments)).flatMap({ $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }) {
                guard RosterLoader.isValidProfile(name) else { throw fail("--profile: `\(name.prefix(40))` is not a profile name") }
                profiles.insert(name)
            }
            var sources: [ComposeSource] = []
            for file in files {
                let path = Paths.absolute(file, from: directory)
                sources.append(ComposeSource(path: path, text: try readText(path)))
            }
            // `extends: {file: …}`: read what the files name, and what those name, in turn.
            var extendedFiles: [String: String] = [:]
            for _ in 0..<16 {
                let wanted = ComposeImport.filesToRead(sources, alreadyRead: extendedFiles)
                if wanted.isEmpty { break }
                for path in wanted { extendedFiles[path] = try readText(path) }
            }
            // Compose: the shell's environment wins over .env.
            var environment: [String: String] = [:]
            let defaultEnvFile = Paths.directory(of: sources[0].path) + "/.env"
            let envPath = envFile.map { Paths.absolute($0, from: directory) } ?? defaultEnvFile
            if envFile != nil || FileManager.default.fileExists(atPath: envPath) {
                switch Dotenv.parse(try readText(envPath)) {
                case .failure(let problem): throw fail("\(envPath): \(problem)")
                case .success(let entries): for entry in entries { environment[entry.key] = entry.value }
                }
            }
            environment.merge(ProcessInfo.processInfo.environment) { _, shell in shell }
            let options = ComposeImportOptions(profiles: profiles, workerImage: workerImage)
            switch ComposeImport.translate(sources, extendedFiles: extendedFiles, environment: environment, options: options) {
            case .failure(let error):
                throw fail("\(error)")
            case .success(let result):
                print(result.roster, terminator: "")
                var report = result.findings.map { "\($0)\n" }.joined()
                let counts = Dictionary(grouping: result.findings, by: \.label).mapValues(\.count)
                report += "whisperd import compose: \(result.names.count) service\(result.names.count == 1 ? "" : "s") imported; "
                    + ["mapped", "ignored", "not mappable", "warning"].map { "\(counts[$0] ?? 0) \($0)" }.joined(separator: ", ") + "\n"
                FileHandle.standardError.write(Data(report.utf8))
            }
        }
    }
}
