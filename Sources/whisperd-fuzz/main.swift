import Foundation
import WhisperChat
import WhisperConfig
import WhisperCore
import WhisperSystem
import WhisperFiles
import WhisperJSON

// The fuzz targets: whisperd's parsers of untrusted input, each checked for more than "did
// not crash" where a cheap invariant exists.
//
//   whisperd-fuzz TARGET [FILE|DIR…]        replay inputs (a normal build; used by the tests)
//   whisperd-fuzz TARGET [libFuzzer flags]  fuzz (as built by scripts/fuzz.sh: libFuzzer coverage, -DFUZZING)

let loader = RosterLoader(selfExecutable: "/usr/bin/whisperd", hostEnvironment: ["PATH": "/usr/bin:/bin"])

let targets: [String: ([UInt8]) -> Void] = [
    // The roster parser and the whole pre-flight (env files and character folders are looked
    // up relative to a directory that does not exist, so only the text matters).
    // A roster it accepts is exported to Kubernetes too: each pod's roster must be one that
    // `run-one` reads (valid YAML, no unknown key).
    "roster": { bytes in
        let text = String(decoding: bytes, as: UTF8.self)
        switch loader.parse(text, path: "/nonexistent/whisperd-fuzz/roster.yaml") {
        case .success(let loaded):
            precondition(Set(loaded.roster.services.map(\.name)).count == loaded.roster.services.count, "duplicate names")
            let options = KubernetesExportOptions(selfExecutable: "/usr/bin/whisperd")
            guard case .success(let export) = KubernetesExport.translate(loaded, rosterText: text, characterFiles: [:], options: options) else { return }
            for case .configMap(let map) in export.objects {
                guard let podRoster = map.data["roster.yaml"], map.metadata.name.hasSuffix("-config") else { continue }
                var podLoader = loader
                podLoader.oneService = .init(name: String(map.metadata.name.dropLast("-config".count)), replicaIndex: 0)
                guard case .failure(let error) = podLoader.parse(podRoster, path: "/nonexistent/whisperd-fuzz/roster/roster.yaml") else { continue }
                for problem in error.problems {
                    precondition(
                        !problem.message.hasPrefix("not valid YAML") && !problem.message.hasPrefix("unknown key"),
                        "a pod's roster is unreadable: \(problem)\n\(podRoster)")
                }
            }
        case .failure(let error): precondition(!error.problems.isEmpty, "a rejected roster names its problems")
        }
    },
    // `whisperd import compose`: the Compose reader (anchors, merge keys, interpolation,
    // extends) and the translation; what it writes must be YAML the roster loader reads with
    // no unknown key.
    "compose": { bytes in
        let source = ComposeSource(path: "/nonexistent/whisperd-fuzz/compose.yaml", text: String(decoding: bytes, as: UTF8.self))
        let options = ComposeImportOptions(workerImage: "whisperengine/bot")
        guard case .success(let result) = ComposeImport.translate([source], environment: ["SET": "value", "EMPTY": ""], options: options) else { return }
        if case .failure(let error) = loader.parse(result.roster, path: "/nonexistent/whisperd-fuzz/roster.yaml") {
            for problem in error.problems {
                precondition(!problem.message.hasPrefix("not valid YAML") && !problem.message.hasPrefix("unknown key"), "the roster written is unreadable: \(problem)\n\(result.roster)")
            }
        }
    },
    "dotenv": { bytes in
        if case .success(let entries) = Dotenv.parse(String(decoding: bytes, as: UTF8.self)) {
            for entry in entries { precondition(!entry.key.isEmpty && !entry.key.contains("="), "bad key \(entry.key)") }
        }
    },
    // sd_notify datagrams, as a child (or anyone who can reach the socket) sends them.
    "notify": { bytes in
        if case .success(let message) = NotifyMessage.parse(bytes) {
            for facet in message.facets { precondition(!facet.name.isEmpty) }
        }
        _ = Facet(parsing: String(decoding: bytes, as: UTF8.self))
    },
    // The control socket's and the status port's HTTP request parsing, and query decoding.
    "http-request": { bytes in
        var rest = bytes
        while true {
            switch HTTPServer.parse(rest) {
            case .complete(let request, let length, _):
                precondition(length > 0 && length <= rest.count, "a request longer than its input")
                // What strict parsing promises the handler: token names, no line breaks in values.
                for (name, value) in request.headers {
                    precondition(!name.isEmpty && name.utf8.allSatisfy(HTTPServer.isTokenCharacter), "a header name that is no token")
                    precondition(!value.utf8.contains(13) && !value.utf8.contains(10), "a line break in a header value")
                }
                _ = request.queryItems
                _ = request.header("content-type")
                rest.removeFirst(length)
                continue
            case .awaitingBody(let headLength, let contentLength):
                precondition(headLength <= rest.count && headLength + contentLength > rest.count, "a body awaited that is in")
            case .incomplete, .invalid, .tooLarge:
                break
            }
            break
        }
    },
    // The worker's request bodies (FastAPI-shaped 422s).
    "chat-request": { bytes in
        if case .success(let chat) = ChatRequests.chat(bytes) {
            precondition(!chat.userID.isEmpty && chat.message.count <= Conversation.maxMessageCharacters)
        }
        _ = ChatRequests.userState(bytes)
        _ = ChatRequests.conversation(bytes)
        _ = ChatRequests.clearUserData(bytes)
        // The JSON parser under them: what it accepts, written back out, reads back the same.
        if let value = try? JSONValue.parse(bytes) {
            let again = try? JSONValue.parse(Array(value.jsonText.utf8))
            precondition(again == value, "JSON round trip changed \(value)")
        }
    },
    // Discord gateway payloads and the message rules that read them.
    "gateway": { bytes in
        guard case .success(let event) = GatewayEvent.decode(String(decoding: bytes, as: UTF8.self)) else { return }
        if case .dispatch(_, _, let data) = event {
            let settings = DiscordSettings(
                token: "t", apiBase: "http://x", gatewayURL: nil, intents: 1, blockDirectMessages: true,
                directMessageAllowed: ["1"], blockedUsers: ["2"])
            if case .answer(let message) = DiscordMessagePolicy.decide(data, botUserID: "900", settings: settings) {
                precondition(!message.text.isEmpty && message.userID != "900")
                for part in DiscordReplySplitter.split(message.text) { precondition(part.count <= DiscordReplySplitter.limit) }
            }
        }
        var session = GatewaySession(token: "t", intents: 1, seed: 1)
        _ = session.start(gatewayURL: "wss://g")
        _ = session.connectionOpened(now: 0)
        _ = session.received(event, now: 1)
        _ = session.tick(now: 100)
    },
]

let arguments = CommandLine.arguments
guard arguments.count >= 2, let target = targets[arguments[1]] else {
    FileHandle.standardError.write(Data("usage: whisperd-fuzz \(targets.keys.sorted().joined(separator: "|")) [inputs or libFuzzer flags]\n".utf8))
    exit(2)
}

#if FUZZING
// libFuzzer's driver (libclang_rt.fuzzer_no_main, linked by scripts/fuzz.sh); the callback is a C function, so the
// selected target is a global.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

// Written once, before the driver starts calling back on this same thread.
nonisolated(unsafe) var selectedTarget: ([UInt8]) -> Void = { _ in }
selectedTarget = target
var driverArguments = [arguments[0]] + arguments.dropFirst(2)
var cArguments: [UnsafeMutablePointer<CChar>?] = driverArguments.map { strdup($0) } + [nil]
var argc = CInt(driverArguments.count)
let status = cArguments.withUnsafeMutableBufferPointer { buffer -> CInt in
    var argv = buffer.baseAddress
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        selectedTarget(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
        return 0
    }
}
exit(status)
#else
var replayed = 0
for path in arguments.dropFirst(2) {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        FileHandle.standardError.write(Data("whisperd-fuzz: no such file or directory: \(path)\n".utf8))
        exit(2)
    }
    let files =
        isDirectory.boolValue
        ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 } : [path]
    for file in files {
        guard let data = readFileContents(file) else { continue }
        target(Array(data))
        replayed += 1
    }
}
print("whisperd-fuzz \(arguments[1]): replayed \(replayed) input(s), no failure")
#endif
