import Foundation
import Testing
import WhisperChat

@Suite struct HistoryTests {
    private func message(_ id: Int64, _ role: StoredMessage.Role, at time: Double) -> StoredMessage {
        StoredMessage(id: id, role: role, content: "\(role.rawValue) \(id)", createdAt: time)
    }

    /// `count` exchanges a minute apart, ending at `end`.
    private func exchanges(_ count: Int, endingAt end: Double) -> [StoredMessage] {
        (0..<count).flatMap { index -> [StoredMessage] in
            let time = end - Double(count - 1 - index) * 60
            return [message(Int64(2 * index + 1), .user, at: time), message(Int64(2 * index + 2), .assistant, at: time + 1)]
        }
    }

    @Test func keepsTheLastTenExchanges_oldestFirst() {
        let now = 1_800_000_000.0
        let history = Conversation.history(from: exchanges(14, endingAt: now - 10).shuffled(), now: now)
        #expect(history.count == 20)
        #expect(history.first?.content == "user 9")  // exchanges 5…14
        #expect(history.last?.content == "assistant 28")
        #expect(history.map(\.id) == history.map(\.id).sorted())
    }

    @Test func aSessionEndsAfterThirtyIdleMinutes() {
        let now = 1_800_000_000.0
        var messages = exchanges(3, endingAt: now - 3 * 3600)  // an old session
        messages += [message(100, .user, at: now - 120), message(101, .assistant, at: now - 119)]
        #expect(Conversation.history(from: messages, now: now).map(\.id) == [100, 101])
        // Idle for 31 minutes since the last message: nothing is history.
        #expect(Conversation.history(from: messages, now: now + 31 * 60).isEmpty)
    }

    @Test func aFailedExchangeKeepsItsUserMessage() {
        let now = 1_800_000_000.0
        let messages = [message(1, .user, at: now - 5), message(2, .user, at: now - 3), message(3, .assistant, at: now - 2)]
        #expect(Conversation.history(from: messages, now: now).map(\.id) == [1, 2, 3])
    }
}

@Suite struct PromptTests {
    private let monday = Date(timeIntervalSince1970: 1_767_621_780)  // 2026-01-05 14:03 UTC

    @Test func placeholdersAreFilled_fromContextAndDefaults() {
        var profile = CharacterProfile(name: "elena", prompt: "Hi {user_name} in #{channel_name}. Now: {current_datetime}. Keep {braces}.")
        profile.core = CharacterProfile.Core(purpose: "Teach", timezone: TimeZone(identifier: "UTC"), drives: [], constitution: [])
        let prompt = Conversation.systemPrompt(profile, userID: "u-42", context: ["channel_name": "general"], now: monday)
        #expect(prompt.hasPrefix("Hi u-42 in #general. Now: Monday, January 05, 2026 at 14:03. Keep {braces}."))
        let named = Conversation.systemPrompt(profile, userID: "u-42", context: ["user_name": "Sam"], now: monday)
        #expect(named.hasPrefix("Hi Sam in #{channel_name}."))
    }

    @Test func placeholdersAmongOtherText_multibyteUnclosedAndNestedBraces() {
        let profile = CharacterProfile(name: "elena", prompt: "Olá {user_name} 🌊 {{user_name}} {a{user_name}} {} {unknown} {user_name")
        let prompt = Conversation.systemPrompt(profile, userID: "Zoë", context: ["": "empty key"], now: monday)
        #expect(prompt == "Olá Zoë 🌊 {Zoë} {aZoë} empty key {unknown} {user_name")
    }

    @Test func theDateIsInTheCharactersTimeZone() {
        let pacific = TimeZone(identifier: "America/Los_Angeles")!
        #expect(Conversation.formatDateTime(monday, timezone: pacific) == "Monday, January 05, 2026 at 06:03")
    }

    /// The text is kept per zone for the minute it was made in: the next minute, and another
    /// zone in the same minute, get their own.
    @Test func theKeptDateTextFollowsTheMinuteAndTheZone() {
        let utc = TimeZone(identifier: "UTC")!
        let tokyo = TimeZone(identifier: "Asia/Tokyo")!
        #expect(Conversation.formatDateTime(monday, timezone: utc) == "Monday, January 05, 2026 at 14:03")
        #expect(Conversation.formatDateTime(monday.addingTimeInterval(59), timezone: utc) == "Monday, January 05, 2026 at 14:03")
        #expect(Conversation.formatDateTime(monday.addingTimeInterval(60), timezone: utc) == "Monday, January 05, 2026 at 14:04")
        #expect(Conversation.formatDateTime(monday.addingTimeInterval(60), timezone: tokyo) == "Monday, January 05, 2026 at 23:04")
        #expect(Conversation.formatDateTime(monday, timezone: utc) == "Monday, January 05, 2026 at 14:03")
    }

    @Test func identityBlocksMadeOnceGiveTheSamePrompt() {
        var profile = CharacterProfile(name: "elena", prompt: "You are Elena, {user_name}.")
        profile.goals = [CharacterProfile.Goal(slug: "g", description: "", successCriteria: nil, priority: nil)]
        let identity = Conversation.identityBlocks(profile)
        #expect(identity == "\n\nGOALS\n- g")
        #expect(
            Conversation.systemPrompt(profile, userID: "u", context: [:], now: monday, identity: identity)
                == Conversation.systemPrompt(profile, userID: "u", context: [:], now: monday))
    }

    @Test func coreGoalsAndBackgroundBecomeBlocks() {
        var profile = CharacterProfile(name: "elena", prompt: "You are Elena.")
        profile.core = CharacterProfile.Core(
            purpose: "Teach the sea", timezone: nil, drives: [("curiosity", 0.9)], constitution: ["Be honest"])
        profile.goals = [CharacterProfile.Goal(slug: "g", description: "Explain kelp", successCriteria: nil, priority: nil)]
        profile.background = [CharacterProfile.BackgroundFact(predicate: "lives in", object: "Monterey")]
        let prompt = Conversation.systemPrompt(profile, userID: "u", context: [:], now: monday)
        #expect(
            prompt
                == "You are Elena.\n\nCORE IDENTITY\nPurpose: Teach the sea\nDrives: curiosity 0.90\nConstitution:\n- Be honest"
                + "\n\nGOALS\n- Explain kelp\n\nBACKGROUND\n- lives in: Monterey")
    }
}

@Suite struct TrustAndFactsTests {
    @Test func trustIsClampedAndNamedByStage() throws {
        #expect(Conversation.clampTrust(150) == 100)
        #expect(Conversation.clampTrust(-101) == -100)
        let files = [
            "character.md": "x",
            "evolution.yaml": "evolution_stages:\n  - {name: Stranger, trust_range: [-100, 4]}\n  - {name: Friend, trust_range: [5, 100]}\n",
        ]
        let profile = try CharacterProfile.parse(name: "x", files: files).get()
        #expect(profile.trustLevel(for: 0) == "Stranger")
        #expect(profile.trustLevel(for: 5) == "Friend")
        #expect(CharacterProfile(name: "y", prompt: "p").trustLevel(for: 50) == "Stranger")
    }

    @Test func factsAreWhatUsersSayAboutThemselves() {
        #expect(Conversation.facts(in: "Hi! My name is Sam. I live in Oslo, and I love jazz.") == ["name: Sam", "lives in: Oslo, and I love jazz"])
        #expect(Conversation.facts(in: "I like turtles") == ["likes: turtles"])
        #expect(Conversation.facts(in: "My family is big") == [])
        #expect(Conversation.facts(in: "What do you like?") == [])
    }

    @Test func factsAmongOtherScripts_caseAndWordBoundaries() {
        #expect(Conversation.facts(in: "Grüße! ICH… I LIVE IN Zürich 🏔") == ["lives in: Zürich 🏔"])
        #expect(Conversation.facts(in: "Ça va — my favourite colour is blue") == ["favorite: colour is blue"])
        #expect(Conversation.facts(in: "éi like tea") == [])  // "éi like": not at a word start
        #expect(Conversation.facts(in: "i li i like it") == ["likes: it"])  // a partial match first
        #expect(Conversation.facts(in: "call me") == [])  // the pattern needs its trailing space
        #expect(Conversation.facts(in: "") == [])
    }

    /// The quick check that skips most messages never skips one with a fact in it.
    @Test func everyPattern_passesTheQuickCheck_inAnyCase() {
        let sayings = [
            ("my name is Ada", "name: Ada"), ("call me Ishmael", "name: Ishmael"), ("i live in Oslo", "lives in: Oslo"),
            ("i'm from Lagos", "from: Lagos"), ("i am from Lima", "from: Lima"), ("i work as a nurse", "works as: a nurse"),
            ("i love tea", "loves: tea"), ("i like jazz", "likes: jazz"), ("my favorite band is Abba", "favorite: band is Abba"),
            ("my favourite dish is soup", "favorite: dish is soup"),
        ]
        for (saying, fact) in sayings {
            for variant in [saying, saying.uppercased(), "Well. " + saying.prefix(1).uppercased() + saying.dropFirst()] {
                // Compared without case: the object keeps the user's.
                #expect(Conversation.facts(in: variant).map { $0.lowercased() } == [fact.lowercased()], "\(variant)")
            }
        }
        #expect(Conversation.facts(in: "Hello there, how is the kelp forest today?") == [])
    }
}

@Suite struct CharacterFilesTests {
    @Test func allFilesParse_unknownKeysIgnored() throws {
        let files = [
            "character.md": "You are Elena.",
            "core.yaml": "purpose: Teach\ntimezone: Europe/Berlin\ndrives: {curiosity: 0.9, care: 1}\nconstitution: [Be kind]\nextra: ignored\n",
            "goals.yaml": "goals:\n  - {slug: a, description: Do A, success_criteria: done, priority: 0.5, owner: x}\n",
            "ux.yaml": "error_messages: {llm_down: Later}\ncold_responses: [Hmm]\nemoji_sets: {sea: [a, b]}\n",
            "background.yaml": "facts:\n  - {predicate: lives in, object: Monterey}\n",
        ]
        let profile = try CharacterProfile.parse(name: "elena", files: files).get()
        #expect(profile.core?.purpose == "Teach")
        #expect(profile.core?.timezone?.identifier == "Europe/Berlin")
        #expect(profile.core?.drives.map(\.name) == ["curiosity", "care"])
        #expect(profile.goals.first?.successCriteria == "done")
        #expect(profile.ux.errorMessages == ["Later"])
        #expect(profile.ux.emojiSets["sea"] == ["a", "b"])
        #expect(profile.background.first?.object == "Monterey")
    }

    @Test func problemsNameFileAndLine() {
        func error(_ files: [String: String]) -> String {
            if case .failure(let error) = CharacterProfile.parse(name: "x", files: ["character.md": "p"].merging(files) { $1 }) {
                return error.description
            }
            return "parsed"
        }
        #expect(error(["core.yaml": "timezone: UTC\n"]) == "core.yaml: purpose: required")
        #expect(error(["core.yaml": "purpose: p\ntimezone: Mars/Olympus\n"]).hasPrefix("core.yaml:2: timezone: Mars/Olympus is not"))
        #expect(error(["core.yaml": "purpose: p\ndrives:\n  calm: 2\n"]) == "core.yaml:3: drives.calm: a drive is a number from 0 to 1")
        #expect(error(["goals.yaml": "goals: [\n  {slug: a\n"]).hasPrefix("goals.yaml:"))
        #expect(error(["evolution.yaml": "evolution_stages:\n  - {name: A, trust_range: [5, 1]}\n"]).hasPrefix("evolution.yaml:2:"))
        #expect(error(["character.md": "  \n"]) == "character.md: is empty")
        #expect(CharacterProfile.parse(name: "x", files: [:]) == .failure(CharacterFileError(file: "character.md", line: nil, message: "missing (a character needs its system prompt)")))
    }
}
