/// A character as the upstream lists or creates it, read by whitelist: only the fields below are
/// ever extracted, so the upstream's `api_key`, `token_id`, `username`, `gen_id` are never even
/// copied out of the parsed JSON.
public struct UpstreamCharacter: Sendable, Equatable {
    public var id: String?
    /// The character's name (what `@name` refers to).
    public var uuid: String?
    /// The description.
    public var instructionValue: String?
    public var status: Int?
    /// Local wall-clock time, e.g. "2025-11-06 16:27:24" (see `parseLocalTime`).
    public var createTime: String?
    /// "S-E" as the upstream stores it.
    public var timestamps: String?
    /// The upstream video id, when the upstream reports it.
    public var videoID: String?

    public init(id: String? = nil, uuid: String? = nil, instructionValue: String? = nil, status: Int? = nil,
                createTime: String? = nil, timestamps: String? = nil, videoID: String? = nil) {
        self.id = id; self.uuid = uuid; self.instructionValue = instructionValue; self.status = status
        self.createTime = createTime; self.timestamps = timestamps; self.videoID = videoID
    }

    /// From one element of `data`. Throws if it is not an object.
    public init(_ v: JSONValue) throws(TranslationError) {
        guard case .object = v else { throw TranslationError(.unexpectedShape, "character is not a JSON object") }
        id = v["id"]?.lenientString
        uuid = v["uuid"]?.lenientString
        instructionValue = v["instruction_value"]?.stringValue
        status = v["status"]?.lenientInt
        createTime = v["create_time"]?.stringValue
        if let t = v["timestamps"] {
            if let s = t.lenientString { timestamps = s }
            else if let ts = try? Timestamps.parse(t) { timestamps = ts.upstreamString }
        }
        videoID = v["video_id"]?.lenientString
    }
}

/// `{"success":true,"data":[…]}` → characters. `success:false` (or missing) → `.upstreamFailure`
/// with the upstream's `message`/`msg`; elements that are not objects are an error too.
public func decodeCharacterList(_ bytes: [UInt8]) throws(TranslationError) -> [UpstreamCharacter] {
    let data = try characterEnvelopeData(bytes)
    if data.isNull { return [] }
    guard case .array(let items) = data else { throw TranslationError(.unexpectedShape, "character list data is not an array") }
    var out: [UpstreamCharacter] = []
    out.reserveCapacity(items.count)
    for item in items { out.append(try UpstreamCharacter(item)) }
    return out
}

/// `{"success":true,"data":{…}}` (the create answer) → the character.
public func decodeCharacterCreate(_ bytes: [UInt8]) throws(TranslationError) -> UpstreamCharacter {
    try UpstreamCharacter(try characterEnvelopeData(bytes))
}

func characterEnvelopeData(_ bytes: [UInt8]) throws(TranslationError) -> JSONValue {
    let m = try JSONParser.topLevelMembers(bytes, wanted: ["success", "data", "message", "msg"])
    guard m["success"]?.boolValue == true else {
        let msg = m["message"]?.stringValue ?? m["msg"]?.stringValue
        throw TranslationError(.upstreamFailure, (msg?.isEmpty == false ? msg : nil) ?? "the upstream reported a failure")
    }
    return m["data"] ?? .null
}

/// Veil's character statuses.
public enum CharacterStatus: String, Sendable, Equatable, Codable, CaseIterable {
    case processing, ready, failed

    /// 999 → ready; negative (the doc names -1) → failed; 0, unknown or missing → processing
    /// (a caller keeps polling rather than using a character that may not exist).
    public init(upstream: Int?) {
        guard let s = upstream else { self = .processing; return }
        if s == 999 { self = .ready } else if s < 0 { self = .failed } else { self = .processing }
    }
}

/// A clip of a video, in seconds, kept as whole milliseconds so validation is exact
/// (0.1…3.1 is exactly 3 s, not 3.0000000000000004).
public struct Timestamps: Sendable, Equatable, Codable {
    public let startMilliseconds: Int
    public let endMilliseconds: Int
    /// Longest clip the upstream accepts.
    public static let maxSpanMilliseconds = 3000
    /// Sanity cap on positions (a day): keeps arithmetic and formatting trivially safe.
    public static let maxMilliseconds = 86_400_000

    public var start: Double { Double(startMilliseconds) / 1000 }
    public var end: Double { Double(endMilliseconds) / 1000 }

    /// Validates `0 <= start < end`, `end - start <= 3`.
    public init(start: Double, end: Double) throws(TranslationError) {
        guard start.isFinite, end.isFinite else { throw Self.bad("timestamps must be finite numbers") }
        guard start >= 0 else { throw Self.bad("timestamps.start must be >= 0") }
        guard start <= Double(Self.maxMilliseconds) / 1000, end <= Double(Self.maxMilliseconds) / 1000 else {
            throw Self.bad("timestamps are too large")
        }
        let s = Int((start * 1000).rounded()), e = Int((end * 1000).rounded())
        guard s < e else { throw Self.bad("timestamps.end must be greater than timestamps.start") }
        guard e - s <= Self.maxSpanMilliseconds else { throw Self.bad("timestamps must span at most 3 seconds") }
        startMilliseconds = s
        endMilliseconds = e
    }

    static func bad(_ m: String) -> TranslationError { TranslationError(.invalidTimestamps, m) }

    /// `{"start":0,"end":3}` (numbers or numeric strings, fractions allowed) or `"0-3"`/`"0.5-2.5"`.
    public static func parse(_ v: JSONValue) throws(TranslationError) -> Timestamps {
        switch v {
        case .string(let s): return try parse(s)
        case .object:
            guard let s = v["start"]?.lenientDouble, let e = v["end"]?.lenientDouble else {
                throw bad("timestamps needs numeric \"start\" and \"end\"")
            }
            return try Timestamps(start: s, end: e)
        default:
            throw bad("timestamps must be {\"start\":S,\"end\":E} or \"S-E\"")
        }
    }

    /// `"S-E"` with non-negative decimal numbers (spaces around either allowed).
    public static func parse(_ s: String) throws(TranslationError) -> Timestamps {
        let pieces = s.split(separator: "-", omittingEmptySubsequences: false)
        guard pieces.count == 2 else { throw bad("timestamps must look like \"0-3\"") }
        func num(_ p: Substring) -> Double? {
            let t = p.trimmingASCIIWhitespace()
            guard !t.isEmpty, t.utf8.count <= 12,
                  t.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == UInt8(ascii: ".") }),
                  t.utf8.filter({ $0 == UInt8(ascii: ".") }).count <= 1,
                  t.utf8.first != UInt8(ascii: "."), t.utf8.last != UInt8(ascii: ".") else { return nil }
            return Double(t)
        }
        guard let a = num(pieces[0]), let b = num(pieces[1]) else { throw bad("timestamps must look like \"0-3\"") }
        return try Timestamps(start: a, end: b)
    }

    /// "S-E" for the upstream: whole seconds without decimals, else up to 3 decimals.
    public var upstreamString: String { "\(Self.format(startMilliseconds))-\(Self.format(endMilliseconds))" }

    /// Seconds text of a millisecond count: 3000 → "3", 500 → "0.5", 1250 → "1.25".
    static func format(_ ms: Int) -> String {
        let whole = ms / 1000, frac = ms % 1000
        guard frac != 0 else { return String(whole) }
        var f = String(frac)
        while f.count < 3 { f = "0" + f }
        while f.hasSuffix("0") { f.removeLast() }
        return "\(whole).\(f)"
    }

    /// `{"start":S,"end":E}` as JSON numbers.
    public var jsonBytes: [UInt8] {
        Array("{\"start\":\(Self.format(startMilliseconds)),\"end\":\(Self.format(endMilliseconds))}".utf8)
    }

    enum CodingKeys: String, CodingKey { case start, end }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        try self.init(start: c.decode(Double.self, forKey: .start), end: c.decode(Double.self, forKey: .end))
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(start, forKey: .start)
        try c.encode(end, forKey: .end)
    }
}

/// What Veil stored when a team created a character (the upstream doesn't return all of it).
public struct CharacterFacts: Sendable, Equatable {
    public var veilID: String?
    public var name: String?
    public var description: String?
    /// Veil's video id (`video_…`).
    public var videoID: String?
    public var timestamps: Timestamps?
    public var createdAt: Int?

    public init(veilID: String? = nil, name: String? = nil, description: String? = nil, videoID: String? = nil,
                timestamps: Timestamps? = nil, createdAt: Int? = nil) {
        self.veilID = veilID; self.name = name; self.description = description
        self.videoID = videoID; self.timestamps = timestamps; self.createdAt = createdAt
    }
}

/// Veil's character object. It has no field that could hold an upstream credential or account
/// detail: it is built field by field, never by copying the upstream's object.
public struct CharacterObject: Sendable, Equatable, Codable {
    public var id: String
    public var object: String = "character"
    public var name: String?
    public var description: String?
    public var videoID: String?
    public var timestamps: Timestamps?
    public var status: CharacterStatus
    public var createdAt: Int

    public init(id: String, name: String?, description: String?, videoID: String?, timestamps: Timestamps?,
                status: CharacterStatus, createdAt: Int) {
        self.id = id; self.name = name; self.description = description; self.videoID = videoID
        self.timestamps = timestamps; self.status = status; self.createdAt = createdAt
    }

    enum CodingKeys: String, CodingKey {
        case id, object, name, description, videoID = "video_id", timestamps, status, createdAt = "created_at"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        object = try c.decodeIfPresent(String.self, forKey: .object) ?? "character"
        name = try c.decodeIfPresent(String.self, forKey: .name)
        description = try c.decodeIfPresent(String.self, forKey: .description)
        videoID = try c.decodeIfPresent(String.self, forKey: .videoID)
        timestamps = try c.decodeIfPresent(Timestamps.self, forKey: .timestamps)
        status = try c.decode(CharacterStatus.self, forKey: .status)
        createdAt = try c.decode(Int.self, forKey: .createdAt)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(object, forKey: .object)
        try c.encode(name, forKey: .name)
        try c.encode(description, forKey: .description)
        try c.encode(videoID, forKey: .videoID)
        try c.encode(timestamps, forKey: .timestamps)
        try c.encode(status, forKey: .status)
        try c.encode(createdAt, forKey: .createdAt)
    }

    /// JSON in the documented key order, explicit nulls.
    public var jsonBytes: [UInt8] {
        var w = JSONObjectWriter()
        w.string("id", id)
        w.string("object", object)
        w.string("name", name)
        w.string("description", description)
        w.string("video_id", videoID)
        w.raw("timestamps", timestamps?.jsonBytes)
        w.string("status", status.rawValue)
        w.int("created_at", createdAt)
        return w.finish()
    }
}

/// Builds Veil's character from the upstream's, preferring what Veil stored (facts) and
/// whitelisting every field. `id`: facts' Veil id, else `char_<upstream id>` (`char_unknown` if
/// the upstream id isn't a safe id). `video_id`: facts', else `video_<upstream video_id>` when
/// safe. `created_at`: facts', else `create_time` read at `utcOffsetSeconds`, else `now`.
public func translateCharacter(_ c: UpstreamCharacter, facts: CharacterFacts? = nil,
                               utcOffsetSeconds: Int, now: Int) -> CharacterObject {
    let id = facts?.veilID ?? c.id.flatMap(VeilID.characterID(upstream:)) ?? "char_unknown"
    let video = facts?.videoID ?? c.videoID.flatMap(VeilID.videoID(upstream:))
    let ts = facts?.timestamps ?? c.timestamps.flatMap { try? Timestamps.parse($0) }
    let created = facts?.createdAt ?? c.createTime.flatMap { parseLocalTime($0, utcOffsetSeconds: utcOffsetSeconds) } ?? now
    return CharacterObject(id: id, name: facts?.name ?? c.uuid, description: facts?.description ?? c.instructionValue,
                           videoID: video, timestamps: ts, status: CharacterStatus(upstream: c.status),
                           createdAt: created)
}

/// The upstream's create body: `{"instruction_value":…,"timestamps":"S-E","video_id":…,"uuid":…}`.
public func upstreamCharacterCreateBody(name: String, description: String, upstreamVideoID: String,
                                        timestamps: Timestamps) -> [UInt8] {
    var w = JSONObjectWriter()
    w.string("instruction_value", description)
    w.string("timestamps", timestamps.upstreamString)
    w.string("video_id", upstreamVideoID)
    w.string("uuid", name)
    return w.finish()
}

@inline(__always) func isNameByte(_ b: UInt8) -> Bool {
    (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
        || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
}

/// ASCII letters, digits, `_` and `.`; 2…40 characters.
public func isValidCharacterName(_ s: String) -> Bool {
    let u = s.utf8
    return (2...40).contains(u.count) && u.allSatisfy(isNameByte)
}

/// The `@name` mentions in a prompt, deduplicated, in order of first appearance.
///
/// Rule: an `@` counts only at the start of the text or after a byte that is not a name
/// character (so `a@b.com` is an e-mail, not a mention; `请@alice` and `(@alice)` are mentions).
/// The name is the longest run of name characters after it, minus trailing dots (sentence
/// punctuation: "@alice." names "alice"); it must then be a valid name (2…40) or it is ignored.
/// Callers enforcing ownership should refuse prompts naming characters the team doesn't own.
public func mentionedCharacterNames(in prompt: String) -> [String] {
    let u = Array(prompt.utf8)
    var out: [String] = []
    var seen = Set<String>()
    var i = 0
    while i < u.count {
        guard u[i] == UInt8(ascii: "@"), i == 0 || !isNameByte(u[i - 1]) else { i += 1; continue }
        var j = i + 1
        while j < u.count, isNameByte(u[j]) { j += 1 }
        var end = j
        while end > i + 1, u[end - 1] == UInt8(ascii: ".") { end -= 1 }
        let name = String(decoding: u[(i + 1)..<end], as: UTF8.self)
        if isValidCharacterName(name), seen.insert(name).inserted { out.append(name) }
        i = max(j, i + 1)
    }
    return out
}
