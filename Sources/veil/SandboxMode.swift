import Gateway
import Sandbox

/// `veil serve --sandbox`: the stand-in upstream in the same process, a demo team, an
/// in-memory store. A newcomer sees Veil work with no key and no network.
final class SandboxMode {
    static let demoToken = "veil-demo-token"
    let apiKey: String
    private var sandbox: Sandbox?
    private(set) var baseURL = ""

    init() {
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        apiKey = "sk-sandbox-" + String((0..<32).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &rng)] })
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
          allowed_origins: ["http://localhost:3000", "http://127.0.0.1:3000", "http://localhost:5173"]
        teams:
          - name: "demo"
            tokens_sha256: ["\(sha256Hex(demoToken))"]
        """
    }
}
