import Gateway
import Sandbox

/// `veil serve --sandbox`: the stand-in upstream in the same process, a demo team, an
/// in-memory store. A newcomer sees Veil work with no key and no network.
final class SandboxMode {
    static let demoToken = "veil-demo-token"
    let apiKey: String
    private var sandbox: Sandbox?
    private(set) var baseURL = ""

    struct BadKey: Error, CustomStringConvertible {
        var description: String { "VEIL_SANDBOX_KEY must be 8 to 200 printable ASCII characters without spaces" }
    }

    /// `key`: VEIL_SANDBOX_KEY (to call the stand-in directly); nil or empty = a random one.
    init(key: String?) throws {
        if let key, !key.isEmpty {
            guard (8...200).contains(key.utf8.count), key.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { throw BadKey() }
            apiKey = key
        } else {
            var rng = SystemRandomNumberGenerator()
            let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
            apiKey = "sk-sandbox-" + String((0..<32).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &rng)] })
        }
    }

    func start() throws {
        var c = SandboxConfig(apiKey: apiKey)
        c.videoMillisToComplete = 6_000
        c.sseChunkDelayMillis = 80
        let s = Sandbox(config: c)
        _ = try s.start()
        sandbox = s
        baseURL = s.baseURL
    }

    func stop() { sandbox?.stop() }

    /// The configuration used in sandbox mode: a user's file (when `--config` names one) with the
    /// upstream pointed at the stand-in, else this embedded default.
    static func configText(userConfig: String?) -> String {
        if let u = userConfig { return u }
        return """
        listen: "127.0.0.1:8080"
        upstream:
          base_url: "${VEIL_UPSTREAM_URL}"
          api_key: "${VEIL_UPSTREAM_KEY}"
        store:
          path: ":memory:"
        videos:
          image_fetch:
            allow_http: true
            allow_private: ["127.0.0.0/8", "::1"]
        cors:
          allowed_origins: [\(corsOrigins.map { "\"\($0)\"" }.joined(separator: ", "))]
        teams:
          - name: "demo"
            tokens_sha256: ["\(sha256Hex(demoToken))"]
        """
    }

    /// Origins the built-in sandbox configuration allows (README: "Sandbox mode").
    static let corsOrigins = ["http://localhost:3000", "http://127.0.0.1:3000", "http://localhost:5173", "http://127.0.0.1:5173"]

    /// What to tell the person who started it: which teams and tokens really apply. With
    /// `--config FILE`, FILE's teams do, and the demo token only if FILE admits it.
    static func banner(port: UInt16, upstream: String, configPath: String?, teams: [GatewayConfig.Team]) -> String {
        let demoDigest = sha256Hex(demoToken)
        let demoTeam = teams.first { $0.tokens.contains { $0.sha256 == demoDigest } }
        var s = "\nVeil is running in sandbox mode on port \(port), in front of a stand-in upstream at \(upstream).\n"
        let token: String
        if let configPath {
            let names = teams.map(\.name)
            s += "Teams from \(configPath) apply: \(names.isEmpty ? "none (every /v1 request gets 401)" : names.joined(separator: ", ")).\n"
            if let demoTeam {
                s += "Demo team token: \(demoToken) (admitted by team `\(demoTeam.name)`)\n"
                token = demoToken
            } else {
                s += "The demo token (\(demoToken)) is not one of their tokens: use one of theirs.\n"
                token = "<team token>"
            }
        } else {
            s += "Demo team token: \(demoToken)\n"
            token = demoToken
        }
        s += """

          curl -N http://127.0.0.1:\(port)/v1/chat/completions \\
            -H 'Authorization: Bearer \(token)' -H 'Content-Type: application/json' \\
            -d '{"model":"gpt-3.5-turbo","stream":true,"messages":[{"role":"user","content":"Hello"}]}'


        """
        return s
    }
}
