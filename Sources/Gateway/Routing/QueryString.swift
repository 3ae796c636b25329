/// `a=1&b=2` → dictionary (first value wins), percent-decoded. Pure.
enum QueryString {
    static func parse(_ q: Substring?) -> [String: String] {
        var out: [String: String] = [:]
        guard let q else { return out }
        for pair in q.split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let k = percentDecode(kv[0]) else { continue }
            let v = kv.count > 1 ? (percentDecode(kv[1]) ?? "") : ""
            if out[k] == nil { out[k] = v }
        }
        return out
    }

    static func percentDecode(_ s: Substring) -> String? {
        var out: [UInt8] = []
        var it = Array(s.utf8)[...]
        while let c = it.popFirst() {
            if c == UInt8(ascii: "+") { out.append(0x20); continue }
            if c == UInt8(ascii: "%") {
                guard it.count >= 2, let h = hex(it[it.startIndex]), let l = hex(it[it.startIndex + 1]) else { return nil }
                out.append(h << 4 | l)
                it = it.dropFirst(2)
                continue
            }
            out.append(c)
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }
}
