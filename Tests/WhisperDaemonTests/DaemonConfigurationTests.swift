import Testing
import WhisperDaemon

/// `--http ADDR:PORT`: loopback unless the operator says otherwise.
@Suite struct DaemonConfigurationTests {
    private func parse(_ text: String, remote: Bool = false) -> String {
        switch DaemonConfiguration.parseHTTPAddress(text, allowNonLoopback: remote) {
        case .success(nil): "off"
        case .success(let address?): "\(address.host) \(address.port)"
        case .failure(let error): "error: \(error.description)"
        }
    }

    @Test(arguments: [
        ("off", "off"), ("127.0.0.1:9464", "127.0.0.1 9464"), ("127.0.0.2:80", "127.0.0.2 80"), ("localhost:9464", "127.0.0.1 9464"),
        ("[::1]:9464", "::1 9464"), ("::1:9464", "::1 9464"), ("127.0.0.1:65535", "127.0.0.1 65535"),
    ])
    func loopbackAddresses(_ text: String, _ parsed: String) {
        #expect(parse(text) == parsed)
    }

    @Test func aNonLoopbackAddress_needsTheFlag() {
        #expect(parse("0.0.0.0:9464").contains("--http-allow-remote"))
        #expect(parse("[::]:9464").contains("--http-allow-remote"))
        #expect(parse("0.0.0.0:9464", remote: true) == "0.0.0.0 9464")
        #expect(parse("[fd00::1]:9464", remote: true) == "fd00::1 9464")
    }

    @Test(arguments: [
        "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", ":9464", "[::1]9464", "[::1]",
        "status.example:9464", "on",
    ])
    func malformed_isAnError(_ text: String) {
        #expect(parse(text, remote: true).hasPrefix("error: "), "\(text) -> \(parse(text, remote: true))")
    }
}
