import Foundation
import Glibc
import Testing

/// Issue: characters. Veil in front of the stand-in's `/v1/characters`, which leaks the shared
/// key (`api_key`) and account details in every item and lists every team's characters together.
@Suite struct CharacterTests {
    /// Fields of the upstream's objects that must never reach a caller.
    static let leakyFields = ["api_key", "username", "token_id", "gen_id", "instruction_value", "uuid", "create_time"]

    /// Every byte of the answer is free of the key and of the upstream's account fields.
    func expectClean(_ r: RawResponse, _ h: VeilHarness, sourceLocation: SourceLocation = #_sourceLocation) {
        let all = allBytes(r)
        #expect(!all.contains(h.upstreamKey), sourceLocation: sourceLocation)
        #expect(!all.contains("3uudwr0xj"), sourceLocation: sourceLocation)   // the stand-in's account name
        for f in Self.leakyFields { #expect(!all.contains("\"\(f)\""), "\(f) leaked", sourceLocation: sourceLocation) }
    }

    /// A video of `team`, polled until the stand-in says it is completed.
    func completedVideo(_ h: VeilHarness, team: String = "web", prompt: String = "a cat on a skateboard") throws -> String {
        let r = try h.post("/v1/videos", team: team, json: #"{"model":"sora-2","prompt":"\#(prompt)"}"#)
        #expect(r.status == 200, "\(r.text)")
        let id = try #require(jsonObject(r)["id"] as? String)
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline {
            let g = try h.get("/v1/videos/\(id)", team: team)
            if jsonObject(g)["status"] as? String == "completed" { return id }
            usleep(300_000)
        }
        Issue.record("video \(id) did not complete")
        return id
    }

    func createCharacter(_ h: VeilHarness, team: String = "web", video: String, name: String,
                         description: String = "a friendly cat", timestamps: String = #"{"start":0,"end":3}"#) throws -> RawResponse {
        try h.post("/v1/characters", team: team,
                   json: #"{"video_id":"\#(video)","name":"\#(name)","description":"\#(description)","timestamps":\#(timestamps)}"#)
    }

    func errorParam(_ r: RawResponse) -> String? { (jsonObject(r)["error"] as? [String: Any])?["param"] as? String }
    func errorCode(_ r: RawResponse) -> String? { (jsonObject(r)["error"] as? [String: Any])?["code"] as? String }
    func listIDs(_ r: RawResponse) -> [String] {
        ((jsonObject(r)["data"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
    }

    @Test func createThenProcessingThenReadyWithoutLeaks() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let video = try completedVideo(h)
        let c = try createCharacter(h, video: video, name: "alice_01", timestamps: #""0-3""#)
        #expect(c.status == 200, "\(c.text)")
        expectClean(c, h)
        let o = jsonObject(c)
        let id = try #require(o["id"] as? String)
        #expect(id.hasPrefix("char_"))
        #expect(o["object"] as? String == "character")
        #expect(o["name"] as? String == "alice_01")
        #expect(o["description"] as? String == "a friendly cat")
        #expect(o["video_id"] as? String == video)
        #expect((o["timestamps"] as? [String: Any])?["start"] as? Int == 0)
        #expect((o["timestamps"] as? [String: Any])?["end"] as? Int == 3)
        #expect(o["status"] as? String == "processing")
        let created = try #require(o["created_at"] as? Int)
        #expect(abs(created - Int(time(nil))) < 60)
        #expect(Set(o.keys) == ["id", "object", "name", "description", "video_id", "timestamps", "status", "created_at"])
        // What the upstream got: its own field names, its timestamps string, its video id.
        let sent = try #require(h.sandbox.requests(matching: "/v1/characters").first { $0.method == "POST" })
        let body = try #require(try JSONSerialization.jsonObject(with: Data(sent.body)) as? [String: Any])
        #expect(body["uuid"] as? String == "alice_01")
        #expect(body["instruction_value"] as? String == "a friendly cat")
        #expect(body["timestamps"] as? String == "0-3")
        #expect(body["video_id"] as? String == String(video.dropFirst("video_".count)))
        #expect(sent.header("authorization") == "Bearer \(h.upstreamKey)")

        // characterListsToReady = 1: the first list still shows 0, the second 999.
        let l1 = try h.get("/v1/characters")
        expectClean(l1, h)
        #expect(l1.status == 200)
        #expect((jsonObject(l1)["data"] as? [[String: Any]])?.first?["status"] as? String == "processing")
        let l2 = try h.get("/v1/characters")
        expectClean(l2, h)
        let lo = jsonObject(l2)
        #expect(lo["object"] as? String == "list")
        #expect(lo["first_id"] as? String == id)
        #expect(lo["last_id"] as? String == id)
        #expect(lo["has_more"] as? Bool == false)
        #expect((lo["data"] as? [[String: Any]])?.first?["status"] as? String == "ready")
        #expect((lo["data"] as? [[String: Any]])?.first?["created_at"] as? Int == created)
        // Ready is stored: further reads need no upstream call.
        let before = h.sandbox.count("GET", "/v1/characters")
        let g = try h.get("/v1/characters/\(id)")
        expectClean(g, h)
        #expect(jsonObject(g)["status"] as? String == "ready")
        _ = try h.get("/v1/characters")
        #expect(h.sandbox.count("GET", "/v1/characters") == before)
        for line in h.accessLog { #expect(!line.contains(h.upstreamKey)) }
    }

    /// `create_time` is a local time in the upstream's zone: read with `characters.time_zone` it is
    /// the real creation time; read as UTC it would be 8 hours off (the stand-in writes UTC+8).
    @Test(arguments: [("Asia/Shanghai", 0), ("UTC", 8 * 3600)])
    func createTimeIsReadInTheConfiguredZone(zone: String, expectedSkew: Int) throws {
        let h = try VeilHarness(extraYAML: "characters:\n  time_zone: \"\(zone)\"")
        defer { h.stop() }
        let video = try completedVideo(h)
        let c = try createCharacter(h, video: video, name: "zone_\(expectedSkew)")
        let id = try #require(jsonObject(c)["id"] as? String)
        _ = try h.get("/v1/characters/\(id)")   // the stand-in turns it ready on its second list
        let got = jsonObject(try h.get("/v1/characters/\(id)"))
        #expect(got["status"] as? String == "ready")
        let created = try #require(got["created_at"] as? Int)
        let skew = created - Int(Date().timeIntervalSince1970)
        #expect(abs(skew - expectedSkew) < 120, "created_at is \(skew) s from now")
    }

    @Test func failedStatusFromTheUpstream() throws {
        let h = try VeilHarness(sandboxTweak: { $0.characterListsToReady = 0 })
        defer { h.stop() }
        let video = try completedVideo(h)
        let c = try createCharacter(h, video: video, name: "bob_fail", description: "please fail")
        let id = try #require(jsonObject(c)["id"] as? String)
        let g = try h.get("/v1/characters/\(id)")
        expectClean(g, h)
        #expect(jsonObject(g)["status"] as? String == "failed")
    }

    @Test func timestampsAndNameAndBodyValidation() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let video = try completedVideo(h)
        for ts in [#""0-5""#, #"{"start":3,"end":1}"#, #"{"start":-1,"end":1}"#, #""-1-2""#, #""a-b""#, #"{"start":1,"end":1}"#, "7", #"{"start":"x","end":2}"#] {
            let r = try createCharacter(h, video: video, name: "ts_check", timestamps: ts)
            #expect(r.status == 400, "\(ts): \(r.text)")
            #expect(errorParam(r) == "timestamps", "\(ts)")
        }
        for name in ["bad name!", String(repeating: "a", count: 41), "x", "@alice", "al/ice", "ali%2e", "名字"] {
            let r = try createCharacter(h, video: video, name: name)
            #expect(r.status == 400, "\(name): \(r.text)")
            #expect(errorParam(r) == "name", "\(name)")
        }
        let longDescription = try createCharacter(h, video: video, name: "desc_check", description: String(repeating: "d", count: 2_001))
        #expect(longDescription.status == 400)
        #expect(errorParam(longDescription) == "description")
        let missing = try h.post("/v1/characters", json: #"{"video_id":"\#(video)","name":"no_desc","timestamps":"0-3"}"#)
        #expect(missing.status == 400)
        #expect(errorParam(missing) == "description")
        let badVideo = try createCharacter(h, video: "video_../../x", name: "vid_check")
        #expect(badVideo.status == 400)
        #expect(errorParam(badVideo) == "video_id")
        let notJSON = try h.post("/v1/characters", json: "nope")
        #expect(notJSON.status == 400)
        // Fractions are fine as long as the clip is at most 3 s.
        let ok = try createCharacter(h, video: video, name: "frac_ok", timestamps: #"{"start":0.5,"end":3.5}"#)
        #expect(ok.status == 200, "\(ok.text)")
        #expect(h.sandbox.requests(matching: "/v1/characters").filter { $0.method == "POST" }.map(\.bodyText).allSatisfy { $0.contains("\"0.5-3.5\"") })
        #expect(h.sandbox.count("POST", "/v1/characters") == 1)
    }

    @Test func takenNamesAre409AcrossTeams() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let webVideo = try completedVideo(h)
        let mobileVideo = try completedVideo(h, team: "mobile")
        #expect(try createCharacter(h, video: webVideo, name: "carol").status == 200)
        let again = try createCharacter(h, video: webVideo, name: "carol")
        #expect(again.status == 409)
        #expect(errorParam(again) == "name")
        let otherTeam = try createCharacter(h, team: "mobile", video: mobileVideo, name: "CAROL")
        #expect(otherTeam.status == 409)
        #expect(errorCode(otherTeam) == "character_name_taken")
        #expect(h.sandbox.count("POST", "/v1/characters") == 1)
    }

    @Test func videoMustBeTheTeamsAndCompletedBeforeAnyUpstreamCall() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 1_000 })
        defer { h.stop() }
        let v = try h.post("/v1/videos", json: #"{"model":"sora-2","prompt":"slow one"}"#)
        let video = try #require(jsonObject(v)["id"] as? String)
        let notDone = try createCharacter(h, video: video, name: "too_early")
        #expect(notDone.status == 400)
        #expect(errorParam(notDone) == "video_id")
        #expect(errorCode(notDone) == "video_not_completed")
        let otherTeams = try createCharacter(h, team: "mobile", video: video, name: "not_mine")
        #expect(otherTeams.status == 400)
        #expect(errorCode(otherTeams) == "video_not_found")
        let unknown = try createCharacter(h, video: "video_999999", name: "unknown_v")
        #expect(unknown.status == 400)
        #expect(errorCode(unknown) == "video_not_found")
        // Another team's video and an unknown one look the same.
        #expect((jsonObject(otherTeams)["error"] as? [String: Any])?["message"] as? String
                == (jsonObject(unknown)["error"] as? [String: Any])?["message"] as? String)
        #expect(h.sandbox.count("POST", "/v1/characters") == 0)
    }

    @Test func failedVideoIsRefused() throws {
        let h = try VeilHarness(sandboxTweak: { $0.videoPollsToComplete = 1 })
        defer { h.stop() }
        let v = try h.post("/v1/videos", json: #"{"model":"sora-2","prompt":"please fail"}"#)
        let video = try #require(jsonObject(v)["id"] as? String)
        _ = try h.get("/v1/videos/\(video)")
        let r = try createCharacter(h, video: video, name: "from_failed")
        #expect(r.status == 400)
        #expect(errorCode(r) == "video_not_completed")
        #expect(h.sandbox.count("POST", "/v1/characters") == 0)
    }

    @Test func anotherTeamsCharacterIsInvisibleAndUnusable() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let video = try completedVideo(h)
        let c = try createCharacter(h, video: video, name: "dave.w")
        let id = try #require(jsonObject(c)["id"] as? String)
        // Invisible to mobile: same 404 as an unknown id.
        let get = try h.get("/v1/characters/\(id)", team: "mobile")
        #expect(get.status == 404)
        #expect(try h.get("/v1/characters/char_987654", team: "mobile").text == get.text)
        #expect(try h.get("/v1/videos/characters/\(id)", team: "mobile").status == 404)
        #expect(try h.delete("/v1/characters/\(id)", team: "mobile").status == 404)
        let list = try h.get("/v1/characters", team: "mobile")
        #expect(list.status == 200)
        #expect(listIDs(list).isEmpty)
        expectClean(list, h)
        // Unusable in mobile's prompts, however it is written.
        let videosBefore = h.sandbox.count("POST", "/v1/videos")
        // Full-width `＠` and letters, and names split by invisible format characters, too (NFKC and
        // Cf removal before matching).
        for prompt in ["@dave.w dancing", "with @DAVE.W.", "x@dave.w waves", "mail@dave.w.com", "@@dave.w", "(@dave.w)", "@dave.w.then",
                       "\u{FF20}dave.w waves", "@da\u{200B}ve.w waves", "@\u{FF44}\u{FF41}\u{FF56}\u{FF45}.w", "@dav\u{00AD}e.w", "@d\u{2060}ave.w"] {
            let r = try h.post("/v1/videos", team: "mobile", json: #"{"model":"sora-2","prompt":"\#(prompt)"}"#)
            #expect(r.status == 403, "\(prompt): \(r.text)")
            #expect(errorCode(r) == "character_not_owned")
        }
        #expect(h.sandbox.count("POST", "/v1/videos") == videosBefore)
        // The owner may use it; @words that are no known character (the upstream's own 123AMO2M
        // included) pass.
        #expect(try h.post("/v1/videos", json: #"{"model":"sora-2","prompt":"@dave.w dancing"}"#).status == 200)
        #expect(try h.post("/v1/videos", team: "mobile", json: #"{"model":"sora-2","prompt":"@someone and a@b.com"}"#).status == 200)
        // Still the owner's after all that.
        #expect(try h.get("/v1/characters/\(id)").status == 200)
        #expect(try h.delete("/v1/characters/\(id)").status == 200)
    }

    @Test func oneUpstreamListCallForSeveralProcessingCharacters() throws {
        let h = try VeilHarness(sandboxTweak: { $0.characterListsToReady = 5 })
        defer { h.stop() }
        let video = try completedVideo(h)
        var ids: [String] = []
        for n in ["eve_1", "eve_2", "eve_3", "eve_4"] {
            let c = try createCharacter(h, video: video, name: n)
            ids.append(try #require(jsonObject(c)["id"] as? String))
        }
        let before = h.sandbox.count("GET", "/v1/characters")
        let l = try h.get("/v1/characters")
        #expect(h.sandbox.count("GET", "/v1/characters") == before + 1)
        #expect(Set(listIDs(l)) == Set(ids))
        #expect(listIDs(l) == ids.reversed())  // newest first
        // Pagination over the stored list.
        let p1 = try h.get("/v1/characters?limit=2&order=asc")
        #expect(listIDs(p1) == Array(ids.prefix(2)))
        #expect(jsonObject(p1)["has_more"] as? Bool == true)
        let p2 = try h.get("/v1/characters?limit=2&order=asc&after=\(ids[1])")
        #expect(listIDs(p2) == Array(ids.suffix(2)))
        #expect(jsonObject(p2)["has_more"] as? Bool == false)
        #expect(try h.get("/v1/characters?limit=0").status == 400)
        // The upstream's own character 58 (another user's) is never listed.
        for team in ["web", "mobile", "limited"] {
            let r = try h.get("/v1/characters", team: team)
            #expect(!listIDs(r).contains("char_58"))
            #expect(!r.text.contains("123AMO2M"))
            expectClean(r, h)
        }
        #expect(try h.get("/v1/characters/char_58").status == 404)
    }

    @Test func upstreamListFailureAnswersFromTheStore() throws {
        let h = try VeilHarness(sandboxTweak: { $0.characterListsToReady = 5 })
        defer { h.stop() }
        let video = try completedVideo(h)
        let c = try createCharacter(h, video: video, name: "frank")
        let id = try #require(jsonObject(c)["id"] as? String)
        h.sandbox.inject(.status(500, body: #"{"error":{"message":"boom \#(h.upstreamKey)"}}"#), method: "GET", pathPrefix: "/v1/characters", times: 2)
        let l = try h.get("/v1/characters")
        #expect(l.status == 200)
        #expect(l.header("x-veil-stale") == "true")
        #expect(listIDs(l) == [id])
        expectClean(l, h)
        let g = try h.get("/v1/characters/\(id)")
        #expect(g.status == 200)
        #expect(jsonObject(g)["status"] as? String == "processing")
        #expect(g.header("x-veil-stale") == "true")
    }

    @Test func upstreamRefusalIsRedacted() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let video = try completedVideo(h)
        h.sandbox.inject(.status(200, body: #"{"success":false,"message":"bad key \#(h.upstreamKey)"}"#), method: "POST", pathPrefix: "/v1/characters", times: 1)
        let r = try createCharacter(h, video: video, name: "grace")
        #expect(r.status == 400)
        expectClean(r, h)
        #expect(r.text.contains("[redacted]"))
        // The name is free again and usable.
        #expect(try createCharacter(h, video: video, name: "grace").status == 200)
    }

    @Test func pathsAreStrict() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        for p in ["/v1/characters/..", "/v1/characters/%2e%2e", "/v1/characters/char_1;x", "/v1/characters/char_1/x",
                  "/v1/characters/58", "/v1/characters/char_", "/v1/characters/", "/v1/videos/characters/char_%2F1"] {
            let r = try h.get(p)
            #expect(r.status == 404, "\(p)")
        }
        #expect(h.sandbox.count("GET", "/v1/characters") == 0)
        #expect(try h.post("/v1/characters/char_1", json: "{}").status == 405)
    }

    @Test func sdkShapedEndpoints() throws {
        let h = try VeilHarness()
        defer { h.stop() }
        let video = try completedVideo(h)
        let c = try createCharacter(h, video: video, name: "heidi")
        let o = jsonObject(c)
        let id = try #require(o["id"] as? String)
        let g = try h.get("/v1/videos/characters/\(id)")
        #expect(g.status == 200)
        expectClean(g, h)
        let s = jsonObject(g)
        #expect(Set(s.keys) == ["id", "created_at", "name"])
        #expect(s["id"] as? String == id)
        #expect(s["name"] as? String == "heidi")
        #expect(s["created_at"] as? Int == o["created_at"] as? Int)
        let up = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/videos/characters",
                                           headers: h.auth() + [("Content-Type", "multipart/form-data; boundary=xx")],
                                           body: Array("--xx\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nx\r\n--xx--\r\n".utf8))
        #expect(up.status == 400)
        #expect(errorCode(up) == "unsupported_operation")
        #expect(up.text.contains("POST /v1/characters"))
        // Delete forgets it for the team and frees the name.
        let d = try h.delete("/v1/characters/\(id)")
        #expect(d.status == 200)
        #expect(jsonObject(d)["object"] as? String == "character.deleted")
        #expect(jsonObject(d)["deleted"] as? Bool == true)
        #expect(try h.get("/v1/characters/\(id)").status == 404)
        #expect(try h.delete("/v1/characters/\(id)").status == 404)
        #expect(listIDs(try h.get("/v1/characters")).isEmpty)
    }

    @Test func ownershipSurvivesARestart() throws {
        let path = "/tmp/veil-test-chars-\(UUID().uuidString).sqlite3"
        defer { unlink(path) }
        let id: String, mobileVideo: String
        do {
            let h = try VeilHarness(storePath: path)
            let video = try completedVideo(h)
            let c = try createCharacter(h, video: video, name: "ivan")
            id = try #require(jsonObject(c)["id"] as? String)
            mobileVideo = try completedVideo(h, team: "mobile")
            h.stop()
        }
        let h2 = try VeilHarness(storePath: path)
        defer { h2.stop() }
        // Processing still: the refresh asks the fresh stand-in, which doesn't know it; the
        // stored state is answered.
        let g = try h2.get("/v1/characters/\(id)")
        #expect(g.status == 200)
        #expect(jsonObject(g)["name"] as? String == "ivan")
        #expect(listIDs(try h2.get("/v1/characters")) == [id])
        #expect(try h2.get("/v1/characters/\(id)", team: "mobile").status == 404)
        #expect(listIDs(try h2.get("/v1/characters", team: "mobile")).isEmpty)
        let r = try h2.post("/v1/videos", team: "mobile", json: #"{"model":"sora-2","prompt":"@ivan walks"}"#)
        #expect(r.status == 403)
        // The video is stored as completed, so the name check answers without the upstream.
        #expect(try createCharacter(h2, team: "mobile", video: mobileVideo, name: "Ivan").status == 409)
        #expect(h2.sandbox.count("POST", "/v1/characters") == 0)
    }
}
