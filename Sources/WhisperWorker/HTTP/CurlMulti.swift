import CWorkerLibs
import Dispatch
import Foundation
import Synchronization
import WhisperConcurrency

/// HTTP requests on libcurl's multi interface, all driven by one thread: any number of
/// transfers in flight without a thread each (a blocking `CurlHTTP` call parks its thread for
/// the whole LLM call, and sixteen such threads handing work to each other was most of a chat's
/// cost). Requests come from any thread; completions run on the driver's thread, must not block,
/// and are told everything `CurlHTTP` tells. Connections are kept and reused across requests.
final class CurlMulti: Sendable {
    typealias Completion = @Sendable (Result<CurlHTTP.Answer, CurlHTTP.Failure>) -> Void

    private struct Submitted: Sendable {
        var request: CurlHTTP.Request
        /// Monotonic nanoseconds before which it is not started (a retry's backoff).
        var notBefore: UInt64
        var completion: Completion
    }

    /// The multi handle. Only the driver thread uses it, except `curl_multi_wakeup`, which
    /// libcurl allows from any thread.
    private struct MultiHandle: @unchecked Sendable {
        // @unchecked: see above; the pointer itself never changes.
        let raw: UnsafeMutableRawPointer
    }

    /// Idle connections kept for reuse (the LLM's host is usually one).
    static let keptConnections = 64

    private let multi: MultiHandle
    private let submitted = Locked<[Submitted]>([])

    init() throws {
        try WorkerLibraries.load(.curl)
        _ = CurlHTTP.globalInit
        guard let raw = wl_curl_multi_init() else { throw CurlHTTP.Failure(timedOut: false, description: "curl_multi_init failed") }
        // libcurl keeps 4 idle connections per transfer in flight by default: when a burst ends
        // it closes most of them, and the next burst connects again (one chat in ten did).
        _ = wl_curl_multi_set_long(raw, CURLMOPT_MAXCONNECTS, Self.keptConnections)
        multi = MultiHandle(raw: raw)
        let thread = Thread { [self] in self.drive() }
        thread.name = "curl-multi"
        thread.start()
    }

    /// Starts `request` (at once, or after `delay` seconds); `completion` gets its outcome.
    func submit(_ request: CurlHTTP.Request, after delay: Double = 0, completion: @escaping Completion) {
        let notBefore = DispatchTime.now().uptimeNanoseconds + UInt64(max(0, delay) * 1e9)
        submitted.withLock { $0.append(Submitted(request: request, notBefore: notBefore, completion: completion)) }
        _ = wl_curl_multi_wakeup(multi.raw)
    }

    /// A transfer under way: what its callbacks fill, and who is waiting for it.
    private final class Transfer {
        let exchange: CurlHTTP.Exchange
        let completion: Completion

        init(exchange: CurlHTTP.Exchange, completion: @escaping Completion) {
            self.exchange = exchange
            self.completion = completion
        }
    }

    /// The driver thread: start what is due, let libcurl move every transfer, hand out the
    /// finished ones, and sleep in `curl_multi_poll` until a socket, a timeout of libcurl's, a
    /// backoff ending or a new request (`curl_multi_wakeup`) needs it.
    private func drive() {
        var running: [UnsafeMutableRawPointer: Transfer] = [:]
        var idle: [UnsafeMutableRawPointer] = []
        var waiting: [Submitted] = []
        while true {
            waiting += submitted.withLock { queue in
                defer { queue = [] }
                return queue
            }
            let now = DispatchTime.now().uptimeNanoseconds
            var nextDue: UInt64?
            waiting.removeAll { entry in
                guard entry.notBefore <= now else {
                    nextDue = min(nextDue ?? .max, entry.notBefore)
                    return false
                }
                guard let easy = idle.popLast() ?? wl_curl_easy_init() else {
                    entry.completion(.failure(CurlHTTP.Failure(timedOut: false, description: "curl_easy_init failed")))
                    return true
                }
                let transfer = Transfer(exchange: CurlHTTP.Exchange(limit: entry.request.bodyLimit, keeping: entry.request.keptHeaders), completion: entry.completion)
                CurlHTTP.configure(easy, entry.request, transfer.exchange)
                running[easy] = transfer
                _ = wl_curl_multi_add_handle(multi.raw, easy)
                return true
            }
            var stillRunning: Int32 = 0
            _ = wl_curl_multi_perform(multi.raw, &stillRunning)
            var easy: UnsafeMutableRawPointer?
            var code = CURLE_OK
            while wl_curl_multi_next_done(multi.raw, &easy, &code) == 1, let finished = easy {
                _ = wl_curl_multi_remove_handle(multi.raw, finished)
                guard let transfer = running.removeValue(forKey: finished) else { continue }
                let outcome = CurlHTTP.answer(finished, code, transfer.exchange)
                wl_curl_easy_reset(finished)
                idle.append(finished)
                transfer.completion(outcome)
            }
            if !waiting.isEmpty, waiting.contains(where: { $0.notBefore <= DispatchTime.now().uptimeNanoseconds }) { continue }
            // No polling when idle: libcurl shortens the wait to its own timers (a transfer's
            // timeout), `submit` wakes it, and only a retry's backoff needs a deadline here.
            let timeout = nextDue.map { due -> Int32 in
                let now = DispatchTime.now().uptimeNanoseconds
                return due <= now ? 0 : Int32(min(UInt64(Int32.max), (due - now) / 1_000_000 + 1))
            } ?? Int32.max
            _ = wl_curl_multi_poll(multi.raw, timeout)
        }
    }
}
