import ArgumentParser
import Foundation
import Glibc
import WhisperConfig
import WhisperCore
import WhisperFiles

extension Whisperd {
    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "export",
            abstract: "Translate the roster into another tool's configuration.",
            subcommands: [Kubernetes.self])
    }
}

extension Whisperd.Export {
    struct Kubernetes: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "kubernetes",
            abstract: "Translate the roster into Kubernetes manifests: YAML to stdout, a report of every roster key to stderr.",
            discussion: """
                Each character becomes a StatefulSet (its SQLite store on a volume claim) or, with \
                DATABASE_URL/POSTGRES_URL, a Deployment; a Service (its port, and whisperd's 9464); a \
                ConfigMap NAME-config (its one-service roster and character files); a Secret NAME-env \
                with its secret variables (or, with --secrets-from PREFIX, references to Secrets \
                PREFIX-NAME you create: then no value is written). Each job becomes a Job (NAME-<revision> \
                for once-per-revision). In every pod whisperd runs the service (`whisperd run-one`), so \
                readiness, watchdog, restarts and stop grace keep their meaning; `after:` becomes init \
                containers (`whisperd wait`). The report names every roster key: mapped (to what), \
                ignored, or not mappable (why). Secret values never appear in the report. Reads the \
                roster and its env files as `whisperd --check` does; exits 1 with every problem when \
                the roster is invalid or a name cannot name Kubernetes objects. See docs/kubernetes.md.
                """)

        @Option(name: .long, help: "The roster file.")
        var roster: String = Whisperd.productionRoster

        @Option(name: .long, help: "The whisperd image every container runs (scripts/build-image.sh).")
        var image: String = "localhost/whisperd:latest"

        @Option(name: .long, help: "metadata.namespace of every object (default: none, kubectl's current one).")
        var namespace: String?

        @Option(
            name: .long,
            help: ArgumentHelp(
                "Reference Secrets PREFIX-<service> that you create (keys: the variable names) instead of writing values.",
                valueName: "PREFIX"))
        var secretsFrom: String?

        @Option(name: .long, help: ArgumentHelp("Export the services of this profile too (repeatable, or comma-separated).", valueName: "NAME"))
        var profile: [String] = []

        @Option(name: .long, help: ArgumentHelp("The size of each character's SQLite volume claim.", valueName: "QUANTITY"))
        var storage: String = "1Gi"

        static let maxCharacterFileSize = 1 << 20

        func fail(_ message: String) -> ExitCode {
            FileHandle.standardError.write(Data("whisperd export kubernetes: \(message)\n".utf8))
            return ExitCode(1)
        }

        /// The regular files of a character's folder (not its subfolders), text or not.
        func characterFiles(_ directory: String) -> [CharacterFile] {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return [] }
            var files: [CharacterFile] = []
            for name in names.sorted() {
                let path = directory + "/" + name
                var info = stat()
                guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, info.st_size <= Self.maxCharacterFileSize else { continue }
                let text = readFileContents(path).flatMap { String(data: $0, encoding: .utf8) }
                files.append(CharacterFile(name: name, text: text))
            }
            return files
        }

        func run() throws {
            let arguments = CommandLine.arguments
            let rosterPath = Whisperd.valuesTakenByTheRoot(after: "kubernetes", "--roster", arguments).last ?? roster
            var profiles: Set<String> = []
            for name in (profile + Whisperd.valuesTakenByTheRoot(after: "kubernetes", "--profile", arguments)).flatMap({
                $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
            }) {
                guard RosterLoader.isValidProfile(name) else { throw fail("--profile: `\(name.prefix(40))` is not a profile name") }
                profiles.insert(name)
            }
            let selfPath = Whisperd.executablePath()
            let loader = RosterLoader(selfExecutable: selfPath, hostEnvironment: ProcessInfo.processInfo.environment, profiles: profiles)
            let loaded: LoadedRoster
            switch loader.load(path: rosterPath) {
            case .failure(let error): throw fail("\(rosterPath): \(error)")
            case .success(let result): loaded = result
            }
            guard let data = readFileContents(loaded.path), let text = String(data: data, encoding: .utf8) else {
                throw fail("\(loaded.path): cannot read it again")
            }
            var files: [String: [CharacterFile]] = [:]
            for spec in loaded.roster.services where !spec.isJob {
                let name = spec.launch.environment["WHISPERD_CHARACTER"] ?? spec.name.rawValue
                if files[name] == nil { files[name] = characterFiles(loaded.charactersDirectory + "/" + name) }
            }
            let options = KubernetesExportOptions(
                image: image, namespace: namespace, secretsFrom: secretsFrom, selfExecutable: selfPath, storageSize: storage)
            switch KubernetesExport.translate(loaded, rosterText: text, characterFiles: files, options: options) {
            case .failure(let error):
                throw fail("\(error.problems.count == 1 ? "" : "\(error.problems.count) problems:\n")\(error)")
            case .success(let result):
                print(result.yaml, terminator: "")
                var report = result.findings.map { "\($0)\n" }.joined()
                let counts = Dictionary(grouping: result.findings, by: \.label).mapValues(\.count)
                report += "whisperd export kubernetes: \(result.objects.count) objects; "
                    + ["mapped", "ignored", "not mappable", "warning"].map { "\(counts[$0] ?? 0) \($0)" }.joined(separator: ", ") + "\n"
                FileHandle.standardError.write(Data(report.utf8))
            }
        }
    }
}
