import Store
import Translation
import Upstream

/// `POST /v1/characters` upstream. Its value: the created character's upstream id and status (the
/// upstream's object is read for those only; it leaks the key and account details).
struct CharacterCreateHooks: UpstreamHooks {
    let request: UpstreamRequest
    let key: [UInt8]
    let secret: String
    private var status = 0

    init(_ snapshot: ConfigSnapshot, requestID: String, input: CharacterCreateInput) {
        let body = upstreamCharacterCreateBody(name: input.name, description: input.description,
                                               upstreamVideoID: input.upstreamVideoID, timestamps: input.timestamps)
        request = HeaderPolicy.upstreamRequest(snapshot, requestID: requestID, "POST", snapshot.upstreamBase + "/v1/characters", body: body, json: true)
        key = snapshot.apiKeyBytes
        secret = snapshot.config.upstream.apiKey
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    /// The upstream makes the character whether or not the caller waits: recording it keeps the
    /// name and its ownership with the team.
    var cancelWhenClientLeaves: Bool { false }

    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        status = head.status
        return .buffer(limit: nil)
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<UpstreamCharacter> {
        let created: UpstreamCharacter
        do throws(TranslationError) { created = try decodeCharacterCreate(answer.body) } catch {
            return .fail(Self.refusal(status, error, answer.body, key: key, secret: secret))
        }
        guard status == 200 || status == 201 else { return .fail(.upstreamStatus(status, answer.body, key: key)) }
        guard created.id.flatMap(VeilID.characterID(upstream:)) != nil else {
            return .fail(APIError(502, "The upstream's answer carried no usable character id.", code: "upstream_invalid_response"))
        }
        return .value(created)
    }

    /// The upstream said no (`success:false`, or an answer that isn't its envelope): a 4xx keeps
    /// the caller from retrying; its message is redacted.
    static func refusal(_ status: Int, _ error: TranslationError, _ raw: [UInt8], key: [UInt8], secret: String) -> APIError {
        if error.kind == .upstreamFailure {
            let m = KeyRedactor.redact(String(error.message.prefix(500)), secret: secret)
            return APIError(status >= 500 ? 502 : 400, "The upstream refused the character: \(m)", code: "upstream_rejected")
        }
        if status != 200 && status != 201 { return .upstreamStatus(status, raw, key: key) }
        return APIError(502, "The upstream's answer to the character request was not understood.", code: "upstream_invalid_response")
    }
}

/// `GET /v1/characters` upstream, to refresh the statuses of characters still processing. Its
/// value: the upstream's list (only ids, statuses and times are read from it).
struct CharacterListHooks: UpstreamHooks {
    let request: UpstreamRequest
    private var status = 0

    /// A slow list must not hold the answer long: the stored state is a fine fallback.
    static let refreshTimeoutMillis = 15_000

    init(_ snapshot: ConfigSnapshot, requestID: String) {
        var r = HeaderPolicy.upstreamRequest(snapshot, requestID: requestID, "GET", snapshot.upstreamBase + "/v1/characters")
        r.timeoutMillis = min(snapshot.config.upstream.requestTimeoutMillis, Self.refreshTimeoutMillis)
        request = r
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        status = head.status
        return .buffer(limit: nil)
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<[UpstreamCharacter]> {
        guard status == 200 else { return .fail(APIError(502, "HTTP \(status)", code: "upstream_error")) }
        do throws(TranslationError) { return .value(try decodeCharacterList(answer.body)) } catch {
            return .fail(APIError(502, error.kind.rawValue, code: "upstream_invalid_response"))
        }
    }

    /// The stored characters brought up to date with the upstream's list: status, and the
    /// creation time when the upstream tells it (a local time in `zoneOffset`). Pure.
    static func merge(_ records: [CharacterRecord], with listed: [UpstreamCharacter], zoneOffset: Int) -> (records: [CharacterRecord], updates: [CharacterUpdate]) {
        var byUpstreamID: [String: UpstreamCharacter] = [:]
        for c in listed { if let id = c.id { byUpstreamID[id] = c } }
        var out = records
        var updates: [CharacterUpdate] = []
        for i in out.indices where out[i].status == CharacterStatus.processing.rawValue {
            guard let u = byUpstreamID[out[i].upstreamID] else { continue }
            let s = CharacterStatus(upstream: u.status).rawValue
            let created = u.createTime.flatMap { parseLocalTime($0, utcOffsetSeconds: zoneOffset) }
            if s != out[i].status || (created != nil && created != out[i].createdAt) {
                out[i].status = s
                if let created { out[i].createdAt = created }
                updates.append(CharacterUpdate(id: out[i].id, status: s, createdAt: created))
            }
        }
        return (out, updates)
    }
}
