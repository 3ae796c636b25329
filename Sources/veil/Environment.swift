import Gateway
import Glibc

/// The environment variables Veil reads, in one place (`serve --help`, the README's list).
enum VeilEnvironment {
    static let variables: [(name: String, meaning: String)] = [
        ("VEIL_CONFIG", "the configuration file (default: config/veil.yaml)"),
        ("VEIL_LISTEN", "overrides `listen` (host:port)"),
        ("VEIL_UPSTREAM_URL", "overrides `upstream.base_url`"),
        ("VEIL_UPSTREAM_KEY", "overrides `upstream.api_key`"),
        ("VEIL_UPSTREAM_KEY_FILE", "file holding the key, if VEIL_UPSTREAM_KEY is unset"),
        ("VEIL_STORE_URL", "overrides `store.url` (PostgreSQL; store.path is then not used)"),
        ("VEIL_SANDBOX_KEY", "--sandbox: the stand-in's key (default: random)"),
    ]

    static var helpText: String {
        let width = variables.map(\.name.count).max() ?? 0
        return "Environment overrides (applied over the configuration):\n"
            + variables.map { "  " + $0.name + String(repeating: " ", count: width - $0.name.count + 2) + $0.meaning }.joined(separator: "\n")
    }
}

/// The process environment, with the key file read in place of VEIL_UPSTREAM_KEY. A key file
/// that can't be read is a problem to report, not a silently missing key.
func environment() -> (env: [String: String], problems: [String]) {
    var env: [String: String] = [:]
    var p = environ
    while let entry = p.pointee {
        let s = String(cString: entry)
        if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
        p += 1
    }
    var problems: [String] = []
    if env["VEIL_UPSTREAM_KEY", default: ""].isEmpty, let file = env["VEIL_UPSTREAM_KEY_FILE"], !file.isEmpty {
        do { env["VEIL_UPSTREAM_KEY"] = try readFile(file).trimmingCharacters(in: " \t\r\n") }
        catch { problems.append("VEIL_UPSTREAM_KEY_FILE: \(error.problem)") }
    }
    return (env, problems)
}

func readFile(_ path: String) throws(ConfigError) -> String {
    guard let f = fopen(path, "rb") else { throw ConfigError("", "cannot read \(path): \(String(cString: strerror(errno)))") }
    defer { fclose(f) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
        if out.count > 4 << 20 { throw ConfigError("", "\(path) is larger than 4 MiB") }
    }
    return String(decoding: out, as: UTF8.self)
}

func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

func fail(_ message: String, hints: [String] = []) -> Never {
    var text = "veil: \(message)\n"
    for h in hints { text += "hint: \(h)\n" }
    StandardError.write(text)
    exit(2)
}

enum StandardError {
    static func write(_ s: String) {
        var b = Array(s.utf8)
        _ = b.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}

/// Checks `serve` makes beyond the configuration's own: things on this machine.
enum Preflight {
    /// The store's directory must exist and be writable (SQLite creates the file, not the
    /// directory, and also writes `-wal`/`-shm` files beside it).
    static func storeProblem(_ path: String) -> String? {
        guard path != ":memory:" else { return nil }
        let dir: String
        if let slash = path.lastIndex(of: "/") { dir = slash == path.startIndex ? "/" : String(path[..<slash]) } else { dir = "." }
        var st = stat()
        guard stat(dir, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
            return "store.path `\(path)`: the directory \(dir) does not exist (create it, or point store.path elsewhere)"
        }
        guard access(dir, W_OK) == 0 else { return "store.path `\(path)`: the directory \(dir) is not writable by this user" }
        return nil
    }

    /// Hints for a configuration that did not load, for a first run.
    static func hints(for error: ConfigError, configPath: String, configExists: Bool) -> [String] {
        var out: [String] = []
        let text = error.description
        if !configExists {
            out.append("no configuration at \(configPath): try `veil serve --sandbox` (no key, no network), or --config config/veil.dev.yaml from the repository")
        } else if text.contains("VEIL_UPSTREAM_KEY") || error.key == "upstream.api_key" {
            out.append("set VEIL_UPSTREAM_KEY (or VEIL_UPSTREAM_KEY_FILE) to the upstream's key — or try `veil serve --sandbox`: a stand-in upstream, no key needed")
        }
        if text.contains("VEIL_WEB_TOKEN_SHA256") {
            out.append("VEIL_WEB_TOKEN_SHA256 is the digest of the `web` team's token: `veil token new --team web` makes a token and prints it")
        }
        return out
    }
}
