import Foundation
import Gateway
import Testing

/// Keys added for issue 14 (trusted proxies, model suffixes, log format), host names in
/// `listen`, every missing environment variable at once, and the key-less load.
@Suite struct ConfigAdditionsTests {
    let digest = String(repeating: "ab", count: 32)
    var base: String {
        """
        upstream:
          base_url: "http://127.0.0.1:9"
          api_key: "sk-test"
        teams:
          - name: web
            tokens_sha256: ["\(digest)"]
        """
    }

    @Test func defaults() throws {
        let c = try ConfigLoader.load(yaml: base, environment: [:])
        #expect(c.trustedProxies.isEmpty && c.upstream.modelSuffixes == ["-yijia"] && c.log.format == nil)
    }

    @Test func newKeysLoad() throws {
        let c = try ConfigLoader.load(yaml: base + """

        trusted_proxies: ["10.0.0.0/8", "::1"]
        log:
          format: json
        """, environment: [:])
        #expect(c.trustedProxies == ["10.0.0.0/8", "::1"] && c.log.format == .json)
        let s = try ConfigLoader.load(yaml: base.replacingOccurrences(of: "  api_key: \"sk-test\"", with: "  api_key: \"sk-test\"\n  model_suffixes: [\"-yijia\", \"-vendor\"]"), environment: [:])
        #expect(s.upstream.modelSuffixes == ["-yijia", "-vendor"])
    }

    @Test(arguments: [
        ("trusted_proxies: [\"10.0.0.0/33\"]", "trusted_proxies[0]"),
        ("trusted_proxies: [\"proxy.example\"]", "trusted_proxies[0]"),
        ("log:\n  format: yaml", "log.format"),
        ("listen: \"no-such-host.invalid:8080\"", "listen"),
        ("listen: \"bad host:8080\"", "listen"),
    ])
    func refusals(_ extra: String, _ key: String) {
        do {
            _ = try ConfigLoader.load(yaml: base + "\n" + extra, environment: [:])
            Issue.record("accepted \(extra)")
        } catch {
            #expect(error.key == key, "\(error)")
        }
    }

    @Test func hostNamesResolveOnceToAnAddress() throws {
        #expect(try ConfigLoader.load(yaml: base + "\nlisten: \"localhost:8080\"", environment: [:]).listen == "127.0.0.1:8080")
        #expect(try ConfigLoader.load(yaml: base + "\nlisten: \"[::1]:8080\"", environment: [:]).listen == "[::1]:8080")
        #expect(try ConfigLoader.load(yaml: base + "\nlisten: \":8080\"", environment: [:]).listen == ":8080")
        #expect(try ListenAddress.resolve("10.1.2.3:1") == "10.1.2.3:1")
    }

    @Test func everyMissingVariableAtOnce() {
        let yaml = """
        upstream:
          base_url: "${UP_URL}"
          api_key: "${VEIL_UPSTREAM_KEY}"
        teams:
          - name: web
            tokens_sha256: ["${VEIL_WEB_TOKEN_SHA256}"]
          - name: "${TEAM2}"
            tokens_sha256: ["\(digest)"]
        """
        do {
            _ = try ConfigLoader.load(yaml: yaml, environment: ["UP_URL": "http://x"])
            Issue.record("accepted")
        } catch {
            #expect(error.key == "")
            #expect(error.problem == "3 environment variables are not set: VEIL_WEB_TOKEN_SHA256 (teams[0].tokens_sha256[0]), TEAM2 (teams[1].name), VEIL_UPSTREAM_KEY (upstream.api_key)")
        }
        // Without the key requirement the key's variable is not needed.
        do {
            _ = try ConfigLoader.load(yaml: yaml, environment: ["UP_URL": "http://x", "TEAM2": "two"], requireUpstreamKey: false)
            Issue.record("accepted")
        } catch {
            #expect(error.key == "teams[0].tokens_sha256[0]" && error.problem == "environment variable VEIL_WEB_TOKEN_SHA256 is not set")
        }
    }

    @Test func keylessLoadForStoreCommands() throws {
        let yaml = base.replacingOccurrences(of: "\"sk-test\"", with: "\"${VEIL_UPSTREAM_KEY}\"")
        #expect(throws: ConfigError.self) { try ConfigLoader.load(yaml: yaml, environment: [:]) }
        let c = try ConfigLoader.load(yaml: yaml, environment: [:], requireUpstreamKey: false)
        #expect(c.upstream.apiKey.isEmpty && c.teams.count == 1)
        // A given key is still not read: these commands never hold it.
        #expect(try ConfigLoader.load(yaml: yaml, environment: ["VEIL_UPSTREAM_KEY": "sk-x"], requireUpstreamKey: false).upstream.apiKey.isEmpty)
    }

    @Test func theDevelopmentConfigLoadsWithNoVariables() throws {
        let text = try String(contentsOfFile: #filePath.replacingOccurrences(of: "Tests/GatewayTests/ConfigAdditionsTests.swift", with: "config/veil.dev.yaml"), encoding: .utf8)
        let c = try ConfigLoader.load(yaml: text, environment: ["VEIL_UPSTREAM_KEY": "sk-x"])
        #expect(c.listen == "127.0.0.1:8080" && c.store.path == "veil.sqlite3" && c.teams.map(\.name) == ["dev"])
    }
}
