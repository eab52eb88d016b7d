import Foundation
import Glibc
import Testing
import WhisperSystem

@Suite struct StateStoreTests {
    private func scratchDirectory() -> String {
        var template = Array("/tmp/wd-statestore-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
    }

    /// The files are written by whisperd's own writer: what is written reads back, names that
    /// need escaping included, and the file stays plain JSON an operator (or jq) can read.
    @Test func whatIsWritten_readsBack_asPlainSortedJSON() throws {
        let directory = scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try StateStore(directory: directory)
        let ids: [String: UInt32] = ["elena": 61200, "aria-0": 61201, "odd \"name\"\\ é": 61202]
        try store.setDynamicIDs(ids)
        #expect(store.dynamicIDs() == ids)
        let text = try #require(readSmallFile(directory + "/dynamic-users.json"))
        let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: String]
        #expect(object == ids.mapValues(String.init))
        #expect(text.hasPrefix("{\n  \"aria-0\" : \"61201\",\n  \"elena\" : \"61200\""), "\(text)")

        try store.setIntent("elena", down: true)
        #expect(store.stoppedServices() == ["elena"])
        try store.setIntent("elena", down: false)
        #expect(store.stoppedServices().isEmpty)
        #expect(readSmallFile(directory + "/intents.json") == "{}\n")
    }
}
