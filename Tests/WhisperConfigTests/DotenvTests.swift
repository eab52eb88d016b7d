import Testing
import WhisperConfig

@Suite struct DotenvTests {
    func values(_ text: String) throws -> [String: String] {
        Dictionary(try Dotenv.parse(text).get().map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    @Test func commentsQuotesAndExport() throws {
        let parsed = try values(
            """
            # a comment
            PLAIN=value
            export EXPORTED=yes
              SPACED = padded   
            SINGLE='keep $HOME and \\n literally' # trailing comment
            DOUBLE="line1\\nline2 \\"quoted\\""
            HASH=abc#not-a-comment
            INLINE=abc # a comment
            EMPTY=
            LATER=first
            LATER=second
            """)
        #expect(parsed["PLAIN"] == "value")
        #expect(parsed["EXPORTED"] == "yes")
        #expect(parsed["SPACED"] == "padded")
        #expect(parsed["SINGLE"] == "keep $HOME and \\n literally")
        #expect(parsed["DOUBLE"] == "line1\nline2 \"quoted\"")
        #expect(parsed["HASH"] == "abc#not-a-comment")
        #expect(parsed["INLINE"] == "abc")
        #expect(parsed["EMPTY"] == "")
        #expect(parsed["LATER"] == "second")
    }

    @Test func crlfLinesAreAccepted() throws {
        #expect(try values("A=1\r\nB=2\r\n") == ["A": "1", "B": "2"])
    }

    @Test(arguments: [("NOEQUALS", 1), ("A=1\n1BAD=x", 2), ("A='open", 1), ("A=\"open", 1), ("A='x' junk", 1), ("BAD-NAME=1", 1)])
    func errorsNameTheLine(_ text: String, _ line: Int) {
        guard case .failure(let problem) = Dotenv.parse(text) else {
            Issue.record("accepted \(text.debugDescription)")
            return
        }
        #expect(problem.line == line)
    }

    @Test func secretsAreRecognised() {
        for key in ["DISCORD_TOKEN", "LLM_API_KEY", "DB_PASSWORD", "client_secret", "PGPASSWORD", "OPENAI_APIKEY"] { #expect(Secrets.isSecret(key)) }
        for key in ["PATH", "API_PORT", "LLM_MODEL_NAME", "LLM_MAX_TOKENS"] { #expect(!Secrets.isSecret(key)) }
    }
}

@Suite struct SecretDisplayTests {
    @Test(arguments: [
        ("DATABASE_URL", "postgres://app:s3cr3t@db:5432/whisper", "postgres://app:<redacted>@db:5432/whisper", true),
        ("LLM_BASE_URL", "https://user:pa:ss@llm.example/v1?x=@", "https://user:<redacted>@llm.example/v1?x=@", true),
        ("LLM_BASE_URL", "http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1", false),
        ("WEBHOOK", "https://token@hooks.example/", "https://token@hooks.example/", false),
        ("DISCORD_TOKEN", "abc", "<redacted>", true),
        ("NOTE", "see mailto:x@y", "see mailto:x@y", false),
    ])
    func urlCredentials_areRedacted_whateverTheKey(key: String, value: String, shown: String, isSecret: Bool) {
        let result = Secrets.displayed(key, value)
        #expect(result.value == shown)
        #expect(result.isSecret == isSecret)
    }
}
