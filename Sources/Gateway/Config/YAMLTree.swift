import Yams

/// YAML read as plain data — mappings, sequences, strings and null — without implicit typing;
/// `ConfigLoader.Reader` types each value itself (it accepts `5` and `"5"` alike anyway).
///
/// Why not `Yams.load`: its default resolver types every scalar with `NSRegularExpression`,
/// which compiles seven patterns on ICU's regex engine at start-up — pages of Foundation and
/// ICU touched for nothing (idle RSS and cold start measured in BENCHMARKS.md). Composing with
/// the basic resolver parses the same YAML and touches none of it.
enum YAMLTree {
    /// YAML's null (`~`, `null`, or nothing), distinct from the string "null" (quoted).
    struct Null {}

    struct Problem: Error, CustomStringConvertible {
        let description: String
    }

    static func load(_ text: String) throws -> Any? {
        guard let node = try Yams.compose(yaml: text, .basic) else { return nil }
        return try value(node, at: "")
    }

    static func value(_ node: Node, at path: String) throws -> Any {
        switch node {
        case .scalar(let s):
            if s.style == .plain && ["", "~", "null", "Null", "NULL"].contains(s.string) { return Null() }
            return s.string
        case .sequence(let seq):
            return try seq.enumerated().map { try value($0.element, at: "\(path)[\($0.offset)]") }
        case .mapping(let map):
            var out: [String: Any] = [:]
            for (k, v) in map {
                guard case .scalar(let ks) = k else { throw Problem(description: "\(path.isEmpty ? "a" : "`\(path)` has a") key that is not a plain string") }
                let key = ks.string
                let here = path.isEmpty ? key : "\(path).\(key)"
                guard out[key] == nil else { throw Problem(description: "`\(here)` is given twice") }
                out[key] = try value(v, at: here)
            }
            return out
        }
    }
}
