import Testing
import WhisperCore
@testable import WhisperDaemon
@testable import WhisperSystem

/// Control-socket requests decoded to what they ask of the fleet, or refused with the answer
/// whisperctl shows (no socket, no daemon).
@Suite struct ControlRequestTests {
    static let elena = ServiceName("elena")!

    static func decode(_ method: String, _ target: String) -> Result<ControlRequest, ControlRefusal> {
        let split = target.split(separator: "?", maxSplits: 1).map(String.init)
        let request = HTTPServer.Request(method: method, path: split[0], query: split.count > 1 ? split[1] : "", headers: [], body: [])
        return ControlRequest.decode(request) { $0 == "elena" ? elena : nil }
    }

    static func refusal(_ method: String, _ target: String) -> ControlRefusal? {
        if case .failure(let refusal) = decode(method, target) { return refusal }
        return nil
    }

    @Test func reads_decodeToTheirRoute_orToStatus() throws {
        #expect(try Self.decode("GET", "/v1/paths").get() == .paths)
        #expect(try Self.decode("GET", "/openapi.json").get() == .openAPI)
        #expect(try Self.decode("GET", "/v1/dashboard").get() == .dashboardLogin)
        #expect(try Self.decode("GET", "/v1/characters/elena/logs").get() == .logs(Self.elena, lines: 20, follow: false))
        #expect(try Self.decode("GET", "/v1/characters/elena/logs?lines=5&follow=1").get() == .logs(Self.elena, lines: 5, follow: true))
        #expect(try Self.decode("HEAD", "/v1/characters/elena/incidents").get() == .incidents(Self.elena))
        #expect(try Self.decode("GET", "/v1/characters/elena/env").get() == .environment(Self.elena))
        #expect(try Self.decode("GET", "/health").get() == .status)
        #expect(try Self.decode("GET", "/v1/characters/nobody/logs").get() == .status, "an unknown name: the status port's 404")
    }

    @Test func badLogParameters_are400() {
        #expect(Self.refusal("GET", "/v1/characters/elena/logs?lines=10001") == ControlRefusal(status: 400, message: "lines must be a number in 0...10000"))
        #expect(Self.refusal("GET", "/v1/characters/elena/logs?lines=x")?.status == 400)
        #expect(Self.refusal("GET", "/v1/characters/elena/logs?follow=yes") == ControlRefusal(status: 400, message: "follow must be 0, 1, true or false"))
    }

    @Test func changes_decodeToWhatTheyAsk() throws {
        #expect(try Self.decode("POST", "/v1/reexec").get() == .reexec)
        #expect(try Self.decode("POST", "/v1/reload").get() == .reload(dryRun: false))
        #expect(try Self.decode("POST", "/v1/reload?dry_run=true").get() == .reload(dryRun: true))
        #expect(Self.refusal("POST", "/v1/reload?dry_run=maybe")?.status == 400)
        #expect(try Self.decode("POST", "/v1/scale/elena/3").get() == .scale("elena", replicas: 3))
        #expect(Self.refusal("POST", "/v1/scale/elena/-1")?.status == 400)
        #expect(try Self.decode("POST", "/v1/profiles/night/start").get() == .profile("night", on: true))
        #expect(try Self.decode("POST", "/v1/profiles/night/stop").get() == .profile("night", on: false))
        #expect(Self.refusal("POST", "/v1/profiles/night/pause")?.status == 404)
        #expect(try Self.decode("POST", "/v1/characters/elena/restart").get() == .command(.restart, Self.elena))
        #expect(try Self.decode("POST", "/v1/characters/elena/rolling-restart").get() == .command(.rollingRestart, Self.elena))
    }

    @Test func unknownNames_routesAndOperations_are404_inThatOrder() {
        #expect(Self.refusal("POST", "/v1/characters/nobody/dance") == ControlRefusal(status: 404, message: "no character named nobody"))
        #expect(
            Self.refusal("POST", "/v1/characters/elena/dance")
                == ControlRefusal(status: 404, message: "unknown operation dance (start, stop, restart, rolling-restart, run)"))
        #expect(Self.refusal("POST", "/v1/nothing") == ControlRefusal(status: 404, message: "no such route: POST /v1/nothing"))
    }

    @Test func otherMethods_are405_withWhatIsAllowed() {
        let refusal = Self.refusal("DELETE", "/v1/characters/elena/restart")
        #expect(refusal?.status == 405)
        #expect(refusal?.allowed?.isEmpty == false)
        #expect(Self.refusal("PATCH", "/no/such/route")?.allowed == ["GET", "HEAD", "POST"])
    }

    @Test func flags() {
        #expect(ControlRequest.flag(nil) == false && ControlRequest.flag("0") == false && ControlRequest.flag("false") == false)
        #expect(ControlRequest.flag("1") == true && ControlRequest.flag("true") == true)
        #expect(ControlRequest.flag("yes") == nil)
    }
}
