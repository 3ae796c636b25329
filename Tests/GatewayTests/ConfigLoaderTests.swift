import Foundation
import Gateway
import Testing

/// A bad configuration fails at start with a message naming the key and the problem.
@Suite struct ConfigLoaderTests {
    let digest = String(repeating: "ab", count: 32)
    var base: String {
        """
        upstream:
          base_url: "http://127.0.0.1:9"
          api_key: "${KEY}"
        teams:
          - name: web
            tokens_sha256: ["\(digest)"]
        """
    }
    let env = ["KEY": "sk-test"]

    @Test func aValidFileLoadsWithDefaults() throws {
        let c = try ConfigLoader.load(yaml: base, environment: env)
        #expect(c.upstream.apiKey == "sk-test")
        #expect(c.listen == "0.0.0.0:8080")
        #expect(c.teams.first?.tokens.first?.sha256 == digest)
        #expect(c.upstream.keyInSizeField)
    }

    @Test func environmentOverridesWinOverTheFile() throws {
        let c = try ConfigLoader.load(yaml: base, environment: env.merging(["VEIL_LISTEN": "127.0.0.1:9999", "VEIL_UPSTREAM_URL": "https://up.example", "VEIL_UPSTREAM_KEY": "sk-env"]) { $1 })
        #expect(c.listen == "127.0.0.1:9999")
        #expect(c.upstream.baseURL == "https://up.example")
        #expect(c.upstream.apiKey == "sk-env")
    }

    @Test(arguments: [
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"k\"\n  request_timeout: 5\n", "upstream.request_timeout"),
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"${NOPE}\"\n", "upstream.api_key"),
        ("upstream:\n  base_url: \"ftp://x\"\n  api_key: \"k\"\n", "upstream.base_url"),
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"k\"\nworkers: -1\n", "workers"),
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"k\"\nteams:\n  - name: web\n    tokens_sha256: [\"abc\"]\n", "teams[0].tokens_sha256[0]"),
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"k\"\nteams:\n  - name: web\n", "teams[0].tokens_sha256"),
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"k\"\ncharacters:\n  time_zone: \"Europe/Paris\"\n", "characters.time_zone"),
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"k\"\nvideos:\n  default_size: \"1x1\"\n", "videos.default_size"),
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"k\"\nlisten: \"nowhere\"\n", "listen"),
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"k\"\ncors:\n  allowed_origins: [\"example.com\"]\n", "cors.allowed_origins"),
        ("upstream:\n  base_url: \"http://x\"\n  api_key: \"\"\n", "upstream.api_key"),
        ("- just a list\n", ""),
    ])
    func badValuesNameTheirKey(yaml: String, key: String) {
        do {
            _ = try ConfigLoader.load(yaml: yaml, environment: [:])
            Issue.record("accepted: \(yaml)")
        } catch {
            #expect(error.key == key, "\(error)")
            #expect(!error.problem.isEmpty)
        }
    }

    @Test func duplicateTeamsAndDigestsAreRefused() {
        let twice = base + "\n  - name: web\n    tokens_sha256: [\"\(String(repeating: "cd", count: 32))\"]\n"
        #expect(throws: ConfigError.self) { try ConfigLoader.load(yaml: twice, environment: env) }
        let sameDigest = base + "\n  - name: other\n    tokens_sha256: [\"\(digest)\"]\n"
        #expect(throws: ConfigError.self) { try ConfigLoader.load(yaml: sameDigest, environment: env) }
    }

    @Test func theShippedConfigLoadsWhenItsVariablesAreSet() throws {
        let text = try String(contentsOfFile: #filePath.replacingOccurrences(of: "Tests/GatewayTests/ConfigLoaderTests.swift", with: "config/veil.yaml"), encoding: .utf8)
        let c = try ConfigLoader.load(yaml: text, environment: ["VEIL_UPSTREAM_KEY": "sk-x", "VEIL_WEB_TOKEN_SHA256": digest])
        #expect(c.teams.map(\.name) == ["web"])
    }

    /// YAML is read without implicit typing (no regex resolver at start-up); the reader types
    /// values itself. Null (`~`, `null`, nothing) is "not given"; a quoted "null" is a string;
    /// numbers and booleans are accepted quoted or not; a key given twice is refused.
    @Test func scalarsNullsAndDuplicateKeys() throws {
        let typed = try ConfigLoader.load(yaml: base + """

            workers: "3"
            shutdown_grace_ms: 250
            cors:
            metrics:
              enabled: off
            log: ~
            """, environment: env)
        #expect(typed.workers == 3)
        #expect(typed.shutdownGraceMillis == 250)
        #expect(typed.cors.allowedOrigins.isEmpty)
        #expect(typed.metrics.enabled == false)
        let quoted = try ConfigLoader.load(yaml: base.replacingOccurrences(of: "\"${KEY}\"", with: "\"null\""), environment: env)
        #expect(quoted.upstream.apiKey == "null")
        // Unquoted null is "not given": the key then comes from the environment, or is missing.
        let bare = base.replacingOccurrences(of: "\"${KEY}\"", with: "null")
        #expect(try ConfigLoader.load(yaml: bare, environment: ["VEIL_UPSTREAM_KEY": "sk-env"]).upstream.apiKey == "sk-env")
        #expect(throws: ConfigError.self) { try ConfigLoader.load(yaml: bare, environment: [:]) }
        for twice in [base + "\nlisten: a\nlisten: b\n", base.replacingOccurrences(of: "  api_key:", with: "  base_url: x\n  api_key:")] {
            #expect(throws: ConfigError.self) { try ConfigLoader.load(yaml: twice, environment: env) }
        }
        do {
            _ = try ConfigLoader.load(yaml: base + "\nlisten: a\nlisten: b\n", environment: env)
        } catch {
            #expect(error.description.contains("`listen` is given twice"), "\(error)")
        }
        #expect(throws: ConfigError.self) { try ConfigLoader.load(yaml: base + "\n[a, b]: 1\n", environment: env) }
        #expect(throws: ConfigError.self) { try ConfigLoader.load(yaml: base + "\nworkers: 1.5\n", environment: env) }
    }

    @Test func hashTokenIsSHA256Hex() {
        #expect(sha256Hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // Empty and multi-block inputs (the low-level SHA256_Init/Update/Final path).
        #expect(sha256Hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(sha256Hex(String(repeating: "veil-", count: 200)) == "b17e867d232dbded2b31e146cdd61f957cac5f28ec3de65d1291a56c99dcb1f6")
    }
}
