import FoundationEssentials

/// A parsed JSON value (input side). Decoded with `JSONDecoder` from FoundationEssentials.
/// Deliberately not Veil's own `Translation` JSON/multipart code: the stand-in judges what Veil
/// sends, so it must not share the code under test (a bug there would otherwise hide itself).
enum JSONValue: Decodable, Sendable, Equatable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let d = try? c.decode(Double.self) { self = .number(d); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let a = try? c.decode([JSONValue].self) { self = .array(a); return }
        self = .object(try c.decode([String: JSONValue].self))
    }

    static func parse(_ bytes: [UInt8]) -> JSONValue? {
        guard !bytes.isEmpty else { return nil }
        return try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))
    }

    subscript(_ key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// A string, or a number written as an integer string (ids are sometimes sent as numbers).
    var looseString: String? {
        switch self {
        case .string(let s): return s
        case .number(let d) where d == d.rounded() && abs(d) < 1e15: return String(Int64(d))
        default: return nil
        }
    }

    var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    var numberValue: Double? {
        if case .number(let d) = self { return d }
        return nil
    }
}

/// JSON output with ordered keys (responses keep the field order of the upstream's examples).
indirect enum JSONOut: Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    /// A number written as given (floats: the caller formats them).
    case number(String)
    case string(String)
    case array([JSONOut])
    case object([(String, JSONOut)])

    static func int(_ v: Int) -> JSONOut { .int(Int64(v)) }

    /// A parsed value written back (object keys sorted: the parsed form kept no order).
    init(_ v: JSONValue) {
        switch v {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .number(let d):
            if d == d.rounded(), abs(d) < 1e15 { self = .int(Int64(d)) } else { self = .number(d.isFinite ? "\(d)" : "0") }
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(JSONOut.init))
        case .object(let o): self = .object(o.keys.sorted().map { ($0, JSONOut(o[$0]!)) })
        }
    }

    var rendered: String {
        var s = ""
        render(into: &s)
        return s
    }

    var bytes: [UInt8] { Array(rendered.utf8) }

    func render(into s: inout String) {
        switch self {
        case .null: s += "null"
        case .bool(let b): s += b ? "true" : "false"
        case .int(let i): s += String(i)
        case .number(let n): s += n
        case .string(let str): jsonEscape(str, into: &s)
        case .array(let a):
            s += "["
            for (i, v) in a.enumerated() {
                if i > 0 { s += "," }
                v.render(into: &s)
            }
            s += "]"
        case .object(let o):
            s += "{"
            for (i, (k, v)) in o.enumerated() {
                if i > 0 { s += "," }
                jsonEscape(k, into: &s)
                s += ":"
                v.render(into: &s)
            }
            s += "}"
        }
    }
}

func jsonEscape(_ str: String, into s: inout String) {
    s += "\""
    for u in str.unicodeScalars {
        switch u {
        case "\"": s += "\\\""
        case "\\": s += "\\\\"
        case "\n": s += "\\n"
        case "\r": s += "\\r"
        case "\t": s += "\\t"
        default:
            if u.value < 0x20 {
                let hex = String(u.value, radix: 16)
                s += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                s.unicodeScalars.append(u)
            }
        }
    }
    s += "\""
}
