/// A strict (RFC 8259) recursive-descent JSON parser over a borrowed buffer.
///
/// It never traps: every read is bounds-checked, nesting is capped by `maxDepth` (so a hostile
/// `[[[[...` can't exhaust the stack), and numbers stay text until a caller converts them.
/// `skipValue` validates without allocating, which is what keeps large chat bodies cheap.
public struct JSONParser {
    let buf: UnsafeBufferPointer<UInt8>
    var i: Int = 0
    let maxDepth: Int

    public init(_ buf: UnsafeBufferPointer<UInt8>, maxDepth: Int = 64) {
        self.buf = buf
        self.maxDepth = maxDepth
    }

    /// Parses the whole buffer as one value.
    public mutating func parseDocument() throws(TranslationError) -> JSONValue {
        let v = try parseValue(depth: 0)
        try expectEnd()
        return v
    }

    /// Validates a whole document whose top level must be an object, returning only the members
    /// named in `wanted` (last occurrence wins); every other value is skipped without allocation.
    public static func topLevelMembers(
        _ buf: UnsafeBufferPointer<UInt8>, wanted: Set<String>, maxDepth: Int = 64
    ) throws(TranslationError) -> [String: JSONValue] {
        try scanTopLevel(buf, wanted: wanted, names: nil, ranges: false, maxDepth: maxDepth).members
    }

    /// What one pass over a top-level object found.
    struct TopLevelScan {
        /// The `wanted` members (last occurrence wins).
        var members: [String: JSONValue] = [:]
        /// Byte ranges of the `wanted` members' values (last occurrence), when asked for.
        var valueRanges: [String: Range<Int>] = [:]
        /// The first ambiguous member name, when `names` was given.
        var ambiguous: String?
        /// Offset of the object's closing brace.
        var closingBrace = 0
    }

    /// The one top-level scanner: validates the whole document, materialises `wanted`, and, when
    /// `names` is given, checks every member name against it (see `MemberNameCheck`).
    static func scanTopLevel(
        _ buf: UnsafeBufferPointer<UInt8>, wanted: Set<String>, names: MemberNameCheck?, ranges: Bool, maxDepth: Int
    ) throws(TranslationError) -> TopLevelScan {
        var p = JSONParser(buf, maxDepth: maxDepth)
        var out = TopLevelScan()
        var seen = names.map { _ in SeenMemberNames() }
        p.skipWS()
        guard p.peek() == UInt8(ascii: "{") else {
            throw TranslationError(.unexpectedShape, "expected a JSON object")
        }
        p.i += 1
        p.skipWS()
        if p.peek() == UInt8(ascii: "}") {
            out.closingBrace = p.i
            p.i += 1
        } else {
            while true {
                p.skipWS()
                let keyStart = p.i
                let key = try p.parseKey(wanted)
                if let names, out.ambiguous == nil {
                    let (name, folded) = try p.decodedAndFoldedKey(from: keyStart)
                    if !seen!.insert(folded) || names.isVariant(name, folded: folded) {
                        out.ambiguous = name
                    }
                }
                p.skipWS()
                try p.expect(UInt8(ascii: ":"))
                p.skipWS()
                let valueStart = p.i
                if let key {
                    out.members[key] = try p.parseValue(depth: 1)
                    if ranges { out.valueRanges[key] = valueStart..<p.i }
                } else {
                    try p.skipValue(depth: 1)
                }
                p.skipWS()
                if p.peek() == UInt8(ascii: ",") { p.i += 1; continue }
                out.closingBrace = p.i
                try p.expect(UInt8(ascii: "}"))
                break
            }
        }
        try p.expectEnd()
        return out
    }

    public static func topLevelMembers(
        _ bytes: [UInt8], wanted: Set<String>, maxDepth: Int = 64
    ) throws(TranslationError) -> [String: JSONValue] {
        try bytes.withUnsafeBufferPointer { (b) throws(TranslationError) in
            try topLevelMembers(b, wanted: wanted, maxDepth: maxDepth)
        }
    }

    // MARK: - Internals

    @inline(__always) func peek() -> UInt8? { i < buf.count ? buf[i] : nil }

    mutating func skipWS() {
        while i < buf.count, isASCIISpace(buf[i]) { i += 1 }
    }

    func fail(_ what: String) -> TranslationError {
        TranslationError(.invalidJSON, "\(what) at byte \(i)")
    }

    mutating func expect(_ b: UInt8) throws(TranslationError) {
        guard peek() == b else { throw fail("expected '\(Character(Unicode.Scalar(b)))'") }
        i += 1
    }

    mutating func expectEnd() throws(TranslationError) {
        skipWS()
        guard i == buf.count else { throw fail("unexpected trailing data") }
    }

    mutating func literal(_ word: StaticString) throws(TranslationError) {
        let n = word.utf8CodeUnitCount
        guard buf.count - i >= n else { throw fail("truncated literal") }
        let w = word.utf8Start
        for k in 0..<n where buf[i + k] != w[k] { throw fail("invalid literal") }
        i += n
    }

    mutating func parseValue(depth: Int) throws(TranslationError) -> JSONValue {
        skipWS()
        guard let c = peek() else { throw fail("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"):
            guard depth < maxDepth else { throw fail("nesting too deep") }
            i += 1
            var members: [JSONMember] = []
            skipWS()
            if peek() == UInt8(ascii: "}") { i += 1; return .object(members) }
            while true {
                skipWS()
                let key = try parseString()
                skipWS()
                try expect(UInt8(ascii: ":"))
                let v = try parseValue(depth: depth + 1)
                members.append(JSONMember(key: key, value: v))
                skipWS()
                if peek() == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: "}"))
                return .object(members)
            }
        case UInt8(ascii: "["):
            guard depth < maxDepth else { throw fail("nesting too deep") }
            i += 1
            var items: [JSONValue] = []
            skipWS()
            if peek() == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                items.append(try parseValue(depth: depth + 1))
                skipWS()
                if peek() == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: "]"))
                return .array(items)
            }
        case UInt8(ascii: "\""):
            return .string(try parseString())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default:
            let r = try scanNumber()
            return .number(String(decoding: UnsafeBufferPointer(rebasing: buf[r]), as: UTF8.self))
        }
    }

    /// Validates one value and moves past it, allocating nothing.
    mutating func skipValue(depth: Int) throws(TranslationError) {
        skipWS()
        guard let c = peek() else { throw fail("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"):
            guard depth < maxDepth else { throw fail("nesting too deep") }
            i += 1
            skipWS()
            if peek() == UInt8(ascii: "}") { i += 1; return }
            while true {
                skipWS()
                try skipString()
                skipWS()
                try expect(UInt8(ascii: ":"))
                try skipValue(depth: depth + 1)
                skipWS()
                if peek() == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: "}"))
                return
            }
        case UInt8(ascii: "["):
            guard depth < maxDepth else { throw fail("nesting too deep") }
            i += 1
            skipWS()
            if peek() == UInt8(ascii: "]") { i += 1; return }
            while true {
                try skipValue(depth: depth + 1)
                skipWS()
                if peek() == UInt8(ascii: ",") { i += 1; continue }
                try expect(UInt8(ascii: "]"))
                return
            }
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        default: _ = try scanNumber()
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    mutating func scanNumber() throws(TranslationError) -> Range<Int> {
        let start = i
        if peek() == UInt8(ascii: "-") { i += 1 }
        guard let d = peek(), isDigit(d) else { throw fail("invalid value") }
        if d == UInt8(ascii: "0") { i += 1 } else { skipDigits() }
        if peek() == UInt8(ascii: ".") {
            i += 1
            guard let d2 = peek(), isDigit(d2) else { throw fail("invalid number") }
            skipDigits()
        }
        if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            i += 1
            if let s = peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { i += 1 }
            guard let d3 = peek(), isDigit(d3) else { throw fail("invalid number") }
            skipDigits()
        }
        return start..<i
    }

    @inline(__always) func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    mutating func skipDigits() { while i < buf.count, isDigit(buf[i]) { i += 1 } }

    /// A member name: the member of `wanted` it equals, or nil (validated, not decoded). Keys
    /// without escapes (all of them, in practice) are compared as bytes: no String is built for
    /// the keys nobody asked for.
    mutating func parseKey(_ wanted: Set<String>) throws(TranslationError) -> String? {
        if wanted.isEmpty { try skipString(); return nil }
        let start = i + 1
        try skipString()
        let raw = UnsafeBufferPointer(rebasing: buf[start..<(i - 1)])
        if raw.contains(UInt8(ascii: "\\")) {
            var again = JSONParser(buf, maxDepth: maxDepth)
            again.i = start - 1
            let key = try again.parseString()
            return wanted.contains(key) ? key : nil
        }
        for w in wanted where w.utf8.count == raw.count && w.utf8.elementsEqual(raw) { return w }
        return nil
    }

    /// Moves past a string, validating it. Eight bytes at a time while none of them is a quote,
    /// a backslash or a control character (the common case: long message texts).
    mutating func skipString() throws(TranslationError) {
        try expect(UInt8(ascii: "\""))
        if let base = buf.baseAddress {
            let raw = UnsafeRawPointer(base)
            while buf.count - i >= 8 {
                let v = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt64.self))
                if Self.hasSpecialByte(v) { break }
                i += 8
            }
        }
        while i < buf.count {
            let c = buf[i]
            if c == UInt8(ascii: "\"") { i += 1; return }
            if c < 0x20 { throw fail("control character in string") }
            if c == UInt8(ascii: "\\") {
                i += 1
                guard let e = peek() else { break }
                if e == UInt8(ascii: "u") {
                    i += 1
                    _ = try hex4()
                    continue
                }
                guard isSimpleEscape(e) else { throw fail("invalid escape") }
            }
            i += 1
        }
        throw fail("unterminated string")
    }

    /// Whether any byte of `v` is `"`, `\\` or below 0x20 (SWAR: a byte is zero in `x` iff
    /// `(x - 0x01…) & ~x & 0x80…` has its top bit; below 0x20 iff `(x - 0x20…) & ~x & 0x80…`).
    @inline(__always)
    static func hasSpecialByte(_ v: UInt64) -> Bool {
        let ones: UInt64 = 0x0101_0101_0101_0101, high: UInt64 = 0x8080_8080_8080_8080
        func zeroByte(_ x: UInt64) -> UInt64 { (x &- ones) & ~x & high }
        let quote = zeroByte(v ^ (ones &* 0x22))
        let slash = zeroByte(v ^ (ones &* 0x5C))
        let control = (v &- ones &* 0x20) & ~v & high
        return (quote | slash | control) != 0
    }

    func isSimpleEscape(_ e: UInt8) -> Bool {
        switch e {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
             UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
            return true
        default: return false
        }
    }

    mutating func hex4() throws(TranslationError) -> UInt32 {
        guard buf.count - i >= 4 else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = buf[i]
            let d: UInt8
            switch c {
            case 0x30...0x39: d = c - 0x30
            case 0x41...0x46: d = c - 0x41 + 10
            case 0x61...0x66: d = c - 0x61 + 10
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }

    /// Decodes a string; invalid UTF-8 and lone surrogates become U+FFFD rather than errors,
    /// because a display string is more useful than a refusal.
    mutating func parseString() throws(TranslationError) -> String {
        try expect(UInt8(ascii: "\""))
        let start = i
        // Fast path: no escapes.
        while i < buf.count {
            let c = buf[i]
            if c == UInt8(ascii: "\"") {
                let s = String(decoding: UnsafeBufferPointer(rebasing: buf[start..<i]), as: UTF8.self)
                i += 1
                return s
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw fail("control character in string") }
            i += 1
        }
        var out = [UInt8](UnsafeBufferPointer(rebasing: buf[start..<i]))
        while i < buf.count {
            let c = buf[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return String(decoding: out, as: UTF8.self)
            }
            if c < 0x20 { throw fail("control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            i += 1
            guard let e = peek() else { break }
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    // High surrogate: needs a following \uDC00-\uDFFF.
                    if buf.count - i >= 6, buf[i] == UInt8(ascii: "\\"), buf[i + 1] == UInt8(ascii: "u") {
                        let save = i
                        i += 2
                        let low = try hex4()
                        if low >= 0xDC00 && low < 0xE000 {
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            i = save
                            scalar = 0xFFFD
                        }
                    } else {
                        scalar = 0xFFFD
                    }
                } else if scalar >= 0xDC00 && scalar < 0xE000 {
                    scalar = 0xFFFD
                }
                let us = Unicode.Scalar(scalar) ?? "\u{FFFD}"
                UTF8.encode(us) { out.append($0) }
            default:
                throw fail("invalid escape")
            }
        }
        throw fail("unterminated string")
    }
}
