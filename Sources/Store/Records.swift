// Veil's records and the storage protocols. Backend-neutral: `SQLiteStore` (one box) and
// `PostgresStore` (several replicas sharing one database) implement the same protocols and pass
// the same contract tests.
//
// Time convention: every timestamp in this module (createdAt, completedAt, expiresAt, updatedAt,
// UsageRecord.time, and every `since:` argument) is Unix time in whole SECONDS, matching the OpenAI
// objects Veil serves (`created_at`, `completed_at`, `expires_at`).

/// A video owned by a team. `id` is Veil's id (e.g. "video_4078"), `upstreamID` the reseller's ("4078").
public struct VideoRecord: Sendable, Equatable {
    public var id: String
    public var upstreamID: String
    public var team: String
    /// The model name the caller asked for (not the upstream's name).
    public var model: String
    public var prompt: String
    /// Requested resolution, e.g. "1280x720".
    public var size: String?
    public var seconds: String?
    /// queued | in_progress | completed | failed
    public var status: String
    public var progress: Int
    public var createdAt: Int
    public var completedAt: Int?
    public var expiresAt: Int?
    public var errorCode: String?
    public var errorMessage: String?
    public var videoURL: String?
    public var watermarkedURL: String?
    public var updatedAt: Int

    public init(id: String, upstreamID: String, team: String, model: String, prompt: String,
                size: String? = nil, seconds: String? = nil, status: String = "queued", progress: Int = 0,
                createdAt: Int, completedAt: Int? = nil, expiresAt: Int? = nil,
                errorCode: String? = nil, errorMessage: String? = nil,
                videoURL: String? = nil, watermarkedURL: String? = nil, updatedAt: Int? = nil) {
        self.id = id
        self.upstreamID = upstreamID
        self.team = team
        self.model = model
        self.prompt = prompt
        self.size = size
        self.seconds = seconds
        self.status = status
        self.progress = progress
        self.createdAt = createdAt
        self.completedAt = completedAt
        self.expiresAt = expiresAt
        self.errorCode = errorCode
        self.errorMessage = errorMessage
        self.videoURL = videoURL
        self.watermarkedURL = watermarkedURL
        self.updatedAt = updatedAt ?? createdAt
    }
}

/// A character (cameo) owned by a team, cut from `videoID` between `start` and `end` seconds.
public struct CharacterRecord: Sendable, Equatable {
    public var id: String
    public var upstreamID: String
    public var team: String
    /// Unique across all teams, case-insensitively (Unicode lowercasing), among non-deleted characters.
    public var name: String
    public var description: String
    public var videoID: String
    public var start: Double
    public var end: Double
    /// processing | ready | failed
    public var status: String
    public var createdAt: Int
    public var updatedAt: Int

    public init(id: String, upstreamID: String, team: String, name: String, description: String,
                videoID: String, start: Double, end: Double, status: String = "processing",
                createdAt: Int, updatedAt: Int? = nil) {
        self.id = id
        self.upstreamID = upstreamID
        self.team = team
        self.name = name
        self.description = description
        self.videoID = videoID
        self.start = start
        self.end = end
        self.status = status
        self.createdAt = createdAt
        self.updatedAt = updatedAt ?? createdAt
    }
}

/// One request through the gateway.
public struct UsageRecord: Sendable, Equatable {
    /// The endpoint string that counts as a video creation in `UsageSummary.videos`.
    public static let videoCreateEndpoint = "POST /v1/videos"

    /// Unix time in seconds.
    public var time: Int
    public var team: String
    /// "METHOD /path-template", e.g. "POST /v1/videos", "GET /v1/videos/{id}".
    public var endpoint: String
    public var model: String?
    /// HTTP status returned to the caller.
    public var status: Int
    public var upstreamLatencyMillis: Int?
    public var bytesIn: Int
    public var bytesOut: Int
    public var promptTokens: Int?
    public var completionTokens: Int?
    public var totalTokens: Int?
    public var requestID: String

    public init(time: Int, team: String, endpoint: String, model: String? = nil, status: Int,
                upstreamLatencyMillis: Int? = nil, bytesIn: Int = 0, bytesOut: Int = 0,
                promptTokens: Int? = nil, completionTokens: Int? = nil, totalTokens: Int? = nil,
                requestID: String) {
        self.time = time
        self.team = team
        self.endpoint = endpoint
        self.model = model
        self.status = status
        self.upstreamLatencyMillis = upstreamLatencyMillis
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
        self.requestID = requestID
    }
}

/// Per-team aggregate of usage records.
public struct UsageSummary: Sendable, Equatable {
    public var team: String
    public var requests: Int
    /// Requests answered with status >= 400.
    public var errors: Int
    public var promptTokens: Int
    public var completionTokens: Int
    public var totalTokens: Int
    /// `POST /v1/videos` requests answered with status < 400.
    public var videos: Int

    public init(team: String, requests: Int = 0, errors: Int = 0, promptTokens: Int = 0,
                completionTokens: Int = 0, totalTokens: Int = 0, videos: Int = 0) {
        self.team = team
        self.requests = requests
        self.errors = errors
        self.promptTokens = promptTokens
        self.completionTokens = completionTokens
        self.totalTokens = totalTokens
        self.videos = videos
    }
}

public enum StoreError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The store could not be opened (or its schema could not be prepared) at `path`.
    case open(path: String, message: String)
    /// Any other database failure (includes use after `close()`).
    case sql(String)
    /// A uniqueness rule was violated (e.g. a character name already taken).
    case conflict(String)
    /// The store can't answer now (a database unreachable or restarting, no connection free, or
    /// no answer before the call's deadline, `store.timeout_ms`). Retrying later may succeed; the
    /// gateway answers 503 `store_unavailable`.
    case unavailable(String)

    public var description: String {
        switch self {
        case .open(let path, let message): return "cannot open store at '\(path)': \(message)"
        case .sql(let message): return "store error: \(message)"
        case .conflict(let message): return "conflict: \(message)"
        case .unavailable(let message): return "store unavailable: \(message)"
        }
    }
}

public protocol VideoStore: Sendable {
    func insertVideo(_ v: VideoRecord) throws
    /// nil if the video does not exist, belongs to another team, or was deleted.
    func video(id: String, team: String) throws -> VideoRecord?
    /// Any team's (non-deleted) video; for internal use such as character lookups and status polling.
    func videoAnyTeam(id: String) throws -> VideoRecord?
    /// Overwrites every field of the (id, team) row; a no-op if there is no such row.
    func updateVideo(_ v: VideoRecord) throws
    /// OpenAI list pagination ordered by (createdAt, id), ascending or descending. `after` is an id from
    /// the team's list (deleted ids still work as cursors); an unknown `after` yields an empty page.
    /// `limit` is clamped to 1...100. Returns the page and whether more items follow it.
    func listVideos(team: String, after: String?, limit: Int, descending: Bool) throws -> (items: [VideoRecord], hasMore: Bool)
    /// Soft delete (the row is kept for quota counting). True if a live video existed for that team.
    func deleteVideo(id: String, team: String) throws -> Bool
    /// Videos created by `team` at or after `since` (seconds), INCLUDING deleted ones.
    func countVideos(team: String, since: Int) throws -> Int
}

public protocol CharacterStore: Sendable {
    /// Throws `StoreError.conflict` if a live character (any team) has the same name, case-insensitively.
    func insertCharacter(_ c: CharacterRecord) throws
    func character(id: String, team: String) throws -> CharacterRecord?
    /// The team's live characters, newest first.
    func characters(team: String) throws -> [CharacterRecord]
    /// Any team's live character with this name, case-insensitively (for @mention isolation checks).
    func characterByName(_ name: String) throws -> CharacterRecord?
    /// Sets statuses (and updatedAt = now) in one transaction; unknown ids are ignored.
    func updateCharacterStatuses(_ updates: [(id: String, status: String)]) throws
    /// Status and, when the upstream told it, the creation time (one transaction).
    func updateCharacters(_ updates: [CharacterUpdate]) throws
    /// Soft delete; frees the name. True if a live character existed for that team.
    func deleteCharacter(id: String, team: String) throws -> Bool
}

public protocol UsageStore: Sendable {
    /// Called on the event loops for every request: buffers the record and returns, never waiting
    /// for a write (the backend writes batches on its own thread).
    func recordUsage(_ u: UsageRecord) throws
    /// One row per team with records at or after `since` (seconds), sorted by team; `team` nil = all teams.
    func usageSummary(team: String?, since: Int) throws -> [UsageSummary]
}

/// A refreshed character: its status, and the upstream's creation time when it gave one.
public struct CharacterUpdate: Sendable, Equatable {
    public var id: String
    public var status: String
    public var createdAt: Int?
    public init(id: String, status: String, createdAt: Int? = nil) {
        self.id = id; self.status = status; self.createdAt = createdAt
    }
}

/// A team's video limits, checked by `reserveVideo` for the whole deployment at once.
public struct VideoLimits: Sendable, Equatable {
    /// `videos_per_day`: videos created in the last 24 hours (deleted ones included); nil = none.
    public var perDay: Int?
    /// `max_videos_in_flight`: videos not finished yet (not deleted); nil = none.
    public var inFlight: Int?
    /// An unfinished video counts against `inFlight` for at most this many seconds after its
    /// creation (`videos.in_flight_max_age_s`): a video nobody polls to its end must not hold a
    /// slot forever.
    public var inFlightMaxAgeSeconds: Int

    public init(perDay: Int? = nil, inFlight: Int? = nil, inFlightMaxAgeSeconds: Int = 3_600) {
        self.perDay = perDay; self.inFlight = inFlight; self.inFlightMaxAgeSeconds = inFlightMaxAgeSeconds
    }
}

/// The answer of `reserveVideo`.
public enum VideoReservation: Sendable, Equatable {
    /// A slot is held under this id until `confirmVideo`, `releaseVideoReservation` or its expiry.
    case reserved(id: String)
    /// The daily quota is used up: `used` videos (and reservations) in the last 24 hours.
    case overDailyQuota(used: Int)
    /// `count` videos (and reservations) are already in flight.
    case overInFlight(count: Int)
}

/// The answer of `claimVideoPoll`.
public enum VideoPollClaim: Sendable, Equatable {
    /// This caller may ask the upstream now; nobody else may for the period asked.
    case granted
    /// Somebody asked within the period: answer from the stored state (nil: no such live video).
    case taken(VideoRecord?)
}

/// What several processes sharing one store coordinate through it: video admission (quota and
/// in-flight slots as one atomic reservation), the right to poll the upstream for a video, the
/// right to create a character name upstream, and which replicas are alive.
///
/// Times: reservations use the caller's `now` (seconds, as the video rows they are counted with);
/// poll claims, name claims and replica heartbeats use the store's own clock in milliseconds (the
/// database's for PostgreSQL, so replicas' clock skew does not matter at `poll_cache_ms` scale).
public protocol CoordinationStore: Sendable {
    /// Atomically for every process sharing the store: when the team is under `limits`, records
    /// a reservation `id` (counting as one video created at `now` and one in flight until
    /// `expiresAt`, unless confirmed or released before) and answers `.reserved`; otherwise the
    /// limit it is over (the daily quota is checked first). Expired reservations are forgotten.
    func reserveVideo(id: String, team: String, limits: VideoLimits, now: Int, expiresAt: Int) throws -> VideoReservation
    /// The upstream accepted the video: its row replaces the reservation (one transaction).
    /// `reservation` nil: just the row (a team without video limits).
    func confirmVideo(reservation: String?, _ v: VideoRecord) throws
    /// The creation failed: the reservation's slot is free again. Unknown ids are ignored.
    func releaseVideoReservation(id: String) throws
    /// The right to ask the upstream for live video `id`'s state: granted when nobody claimed it
    /// in the last `periodMillis` (store clock), and then nobody else gets it for that long.
    func claimVideoPoll(id: String, periodMillis: Int) throws -> VideoPollClaim
    /// The right to create a character named `name` upstream: false when a live character has the
    /// name (case-insensitively) or another holder's claim on it has not expired.
    func claimCharacterName(_ name: String, holder: String, ttlMillis: Int) throws -> Bool
    /// Gives a claim back (only `holder`'s): at once (`keepMillis` 0: the creation failed), or
    /// `keepMillis` from now once the character is recorded — so that a claim racing the record
    /// on another replica, whose statement may not see the new row yet, still finds the claim.
    func releaseCharacterName(_ name: String, holder: String, keepMillis: Int) throws
    /// Records that `replica` is alive now and answers the replicas seen within `ttlMillis`
    /// (itself included), sorted by id. Older entries are forgotten.
    func heartbeat(replica: String, ttlMillis: Int) throws -> [String]
    /// A replica stopping: the others see it gone at their next heartbeat.
    func leave(replica: String) throws
}

/// How long a name claim outlives its character's record (`releaseCharacterName(keepMillis:)`):
/// longer than any store statement, short enough that a name freed by a deletion right after
/// is soon free again.
public enum CharacterNameClaim {
    public static let keepAfterRecordMillis = 5_000
}
