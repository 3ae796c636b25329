import Foundation
import Testing

/// `GET /v1/models[/{id}]` as OpenAI model objects, the CORS preflight's reasons, and the client
/// address behind a trusted proxy — through the running gateway.
@Suite struct ModelsAndClientTests {
    @Test func modelsAreOpenAIObjectsWithVendorNamesMappedBackAndTheAllowListApplied() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let r = try h.get("/v1/models")
        #expect(r.status == 200)
        let o = jsonObject(r)
        #expect(o["object"] as? String == "list")
        #expect(o["success"] == nil)
        let data = o["data"] as? [[String: Any]] ?? []
        let ids = data.compactMap { $0["id"] as? String }
        #expect(ids.contains("sora-2") && ids.contains("gpt-4o-mini"))
        #expect(!ids.contains { $0.hasSuffix("-yijia") })
        #expect(Set(ids).count == ids.count)
        for m in data { #expect(Set(m.keys) == ["id", "object", "created", "owned_by"]) }

        // A team limited to one model sees only it; another model is 404 for it, like an unknown one.
        let limited = jsonObject(try h.get("/v1/models", team: "limited"))["data"] as? [[String: Any]] ?? []
        #expect(limited.compactMap { $0["id"] as? String } == ["gpt-4o-mini"])
        let one = try h.get("/v1/models/gpt-4o-mini", team: "limited")
        #expect(one.status == 200 && jsonObject(one)["id"] as? String == "gpt-4o-mini")
        for (path, team) in [("/v1/models/sora-2", "limited"), ("/v1/models/no-such-model", "web"), ("/v1/models/sora-2-yijia", "web")] {
            let miss = try h.get(path, team: team)
            #expect(miss.status == 404, "\(path)")
            #expect((jsonObject(miss)["error"] as? [String: Any])?["code"] as? String == "model_not_found")
        }
    }

    @Test func aPreflightForAMethodVeilDoesNotServeSaysSo() throws {
        let h = try VeilHarness(extraYAML: "cors:\n  allowed_origins: [\"https://app.example\"]")
        defer { h.stop() }
        let r = try RawHTTPClient.request(port: h.port, method: "OPTIONS", path: "/v1/videos",
                                          headers: [("Origin", "https://app.example"), ("Access-Control-Request-Method", "PUT")])
        #expect(r.status >= 400)
        let e = jsonObject(r)["error"] as? [String: Any]
        #expect(e?["code"] as? String == "cors_method_not_allowed")
        #expect((e?["message"] as? String ?? "").contains("GET"))
        let ok = try RawHTTPClient.request(port: h.port, method: "OPTIONS", path: "/v1/videos",
                                           headers: [("Origin", "https://app.example"), ("Access-Control-Request-Method", "POST")])
        #expect(ok.status == 204)
        let exposed = (try h.get("/healthz", headers: [("Origin", "https://app.example")])).header("access-control-expose-headers") ?? ""
        for name in ["content-range", "openai-poll-after-ms", "x-request-id", "x-ratelimit-remaining-requests"] { #expect(exposed.contains(name)) }
    }

    @Test func behindATrustedProxyTheAccessLogNamesTheForwardedClient() throws {
        let trusted = try VeilHarness(extraYAML: "trusted_proxies: [\"127.0.0.0/8\"]")
        defer { trusted.stop() }
        _ = try trusted.get("/healthz", headers: [("X-Forwarded-For", "198.51.100.9, 203.0.113.7")])
        #expect(waitUntil(2) { trusted.accessLog.contains { $0.contains("\"remote\":\"203.0.113.7\"") } }, "\(trusted.accessLog)")
        let plain = try VeilHarness()
        defer { plain.stop() }
        _ = try plain.get("/healthz", headers: [("X-Forwarded-For", "203.0.113.7")])
        #expect(waitUntil(2) { plain.accessLog.contains { $0.contains("\"remote\":\"127.0.0.1\"") } }, "\(plain.accessLog)")
        #expect(!plain.accessLog.contains { $0.contains("203.0.113.7") })
    }
}
