import Glibc
import HTTPWire
import Store
import Translation
import Upstream

/// Characters (Sora "cameos") over the upstream's `/v1/characters`.
///
/// The upstream's character objects leak the shared key (`api_key`), account details
/// (`username`, `token_id`, `gen_id`) and every team's characters in one list. Veil keeps which
/// team made which character in its store, answers only from that, and builds every object field
/// by field from the store (`CharacterRecord.object`) — the upstream's objects are only read for
/// their id and status, never copied. Every answer also passes through `KeyRedactor`.
///
/// Another team's id and an unknown id get the same 404, so ids can't be probed.
enum CharacterRoutes {
    /// The SDK's `client.videos.create_character` uploads a video file; this upstream only cuts
    /// characters out of videos it made. Answered from the head (the upload is never read); 4xx,
    /// never 5xx: the SDKs retry 5xx.
    static func unsupportedUpload(_ x: Exchange, _ g: Gateway) {
        x.fail(APIError(400, "Creating a character from an uploaded video file is not supported by this upstream. "
                        + "Cut it from one of your completed videos instead: POST /v1/characters with "
                        + "{\"video_id\",\"name\",\"description\",\"timestamps\"}.",
                        param: "video", code: "unsupported_operation"))
    }

    // MARK: create

    static func create(_ x: Exchange, _ g: Gateway) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        let input: CharacterCreateInput
        switch CharacterCreateInput.parse(body: x.request.body, contentType: x.request.headers["content-type"]) {
        case .failure(let e): return x.fail(e)
        case .success(let i): input = i
        }
        // The video (the caller's team's; unknown and another team's get the same answer) and,
        // cheap checks first, the name: a taken name needs no upstream call at all.
        let teamName = team.name
        x.context.store({ db in
            (video: try db.video(id: input.videoID, team: teamName), nameTaken: try db.characterByName(input.name) != nil)
        }) { result in
            let found: (video: VideoRecord?, nameTaken: Bool)
            switch result {
            case .failure(let e): return VideoRoutes.failStore(x, g, e)
            case .success(let f): found = f
            }
            guard let video = found.video else {
                return x.fail(APIError(400, "No such video: `video_id` must be one of your team's videos.", param: "video_id", code: "video_not_found"))
            }
            if found.nameTaken { return x.fail(nameTakenError(input.name)) }
            switch video.status {
            case "completed":
                submit(x, g, input, team: teamName)
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
                        submit(x, g, input, team: teamName)
                    }
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

    /// The upstream call, then the store. The name is claimed in the store first (checked again:
    /// a poll before this may have taken a while), so two concurrent creations with one name —
    /// on any replicas — can't both reach the upstream; the store's unique index settles the rest.
    static func submit(_ x: Exchange, _ g: Gateway, _ input: CharacterCreateInput, team: String) {
        let holder = g.replicaID + "/" + x.requestID
        let ttl = x.snapshot.config.upstream.requestTimeoutMillis + nameClaimMarginMillis
        x.context.store({ db in try db.claimCharacterName(input.name, holder: holder, ttlMillis: ttl) }) { claimed in
            switch claimed {
            case .failure(let e): VideoRoutes.failStore(x, g, e)
            case .success(false): x.fail(nameTakenError(input.name))
            case .success(true): createUpstream(x, g, input, team: team, holder: holder)
            }
        }
    }

    /// A name claim outlives the upstream call by this much (then a replica that died holding it
    /// no longer blocks the name).
    static let nameClaimMarginMillis = 60_000

    private static func createUpstream(_ x: Exchange, _ g: Gateway, _ input: CharacterCreateInput, team: String, holder: String) {
        let ctx = x.context
        let releaseClaim = {
            ctx.storeExecutor.run(on: ctx.loop, { db in try db.releaseCharacterName(input.name, holder: holder, keepMillis: 0) }) { _ in }
        }
        UpstreamEngine.fetch(x, CharacterCreateHooks(x.snapshot, requestID: x.requestID, input: input)) { result in
            let created: UpstreamCharacter
            switch result {
            case .failure(let e):
                releaseClaim()
                return x.fail(e)
            case .success(let c): created = c
            }
            let upstreamID = created.id ?? ""
            let record = CharacterRecord(id: VeilID.characterID(upstream: upstreamID) ?? "", upstreamID: upstreamID, team: team, name: input.name,
                                         description: input.description, videoID: input.videoID,
                                         start: input.timestamps.start, end: input.timestamps.end,
                                         status: CharacterStatus(upstream: created.status).rawValue, createdAt: Int(time(nil)))
            x.context.store({ db in
                do {
                    try db.insertCharacter(record)
                } catch {
                    try? db.releaseCharacterName(input.name, holder: holder, keepMillis: 0)
                    throw error
                }
                // Kept a moment past the record: another replica's claim whose statement began
                // before the row was committed must still find it taken (it did not: two
                // upstream creations for one name, ReplicaTests).
                try? db.releaseCharacterName(input.name, holder: holder, keepMillis: CharacterNameClaim.keepAfterRecordMillis)
            }) { stored in
                switch stored {
                case .success:
                    x.send(200, record.object.jsonBytes)
                case .failure(.conflict):
                    g.log.logger.error("store: a character was created upstream but its name was taken meanwhile",
                                       metadata: ["character": "\(record.id)", "team": "\(team)"])
                    x.fail(nameTakenError(input.name))
                case .failure(let e):
                    g.log.logger.error("store: cannot record a new character", metadata: ["character": "\(record.id)", "error": "\(e)"])
                    x.fail(APIError(500, "The character was submitted but could not be recorded; contact the platform team with this request id.", code: "store_failed"))
                }
            }
        }
    }

    // MARK: refresh

    /// Brings the statuses of `records` still `processing` up to date with ONE upstream list
    /// call, however many there are, and stores what changed. No call when none is processing.
    /// If the upstream list can't be had, `deliver` gets the stored records and `stale: true`
    /// (the answer is still useful; the caller polls again).
    static func refresh(_ x: Exchange, _ g: Gateway, _ records: [CharacterRecord],
                        deliver: @escaping (_ records: [CharacterRecord], _ stale: Bool) -> Void) {
        guard records.contains(where: { $0.status == CharacterStatus.processing.rawValue }) else { return deliver(records, false) }
        // The upstream's `create_time` is a local time in its own zone (`characters.time_zone`).
        let offset = timeZoneOffsetSeconds(identifier: x.snapshot.config.characters.timeZone) ?? 8 * 3600
        UpstreamEngine.fetch(x, CharacterListHooks(x.snapshot, requestID: x.requestID)) { result in
            switch result {
            case .failure(let e):
                if e.code == "client_closed" { return deliver(records, true) }
                g.log.logger.warning("characters: upstream list unavailable, answering from the store", metadata: ["reason": "\(e.message)"])
                deliver(records, true)
            case .success(let listed):
                let merged = CharacterListHooks.merge(records, with: listed, zoneOffset: offset)
                if !merged.updates.isEmpty {
                    x.context.store({ db in try db.updateCharacters(merged.updates) }) { stored in
                        if case .failure(let e) = stored { g.log.logger.error("store: cannot update characters", metadata: ["error": "\(e)"]) }
                    }
                }
                deliver(merged.records, false)
            }
        }
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
        let teamName = team.name
        x.context.store({ db in try db.characters(team: teamName) }) { result in
            var all: [CharacterRecord]
            switch result {
            case .failure(let e): return VideoRoutes.failStore(x, g, e)
            case .success(let a): all = a
            }
            if !query.descending { all.reverse() }  // the store answers newest first
            var start = 0
            if let a = query.after {
                // An id not in the team's list (unknown, deleted, another team's) gives an empty page.
                start = (all.firstIndex { $0.id == a }).map { $0 + 1 } ?? all.count
            }
            let page = Array(all[start..<min(all.count, start + query.limit)])
            let hasMore = start + query.limit < all.count
            refresh(x, g, page) { records, stale in
                x.send(200, ListQuery.body(items: records.map(\.object.jsonBytes), firstID: records.first?.id,
                                           lastID: records.last?.id, hasMore: hasMore), headers: staleHeaders(stale))
            }
        }
    }

    /// The caller's team's character (the route's `{id}`), then `found`; the same 404 for unknown
    /// and foreign ids (and ids that are not character ids at all: `..`, `%2e`, `;` never get
    /// further), 500 if the store fails.
    static func withOwnedCharacter(_ x: Exchange, _ g: Gateway, _ found: @escaping (CharacterRecord) -> Void) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        guard let id = x.params.first.map(String.init), VeilID.upstreamCharacterID(fromVeil: id) != nil else {
            return x.fail(.notFound("No such character."))
        }
        let teamName = team.name
        x.context.store({ db in try db.character(id: id, team: teamName) }) { result in
            switch result {
            case .failure(let e): VideoRoutes.failStore(x, g, e)
            case .success(nil): x.fail(.notFound("No such character."))
            case .success(let r?): found(r)
            }
        }
    }

    static func retrieve(_ x: Exchange, _ g: Gateway) {
        withOwnedCharacter(x, g) { record in
            refresh(x, g, [record]) { records, stale in
                x.send(200, (records.first ?? record).object.jsonBytes, headers: staleHeaders(stale))
            }
        }
    }

    /// `GET /v1/videos/characters/{id}`: the OpenAI SDK's `client.videos.get_character` shape
    /// (`VideoGetCharacterResponse`: `id`, `created_at`, `name`). Answered from the store.
    static func sdkRetrieve(_ x: Exchange, _ g: Gateway) {
        withOwnedCharacter(x, g) { r in
            var w = JSONObjectWriter()
            w.string("id", r.id)
            w.int("created_at", r.createdAt)
            w.string("name", r.name)
            x.send(200, w.finish())
        }
    }

    /// Forgets the character for the team (the upstream has no delete; the name becomes free in Veil).
    static func delete(_ x: Exchange, _ g: Gateway) {
        guard let team = x.team else { return x.fail(.unauthorized) }
        guard let id = x.params.first.map(String.init), VeilID.upstreamCharacterID(fromVeil: id) != nil else {
            return x.fail(.notFound("No such character."))
        }
        let teamName = team.name
        x.context.store({ db in try db.deleteCharacter(id: id, team: teamName) }) { result in
            switch result {
            case .failure(let e): VideoRoutes.failStore(x, g, e)
            case .success(false): x.fail(.notFound("No such character."))
            case .success(true):
                var w = JSONObjectWriter()
                w.string("id", id)
                w.string("object", "character.deleted")
                w.bool("deleted", true)
                x.send(200, w.finish())
            }
        }
    }

    // MARK: @name isolation

    /// The first of `candidates` (names a prompt may mention, see `mentionCandidates`)
    /// that belongs to a character another team owns, or nil. Names no character has, and the
    /// team's own, pass. Runs on a store thread.
    static func foreignCharacter(among candidates: [String], team: String, in db: any StoreBackend) throws -> String? {
        for name in candidates {
            if let c = try db.characterByName(name), c.team != team { return c.name }
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
