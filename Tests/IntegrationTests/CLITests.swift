import Foundation
import Gateway
import Glibc
import Reactor
import Store
import Testing

/// The built `veil` binary as a first-time user meets it: version, help, hints, the truth about
/// sandbox teams, a taken port, check-config, usage without a key, tokens, teams.
@Suite(.serialized) struct CLITests {
    static func temp(_ name: String) -> String { "/tmp/veil-cli-\(UUID().uuidString.prefix(8))-\(name)" }

    static func write(_ text: String, _ name: String = "veil.yaml") throws -> String {
        let path = temp(name)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func versionAndHelp() throws {
        let (rc, out) = try VeilProcess.run(["--version"])
        #expect(rc == 0 && out.trimmingCharacters(in: .whitespacesAndNewlines) == VeilVersion.current)
        let (hrc, help) = try VeilProcess.run(["serve", "--help"])
        #expect(hrc == 0)
        for name in ["VEIL_CONFIG", "VEIL_LISTEN", "VEIL_UPSTREAM_URL", "VEIL_UPSTREAM_KEY", "VEIL_UPSTREAM_KEY_FILE", "VEIL_SANDBOX_KEY"] {
            #expect(help.contains(name + " "), "serve --help lacks \(name)")
        }
    }

    @Test func aBareServeWithoutAKeyPointsAtTheSandbox() throws {
        let cfg = try Self.write("""
        upstream:
          api_key: "${VEIL_UPSTREAM_KEY}"
        store:
          path: ":memory:"
        """)
        let (rc, out) = try VeilProcess.run(["serve", "--config", cfg])
        #expect(rc == 2)
        #expect(out.contains("VEIL_UPSTREAM_KEY is not set") && out.contains("veil serve --sandbox"), "\(out)")
        // No configuration at all (a fresh directory): the same way out.
        let dir = Self.temp("empty")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (rc2, out2) = try VeilProcess.run(["serve"], directory: dir)
        #expect(rc2 == 2 && out2.contains("no configuration at config/veil.yaml") && out2.contains("--sandbox"), "\(out2)")
    }

    @Test func sandboxWithAConfigTellsWhichTeamsApply() throws {
        let token = "tok-\(UUID().uuidString)"
        let cfg = """
        listen: "127.0.0.1:0"
        upstream:
          api_key: "${VEIL_UPSTREAM_KEY}"
        teams:
          - name: web
            tokens_sha256: ["\(sha256Hex(token))"]
        """
        let veil = try VeilProcess(configText: cfg, storePath: ":memory:", arguments: ["serve", "--sandbox", "--config", try Self.write(cfg)])
        defer { veil.kill() }
        #expect(waitUntil(5) { veil.stderr.contains("Teams from") })
        #expect(veil.stderr.contains("apply: web.") && veil.stderr.contains("is not one of their tokens"), "\(veil.stderr)")
        #expect(!veil.stderr.contains("Demo team token"))
        let demo = try RawHTTPClient.request(port: veil.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer veil-demo-token")])
        #expect(demo.status == 401)
        let mine = try RawHTTPClient.request(port: veil.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer \(token)")])
        #expect(mine.status == 200)

        // Without --config: the demo team, and its token works.
        let plain = try VeilProcess(configText: "", storePath: ":memory:", arguments: ["serve", "--sandbox"], environment: ["VEIL_LISTEN": "127.0.0.1:0"])
        defer { plain.kill() }
        #expect(waitUntil(5) { plain.stderr.contains("Demo team token: veil-demo-token") })
        #expect(try RawHTTPClient.request(port: plain.port, method: "GET", path: "/v1/models", headers: [("Authorization", "Bearer veil-demo-token")]).status == 200)
    }

    @Test func aSecondVeilOnATakenPortRefusesToStart() throws {
        // A listener as Veil's loops make them (SO_REUSEPORT): the kernel would share the port.
        let fd = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { close(fd) }
        let port = Socket.localPort(fd)
        #expect(throws: Socket.Failure.self) { try Socket.ensurePortFree(host: "127.0.0.1", port: port) }
        #expect(throws: Socket.Failure.self) { try Socket.ensurePortFree(host: "0.0.0.0", port: port) }   // the wildcard overlaps
        let (rc, out) = try VeilProcess.run(["serve", "--sandbox"], seconds: 15, environment: ["VEIL_LISTEN": "127.0.0.1:\(port)"])
        #expect(rc == 2)
        #expect(out.contains("port \(port) is already in use"), "\(out)")
    }

    @Test func aFreePortPassesTheProbe() throws {
        let fd = try Socket.listen(host: "127.0.0.1", port: 0)
        let port = Socket.localPort(fd)
        close(fd)
        try Socket.ensurePortFree(host: "127.0.0.1", port: port)
        try Socket.ensurePortFree(host: "127.0.0.1", port: 0)
    }

    @Test func checkConfigRunsServesChecks() throws {
        let digest = String(repeating: "ab", count: 32)
        func config(listen: String, store: String, key: String = "${VEIL_UPSTREAM_KEY}", team: String = "${WEB_DIGEST}") -> String {
            """
            listen: "\(listen)"
            upstream:
              api_key: "\(key)"
            store:
              path: "\(store)"
            teams:
              - name: web
                tokens_sha256: ["\(team)"]
            """
        }
        let dir = Self.temp("store")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // Every unset variable in one run.
        let (rc1, out1) = try VeilProcess.run(["check-config", "--config", Self.write(config(listen: "127.0.0.1:8080", store: dir + "/v.sqlite3"))])
        #expect(rc1 == 2 && out1.contains("2 environment variables are not set: WEB_DIGEST") && out1.contains("VEIL_UPSTREAM_KEY (upstream.api_key)"), "\(out1)")
        // A host name is resolved, as serve would bind it.
        let good = try Self.write(config(listen: "localhost:8080", store: dir + "/v.sqlite3", key: "sk-x", team: digest))
        let (rc2, out2) = try VeilProcess.run(["check-config", "--config", good])
        #expect(rc2 == 0 && out2.contains("listen 127.0.0.1:8080"), "\(out2)")
        // A name that does not resolve fails the check, not the start.
        let (rc3, out3) = try VeilProcess.run(["check-config", "--config", Self.write(config(listen: "no-such-host.invalid:8080", store: ":memory:", key: "sk-x", team: digest))])
        #expect(rc3 == 2 && out3.contains("config key `listen`"), "\(out3)")
        // A store directory that does not exist.
        let (rc4, out4) = try VeilProcess.run(["check-config", "--config", Self.write(config(listen: "127.0.0.1:8080", store: dir + "/missing/v.sqlite3", key: "sk-x", team: digest))])
        #expect(rc4 == 2 && out4.contains("/missing does not exist"), "\(out4)")
        // ...which serve refuses the same way, before binding anything.
        let (rc5, out5) = try VeilProcess.run(["serve", "--config", Self.write(config(listen: "127.0.0.1:0", store: dir + "/missing/v.sqlite3", key: "sk-x", team: digest))])
        #expect(rc5 == 2 && out5.contains("/missing does not exist"), "\(out5)")
        // An unreadable key file is reported, not silently ignored.
        let (rc6, out6) = try VeilProcess.run(["check-config", "--config", good], environment: ["VEIL_UPSTREAM_KEY_FILE": dir + "/no-such-key"])
        #expect(rc6 == 2 && out6.contains("VEIL_UPSTREAM_KEY_FILE: cannot read"), "\(out6)")
        // Webhooks are named with their endpoints, never their secrets or URL credentials.
        let hooked = config(listen: "127.0.0.1:8080", store: dir + "/v.sqlite3", key: "sk-x", team: digest)
            + "\n    webhook:\n      url: \"https://hooks.example.com/veil?sig=1\"\n      secret: \"whsec_c2VjcmV0LWtleS1ieXRlcw==\""
        let (rc7, out7) = try VeilProcess.run(["check-config", "--config", Self.write(hooked)])
        #expect(rc7 == 0 && out7.contains("webhooks: web → https://hooks.example.com/veil"), "\(out7)")
        #expect(!out7.contains("sig=") && !out7.contains("whsec_"), "\(out7)")
    }

    @Test func theDevelopmentConfigPassesTheCheck() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let dir = Self.temp("dev")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let (rc, out) = try VeilProcess.run(["check-config", "--config", root + "/config/veil.dev.yaml"], environment: ["VEIL_UPSTREAM_KEY": "sk-x"], directory: dir)
        #expect(rc == 0, "\(out)")
    }

    @Test func usageReadsTheStoreWithoutAKey() throws {
        let store = Self.temp("usage.sqlite3")
        let s = try SQLiteStore(path: store)
        s.close()
        let cfg = try Self.write("""
        upstream:
          api_key: "${VEIL_UPSTREAM_KEY}"
        store:
          path: "\(store)"
        """)
        let (rc, out) = try VeilProcess.run(["usage", "--config", cfg])
        #expect(rc == 0 && out.contains("TEAM"), "\(out)")
        let (rc2, out2) = try VeilProcess.run(["usage", "--store", store + ".typo"])
        #expect(rc2 == 2 && out2.contains("does not exist"), "\(out2)")
        #expect(!FileManager.default.fileExists(atPath: store + ".typo"), "a wrong path must not create a store")
    }

    @Test func tokenNewMakesAStrongTokenAndItsConfigLine() throws {
        let (rc, out) = try VeilProcess.run(["token", "new", "--team", "web", "--expires", "30d"])
        #expect(rc == 0)
        let token = out.split(separator: "\n").map(String.init).first { $0.hasPrefix("veil_") } ?? ""
        #expect(token.utf8.count == 5 + 43 && token.dropFirst(5).allSatisfy { $0.isLetter || $0.isNumber }, "\(out)")
        #expect(out.contains("sha256: \"\(sha256Hex(token))\""))
        #expect(out.components(separatedBy: token).count == 2, "the token is printed once")
        let expires = out.range(of: #"expires_at: (\d+)"#, options: .regularExpression).map { Int(out[$0].dropFirst(12)) ?? 0 } ?? 0
        #expect(abs(expires - (Int(time(nil)) + 30 * 86_400)) < 60)
        let (_, again) = try VeilProcess.run(["token", "new", "--team", "web"])
        #expect(!again.contains(token) && !again.contains("expires_at"))
        #expect(try VeilProcess.run(["token", "new", "--team", "web", "--expires", "yesterday"]).0 == 2)
        // hash-token reads standard input: no token on the command line.
        let (hrc, hout) = try VeilProcess.run(["hash-token"], stdin: token + "\n")
        #expect(hrc == 0 && hout.trimmingCharacters(in: .whitespacesAndNewlines) == sha256Hex(token))
    }

    @Test func teamsListsLimitsAndExpiries() throws {
        let cfg = try Self.write("""
        upstream:
          api_key: "${VEIL_UPSTREAM_KEY}"
        teams:
          - name: web
            tokens_sha256: ["\(String(repeating: "ab", count: 32))"]
            requests_per_minute: 600
          - name: ops
            models: ["gpt-4o-mini"]
            tokens:
              - sha256: "\(String(repeating: "cd", count: 32))"
                expires_at: 1700000000
        """)
        let (rc, out) = try VeilProcess.run(["teams", "--config", cfg])
        #expect(rc == 0, "\(out)")
        #expect(out.contains("web") && out.contains("600") && out.contains("gpt-4o-mini"))
        #expect(out.contains("2023-11-14T22:13:20Z (expired") && out.contains("never"))
        #expect(!out.contains(String(repeating: "ab", count: 32)), "digests are abbreviated")
    }
}
