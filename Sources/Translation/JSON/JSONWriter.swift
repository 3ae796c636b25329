/// Writes JSON objects with keys in the order they are added, so Veil's output has a stable,
/// documented key order and explicit `null`s (which `JSONEncoder` would silently drop).
public struct JSONObjectWriter: Sendable {
    public private(set) var bytes: [UInt8]
    private var empty = true

    public init(reserving capacity: Int = 256) {
        bytes = []
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "{"))
    }

    private mutating func key(_ k: String) {
        if !empty { bytes.append(UInt8(ascii: ",")) }
        empty = false
        JSONEscaping.appendString(k, to: &bytes)
        bytes.append(UInt8(ascii: ":"))
    }

    public mutating func string(_ k: String, _ v: String?) {
        key(k)
        if let v { JSONEscaping.appendString(v, to: &bytes) } else { appendNull() }
    }

    public mutating func int(_ k: String, _ v: Int?) {
        key(k)
        if let v { bytes.append(contentsOf: String(v).utf8) } else { appendNull() }
    }

    public mutating func bool(_ k: String, _ v: Bool?) {
        key(k)
        if let v { bytes.append(contentsOf: (v ? "true" : "false").utf8) } else { appendNull() }
    }

    /// Already-encoded JSON (a nested object written by another writer), or `null`.
    public mutating func raw(_ k: String, _ json: [UInt8]?) {
        key(k)
        if let json { bytes.append(contentsOf: json) } else { appendNull() }
    }

    public mutating func null(_ k: String) {
        key(k)
        appendNull()
    }

    private mutating func appendNull() { bytes.append(contentsOf: "null".utf8) }

    /// The finished object's bytes.
    public func finish() -> [UInt8] { bytes + [UInt8(ascii: "}")] }
}

public enum JSONEscaping {
    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// Appends `s` as a JSON string literal: quotes, backslashes and all C0 controls escaped,
    /// and U+2028/U+2029 too (harmless in JSON, but they break JavaScript that evals it).
    public static func appendString(_ s: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        let hex = hexDigits
        var u = s.utf8.makeIterator()
        var pending: [UInt8] = []
        while let b = u.next() {
            switch b {
            case 0x22: out.append(0x5C); out.append(0x22)
            case 0x5C: out.append(0x5C); out.append(0x5C)
            case 0x0A: out.append(0x5C); out.append(UInt8(ascii: "n"))
            case 0x0D: out.append(0x5C); out.append(UInt8(ascii: "r"))
            case 0x09: out.append(0x5C); out.append(UInt8(ascii: "t"))
            case 0x00..<0x20:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 0xF)])
            case 0xE2:
                // U+2028 / U+2029 are E2 80 A8 / E2 80 A9.
                pending = [b]
                if let b1 = u.next() {
                    pending.append(b1)
                    if b1 == 0x80, let b2 = u.next() {
                        if b2 == 0xA8 || b2 == 0xA9 {
                            out.append(contentsOf: Array((b2 == 0xA8 ? "\\u2028" : "\\u2029").utf8))
                            pending = []
                            continue
                        }
                        pending.append(b2)
                    }
                }
                // A String's UTF-8 is valid, so these are plain characters: copy them.
                for p in pending { appendRaw(p, &out, hex) }
            default: out.append(b)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    @inline(__always)
    private static func appendRaw(_ b: UInt8, _ out: inout [UInt8], _ hex: [UInt8]) {
        // Only continuation/lead bytes reach here (>= 0x80) except the structural cases above.
        switch b {
        case 0x22: out.append(0x5C); out.append(0x22)
        case 0x5C: out.append(0x5C); out.append(0x5C)
        case 0x00..<0x20:
            out.append(contentsOf: Array("\\u00".utf8))
            out.append(hex[Int(b >> 4)])
            out.append(hex[Int(b & 0xF)])
        default: out.append(b)
        }
    }

    /// `s` as a JSON string literal.
    public static func quoted(_ s: String) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count + 2)
        appendString(s, to: &out)
        return out
    }
}

extension JSONValue {
    /// The value as compact JSON: members in their order (duplicates kept), numbers as their
    /// source text, strings escaped by `JSONEscaping`. Parsing the output gives the same value.
    public func appendEncoded(to out: inout [UInt8]) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .number(let n): out.append(contentsOf: n.utf8)
        case .string(let s): JSONEscaping.appendString(s, to: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (k, v) in items.enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                v.appendEncoded(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (k, m) in members.enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                JSONEscaping.appendString(m.key, to: &out)
                out.append(UInt8(ascii: ":"))
                m.value.appendEncoded(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    public var encoded: [UInt8] {
        var out: [UInt8] = []
        appendEncoded(to: &out)
        return out
    }

    /// The same value with `transform` applied to every string and member name.
    public func mappingStrings(_ transform: (String) -> String) -> JSONValue {
        switch self {
        case .string(let s): return .string(transform(s))
        case .array(let items): return .array(items.map { $0.mappingStrings(transform) })
        case .object(let members):
            return .object(members.map { JSONMember(key: transform($0.key), value: $0.value.mappingStrings(transform)) })
        default: return self
        }
    }
}
