import Testing
import WhisperCore

@Suite struct CPUSetTests {
    @Test func parsesTheKernelsListFormat_andPrintsItFolded() throws {
        #expect(try CPUSet.parse("0-3,6").cpus == [0, 1, 2, 3, 6])
        #expect(try CPUSet.parse("6,0-3").description == "0-3,6")
        #expect(try CPUSet.parse("1").description == "1")
        #expect(try CPUSet.parse("1,2,3,5,7-8").description == "1-3,5,7-8")
        #expect(try CPUSet.parse(" 2 , 1 ").description == "1-2")
        // Two spellings of the same CPUs are the same set, so a reload that re-spells changes nothing.
        #expect(try CPUSet.parse("0,1,2") == CPUSet.parse("0-2"))
    }

    @Test func rejectsWhatIsNotACPUList() {
        #expect(throws: CPUSet.ParseError.empty) { try CPUSet.parse("") }
        #expect(throws: CPUSet.ParseError.empty) { try CPUSet.parse(" , ") }
        #expect(throws: CPUSet.ParseError.notANumber("a")) { try CPUSet.parse("a") }
        #expect(throws: CPUSet.ParseError.notANumber("1-")) { try CPUSet.parse("1-") }
        #expect(throws: CPUSet.ParseError.notANumber("-1")) { try CPUSet.parse("-1") }
        #expect(throws: CPUSet.ParseError.notANumber("1-2-3")) { try CPUSet.parse("1-2-3") }
        #expect(throws: CPUSet.ParseError.notANumber("0x1")) { try CPUSet.parse("0x1") }
        #expect(throws: CPUSet.ParseError.notANumber("")) { try CPUSet.parse("1,,2") }
        #expect(throws: CPUSet.ParseError.reversedRange("3-1")) { try CPUSet.parse("3-1") }
        #expect(throws: CPUSet.ParseError.tooLarge(9000)) { try CPUSet.parse("0-9000") }
        #expect(throws: CPUSet.ParseError.notANumber("123456")) { try CPUSet.parse("123456") }
    }

    @Test func subsets() throws {
        #expect(try CPUSet.parse("1").isSubset(of: CPUSet.parse("0-1")))
        #expect(try !CPUSet.parse("2").isSubset(of: CPUSet.parse("0-1")))
    }
}
