import Foundation
import Testing

/// Every committed fuzz input (seeds, and inputs that once crashed) replayed through the
/// fuzz targets of a normal build: a parser change that breaks on one of them fails here,
/// not only in `scripts/fuzz.sh`.
extension IntegrationTests {
    @Suite struct FuzzCorpusSection {
        @Test(arguments: ["roster", "dotenv", "notify", "http-request", "chat-request", "gateway", "compose"])
        func committedInputs_replayWithoutFailure(target: String) throws {
            let fuzzer = (whisperdBinary() as NSString).deletingLastPathComponent + "/whisperd-fuzz"
            let corpus = repositoryRoot() + "/fuzz/corpus/" + target
            let files = try FileManager.default.contentsOfDirectory(atPath: corpus)
            #expect(!files.isEmpty)
            let result = try runCommand(fuzzer, [target, corpus])
            #expect(result.code == 0, "\(result.stderr)")
            #expect(result.stdout.contains("replayed \(files.count) input(s), no failure"), "\(result.stdout)")
        }
    }
}
