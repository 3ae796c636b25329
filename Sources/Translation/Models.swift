/// An OpenAI model object: `{"id","object":"model","created","owned_by"}` and nothing else.
public struct OpenAIModel: Sendable, Equatable {
    public var id: String
    public var created: Int
    public var ownedBy: String

    public init(id: String, created: Int, ownedBy: String) {
        self.id = id; self.created = created; self.ownedBy = ownedBy
    }

    /// The object's bytes, keys in OpenAI's order.
    public var jsonBytes: [UInt8] {
        var w = JSONObjectWriter(reserving: id.utf8.count + ownedBy.utf8.count + 64)
        w.string("id", id)
        w.string("object", "model")
        w.int("created", created)
        w.string("owned_by", ownedBy)
        return w.finish()
    }
}

/// `GET /v1/models` and `GET /v1/models/{id}` from the upstream's model list.
///
/// Quirks undone (the upstream is new-api, see shared/UPSTREAM.md):
/// - Vendor-suffixed names (`sora-2-yijia`) are mapped back to the name a caller uses (`sora-2`):
///   a name ending with one of `vendorSuffixes` (config `upstream.model_suffixes`, default
///   `["-yijia"]`, the one the upstream is known to add) loses it, unless nothing would be left.
/// - Duplicates after mapping (`sora-2` and `sora-2-yijia`) become one entry, at the place of the
///   first; the upstream's own unsuffixed entry gives `created`/`owned_by` when there is one.
/// - Extra fields (`success`, `supported_endpoint_types`, …) are dropped: only OpenAI's four.
/// - A team's allow-list (`teams[].models`, nil = every model) filters the mapped names, by exact
///   match, as the gateway's request checks do.
///
/// Malformed entries (not an object, no string `id`, an id longer than `maxIDBytes`) are skipped;
/// `success: false` or a body without a `data` list is an error (the caller answers 502).
public enum ModelCatalog {
    /// The suffix the upstream is known to add to model names.
    public static let defaultVendorSuffixes = ["-yijia"]
    /// Longest model id kept (longer ones are skipped: no model is named like that).
    public static let maxIDBytes = 256
    /// At most this many models are kept (the body is bounded by `upstream.max_response_bytes` anyway).
    public static let maxModels = 10_000
    /// `owned_by` when the upstream gives none.
    public static let defaultOwner = "system"

    /// The name a caller uses for an upstream model name.
    public static func canonicalName(_ upstreamName: String, vendorSuffixes: [String] = defaultVendorSuffixes) -> String {
        for suffix in vendorSuffixes where !suffix.isEmpty && upstreamName.hasSuffix(suffix) && upstreamName.utf8.count > suffix.utf8.count {
            return String(upstreamName.dropLast(suffix.count))
        }
        return upstreamName
    }

    /// The models a team may see, in the upstream's order, from the upstream's `/v1/models` body.
    public static func visibleModels(upstreamJSON: [UInt8], vendorSuffixes: [String] = defaultVendorSuffixes,
                                     allowed: [String]?) throws(TranslationError) -> [OpenAIModel] {
        let top = try JSONParser.topLevelMembers(upstreamJSON, wanted: ["data", "success"])
        if top["success"]?.boolValue == false {
            throw TranslationError(.upstreamFailure, "the upstream's model list answered success: false")
        }
        guard case .array(let entries)? = top["data"] else {
            throw TranslationError(.unexpectedShape, "the upstream's model list has no `data` list")
        }
        let allow = allowed.map(Set.init)
        var out: [OpenAIModel] = []
        var index: [String: (at: Int, fromSuffixed: Bool)] = [:]
        for entry in entries {
            guard case .object = entry, let name = entry["id"]?.stringValue, !name.isEmpty, name.utf8.count <= maxIDBytes else { continue }
            let id = canonicalName(name, vendorSuffixes: vendorSuffixes)
            if let allow, !allow.contains(id) { continue }
            let owner = entry["owned_by"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 } ?? defaultOwner
            let model = OpenAIModel(id: id, created: max(0, entry["created"]?.lenientInt ?? 0), ownedBy: owner)
            let suffixed = id != name
            if let seen = index[id] {
                // The upstream's own unsuffixed entry describes the model better than the vendor copy.
                if seen.fromSuffixed && !suffixed {
                    out[seen.at] = model
                    index[id] = (seen.at, false)
                }
                continue
            }
            guard out.count < maxModels else { break }
            index[id] = (out.count, suffixed)
            out.append(model)
        }
        return out
    }

    /// `GET /v1/models/{id}`: the model when the team can see it, else nil (→ `notFound(id:)`).
    public static func model(id: String, in visible: [OpenAIModel]) -> OpenAIModel? {
        visible.first { $0.id == id }
    }

    /// `{"object":"list","data":[…]}`.
    public static func listBody(_ models: [OpenAIModel]) -> [UInt8] {
        var out = Array(#"{"object":"list","data":["#.utf8)
        out.reserveCapacity(32 + models.count * 96)
        for (i, m) in models.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out += m.jsonBytes
        }
        out += Array("]}".utf8)
        return out
    }

    /// OpenAI's 404 for a model the caller can't see (unknown, or refused by the allow-list:
    /// the two are not told apart, so the allow-list doesn't reveal what exists).
    public static func notFound(id: String) -> OpenAIError {
        OpenAIError(message: "The model `\(String(id.prefix(maxIDBytes)))` does not exist or you do not have access to it.",
                    type: .invalidRequest, param: "model", code: "model_not_found")
    }
}
