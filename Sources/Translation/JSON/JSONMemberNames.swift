// Member names as the upstream's decoder sees them, so that Veil decides on the same member the
// upstream will use.
//
// The reseller is written in Go. `encoding/json` fills a struct field from the member whose name
// equals the field's tag exactly or, failing that, equals it *ignoring case*, and the last such
// member wins. So `{"model":"A","MODEL":"B"}` runs and bills `B` upstream while an exact lookup
// in Veil sees `A`; `{"model":"A","Stream":true}` opens a stream Veil does not count.
//
// Go's folding (`foldName` in encoding/json, Go 1.21+, and `bytes.EqualFold` before it): ASCII
// letters fold to upper case, and every other rune to the smallest rune of its simple-folding
// orbit. For the names that matter here, which are ASCII, two non-ASCII runes fold *onto* ASCII
// letters: U+017F LATIN SMALL LETTER LONG S (ſ → S) and U+212A KELVIN SIGN (K → K). So
// `"ſtream"` is `stream` to Go. Veil folds exactly these: ASCII case, ſ and K. Other non-ASCII
// case pairs (`É`/`é`) are left apart on purpose: such a name can never reach an ASCII field in
// Go, two of them collide only in a field nobody reads, and refusing them would refuse
// harmless bodies. Names are compared decoded (`"mod\u0065l"` is `model`); invalid UTF-8 and
// lone surrogates decode to U+FFFD, as in Go.

/// The names a caller of `JSONParser.ambiguousTopLevelMember` reads, folded once.
struct MemberNameCheck {
    /// Folded form and the exact spelling Veil reads (a handful: searched in order, no hashing).
    let reading: [(folded: [UInt8], exact: String)]

    init(reading: Set<String>) {
        self.reading = reading.sorted().map { (foldMemberName(Array($0.utf8)), $0) }
    }

    /// Whether `name` is a name Veil reads, spelled differently (`Stream` for `stream`).
    func isVariant(_ name: String, folded: [UInt8]) -> Bool {
        guard let r = reading.first(where: { $0.folded == folded }) else { return false }
        return r.exact != name
    }
}

/// Folded names seen so far in one object: a short list searched in order (objects Veil decides
/// on have a handful of members), a set once it grows, so a hostile body with thousands of
/// members costs no more than hashing them.
struct SeenMemberNames {
    private var few: [[UInt8]] = []
    private var many: Set<[UInt8]>?
    static let listLimit = 16

    /// False when `folded` was seen before.
    mutating func insert(_ folded: [UInt8]) -> Bool {
        if many != nil { return many!.insert(folded).inserted }
        if few.contains(folded) { return false }
        if few.count < Self.listLimit { few.append(folded); return true }
        many = Set(few)
        few = []
        return many!.insert(folded).inserted
    }
}

/// Go's folding, restricted as explained above: ASCII to upper case, ſ → S, K → K.
func foldMemberName(_ utf8: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(utf8.count)
    var i = 0
    while i < utf8.count {
        let b = utf8[i]
        if b >= 0x61 && b <= 0x7A {
            out.append(b - 0x20)
        } else if b == 0xC5, i + 1 < utf8.count, utf8[i + 1] == 0xBF {
            out.append(UInt8(ascii: "S")); i += 1                         // U+017F
        } else if b == 0xE2, i + 2 < utf8.count, utf8[i + 1] == 0x84, utf8[i + 2] == 0xAA {
            out.append(UInt8(ascii: "K")); i += 2                         // U+212A
        } else {
            out.append(b)
        }
        i += 1
    }
    return out
}

extension JSONParser {
    /// The first top-level member name that the upstream could take for another: equal to an
    /// earlier member's name ignoring case (exact duplicates included), or — for the names in
    /// `reading`, which Veil decides on — spelled differently from the name Veil reads
    /// (`"Stream"`, `"ſtream"` when `reading` holds `stream`: Go reads them as `stream`, Veil
    /// would not). Nil when every name is unambiguous. Names are compared decoded, folded as
    /// described at the top of this file; nested objects are not examined.
    ///
    /// Validates the whole document in the same pass (throws `invalidJSON`, or `unexpectedShape`
    /// unless the top level is an object). Member values are skipped, never materialised.
    public static func ambiguousTopLevelMember(
        _ buf: UnsafeBufferPointer<UInt8>, reading: Set<String> = [], maxDepth: Int = 64
    ) throws(TranslationError) -> String? {
        try scanTopLevel(buf, wanted: [], names: MemberNameCheck(reading: reading), ranges: false, maxDepth: maxDepth).ambiguous
    }

    public static func ambiguousTopLevelMember(
        _ bytes: [UInt8], reading: Set<String> = [], maxDepth: Int = 64
    ) throws(TranslationError) -> String? {
        try bytes.withUnsafeBufferPointer { (b) throws(TranslationError) in
            try ambiguousTopLevelMember(b, reading: reading, maxDepth: maxDepth)
        }
    }

    /// `topLevelMembers` that refuses ambiguous names (see `ambiguousTopLevelMember`) with an
    /// `ambiguousMember` error whose `param` is the offending name. One pass.
    public static func unambiguousTopLevelMembers(
        _ bytes: [UInt8], wanted: Set<String>, reading: Set<String>, maxDepth: Int = 64
    ) throws(TranslationError) -> [String: JSONValue] {
        try unambiguousTopLevelMembers(bytes, wanted: wanted, check: MemberNameCheck(reading: reading), maxDepth: maxDepth)
    }

    static func unambiguousTopLevelMembers(
        _ bytes: [UInt8], wanted: Set<String>, check: MemberNameCheck, maxDepth: Int = 64
    ) throws(TranslationError) -> [String: JSONValue] {
        try bytes.withUnsafeBufferPointer { (b) throws(TranslationError) in
            let scan = try scanTopLevel(b, wanted: wanted, names: check, ranges: false, maxDepth: maxDepth)
            if let name = scan.ambiguous { throw TranslationError.ambiguous(name) }
            return scan.members
        }
    }

    /// The key starting at `start` (its opening quote; already validated), decoded, and its
    /// folded bytes. Keys without escapes or non-ASCII bytes (nearly all) are not decoded.
    func decodedAndFoldedKey(from start: Int) throws(TranslationError) -> (String, [UInt8]) {
        var end = start + 1
        var plain = true
        while end < buf.count, buf[end] != UInt8(ascii: "\"") {
            if buf[end] == UInt8(ascii: "\\") || buf[end] >= 0x80 { plain = false; break }
            end += 1
        }
        if plain {
            let raw = UnsafeBufferPointer(rebasing: buf[(start + 1)..<end])
            return (String(decoding: raw, as: UTF8.self), foldMemberName(Array(raw)))
        }
        var again = JSONParser(buf, maxDepth: maxDepth)
        again.i = start
        let name = try again.parseString()
        return (name, foldMemberName(Array(name.utf8)))
    }
}

extension TranslationError {
    /// The refusal for an ambiguous member name (the gateway answers 400 with `param`).
    static func ambiguous(_ name: String) -> TranslationError {
        TranslationError(.ambiguousMember,
                         "The member `\(name.prefix(64))` is ambiguous: another member has the same name ignoring case, or it is a differently spelled name Veil reads. Give each member once, spelled exactly.",
                         param: String(name.prefix(64)))
    }
}
