import Translation

/// OpenAI list pagination (`?after=&limit=&order=`), shared by the videos and characters lists.
struct ListQuery: Equatable {
    var limit = 20
    var descending = true
    var after: String?

    /// Parses and checks the query; `isID` says whether `after` is an id of the listed kind. Pure.
    static func parse(_ query: Substring?, isID: (String) -> Bool, kind: String) -> Result<ListQuery, APIError> {
        let q = QueryString.parse(query)
        var out = ListQuery()
        if let l = q["limit"] {
            guard let n = Int(l), n >= 1, n <= 100 else {
                return .failure(APIError(400, "`limit` must be an integer from 1 to 100.", param: "limit", code: "invalid_limit"))
            }
            out.limit = n
        }
        switch q["order"] ?? "desc" {
        case "desc": out.descending = true
        case "asc": out.descending = false
        default: return .failure(APIError(400, "`order` must be `asc` or `desc`.", param: "order", code: "invalid_order"))
        }
        out.after = q["after"].flatMap { $0.isEmpty ? nil : $0 }
        if let a = out.after, !isID(a) {
            return .failure(APIError(400, "`after` must be a \(kind) id.", param: "after", code: "invalid_after"))
        }
        return .success(out)
    }

    /// `{"object":"list","data":[...],"first_id","last_id","has_more"}` from objects already encoded.
    static func body(items: [[UInt8]], firstID: String?, lastID: String?, hasMore: Bool) -> [UInt8] {
        var data: [UInt8] = [UInt8(ascii: "[")]
        for (i, item) in items.enumerated() {
            if i > 0 { data.append(UInt8(ascii: ",")) }
            data += item
        }
        data.append(UInt8(ascii: "]"))
        var w = JSONObjectWriter(reserving: data.count + 128)
        w.string("object", "list")
        w.raw("data", data)
        w.string("first_id", firstID)
        w.string("last_id", lastID)
        w.bool("has_more", hasMore)
        return w.finish()
    }
}
