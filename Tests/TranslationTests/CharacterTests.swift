import Testing
@testable import Translation

@Suite struct CharacterTests {
    static let key = "sk-5D7uSECRETSECRETSECRET0123"
    static let listJSON = #"{"success":true,"data":[{"id":"58","username":"3uudwr0xj.desertstro","instruction_value":"International fashion male model","api_key":"\#(key)","status":999,"create_time":"2025-11-06 16:27:24","token_id":17,"uuid":"123AMO2M","gen_id":"g-\#(key)"},{"id":59,"uuid":"bob_2","status":"0","api_key":"\#(key)","video_id":4078,"timestamps":"0.5-2.5"},{"id":"60","status":-1,"api_key":"\#(key)"}]}"#

    @Test func listNeverLeaksTheKey() throws {
        let list = try decodeCharacterList(Array(Self.listJSON.utf8))
        #expect(list.count == 3)
        #expect(list[0] == UpstreamCharacter(id: "58", uuid: "123AMO2M", instructionValue: "International fashion male model",
                                              status: 999, createTime: "2025-11-06 16:27:24"))
        let objs = list.map { translateCharacter($0, utcOffsetSeconds: 28_800, now: 1) }
        #expect(objs.map(\.status) == [.ready, .processing, .failed])
        #expect(objs[0].createdAt == 1_762_417_644)
        #expect(objs[1].id == "char_59" && objs[1].videoID == "video_4078")
        #expect(objs[1].timestamps == (try Timestamps(start: 0.5, end: 2.5)))
        for o in objs {
            let text = String(decoding: o.jsonBytes, as: UTF8.self)
            #expect(!text.contains(Self.key) && !text.contains("api_key") && !text.contains("token_id")
                    && !text.contains("username") && !text.contains("gen_id") && !text.contains("desertstro"))
        }
        #expect(String(decoding: objs[0].jsonBytes, as: UTF8.self)
            == #"{"id":"char_58","object":"character","name":"123AMO2M","description":"International fashion male model","video_id":null,"timestamps":null,"status":"ready","created_at":1762417644}"#)
    }

    @Test func factsWin() throws {
        let c = try decodeCharacterCreate(Array(#"{"success":true,"data":{"id":"string","instruction_value":"d","timestamps":"0-3","api_key":"k","token_id":0,"gen_id":"g","uuid":"alice_01","status":0}}"#.utf8))
        let facts = CharacterFacts(veilID: "char_58", name: "alice_01", description: "desc", videoID: "video_4078",
                                   timestamps: try Timestamps(start: 0, end: 3), createdAt: 100)
        let o = translateCharacter(c, facts: facts, utcOffsetSeconds: 0, now: 5)
        #expect(String(decoding: o.jsonBytes, as: UTF8.self)
            == #"{"id":"char_58","object":"character","name":"alice_01","description":"desc","video_id":"video_4078","timestamps":{"start":0,"end":3},"status":"processing","created_at":100}"#)
    }

    @Test func failuresThrowWithMessage() {
        #expect(throws: TranslationError(.upstreamFailure, "额度不足")) {
            try decodeCharacterList(Array(#"{"success":false,"message":"额度不足"}"#.utf8))
        }
        for bad in ["", "[]", #"{"data":[]}"#, #"{"success":true,"data":{}}"#, #"{"success":true,"data":[1]}"#, #"{"success":"true"}"#] {
            #expect(throws: TranslationError.self) { try decodeCharacterList(Array(bad.utf8)) }
        }
        #expect(throws: TranslationError.self) { try decodeCharacterCreate(Array(#"{"success":true,"data":[]}"#.utf8)) }
        #expect((try? decodeCharacterList(Array(#"{"success":true,"data":null}"#.utf8)))?.isEmpty == true)
    }

    @Test(arguments: [(999 as Int?, CharacterStatus.ready), (0, .processing), (-1, .failed), (-7, .failed), (1, .processing), (nil, .processing)])
    func status(_ s: Int?, _ want: CharacterStatus) { #expect(CharacterStatus(upstream: s) == want) }

    @Test(arguments: [
        (#"{"start":0,"end":3}"#, "0-3"), (#"{"start":0.5,"end":2.5}"#, "0.5-2.5"), (#""0-3""#, "0-3"),
        (#""0.5-2.5""#, "0.5-2.5"), (#"{"start":"1","end":"2.25"}"#, "1-2.25"), (#"" 1 - 4 ""#, "1-4"),
        (#"{"start":0.1,"end":3.1}"#, "0.1-3.1"), (#"{"start":1e0,"end":2}"#, "1-2"),
    ])
    func timestampsValid(_ json: String, _ upstream: String) throws {
        #expect(try Timestamps.parse(JSONValue.parse(json)).upstreamString == upstream)
    }

    @Test(arguments: [
        (#"{"start":3,"end":3}"#, "greater"), (#"{"start":-1,"end":1}"#, ">= 0"), (#"{"start":0,"end":3.5}"#, "3 seconds"),
        (#""3-1""#, "greater"), (#""0-3-4""#, "look like"), (#""-1-2""#, "look like"), (#""a-b""#, "look like"),
        (#"{"start":0}"#, "numeric"), ("[0,3]", "must be"), ("3", "must be"), (#"{"start":1e300,"end":1}"#, "too large"),
        (#""1.-2""#, "look like"), (#""-""#, "look like"),
    ])
    func timestampsInvalid(_ json: String, _ fragment: String) throws {
        do {
            _ = try Timestamps.parse(JSONValue.parse(json))
            Issue.record("accepted \(json)")
        } catch {
            #expect(error.kind == .invalidTimestamps)
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test func timestampsJSON() throws {
        #expect(String(decoding: try Timestamps(start: 0.5, end: 2.25).jsonBytes, as: UTF8.self) == #"{"start":0.5,"end":2.25}"#)
    }

    @Test(arguments: [("alice_01", true), ("a.b", true), ("ab", true), ("a", false), (String(repeating: "x", count: 40), true),
                      (String(repeating: "x", count: 41), false), ("al ice", false), ("名字", false), ("a-b", false), ("", false), ("é1", false)])
    func names(_ s: String, _ ok: Bool) { #expect(isValidCharacterName(s) == ok) }

    @Test(arguments: [
        ("@alice_01 waves at @bob.", ["alice_01", "bob"]),
        ("mail a@b.com and me@example.org", []),
        ("请@alice和（@bob_2）一起，@alice again", ["alice", "bob_2"]),
        ("@a @ @@x1 @\(String(repeating: "z", count: 41))", ["x1"]),
        ("line1\r\n@cam.01... end", ["cam.01"]),
        ("@", []), ("", []), ("x@@y1", ["y1"]),
    ])
    func mentions(_ prompt: String, _ want: [String]) { #expect(mentionedCharacterNames(in: prompt) == want) }

    @Test func upstreamCreateBody() throws {
        let b = upstreamCharacterCreateBody(name: "alice_01", description: "说\"hi\"", upstreamVideoID: "4078",
                                            timestamps: try Timestamps(start: 0, end: 3))
        #expect(String(decoding: b, as: UTF8.self) == #"{"instruction_value":"说\"hi\"","timestamps":"0-3","video_id":"4078","uuid":"alice_01"}"#)
    }

    @Test(arguments: [
        ("2025-11-06 16:27:24", 28_800, 1_762_417_644 as Int?), ("2025-11-06 16:27:24", 0, 1_762_446_444),
        ("1970-01-01 00:00:00", 0, 0), ("2024-02-29 00:00:00", 0, 1_709_164_800),
        ("2025-02-29 00:00:00", 0, nil), ("2025-11-06 24:00:00", 0, nil), ("2025-11-06", 0, nil),
        ("2025-11-06 16:27:24x", 0, nil), ("garbage", 0, nil), ("2025-11-06 16:27:24", Int.min, nil),
    ])
    func localTime(_ s: String, _ off: Int, _ want: Int?) { #expect(parseLocalTime(s, utcOffsetSeconds: off) == want) }

    @Test(arguments: [("Asia/Shanghai", 28_800 as Int?), ("UTC", 0), ("+08:00", 28_800), ("-05:30", -19_800),
                      ("+0800", 28_800), ("UTC+8", nil), ("UTC+08", 28_800), ("Europe/Paris", nil), ("America/New_York", nil),
                      ("+15:00", nil), ("+08:60", nil), ("", nil), ("Mars/Base", nil)])
    func zones(_ id: String, _ want: Int?) { #expect(timeZoneOffsetSeconds(identifier: id) == want) }
}

@Suite struct VeilIDTests {
    @Test func roundTrip() {
        #expect(VeilID.videoID(upstream: "4078") == "video_4078")
        #expect(VeilID.upstreamVideoID(fromVeil: "video_4078") == "4078")
        #expect(VeilID.characterID(upstream: "58") == "char_58")
        #expect(VeilID.upstreamCharacterID(fromVeil: "char_a-B_9") == "a-B_9")
        #expect(VeilID.upstreamVideoID(fromVeil: "video_" + String(repeating: "9", count: 64)) != nil)
        #expect(VeilID.videoID(upstream: "../x") == nil)
    }

    @Test(arguments: ["video_", "video_..", "video_%2e%2e", "video_a/b", "video_a;b", "video_a?b", "video_a#b",
                      "video_a\r\nb", "video_中", "video_" + String(repeating: "9", count: 65), "char_1", "VIDEO_1",
                      "video_ 1", "xvideo_1", "", "video_1.mp4"])
    func rejectsVideo(_ s: String) { #expect(VeilID.upstreamVideoID(fromVeil: s) == nil) }

    @Test(arguments: ["char_", "char_..", "char_/", "video_1", "char_1\n", "char_é"])
    func rejectsChar(_ s: String) { #expect(VeilID.upstreamCharacterID(fromVeil: s) == nil) }
}
