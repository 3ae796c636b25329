/// `${VAR}` references of a configuration, checked all at once before any value is read, so a
/// first run lists every variable to set instead of one per attempt.
enum ConfigEnvironment {
    /// (variable, key) for every `${VAR}` in the tree whose variable is not in `environment`,
    /// sorted by key. Keys are spelled as the loader's errors spell them (`teams[0].tokens_sha256[0]`).
    /// Malformed references (`${`, `${bad name}`) are left to the loader, which names them.
    static func missing(_ tree: Any, _ environment: [String: String], skipping: Set<String> = []) -> [(variable: String, key: String)] {
        var out: [(String, String)] = []
        walk(tree, path: "", environment, skipping, &out)
        return out.sorted { $0.1 == $1.1 ? $0.0 < $1.0 : $0.1 < $1.1 }
    }

    private static func walk(_ node: Any, path: String, _ env: [String: String], _ skipping: Set<String>, _ out: inout [(String, String)]) {
        if skipping.contains(path) { return }
        if let s = node as? String {
            for name in references(s) where env[name] == nil { out.append((name, path)) }
        } else if let list = node as? [Any] {
            for (i, item) in list.enumerated() { walk(item, path: "\(path)[\(i)]", env, skipping, &out) }
        } else if let map = node as? [String: Any] {
            for (k, v) in map { walk(v, path: path.isEmpty ? k : "\(path).\(k)", env, skipping, &out) }
        }
    }

    /// Well-formed variable names referenced in `s`.
    static func references(_ s: String) -> [String] {
        var names: [String] = []
        var rest = Substring(s)
        while let start = rest.range(of: "${") {
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else { break }
            let name = rest[start.upperBound..<end]
            if !name.isEmpty, name.allSatisfy({ $0 == "_" || $0.isLetter || $0.isNumber }) { names.append(String(name)) }
            rest = rest[rest.index(after: end)...]
        }
        return names
    }

    /// Throws one error naming every unset variable (and where each is used).
    static func requireSet(_ tree: Any, _ environment: [String: String], skipping: Set<String>) throws(ConfigError) {
        let m = missing(tree, environment, skipping: skipping)
        guard let first = m.first else { return }
        if m.count == 1 { throw ConfigError(first.key, "environment variable \(first.variable) is not set") }
        let list = m.map { "\($0.variable) (\($0.key))" }.joined(separator: ", ")
        throw ConfigError("", "\(m.count) environment variables are not set: \(list)")
    }
}
