import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A Discord for tests, on a loopback port: the REST API under `/api/v10` (`GET /gateway/bot`,
/// create message, trigger typing) and the gateway as a real WebSocket (Hello, Identify →
/// READY, Resume → RESUMED, heartbeats and ACKs, close codes). It records everything it is
/// sent; a test scripts it (dispatch events, close with a code, drop the connection, answer
/// REST calls with a 429) and waits on what it recorded.
final class FakeDiscord: @unchecked Sendable {
    // @unchecked: every stored var below is read and written only with `condition` locked;
    // the NIO objects are Sendable themselves.

    struct Bot {
        var id: String
        var name: String
    }

    /// One gateway connection, as the fake saw it.
    struct Connection {
        let channel: any Channel
        var token: String?
        var payloads: [[String: Any]] = []
        var heartbeats: [Date] = []
        var sequence = 0
        var sessionID: String?
        var closeCodeFromClient: Int?
        var isClosed = false
    }

    struct RESTCall {
        var method: String
        var path: String
        var authorization: String
        var body: [String: Any]
        var at: Date
        var status: Int
    }

    private(set) var port = 0
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var server: (any Channel)?
    private let condition = NSCondition()
    /// Token → the bot it identifies.
    private var bots: [String: Bot]
    private var connectionsList: [Connection] = []
    private var restCalls: [RESTCall] = []
    /// Session id → the token that owns it, for resumes.
    private var sessions: [String: String] = [:]
    /// Per session, every event dispatched in it (with its sequence number): a resume from
    /// sequence S replays those after S, as Discord does.
    private var sessionEvents: [String: [(sequence: Int, event: String, data: [String: Any])]] = [:]
    private var nextSession = 1
    /// Answers for the next `POST …/messages` calls: status and JSON body.
    private var scriptedMessageAnswers: [(Int, String)] = []
    private var nextMessageID = 1000
    /// The next `GET /gateway/bot` says the day's session starts are spent (reset after this many ms).
    private var sessionStartsSpentFor: Int?
    private var heartbeatInterval = 45_000
    private var acknowledgeHeartbeats = true

    /// The interval Hello announces to new connections.
    var heartbeatMilliseconds: Int {
        get { locked { heartbeatInterval } }
        set { locked { heartbeatInterval = newValue } }
    }

    func setAcknowledgeHeartbeats(_ value: Bool) { locked { acknowledgeHeartbeats = value } }

    func spendSessionStarts(resetAfterMilliseconds: Int) { locked { sessionStartsSpentFor = resetAfterMilliseconds } }

    init(bots: [String: Bot]) throws {
        self.bots = bots
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Weak throughout: the test owns the fake; connections the worker still holds open
            // must not keep it alive (its deinit would then run on the event loop and wait on it).
            .childChannelInitializer { [weak self] channel in
                guard let self else { return channel.close() }
                let upgrader = NIOWebSocketServerUpgrader(
                    maxFrameSize: 1 << 24,
                    shouldUpgrade: { channel, _ in channel.eventLoop.makeSucceededFuture(HTTPHeaders()) },
                    upgradePipelineHandler: { [weak self] channel, _ in
                        guard let self else { return channel.close() }
                        return channel.eventLoop.makeCompletedFuture {
                            let index = self.opened(channel)
                            try channel.pipeline.syncOperations.addHandler(GatewayHandler(fake: self, index: index))
                        }
                    })
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (
                            upgraders: [upgrader],
                            completionHandler: { context in _ = context.pipeline.removeHandler(name: "rest") }
                        ))
                    try channel.pipeline.syncOperations.addHandler(RESTHandler(fake: self), name: "rest")
                }
            }
        let channel = try bootstrap.bind(host: "127.0.0.1", port: 0).wait()
        server = channel
        port = channel.localAddress?.port ?? 0
    }

    deinit {
        // Off the event loop whichever thread lets go last (a handler may, mid-call).
        server?.close(promise: nil)
        let group = group
        DispatchQueue.global().async { try? group.syncShutdownGracefully() }
    }

    var apiBase: String { "http://127.0.0.1:\(port)/api/v10" }
    var gatewayURL: String { "ws://127.0.0.1:\(port)/gateway" }

    // MARK: - What was recorded

    private func locked<T>(_ body: () -> T) -> T {
        condition.lock()
        defer { condition.unlock() }
        return body()
    }

    var connections: [Connection] { locked { connectionsList } }
    var calls: [RESTCall] { locked { restCalls } }

    /// Waits (bounded) until `match` finds something in the recorded state.
    func wait<T>(timeout: TimeInterval = 10, _ match: (_ connections: [Connection], _ calls: [RESTCall]) -> T?) -> T? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let found = match(connectionsList, restCalls) { return found }
            if !condition.wait(until: deadline) { return match(connectionsList, restCalls) }
        }
    }

    /// The `op` payloads connection `index` sent, waiting for at least `count` of them.
    func payloads(_ index: Int, op: Int, count: Int = 1, timeout: TimeInterval = 10) -> [[String: Any]]? {
        wait(timeout: timeout) { connections, _ in
            guard index < connections.count else { return nil }
            let found = connections[index].payloads.filter { $0["op"] as? Int == op }
            return found.count >= count ? found : nil
        }
    }

    /// REST calls whose path ends with `suffix`, waiting for at least `count`.
    func restCalls(_ method: String, _ suffix: String, count: Int = 1, timeout: TimeInterval = 15) -> [RESTCall]? {
        wait(timeout: timeout) { _, calls in
            let found = calls.filter { $0.method == method && $0.path.hasSuffix(suffix) }
            return found.count >= count ? found : nil
        }
    }

    // MARK: - Scripting

    func scriptMessageAnswers(_ answers: [(Int, String)]) { locked { scriptedMessageAnswers += answers } }

    /// Sends a dispatch event (op 0) on connection `index`, with the next sequence number.
    func dispatch(_ index: Int, _ event: String, _ data: [String: Any]) {
        locked { dispatchLocked(index, event, data) }
    }

    /// Numbered and queued under the lock, so events go out in the order they were numbered
    /// whichever thread (the test's, the event loop's) sends them.
    private func dispatchLocked(_ index: Int, _ event: String, _ data: [String: Any]) {
        if let session = connectionsList[index].sessionID {
            let sequence = (sessionEvents[session]?.last?.sequence ?? 0) + 1
            sessionEvents[session, default: []].append((sequence, event, data))
            connectionsList[index].sequence = sequence
        } else {
            connectionsList[index].sequence += 1
        }
        send(connectionsList[index].channel, ["op": 0, "t": event, "s": connectionsList[index].sequence, "d": data])
    }

    /// Sends a dispatch event in a session: to its open connection if it has one; kept for a
    /// resume either way (an event sent while the bot is between connections is not lost).
    func dispatch(session: String, _ event: String, _ data: [String: Any]) {
        locked {
            if let index = connectionsList.lastIndex(where: { $0.sessionID == session && !$0.isClosed }) {
                dispatchLocked(index, event, data)
            } else {
                let sequence = (sessionEvents[session]?.last?.sequence ?? 0) + 1
                sessionEvents[session, default: []].append((sequence, event, data))
            }
        }
    }

    func send(_ index: Int, _ payload: [String: Any]) { send(locked { connectionsList[index].channel }, payload) }

    /// A close frame with `code`, then the connection closed.
    func close(_ index: Int, code: Int) {
        let channel = locked { connectionsList[index].channel }
        Self.closeFrame(channel, code: code)
    }

    /// The TCP connection dropped, no close frame.
    func drop(_ index: Int) {
        let channel = locked { connectionsList[index].channel }
        channel.close(promise: nil)
    }

    /// A `MESSAGE_CREATE` body.
    static func message(
        id: String, channel: String = "66", guild: String? = "1", author: String, username: String = "sam", bot: Bool = false,
        content: String, mentions: [String] = []
    ) -> [String: Any] {
        var data: [String: Any] = [
            "id": id, "channel_id": channel, "content": content,
            "author": ["id": author, "username": username, "global_name": username.capitalized, "bot": bot],
            "mentions": mentions.map { ["id": $0, "username": "bot"] },
        ]
        if let guild { data["guild_id"] = guild }
        return data
    }

    // MARK: - Protocol

    private func send(_ channel: any Channel, _ payload: [String: Any]) {
        let data = (try? JSONSerialization.data(withJSONObject: payload)) ?? Data()
        let text = String(decoding: data, as: UTF8.self)
        channel.eventLoop.execute {
            var buffer = channel.allocator.buffer(capacity: text.utf8.count)
            buffer.writeString(text)
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .text, data: buffer), promise: nil)
        }
    }

    private static func closeFrame(_ channel: any Channel, code: Int) {
        channel.eventLoop.execute {
            var buffer = channel.allocator.buffer(capacity: 2)
            buffer.write(webSocketErrorCode: WebSocketErrorCode(codeNumber: code))
            channel.writeAndFlush(WebSocketFrame(fin: true, opcode: .connectionClose, data: buffer)).whenComplete { _ in
                channel.close(promise: nil)
            }
        }
    }

    fileprivate func opened(_ channel: any Channel) -> Int {
        let (index, interval) = locked { () -> (Int, Int) in
            connectionsList.append(Connection(channel: channel))
            condition.broadcast()
            return (connectionsList.count - 1, heartbeatInterval)
        }
        send(channel, ["op": 10, "d": ["heartbeat_interval": interval]])
        return index
    }

    fileprivate func closed(_ index: Int, clientCode: Int?) {
        locked {
            if let clientCode { connectionsList[index].closeCodeFromClient = clientCode }
            connectionsList[index].isClosed = true
            condition.broadcast()
        }
    }

    fileprivate func received(_ index: Int, _ text: String) {
        guard let payload = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else { return }
        let op = payload["op"] as? Int
        let data = payload["d"] as? [String: Any] ?? [:]
        var reply: [String: Any]?
        var closeCode: Int?
        let channel: any Channel = locked {
            connectionsList[index].payloads.append(payload)
            defer { condition.broadcast() }
            switch op {
            case 1:
                connectionsList[index].heartbeats.append(Date())
                if acknowledgeHeartbeats { reply = ["op": 11] }
            case 2:
                let token = data["token"] as? String ?? ""
                guard let bot = bots[token] else {
                    closeCode = 4004
                    break
                }
                connectionsList[index].token = token
                let session = "session-\(nextSession)"
                nextSession += 1
                sessions[session] = token
                connectionsList[index].sessionID = session
                dispatchLocked(
                    index, "READY",
                    [
                        "v": 10, "session_id": session, "resume_gateway_url": gatewayURL,
                        "user": ["id": bot.id, "username": bot.name, "bot": true], "guilds": [["id": "1", "unavailable": true]],
                    ])
            case 6:
                let token = data["token"] as? String ?? ""
                if let session = data["session_id"] as? String, sessions[session] == token {
                    connectionsList[index].token = token
                    connectionsList[index].sessionID = session
                    // What the session saw after the client's sequence is replayed, then RESUMED.
                    let from = data["seq"] as? Int ?? 0
                    for missed in sessionEvents[session] ?? [] where missed.sequence > from {
                        send(connectionsList[index].channel, ["op": 0, "t": missed.event, "s": missed.sequence, "d": missed.data])
                    }
                    dispatchLocked(index, "RESUMED", [:])
                } else {
                    reply = ["op": 9, "d": false]
                }
            default:
                break
            }
            return connectionsList[index].channel
        }
        if let closeCode { return Self.closeFrame(channel, code: closeCode) }
        if let reply { send(channel, reply) }
    }

    fileprivate func rest(method: String, uri: String, authorization: String, body: [UInt8]) -> (Int, String) {
        let path = String(uri.split(separator: "?").first ?? "")
        let json = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] ?? [:]
        return locked {
            var answer: (Int, String)
            let token = authorization.hasPrefix("Bot ") ? String(authorization.dropFirst(4)) : ""
            if bots[token] == nil {
                answer = (401, #"{"message": "401: Unauthorized", "code": 0}"#)
            } else if method == "GET", path == "/api/v10/gateway/bot" {
                let (remaining, resetAfter) = sessionStartsSpentFor.map { (0, $0) } ?? (999, 0)
                sessionStartsSpentFor = nil
                answer = (
                    200,
                    #"{"url":"\#(gatewayURL)","shards":1,"session_start_limit":{"total":1000,"remaining":\#(remaining),"reset_after":\#(resetAfter),"max_concurrency":1}}"#
                )
            } else if method == "POST", path.hasSuffix("/typing") {
                answer = (204, "")
            } else if method == "POST", path.hasSuffix("/messages") {
                if !scriptedMessageAnswers.isEmpty {
                    answer = scriptedMessageAnswers.removeFirst()
                } else {
                    nextMessageID += 1
                    answer = (200, #"{"id":"\#(nextMessageID)"}"#)
                }
            } else {
                answer = (404, #"{"message":"404: Not Found"}"#)
            }
            restCalls.append(RESTCall(method: method, path: path, authorization: authorization, body: json, at: Date(), status: answer.0))
            condition.broadcast()
            return answer
        }
    }
}

/// The gateway side of one upgraded connection.
private final class GatewayHandler: ChannelInboundHandler {
    typealias InboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    weak var fake: FakeDiscord?
    let index: Int
    var text = ""

    init(fake: FakeDiscord, index: Int) {
        self.fake = fake
        self.index = index
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .continuation:
            var payload = frame.unmaskedData
            text += payload.readString(length: payload.readableBytes) ?? ""
            if frame.fin {
                let complete = text
                text = ""
                fake?.received(index, complete)
            }
        case .connectionClose:
            var payload = frame.unmaskedData
            let code = payload.readWebSocketErrorCode().map { Int(UInt16(webSocketErrorCode: $0)) }
            fake?.closed(index, clientCode: code)
            var echo = context.channel.allocator.buffer(capacity: 2)
            echo.write(webSocketErrorCode: WebSocketErrorCode(codeNumber: code ?? 1000))
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .connectionClose, data: echo))).whenComplete {
                [channel = context.channel] _ in channel.close(promise: nil)
            }
        case .ping:
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)), promise: nil)
        default:
            break
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        fake?.closed(index, clientCode: nil)
        context.fireChannelInactive()
    }
}

/// The REST side: one JSON answer per request, keep-alive as curl likes it.
private final class RESTHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    weak var fake: FakeDiscord?
    var head: HTTPRequestHead?
    var body: [UInt8] = []

    init(fake: FakeDiscord) { self.fake = fake }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let requestHead):
            head = requestHead
            body = []
        case .body(var buffer):
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head, let fake else { return }
            let (status, text) = fake.rest(
                method: head.method.rawValue, uri: head.uri, authorization: head.headers.first(name: "Authorization") ?? "", body: body)
            var headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", String(text.utf8.count))])
            if status == 429 { headers.add(name: "X-RateLimit-Scope", value: "user") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: HTTPResponseStatus(statusCode: status), headers: headers))),
                promise: nil)
            var buffer = context.channel.allocator.buffer(capacity: text.utf8.count)
            buffer.writeString(text)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            self.head = nil
        }
    }
}
