import Synchronization

enum VideoOutcome: Sendable {
    case success, moderated, failed, noURL

    /// Prompt cues, checked in this order: `nsfw`, `fail`, `nourl` (case-insensitive).
    static func from(prompt: String) -> VideoOutcome {
        let p = prompt.lowercased()
        if p.contains("nsfw") { return .moderated }
        if p.contains("fail") { return .failed }
        if p.contains("nourl") { return .noURL }
        return .success
    }
}

struct VideoRecord: Sendable {
    var id: String
    var requestedModel: String
    var prompt: String
    var createdAt: Int64
    var createdMillis: UInt64
    var polls = 0
    var outcome: VideoOutcome
    var seconds: String
    /// Signed URLs, minted once when the video first shows its final state.
    var cleanURL: String?
    var watermarkedURL: String?
    var finished = false
}

struct CharacterRecord: Sendable {
    var id: String
    var username: String
    var instructionValue: String
    var timestamps: String
    var apiKey: String
    var tokenID: Int
    var genID: String
    var uuid: String
    var videoID: String
    var createdAt: Int64
    var createTime: String
    var listsSeen = 0
    /// Status shown once ready: 999, or -1 when the description asks to fail.
    var finalStatus: Int
    /// Seeded characters are ready from the start.
    var ready: Bool
}

struct FaultRule: Sendable {
    var fault: SandboxFault
    var method: String?
    var pathPrefix: String?
    /// Requests left to hit; nil = sticky.
    var remaining: Int?

    func matches(_ method: String, _ path: String) -> Bool {
        if let m = self.method, m != method { return false }
        if let p = pathPrefix, !path.hasPrefix(p) { return false }
        return true
    }
}

struct SandboxState: Sendable {
    var baseURL = ""
    var videos: [String: VideoRecord] = [:]
    var nextVideoID = 4000
    var characters: [CharacterRecord] = []
    var nextCharacterID = 100
    var recorded: [RecordedRequest] = []
    var faults: [FaultRule] = []
    var counter = 0

    /// The account behind the key, as the upstream's character list names it.
    static let username = "3uudwr0xj.desertstro"
    static let tokenID = 17

    init(apiKey: String) {
        // The character from the doc, "made by another team" with the same shared key.
        characters.append(CharacterRecord(
            id: "58", username: SandboxState.username,
            instructionValue: "International fashion male model, gentleman, elegant, high-end feel.",
            timestamps: "0-3", apiKey: apiKey, tokenID: SandboxState.tokenID,
            genID: "gen_01k9c0seed58amo2m", uuid: "123AMO2M", videoID: "3990",
            createdAt: 1_762_417_644, createTime: "2025-11-06 16:27:24",
            finalStatus: 999, ready: true))
    }
}

/// State shared by the loop thread (the handler) and test threads (introspection).
final class SandboxCore: Sendable {
    let config: SandboxConfig
    let state: Mutex<SandboxState>
    /// Responses in progress that outlive their request handler (streams, stalls, delayed answers,
    /// file bodies).
    let openResponses = Atomic<Int>(0)
    /// Responses abandoned by their client before they ended.
    let clientDisconnects = Atomic<Int>(0)

    init(config: SandboxConfig) {
        self.config = config
        self.state = Mutex(SandboxState(apiKey: config.apiKey))
    }

    func withState<T>(_ body: (inout SandboxState) -> T) -> T {
        state.withLock { body(&$0) }
    }

    func record(_ r: RecordedRequest) {
        let cap = config.maxRecordedRequests
        guard cap > 0 else { return }
        state.withLock { s in
            s.recorded.append(r)
            if s.recorded.count > cap { s.recorded.removeFirst(s.recorded.count - cap) }
        }
    }

    /// The fault for this request, if a rule matches (consuming one use of it).
    func takeFault(_ method: String, _ path: String) -> SandboxFault? {
        state.withLock { s in
            guard let i = s.faults.firstIndex(where: { $0.matches(method, path) }) else { return nil }
            let f = s.faults[i].fault
            if let n = s.faults[i].remaining {
                if n <= 1 { s.faults.remove(at: i) } else { s.faults[i].remaining = n - 1 }
            }
            return f
        }
    }

    func nextCounter() -> Int {
        state.withLock { s in s.counter += 1; return s.counter }
    }
}
