import Foundation
import WhisperChat

/// One `/api/conversation` request under way: its turns one after another, each an ordinary
/// chat, each seeing the ones before it. No thread waits: a turn's end starts the next (on the
/// store's thread, where a chat's start does not block), and a delay between turns is a timer.
/// Past `maxSeconds` from its start no further turn begins (one in progress finishes).
struct ConversationRun: Sendable {
    let request: ConversationRequest
    let service: ChatService
    let maxSeconds: Double
    let started: Date

    struct Outcome: Sendable {
        var turns: [ChatService.Turn]
        var end: End
    }

    enum End: Sendable {
        case answered
        case failed(ChatService.Failure)
        case outOfTime
    }

    private var deadline: Date { started.addingTimeInterval(maxSeconds) }

    /// Runs from turn `index` on (`done` answered before it); `finish` gets the outcome, once.
    func turn(_ index: Int, done: [ChatService.Turn], finish: @escaping @Sendable (Outcome) -> Void) {
        guard Date() < deadline else { return finish(Outcome(turns: done, end: .outOfTime)) }
        service.chat(userID: request.userID, message: request.messages[index], context: request.context) { result in
            switch result {
            case .failure(let failure):
                finish(Outcome(turns: done, end: .failed(failure)))
            case .success(let answered):
                let turns = done + [answered]
                guard index + 1 < request.messages.count else { return finish(Outcome(turns: turns, end: .answered)) }
                let delay = Double(request.delayBetweenMilliseconds) / 1000
                guard delay > 0 else { return self.turn(index + 1, done: turns, finish: finish) }
                // A delay that would end past the deadline is not waited out.
                guard Date().addingTimeInterval(delay) < deadline else { return finish(Outcome(turns: turns, end: .outOfTime)) }
                DispatchQueue.global().asyncAfter(deadline: .now() + delay) {
                    self.turn(index + 1, done: turns, finish: finish)
                }
            }
        }
    }
}
