import Testing
import WhisperSystem

@Suite struct JournalTests {
    private func parse(_ text: String, _ stream: String) -> (Int, String) {
        let (priority, message) = Journal.priority(of: ArraySlice(Array(text.utf8)), stream: stream)
        return (priority, String(decoding: message, as: UTF8.self))
    }

    @Test func streamGivesThePriority_asDockersJournaldDriver() {
        #expect(parse("hello", "stdout") == (6, "hello"))
        #expect(parse("oops", "stderr") == (3, "oops"))
    }

    @Test func aSdDaemonPrefixWinsAndIsCut() {
        #expect(parse("<4>low disk", "stdout") == (4, "low disk"))
        #expect(parse("<7>detail", "stderr") == (7, "detail"))
        #expect(parse("<0>", "stdout") == (0, ""))
    }

    @Test func lookalikesAreText() {
        #expect(parse("<8>not a level", "stdout") == (6, "<8>not a level"))
        #expect(parse("<42>", "stderr") == (3, "<42>"))
        #expect(parse("<4", "stdout") == (6, "<4"))
        #expect(parse("", "stdout") == (6, ""))
    }

    @Test func serviceEnvironmentIsWhatSystemdSets() {
        #expect(Journal.isServiceEnvironment(["INVOCATION_ID": "0123abcd"]))
        #expect(Journal.isServiceEnvironment(["JOURNAL_STREAM": "8:12345"]))
        #expect(!Journal.isServiceEnvironment(["JOURNAL_STREAM": ""]))
        #expect(!Journal.isServiceEnvironment(["PATH": "/usr/bin"]))
    }
}
