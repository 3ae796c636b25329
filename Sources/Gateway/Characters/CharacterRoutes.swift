import Glibc
import HTTPWire
import Store
import Translation
import Upstream

/// Characters (Sora "cameos") over the upstream's `/v1/characters` (issue: characters).
///
/// The upstream's character objects leak the shared key (`api_key`), account details
/// (`username`, `token_id`, `gen_id`) and every team's characters in one list. Veil keeps which
/// team made which character in its store, answers only from that, and builds every object field
/// by field from the store (`CharacterRecord.object`) — the upstream's objects are only read for
/// their id and status, never copied. Every answer also passes through `KeyRedactor`.
///
/// Another team's id and an unknown id get the same 404, so ids can't be probed.
enum CharacterRoutes {
    static func handles(_ path: Substring) -> Bool {
        path == "/v1/characters" || path.hasBytePrefix("/v1/characters/")
            || path == "/v1/videos/characters" || path.hasBytePrefix("/v1/videos/characters/")
    }

    static func route(_ x: Exchange, _ g: Gateway) {
        let path = x.request.path
        let method = x.request.method
        if path == "/v1/characters" {
            switch method {
            case "POST": return create(x, g)
            case "GET": return list(x, g)
            default: return x.fail(g.methodNotAllowed(method, allowed: "GET, POST"), headers: ["allow": "GET, POST"])
            }
        }
        if path == "/v1/videos/characters" {
            guard method == "POST" else { return x.fail(g.methodNotAllowed(method, allowed: "POST"), headers: ["allow": "POST"]) }
            // The SDK's `client.videos.create_character` uploads a video file; this upstream only
            // cuts characters out of videos it made. 4xx, never 5xx: the SDKs retry 5xx.
            return x.fail(APIError(400, "Creating a character from an uploaded video file is not supported by this upstream. "
                                   + "Cut it from one of your completed videos instead: POST /v1/characters with "
                                   + "{\"video_id\",\"name\",\"description\",\"timestamps\"}.",
                                   param: "video", code: "unsupported_operation"))
        }
        // /v1/characters/{id} or /v1/videos/characters/{id}: one strict id segment, else 404
        // (`..`, `%2e`, `;`, `/` never get further).
        let sdkShape = path.hasBytePrefix("/v1/videos/characters/")
        let rest = path.dropFirst(sdkShape ? "/v1/videos/characters/".count : "/v1/characters/".count)
        guard !rest.contains("/"), VeilID.upstreamCharacterID(fromVeil: String(rest)) != nil else {
            return x.fail(.notFound("No such character."))
        }
        let id = String(rest)
        if sdkShape {
            guard method == "GET" else { return x.fail(g.methodNotAllowed(method, allowed: "GET"), headers: ["allow": "GET"]) }
            return sdkRetrieve(x, g, id: id)
        }
        switch method {
        case "GET": return retrieve(x, g, id: id)
        case "DELETE": return delete(x, g, id: id)
        default: return x.fail(g.methodNotAllowed(method, allowed: "GET, DELETE"), headers: ["allow": "GET, DELETE"])
        }
    }

    // MARK: create

    static func create(_ x: Exchange, _ g: Gateway) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        let input: CharacterCreateInput
        switch CharacterCreateInput.parse(body: x.request.body, contentType: x.request.headers["content-type"]) {
        case .failure(let e): return x.fail(e)
        case .success(let i): input = i
        }
        // The video: the caller's team's, and completed. Unknown and another team's get the same answer.
        let video: VideoRecord
        do {
            guard let v = try g.store.video(id: input.videoID, team: team.name) else {
                return x.fail(APIError(400, "No such video: `video_id` must be one of your team's videos.", param: "video_id", code: "video_not_found"))
            }
            video = v
        } catch { return x.fail(VideoRoutes.storeFailure(g, error)) }
        // Cheap checks first: a taken name needs no upstream call at all.
        if let e = nameTaken(input.name, g) { return x.fail(e) }
        switch video.status {
        case "completed":
            submit(x, g, input, team: team.name)
        case "failed":
            x.fail(notCompleted("failed"))
        default:
            // The store may lag behind the upstream (nobody polled lately): one poll, shared with
            // concurrent polls of the same video, settles it.
            VideoRoutes.poll(x, g, video) { outcome in
                switch outcome {
                case .failure(let e): x.fail(e)
                case .success(let o):
                    guard o.status == .completed else { return x.fail(notCompleted(o.status.rawValue)) }
                    submit(x, g, input, team: team.name)
                }
            }
        }
    }

    static func notCompleted(_ status: String) -> APIError {
        APIError(400, "The video is not completed (status: \(status)); a character can only be cut from a completed video. "
                 + "Poll GET /v1/videos/{id} until its status is `completed`.", param: "video_id", code: "video_not_completed")
    }

    static func nameTakenError(_ name: String) -> APIError {
        APIError(409, "The character name `\(name)` is already taken (names are shared by every team, since @name is global upstream). Choose another name.",
                 param: "name", code: "character_name_taken")
    }

    static func nameTaken(_ name: String, _ g: Gateway) -> APIError? {
        do { return try g.store.characterByName(name) != nil ? nameTakenError(name) : nil } catch {
            return VideoRoutes.storeFailure(g, error)
        }
    }

    /// The upstream call. It is not cancelled when the caller leaves: the upstream would make the
    /// character anyway, and recording it keeps the name and ownership with the team.
    static func submit(_ x: Exchange, _ g: Gateway, _ input: CharacterCreateInput, team: String) {
        let cfg = x.snapshot.config
        // Re-checked here: the video poll above may have taken a while.
        if let e = nameTaken(input.name, g) { return x.fail(e) }
        guard PendingCharacterNames.shared.reserve(input.name, gateway: g) else { return x.fail(nameTakenError(input.name)) }
        let body = upstreamCharacterCreateBody(name: input.name, description: input.description,
                                               upstreamVideoID: input.upstreamVideoID, timestamps: input.timestamps)
        let r = HeaderPolicy.upstreamRequest(x, "POST", x.snapshot.upstreamBase + "/v1/characters", body: body, json: true)
        BufferedCall.start(x.context, r) { result in
            defer { PendingCharacterNames.shared.release(input.name, gateway: g) }
            x.upstreamLatencyMillis = x.elapsedMillis
            let key = x.snapshot.apiKeyBytes
            let head: UpstreamResponseHead, raw: [UInt8]
            switch result {
            case .failure(let e): return x.fail(APIError.from(e))
            case .success(let r): (head, raw) = r
            }
            let created: UpstreamCharacter
            do throws(TranslationError) { created = try decodeCharacterCreate(raw) } catch {
                return x.fail(upstreamRefusal(head.status, error, raw, key: key, secret: cfg.upstream.apiKey))
            }
            guard head.status == 200 || head.status == 201 else { return x.fail(VideoRoutes.upstreamError(head.status, raw, key: key)) }
            guard let upstreamID = created.id, let veilID = VeilID.characterID(upstream: upstreamID) else {
                return x.fail(APIError(502, "The upstream's answer carried no usable character id.", code: "upstream_invalid_response"))
            }
            let record = CharacterRecord(id: veilID, upstreamID: upstreamID, team: team, name: input.name,
                                         description: input.description, videoID: input.videoID,
                                         start: input.timestamps.start, end: input.timestamps.end,
                                         status: CharacterStatus(upstream: created.status).rawValue, createdAt: Int(time(nil)))
            do { try g.store.insertCharacter(record) } catch StoreError.conflict {
                g.log.logger.error("store: a character was created upstream but its name was taken meanwhile",
                                   metadata: ["character": "\(veilID)", "team": "\(team)"])
                return x.fail(nameTakenError(input.name))
            } catch {
                g.log.logger.error("store: cannot record a new character", metadata: ["character": "\(veilID)", "error": "\(error)"])
                return x.fail(APIError(500, "The character was submitted but could not be recorded; contact the platform team with this request id.", code: "store_failed"))
            }
            x.send(200, KeyRedactor.redact(record.object.jsonBytes, secret: key))
        }
    }

    /// The upstream said no (`success:false`, or an answer that isn't its envelope): a 4xx keeps
    /// the caller from retrying; its message is redacted.
    static func upstreamRefusal(_ status: Int, _ error: TranslationError, _ raw: [UInt8], key: [UInt8], secret: String) -> APIError {
        if error.kind == .upstreamFailure {
            let m = KeyRedactor.redact(String(error.message.prefix(500)), secret: secret)
            return APIError(status >= 500 ? 502 : 400, "The upstream refused the character: \(m)", code: "upstream_rejected")
        }
        if status != 200 && status != 201 { return VideoRoutes.upstreamError(status, raw, key: key) }
        return APIError(502, "The upstream's answer to the character request was not understood.", code: "upstream_invalid_response")
    }

    // MARK: refresh

    /// Brings the statuses of `records` still `processing` up to date with ONE upstream list
    /// call, however many there are, and stores what changed. No call when none is processing.
    /// If the upstream list can't be had, `deliver` gets the stored records and `stale: true`
    /// (the answer is still useful; the caller polls again).
    static func refresh(_ x: Exchange, _ g: Gateway, _ records: [CharacterRecord],
                        deliver: @escaping (_ records: [CharacterRecord], _ stale: Bool) -> Void) {
        guard records.contains(where: { $0.status == CharacterStatus.processing.rawValue }) else { return deliver(records, false) }
        let cfg = x.snapshot.config
        var r = HeaderPolicy.upstreamRequest(x, "GET", x.snapshot.upstreamBase + "/v1/characters")
        // A slow list must not hold the answer long: the stored state is a fine fallback.
        r.timeoutMillis = min(cfg.upstream.requestTimeoutMillis, refreshTimeoutMillis)
        let call = BufferedCall.start(x.context, r) { result in
            x.upstreamLatencyMillis = x.elapsedMillis
            let listed: [UpstreamCharacter]
            switch result {
            case .failure(let e):
                if case .cancelled = e { return }
                return stale(g, records, "\(e)", deliver)
            case .success(let (head, raw)):
                guard head.status == 200 else { return stale(g, records, "HTTP \(head.status)", deliver) }
                do throws(TranslationError) { listed = try decodeCharacterList(raw) } catch { return stale(g, records, error.kind.rawValue, deliver) }
            }
            var byUpstreamID: [String: UpstreamCharacter] = [:]
            for c in listed { if let id = c.id { byUpstreamID[id] = c } }
            var out = records
            var updates: [CharacterUpdate] = []
            // The upstream's `create_time` is a local time in its own zone (`characters.time_zone`).
            let offset = timeZoneOffsetSeconds(identifier: cfg.characters.timeZone) ?? 8 * 3600
            for i in out.indices where out[i].status == CharacterStatus.processing.rawValue {
                guard let u = byUpstreamID[out[i].upstreamID] else { continue }
                let s = CharacterStatus(upstream: u.status).rawValue
                let created = u.createTime.flatMap { parseLocalTime($0, utcOffsetSeconds: offset) }
                if s != out[i].status || (created != nil && created != out[i].createdAt) {
                    out[i].status = s
                    if let created { out[i].createdAt = created }
                    updates.append(CharacterUpdate(id: out[i].id, status: s, createdAt: created))
                }
            }
            if !updates.isEmpty {
                do { try g.store.updateCharacters(updates) } catch {
                    g.log.logger.error("store: cannot update characters", metadata: ["error": "\(error)"])
                }
            }
            deliver(out, false)
        }
        x.response.onClose = { call.cancel() }
    }

    static let refreshTimeoutMillis = 15_000

    static func stale(_ g: Gateway, _ records: [CharacterRecord], _ why: String,
                      _ deliver: ([CharacterRecord], Bool) -> Void) {
        g.log.logger.warning("characters: upstream list unavailable, answering from the store", metadata: ["reason": "\(why)"])
        deliver(records, true)
    }

    /// Marks an answer whose statuses could not be refreshed from the upstream.
    static func staleHeaders(_ stale: Bool) -> HTTPHeaders { stale ? ["x-veil-stale": "true"] : HTTPHeaders() }

    // MARK: list, retrieve, delete

    static func list(_ x: Exchange, _ g: Gateway) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        let query: ListQuery
        switch ListQuery.parse(x.request.head.query, isID: { VeilID.upstreamCharacterID(fromVeil: $0) != nil }, kind: "character") {
        case .failure(let e): return x.fail(e)
        case .success(let q): query = q
        }
        let limit = query.limit
        var all: [CharacterRecord]
        do { all = try g.store.characters(team: team.name) } catch { return x.fail(VideoRoutes.storeFailure(g, error)) }
        if !query.descending { all.reverse() }  // the store answers newest first
        var start = 0
        if let a = query.after {
            // An id not in the team's list (unknown, deleted, another team's) gives an empty page.
            start = (all.firstIndex { $0.id == a }).map { $0 + 1 } ?? all.count
        }
        let page = Array(all[start..<min(all.count, start + limit)])
        let hasMore = start + limit < all.count
        let key = x.snapshot.apiKeyBytes
        refresh(x, g, page) { records, stale in
            let body = ListQuery.body(items: records.map(\.object.jsonBytes), firstID: records.first?.id,
                                      lastID: records.last?.id, hasMore: hasMore)
            x.send(200, KeyRedactor.redact(body, secret: key), headers: staleHeaders(stale))
        }
    }

    /// The caller's team's character `id`, or nil once the exchange is answered (401, the same
    /// 404 for unknown and foreign ids, or 500 if the store fails).
    static func ownedCharacter(_ x: Exchange, _ g: Gateway, id: String) -> CharacterRecord? {
        guard let team = x.team else { x.fail(.unauthorized); return nil }
        do {
            guard let r = try g.store.character(id: id, team: team.name) else { x.fail(.notFound("No such character.")); return nil }
            return r
        } catch {
            x.fail(VideoRoutes.storeFailure(g, error))
            return nil
        }
    }

    static func retrieve(_ x: Exchange, _ g: Gateway, id: String) {
        guard let record = ownedCharacter(x, g, id: id) else { return }
        let key = x.snapshot.apiKeyBytes
        refresh(x, g, [record]) { records, stale in
            x.send(200, KeyRedactor.redact((records.first ?? record).object.jsonBytes, secret: key), headers: staleHeaders(stale))
        }
    }

    /// `GET /v1/videos/characters/{id}`: the OpenAI SDK's `client.videos.get_character` shape
    /// (`VideoGetCharacterResponse`: `id`, `created_at`, `name`). Answered from the store.
    static func sdkRetrieve(_ x: Exchange, _ g: Gateway, id: String) {
        guard let r = ownedCharacter(x, g, id: id) else { return }
        var w = JSONObjectWriter()
        w.string("id", r.id)
        w.int("created_at", r.createdAt)
        w.string("name", r.name)
        x.send(200, KeyRedactor.redact(w.finish(), secret: x.snapshot.apiKeyBytes))
    }

    /// Forgets the character for the team (the upstream has no delete; the name becomes free in Veil).
    static func delete(_ x: Exchange, _ g: Gateway, id: String) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        do {
            guard try g.store.deleteCharacter(id: id, team: team.name) else { return x.fail(.notFound("No such character.")) }
            var w = JSONObjectWriter()
            w.string("id", id)
            w.string("object", "character.deleted")
            w.bool("deleted", true)
            x.send(200, w.finish())
        } catch { x.fail(VideoRoutes.storeFailure(g, error)) }
    }

    // MARK: @name isolation

    /// The first name in `prompt` (loose scan: `characterNameCandidates`) that belongs to a
    /// character another team owns, or nil. Names no character has, and the team's own, pass.
    static func foreignCharacterMention(in prompt: String, team: String, store: any GatewayStore) throws -> String? {
        for name in characterNameCandidates(in: prompt) {
            if let c = try store.characterByName(name), c.team != team { return c.name }
        }
        return nil
    }
}

extension CharacterRecord {
    /// Veil's object, built field by field from the store (no upstream field can end up in it).
    var object: CharacterObject {
        CharacterObject(id: id, name: name, description: description, videoID: videoID,
                        timestamps: try? Timestamps(start: start, end: end),
                        status: CharacterStatus(rawValue: status) ?? .processing, createdAt: createdAt)
    }
}
