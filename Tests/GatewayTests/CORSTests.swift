@testable import Gateway
import HTTPWire
import Testing

@Suite struct CORSTests {
    static func policy(_ origins: [String]) -> CORSPolicy {
        var s = GatewayConfig.CORSSettings()
        s.allowedOrigins = origins
        return CORSPolicy(s)
    }

    @Test(arguments: ["GET", "POST", "DELETE", "HEAD", "OPTIONS", "post"])
    func allowedMethods(_ method: String) {
        guard case .allowed(let h) = Self.policy(["https://app.example"]).evaluatePreflight(origin: "https://app.example", requestMethod: method, requestHeaders: "authorization, x-stainless-os") else {
            Issue.record("refused \(method)"); return
        }
        #expect(h["access-control-allow-origin"] == "https://app.example")
        #expect(h["access-control-allow-headers"] == "authorization, content-type, accept, x-request-id, x-stainless-os")
        #expect(h["access-control-max-age"] == "600" && h["vary"] == "Origin")
    }

    @Test(arguments: ["PUT", "PATCH", "CONNECT", "TRACE", "", "GET, POST"])
    func refusedMethodsSaySo(_ method: String) {
        let p = Self.policy(["https://app.example"])
        guard case .refused(let r) = p.evaluatePreflight(origin: "https://app.example", requestMethod: method, requestHeaders: nil) else {
            Issue.record("allowed \(method)"); return
        }
        #expect(r.status == 403 && r.code == "cors_method_not_allowed")
        #expect(r.message.contains("`\(method.isEmpty ? "(none)" : method)` is not allowed") && r.message.contains("GET, POST, DELETE"))
        // The page's origin learns what is allowed; the old API still says "refused".
        #expect(r.headers["access-control-allow-origin"] == "https://app.example" && r.headers["access-control-allow-methods"] == CORSPolicy.allowedMethods)
        #expect(p.preflight(origin: "https://app.example", requestMethod: method, requestHeaders: nil) == nil)
    }

    @Test func aForeignOriginLearnsNothing() {
        guard case .refused(let r) = Self.policy(["https://app.example"]).evaluatePreflight(origin: "https://evil.example", requestMethod: "PUT", requestHeaders: nil) else {
            Issue.record("allowed"); return
        }
        #expect(r.code == "cors_origin_not_allowed" && r.headers.count == 0)   // the origin check comes first
        #expect(Self.policy([]).preflight(origin: "https://app.example", requestMethod: "GET", requestHeaders: nil) == nil)
    }

    @Test func exposedHeadersCoverWhatVeilSends() {
        let h = Self.policy(["*"]).responseHeaders(origin: "https://x.example")
        let exposed = Set((h["access-control-expose-headers"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: " ") })
        for name in ["content-range", "openai-poll-after-ms", "x-request-id", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                     "x-ratelimit-reset-requests", "retry-after", "accept-ranges", "etag"] {
            #expect(exposed.contains(name), "\(name)")
        }
        #expect(h["access-control-allow-origin"] == "*" && h["vary"] == nil)
        // Nothing the browser already shows (safelisted) and no duplicates.
        #expect(!exposed.contains("content-type") && !exposed.contains("content-length") && exposed.count == CORSPolicy.exposedHeaderNames.count)
    }
}
