import Translation

/// A validated `POST /v1/characters` body. Parsing is pure: everything a caller can get wrong
/// without Veil looking anything up is refused here, as a 400 naming the offending `param`,
/// before the store or the upstream is asked anything.
struct CharacterCreateInput: Equatable {
    /// Veil's video id (`video_…`) and the upstream id inside it.
    var videoID: String
    var upstreamVideoID: String
    var name: String
    var description: String
    var timestamps: Timestamps

    /// Longest description accepted, in characters (grapheme clusters).
    static let maxDescriptionLength = 2_000
    /// Largest body read for a character: four short fields (the description is at most 2,000
    /// characters, 8 KB of UTF-8 at worst), with room to spare.
    static let maxBodyBytes = 64 * 1024

    static func parse(body: [UInt8], contentType: String?) -> Result<CharacterCreateInput, APIError> {
        let ct = (contentType ?? "").lowercased()
        guard ct.isEmpty || ct.hasPrefix("application/json") else {
            return .failure(APIError(400, "The body must be JSON (Content-Type: application/json).", code: "invalid_json"))
        }
        do throws(TranslationError) {
            if let name = try JSONParser.ambiguousTopLevelMember(body, reading: decisionMembers) {
                return .failure(ambiguous(name))
            }
        } catch {
            return .failure(APIError(400, "The body must be a JSON object.", code: "invalid_json"))
        }
        let v: JSONValue
        do { v = try JSONValue.parse(body) } catch {
            return .failure(APIError(400, "The body must be a JSON object.", code: "invalid_json"))
        }
        guard case .object = v else { return .failure(APIError(400, "The body must be a JSON object.", code: "invalid_json")) }

        // video_id
        guard let vf = v["video_id"], !vf.isNull else { return .failure(missing("video_id")) }
        guard let video = vf.stringValue else { return .failure(invalid("video_id", "`video_id` must be a string such as \"video_4078\".")) }
        guard let upstreamVideo = VeilID.upstreamVideoID(fromVeil: video) else {
            return .failure(invalid("video_id", "`video_id` must be a video id such as \"video_4078\" (from POST /v1/videos)."))
        }

        // name
        guard let nf = v["name"], !nf.isNull else { return .failure(missing("name")) }
        guard let name = nf.stringValue, isValidCharacterName(name) else {
            return .failure(invalid("name", "`name` must be 2 to 40 characters of ASCII letters, digits, `_` and `.` (it is used as @name in prompts)."))
        }

        // description
        guard let df = v["description"], !df.isNull else { return .failure(missing("description")) }
        guard let description = df.stringValue else { return .failure(invalid("description", "`description` must be a string.")) }
        guard !description.allSatisfy(\.isWhitespace) else {
            return .failure(invalid("description", "`description` must not be empty."))
        }
        guard description.count <= maxDescriptionLength else {
            return .failure(invalid("description", "`description` must be at most \(maxDescriptionLength) characters."))
        }

        // timestamps
        guard let tf = v["timestamps"], !tf.isNull else { return .failure(missing("timestamps")) }
        let ts: Timestamps
        do { ts = try Timestamps.parse(tf) } catch {
            return .failure(APIError(400, "Invalid `timestamps`: \(error.message). Use {\"start\":0,\"end\":3} or \"0-3\" (seconds, 0 <= start < end, at most 3 seconds long).",
                                     param: "timestamps", code: "invalid_timestamps"))
        }
        return .success(CharacterCreateInput(videoID: video, upstreamVideoID: upstreamVideo, name: name,
                                             description: description, timestamps: ts))
    }

    /// The members Veil reads (and so decides on).
    static let decisionMembers: Set<String> = ["video_id", "name", "description", "timestamps"]

    static func ambiguous(_ name: String) -> APIError {
        APIError(400, "The member `\(name)` is given more than once (names are compared ignoring case).", param: name, code: "ambiguous_member")
    }

    static func missing(_ p: String) -> APIError {
        APIError(400, "Missing required parameter: `\(p)`.", param: p, code: "missing_required_parameter")
    }

    static func invalid(_ p: String, _ m: String) -> APIError {
        APIError(400, m, param: p, code: "invalid_value")
    }
}
