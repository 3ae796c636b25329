/// A parsed JSON value.
///
/// Why our own parser instead of `JSONDecoder`: the upstream's fields change type from one answer
/// to the next (ids as strings or numbers, progress as int, float or string), which fights
/// `Codable`; and the hot paths (chat bodies, SSE lines) only need one or two top-level keys, so
/// `JSONParser.topLevelMembers` validates everything but materialises only the keys asked for.
/// Numbers keep their source text, so `4078` and `"4078"` both give the id `"4078"` exactly.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number's text exactly as it appeared (already validated against the JSON grammar).
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in source order; duplicates are kept, lookups answer the last one (as Go and JS do).
    case object([JSONMember])

    /// The member `key` of an object (last occurrence wins), nil for anything else.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        for m in members.reversed() where m.key == key { return m.value }
        return nil
    }

    public var isNull: Bool { if case .null = self { return true } else { return false } }

    /// The string, or nil.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// A string, or a number's text (ids come both ways).
    public var lenientString: String? {
        switch self {
        case .string(let s): return s
        case .number(let n): return n
        default: return nil
        }
    }

    /// A finite Double from a number or a numeric string (surrounding spaces allowed).
    public var lenientDouble: Double? {
        switch self {
        case .number(let n): return Double(n).flatMap { $0.isFinite ? $0 : nil }
        case .string(let s):
            let t = s.trimmingASCIIWhitespace()
            guard !t.isEmpty, t.utf8.count <= 64, let d = Double(t), d.isFinite else { return nil }
            return d
        default: return nil
        }
    }

    /// An Int from an integer, a float (rounded toward zero) or a numeric string; nil when
    /// out of Int range, so callers never trap on a huge value.
    public var lenientInt: Int? {
        switch self {
        case .number(let n):
            if let i = Int(n) { return i }
        case .string(let s):
            if let i = Int(s.trimmingASCIIWhitespace()) { return i }
        default:
            return nil
        }
        guard let d = lenientDouble else { return nil }
        return Int(exactlyClamped: d)
    }

    /// A Bool from `true`/`false`, or nil.
    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// Parses a complete JSON document (whitespace around it allowed, nothing else).
    public static func parse(_ bytes: [UInt8], maxDepth: Int = 64) throws(TranslationError) -> JSONValue {
        try bytes.withUnsafeBufferPointer { (buf) throws(TranslationError) -> JSONValue in
            var p = JSONParser(buf, maxDepth: maxDepth)
            return try p.parseDocument()
        }
    }

    public static func parse(_ string: String, maxDepth: Int = 64) throws(TranslationError) -> JSONValue {
        try parse(Array(string.utf8), maxDepth: maxDepth)
    }
}

/// One `"key": value` pair of an object.
public struct JSONMember: Sendable, Equatable {
    public var key: String
    public var value: JSONValue
    public init(key: String, value: JSONValue) { self.key = key; self.value = value }
}

extension Int {
    /// `Int(d)` without the trap: nil for NaN, infinities and values outside Int's range.
    init?(exactlyClamped d: Double) {
        guard d.isFinite, d > -9.2e18, d < 9.2e18 else { return nil }
        self.init(d.rounded(.towardZero))
    }
}

extension StringProtocol {
    /// Trims spaces, tabs, CR and LF (ASCII only, no Foundation needed). Not HTTPWire's
    /// `trimmingASCIISpaces`, which trims a field's optional whitespace (SP, HTAB) only.
    func trimmingASCIIWhitespace() -> String {
        let u = Array(utf8)
        var lo = 0, hi = u.count
        while lo < hi, isASCIISpace(u[lo]) { lo += 1 }
        while hi > lo, isASCIISpace(u[hi - 1]) { hi -= 1 }
        return String(decoding: u[lo..<hi], as: UTF8.self)
    }
}

@inline(__always) func isASCIISpace(_ b: UInt8) -> Bool {
    b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D
}
