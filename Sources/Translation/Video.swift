/// A video task as the upstream reports it, decoded tolerantly: the reseller's field types drift
/// (ids and seconds as strings or numbers, progress as int, float or string), so each field is
/// read leniently and a wrong-typed field becomes nil instead of failing the whole answer.
public struct UpstreamVideoTask: Sendable, Equatable {
    public var id: String?
    /// Raw upstream status text (see `VideoStatus(upstream:)`).
    public var status: String?
    public var progress: Int?
    /// The video WITHOUT watermark (or "").
    public var url: String?
    /// QUIRK: the WATERMARKED video URL once done, otherwise a resolution.
    public var size: String?
    /// QUIRK: "standard" when moderation passed, otherwise the refusal text.
    public var quality: String?
    public var seconds: String?
    public var model: String?
    public var createdAt: Int?
    public var completedAt: Int?
    /// `error` (string or `{message}`), else `fail_reason`, else `message`; empty → nil.
    public var errorMessage: String?
    /// True when the answer carried an `error` member (string or object), not just a message.
    public var hasErrorMember: Bool

    public init(id: String? = nil, status: String? = nil, progress: Int? = nil, url: String? = nil,
                size: String? = nil, quality: String? = nil, seconds: String? = nil, model: String? = nil,
                createdAt: Int? = nil, completedAt: Int? = nil, errorMessage: String? = nil,
                hasErrorMember: Bool = false) {
        self.id = id; self.status = status; self.progress = progress; self.url = url
        self.size = size; self.quality = quality; self.seconds = seconds; self.model = model
        self.createdAt = createdAt; self.completedAt = completedAt
        self.errorMessage = errorMessage; self.hasErrorMember = hasErrorMember
    }

    /// Decodes the upstream's JSON. Throws on non-JSON, a non-object, or an object with none of
    /// `id`/`task_id`/`status`/`error` (nothing to act on). A `{"data":{…}}` wrapper is unwrapped.
    public init(json bytes: [UInt8]) throws(TranslationError) {
        var v = try JSONValue.parse(bytes)
        guard case .object = v else { throw TranslationError(.unexpectedShape, "video task is not a JSON object") }
        if v["id"] == nil, v["task_id"] == nil, v["status"] == nil, let inner = v["data"], case .object = inner {
            v = inner
        }
        func str(_ k: String) -> String? { v[k]?.lenientString }
        func nonEmpty(_ s: String?) -> String? { s.flatMap { $0.isEmpty ? nil : $0 } }
        id = nonEmpty(str("id")) ?? nonEmpty(str("task_id"))
        status = v["status"]?.stringValue
        progress = v["progress"]?.lenientInt
        url = v["url"]?.stringValue
        size = v["size"]?.stringValue
        quality = v["quality"]?.stringValue
        seconds = str("seconds")
        model = v["model"]?.stringValue
        createdAt = v["created_at"]?.lenientInt
        completedAt = v["completed_at"]?.lenientInt ?? v["finished_at"]?.lenientInt
        var errText: String?
        hasErrorMember = false
        if let e = v["error"], !e.isNull {
            if let s = e.stringValue { errText = nonEmpty(s); hasErrorMember = errText != nil }
            else if case .object = e {
                hasErrorMember = true
                errText = nonEmpty(e["message"]?.stringValue)
            }
        }
        errorMessage = errText ?? nonEmpty(v["fail_reason"]?.stringValue) ?? nonEmpty(v["message"]?.stringValue)
        guard id != nil || status != nil || hasErrorMember else {
            throw TranslationError(.missingField, "video task has neither id nor status")
        }
    }
}

/// Veil's (OpenAI's) video statuses.
public enum VideoStatus: String, Sendable, Equatable, Codable, CaseIterable {
    case queued, inProgress = "in_progress", completed, failed

    /// Maps the upstream's words (case-insensitive, trimmed). Unknown or missing → in_progress:
    /// a caller keeps polling rather than being told a still-running job finished or failed.
    public init(upstream: String?) {
        switch upstream?.trimmingASCIIWhitespace().lowercased() ?? "" {
        case "queued", "pending", "submitted", "not_start": self = .queued
        case "processing", "in_progress", "running": self = .inProgress
        case "completed", "success", "succeeded": self = .completed
        case "error", "failed", "failure", "cancelled": self = .failed
        default: self = .inProgress
        }
    }
}

/// What Veil stored when the video was created: the caller's own request, which wins over the
/// upstream's rewritten echo (vendor-suffixed model, size field abused for URLs).
public struct VideoFacts: Sendable, Equatable {
    public var veilID: String
    public var model: String
    public var size: String?
    public var seconds: String?
    public var prompt: String?
    public var createdAt: Int
    public var remixedFromVideoID: String?

    public init(veilID: String, model: String, size: String? = nil, seconds: String? = nil,
                prompt: String? = nil, createdAt: Int, remixedFromVideoID: String? = nil) {
        self.veilID = veilID; self.model = model; self.size = size; self.seconds = seconds
        self.prompt = prompt; self.createdAt = createdAt; self.remixedFromVideoID = remixedFromVideoID
    }
}

public struct VideoError: Sendable, Equatable, Codable {
    public var code: String
    public var message: String
    public init(code: String, message: String) { self.code = code; self.message = message }
}

/// Veil's video object (OpenAI shape plus the two URLs). Every key is always present; absent
/// values are explicit `null`s. `jsonBytes` writes keys in the documented order.
public struct VideoObject: Sendable, Equatable, Codable {
    public var id: String
    public var object: String = "video"
    public var model: String
    public var status: VideoStatus
    public var progress: Int
    public var createdAt: Int
    public var completedAt: Int?
    public var expiresAt: Int?
    public var size: String?
    public var seconds: String?
    public var prompt: String?
    public var remixedFromVideoID: String?
    public var error: VideoError?
    public var videoURL: String?
    public var watermarkedVideoURL: String?

    public init(id: String, model: String, status: VideoStatus, progress: Int, createdAt: Int,
                completedAt: Int? = nil, expiresAt: Int? = nil, size: String? = nil, seconds: String? = nil,
                prompt: String? = nil, remixedFromVideoID: String? = nil, error: VideoError? = nil,
                videoURL: String? = nil, watermarkedVideoURL: String? = nil) {
        self.id = id; self.model = model; self.status = status; self.progress = progress
        self.createdAt = createdAt; self.completedAt = completedAt; self.expiresAt = expiresAt
        self.size = size; self.seconds = seconds; self.prompt = prompt
        self.remixedFromVideoID = remixedFromVideoID; self.error = error
        self.videoURL = videoURL; self.watermarkedVideoURL = watermarkedVideoURL
    }

    enum CodingKeys: String, CodingKey {
        case id, object, model, status, progress
        case createdAt = "created_at", completedAt = "completed_at", expiresAt = "expires_at"
        case size, seconds, prompt
        case remixedFromVideoID = "remixed_from_video_id"
        case error
        case videoURL = "video_url", watermarkedVideoURL = "watermarked_video_url"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        object = try c.decodeIfPresent(String.self, forKey: .object) ?? "video"
        model = try c.decode(String.self, forKey: .model)
        status = try c.decode(VideoStatus.self, forKey: .status)
        progress = try c.decode(Int.self, forKey: .progress)
        createdAt = try c.decode(Int.self, forKey: .createdAt)
        completedAt = try c.decodeIfPresent(Int.self, forKey: .completedAt)
        expiresAt = try c.decodeIfPresent(Int.self, forKey: .expiresAt)
        size = try c.decodeIfPresent(String.self, forKey: .size)
        seconds = try c.decodeIfPresent(String.self, forKey: .seconds)
        prompt = try c.decodeIfPresent(String.self, forKey: .prompt)
        remixedFromVideoID = try c.decodeIfPresent(String.self, forKey: .remixedFromVideoID)
        error = try c.decodeIfPresent(VideoError.self, forKey: .error)
        videoURL = try c.decodeIfPresent(String.self, forKey: .videoURL)
        watermarkedVideoURL = try c.decodeIfPresent(String.self, forKey: .watermarkedVideoURL)
    }

    /// Explicit nulls (synthesised Codable would omit nil keys).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(object, forKey: .object)
        try c.encode(model, forKey: .model)
        try c.encode(status, forKey: .status)
        try c.encode(progress, forKey: .progress)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(completedAt, forKey: .completedAt)
        try c.encode(expiresAt, forKey: .expiresAt)
        try c.encode(size, forKey: .size)
        try c.encode(seconds, forKey: .seconds)
        try c.encode(prompt, forKey: .prompt)
        try c.encode(remixedFromVideoID, forKey: .remixedFromVideoID)
        try c.encode(error, forKey: .error)
        try c.encode(videoURL, forKey: .videoURL)
        try c.encode(watermarkedVideoURL, forKey: .watermarkedVideoURL)
    }

    /// The object as JSON, keys in the documented order, nulls explicit.
    public var jsonBytes: [UInt8] {
        var w = JSONObjectWriter(reserving: 512 + (prompt?.utf8.count ?? 0))
        w.string("id", id)
        w.string("object", object)
        w.string("model", model)
        w.string("status", status.rawValue)
        w.int("progress", progress)
        w.int("created_at", createdAt)
        w.int("completed_at", completedAt)
        w.int("expires_at", expiresAt)
        w.string("size", size)
        w.string("seconds", seconds)
        w.string("prompt", prompt)
        w.string("remixed_from_video_id", remixedFromVideoID)
        if let error {
            var e = JSONObjectWriter()
            e.string("code", error.code)
            e.string("message", error.message)
            w.raw("error", e.finish())
        } else {
            w.null("error")
        }
        w.string("video_url", videoURL)
        w.string("watermarked_video_url", watermarkedVideoURL)
        return w.finish()
    }
}

/// Turns an upstream task into Veil's object, undoing every quirk (UPSTREAM.md §2):
///
/// - URLs: `url` → `video_url` (no watermark); a URL in `size` → `watermarked_video_url`.
///   Non-URL values are dropped, so `size` never carries a URL and a URL never carries junk.
/// - `size`: the caller's requested size (facts) wins; else the upstream's if it is a resolution.
///   `seconds` likewise: facts first (stable across polls), else upstream's.
/// - Moderation: `completed` with `quality` other than "standard"/empty → failed,
///   `moderation_blocked`, message = the upstream's refusal text.
/// - Upstream failure → failed, `generation_failed`, the upstream's message or a generic one.
///   A task with no `status` at all but an `error` member is treated as failed too.
/// - `completed` without any URL → failed, `no_video` (never a "completed" that can't play).
/// - Failed objects carry no URLs and no `expires_at`.
/// - `completed_at`: upstream's, else `now` (the caller should persist the first value it
///   returns so later polls agree); null unless completed.
/// - `progress` clamped to 0...100, and 100 when completed. `model`: the requested one.
/// - `expires_at`: from the signed URL's `se=` (ISO 8601) / `Expires=` (Unix), else null.
///
/// Upstream text (moderation, error messages) is passed through as is: run the encoded bytes
/// through `KeyRedactor` like every other response body.
public func translateVideo(_ task: UpstreamVideoTask, facts: VideoFacts, now: Int) -> VideoObject {
    var status = VideoStatus(upstream: task.status)
    if task.status == nil, task.hasErrorMember { status = .failed }

    let video = task.url.flatMap { looksLikeURL($0) ? $0 : nil }
    let watermarked = task.size.flatMap { looksLikeURL($0) ? $0 : nil }
    let size = facts.size ?? task.size.flatMap { isResolution($0) ? $0 : nil }

    var error: VideoError?
    let quality = task.quality?.trimmingASCIIWhitespace() ?? ""
    switch status {
    case .completed:
        if !quality.isEmpty, quality.lowercased() != "standard" {
            error = VideoError(code: "moderation_blocked", message: quality)
        } else if video == nil, watermarked == nil {
            error = VideoError(code: "no_video",
                               message: "The upstream reported the video as completed but returned no video URL.")
        }
    case .failed:
        error = VideoError(code: "generation_failed",
                           message: task.errorMessage ?? "The video generation failed upstream.")
    default:
        break
    }
    if error != nil { status = .failed }

    var out = VideoObject(id: facts.veilID, model: facts.model, status: status,
                          progress: min(max(task.progress ?? 0, 0), 100), createdAt: facts.createdAt,
                          size: size, seconds: facts.seconds ?? task.seconds, prompt: facts.prompt,
                          remixedFromVideoID: facts.remixedFromVideoID, error: error)
    if status == .completed {
        out.progress = 100
        out.completedAt = task.completedAt ?? now
        out.videoURL = video
        out.watermarkedVideoURL = watermarked
        out.expiresAt = video.flatMap(signedURLExpiry) ?? watermarked.flatMap(signedURLExpiry)
    }
    return out
}

/// `^\d{2,5}x\d{2,5}$` (ASCII digits, lowercase x).
public func isResolution(_ s: String) -> Bool {
    let u = Array(s.utf8)
    guard let x = u.firstIndex(of: UInt8(ascii: "x")) else { return false }
    let w = u[..<x], h = u[(x + 1)...]
    func ok(_ d: ArraySlice<UInt8>) -> Bool { (2...5).contains(d.count) && d.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
    return ok(w) && ok(h)
}

/// An absolute http(s) URL with a non-empty host part, no spaces or control characters.
public func looksLikeURL(_ s: String) -> Bool {
    let lower = s.prefix(8).lowercased()
    let schemeLen: Int
    if lower.hasPrefix("https://") { schemeLen = 8 } else if lower.hasPrefix("http://") { schemeLen = 7 } else { return false }
    let u = Array(s.utf8)
    guard u.count > schemeLen, u.count <= 8192 else { return false }
    let first = u[schemeLen]
    guard first != UInt8(ascii: "/"), first != UInt8(ascii: "?"), first != UInt8(ascii: "#") else { return false }
    return !u.contains { $0 <= 0x20 || $0 == 0x7F }
}

/// The expiry of a signed URL: Azure SAS `se=` (ISO 8601, usually percent-encoded) or a
/// numeric `se=`/`Expires=` (Unix seconds, as Aliyun OSS signs). Nil when absent or unreadable.
public func signedURLExpiry(_ url: String) -> Int? {
    guard let q = url.firstIndex(of: "?") else { return nil }
    var query = url[url.index(after: q)...]
    if let hash = query.firstIndex(of: "#") { query = query[..<hash] }
    for pair in query.split(separator: "&") {
        guard let eq = pair.firstIndex(of: "=") else { continue }
        let key = pair[..<eq]
        guard key == "se" || key == "Expires" else { continue }
        guard let value = PercentDecoding.decode(pair[pair.index(after: eq)...]) else { continue }
        if !value.isEmpty, value.utf8.count <= 12, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            return Int(value)
        }
        if key == "se", let t = TimeMath.parseISO8601(value) { return t }
    }
    return nil
}
