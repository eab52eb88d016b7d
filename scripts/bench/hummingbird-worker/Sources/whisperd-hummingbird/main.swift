// The worker's `POST /api/chat`, `GET /health` and `GET /metrics` on Hummingbird 2: the same
// chat path (`ChatRoute`: validation, admission, store, LLM client, answer shapes) as
// `whisperd worker NAME`, only the HTTP layer differs. Bench only: `whisperd-hummingbird NAME`
// with the worker's environment (API_HOST, API_PORT, the store and LLM settings). Hummingbird's
// own protections are set to the worker's defaults where it has one: at most 256 connections
// (it stops accepting past them; `HB_MAX_CONNECTIONS=0`: no cap, as Hummingbird's default), the
// listen backlog 1024, a connection idle for 10 s closed.
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import WhisperWorker

let environment = ProcessInfo.processInfo.environment
let name = CommandLine.arguments.dropFirst().first ?? "elena"
let host = environment["API_HOST"] ?? "127.0.0.1"
guard let port = environment["API_PORT"].flatMap(Int.init) else {
    FileHandle.standardError.write(Data("whisperd-hummingbird: API_PORT is not set\n".utf8))
    exit(64)
}
let route: ChatRoute
do {
    route = try ChatRoute(name: name, environment: environment)
} catch {
    FileHandle.standardError.write(Data("whisperd-hummingbird: \(error)\n".utf8))
    exit(78)
}

/// The worker's body cap (`HTTPRequestParser.maxBodyBytes`): past it, 413.
let maxBodyBytes = 1 << 20

@Sendable func response(_ answer: ChatRoute.Answer, contentType: String = "application/json") -> Response {
    var headers: HTTPFields = [.contentType: contentType]
    for (field, value) in answer.headers {
        if let name = HTTPField.Name(field) { headers[name] = value }
    }
    return Response(
        status: HTTPResponse.Status(code: answer.status), headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: answer.body)))
}

let router = Router()
router.get("/health") { _, _ in response(ChatRoute.health()) }
router.head("/health") { _, _ in response(ChatRoute.health()) }
router.get("/metrics") { _, _ in response(route.metrics(), contentType: "text/plain; version=0.0.4; charset=utf-8") }
router.post("/api/chat") { request, _ -> Response in
    let body = try await request.body.collect(upTo: maxBodyBytes)
    switch route.start(Array(buffer: body)) {
    case .answered(let answer):
        return response(answer)
    case .started(let run):
        let answer = await withCheckedContinuation { (done: CheckedContinuation<ChatRoute.Answer, Never>) in
            run { done.resume(returning: $0) }
        }
        return response(answer)
    }
}

let maxConnections = environment["HB_MAX_CONNECTIONS"].flatMap(Int.init) ?? 256

let app = Application(
    router: router,
    server: .http1(configuration: HTTP1Channel.Configuration(idleTimeout: .seconds(10))),
    configuration: ApplicationConfiguration(
        address: .hostname(host, port: port), serverName: "whisperd-hummingbird", backlog: 1024,
        availableConnectionsDelegate: maxConnections > 0 ? MaximumAvailableConnections(maxConnections) : nil),
    onServerRunning: { _ in
        FileHandle.standardError.write(Data("whisperd-hummingbird: serving \(name) on http://\(host):\(port)\n".utf8))
    }
)
try await app.runService()
