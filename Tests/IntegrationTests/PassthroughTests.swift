import Foundation
import Testing

/// `upstream.passthrough`: the team's policy applies to the endpoints Veil passes through, usage
/// is recorded, anything else under /v1 is a 404 naming what is served.
@Suite struct PassthroughTests {
    @Test func theAllowListAndUsageApplyToPassThroughEndpoints() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let ok = try h.post("/v1/embeddings", json: #"{"model":"text-embedding-3-small","input":"hello"}"#)
        #expect(ok.status == 200)
        #expect(jsonObject(ok)["object"] as? String == "list")
        #expect(!allBytes(ok).contains(h.upstreamKey))
        #expect(waitUntil(2) { h.accessLog.contains { $0.contains("/v1/embeddings") && $0.contains("\"prompt_tokens\":") } }, "\(h.accessLog)")
        // The `limited` team may use only gpt-4o-mini: nothing reaches the upstream for another model.
        let before = h.sandbox.count("POST", "/v1/embeddings")
        let refused = try h.post("/v1/embeddings", team: "limited", json: #"{"model":"text-embedding-3-small","input":"x"}"#)
        #expect(refused.status == 403)
        #expect((jsonObject(refused)["error"] as? [String: Any])?["code"] as? String == "model_not_allowed")
        let missing = try h.post("/v1/responses", json: #"{"input":"x"}"#)
        #expect(missing.status == 400)
        #expect(h.sandbox.count("POST", "/v1/embeddings") == before)
        // A streamed answer is relayed as it comes, typed events and all.
        let s = try h.post("/v1/responses", json: #"{"model":"gpt-4o-mini","input":"hi","stream":true}"#)
        #expect(s.status == 200 && s.header("content-type")?.hasPrefix("text/event-stream") == true)
        #expect(s.text.contains("event: response.completed"))
    }

    @Test func disabledEndpointsAndUnknownPathsAre404WithWhatIsServed() throws {
        let h = try VeilHarness(upstreamExtraYAML: ["passthrough: [\"/v1/responses\"]"])
        defer { h.stop() }
        let off = try h.post("/v1/embeddings", json: #"{"model":"m","input":"x"}"#)
        #expect(off.status == 404)
        let unknown = try h.get("/v1/assistants")
        #expect(unknown.status == 404)
        let message = (jsonObject(unknown)["error"] as? [String: Any])?["message"] as? String ?? ""
        #expect(message.contains("POST /v1/responses") && message.contains("POST /v1/chat/completions"))
        #expect(!message.contains("embeddings"))
        #expect(try h.post("/v1/responses", json: #"{"model":"gpt-4o-mini","input":"hi"}"#).status == 200)
    }

    @Test func videoOperationsTheUpstreamCannotDoAre400NotAStrangerError() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        for path in ["/v1/videos/edits", "/v1/videos/extensions", "/v1/videos/video_1/remix"] {
            let r = try h.post(path, json: #"{"prompt":"x"}"#)
            #expect(r.status == 400, "\(path)")
            #expect((jsonObject(r)["error"] as? [String: Any])?["code"] as? String == "unsupported_operation")
        }
    }
}
