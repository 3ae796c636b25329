import Translation

/// `a=1&b=2` → dictionary (first value wins), percent-decoded. Pure.
enum QueryString {
    static func parse(_ q: Substring?) -> [String: String] {
        var out: [String: String] = [:]
        guard let q else { return out }
        for pair in q.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let k = PercentDecoding.decode(kv[0], plusIsSpace: true) else { continue }
            let v = kv.count > 1 ? (PercentDecoding.decode(kv[1], plusIsSpace: true) ?? "") : ""
            if out[k] == nil { out[k] = v }
        }
        return out
    }
}
