import Testing
import WhisperSystem

@Suite struct LineAssemblerTests {
    let now: Int64 = 1_795_000_000_123_000_000

    @Test func splitsLinesAcrossChunks_andStampsEach() {
        var assembler = LineAssembler(stream: "stdout")
        let first = assembler.feed(ArraySlice(Array("hel".utf8)), now: now)
        #expect(first.lines == 0)
        let second = assembler.feed(ArraySlice(Array("lo\nworld\npart".utf8)), now: now)
        #expect(second.lines == 2)
        let text = String(decoding: second.bytes, as: UTF8.self)
        let stamp = Clock.iso8601(realtimeNanoseconds: now)
        #expect(text == "\(stamp) stdout hello\n\(stamp) stdout world\n")
        let rest = assembler.flush(now: now)
        #expect(String(decoding: rest.bytes, as: UTF8.self) == "\(stamp) stdout part\n")
    }

    @Test func overlongLinesAreCut() {
        var assembler = LineAssembler(stream: "stderr", maxLine: 10)
        let result = assembler.feed(ArraySlice(Array(String(repeating: "x", count: 25).utf8)), now: now)
        #expect(result.lines == 2)
        #expect(assembler.flush(now: now).lines == 1)
    }

    @Test func iso8601IsUTCWithMilliseconds() {
        #expect(Clock.iso8601(realtimeNanoseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(Clock.iso8601(realtimeNanoseconds: 1_000_000_001_500_000_000) == "2001-09-09T01:46:41.500Z")
    }
}
