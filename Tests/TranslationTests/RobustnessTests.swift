import Testing
@testable import Translation

/// A cheap stand-in for the later fuzzing: mutated valid samples and random bytes through every
/// entry point that takes outside input. Passing means: no trap.
@Suite struct RobustnessTests {
    static let samples: [String] = [
        VideoTests.doneJSON, VideoTests.moderatedJSON, CharacterTests.listJSON, ChatTests.stream,
        "--b\r\nContent-Disposition: form-data; name=\"a\"; filename=\"x\"\r\nContent-Type: t\r\n\r\nv\r\n--b--\r\n",
        #"{"start":0.5,"end":2.5}"#, "@alice_01 2025-11-06 16:27:24 video_4078 char_58 https://x/y?se=2025-11-08T00%3A00%3A00Z",
    ]

    @Test func mutatedInputsNeverTrap() {
        var rng = SplitMix(state: 99)
        let specials = Array("{}[]\",:\\-@%.0123456789\r\n xue\u{0}".utf8) + [0xFF, 0xC3, 0xE4, 0xED, 0xA0]
        for _ in 0..<3000 {
            var b = Array(Self.samples.randomElement(using: &rng)!.utf8)
            for _ in 0..<Int.random(in: 1...6, using: &rng) where !b.isEmpty {
                let i = Int.random(in: 0..<b.count, using: &rng)
                switch Int.random(in: 0...3, using: &rng) {
                case 0: b[i] = specials.randomElement(using: &rng)!
                case 1: b.remove(at: i)
                case 2: b.insert(specials.randomElement(using: &rng)!, at: i)
                default: b = Array(b[..<i])
                }
            }
            exercise(b)
        }
        for _ in 0..<500 {
            exercise((0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) })
        }
    }

    func exercise(_ b: [UInt8]) {
        let s = String(decoding: b, as: UTF8.self)
        _ = try? JSONValue.parse(b)
        if let t = try? UpstreamVideoTask(json: b) { _ = translateVideo(t, facts: VideoTests.facts, now: 0).jsonBytes }
        _ = try? decodeCharacterList(b).map { translateCharacter($0, utcOffsetSeconds: 28_800, now: 0).jsonBytes }
        _ = try? decodeCharacterCreate(b)
        _ = try? ChatRequestInfo.parse(b)
        _ = try? extractUsage(fromJSON: b)
        var sc = SSEEventFilter(secret: Array("sk-robust".utf8), dropUsageChunk: true, maxEventBytes: 64)
        _ = try? sc.process(b); _ = try? sc.finish()
        _ = try? ChatRequestInfo.read(b)
        _ = try? ChatRequestInfo.askingUpstreamForUsage(b)
        _ = try? Multipart.parse(b, boundary: "b")
        _ = Multipart.boundary(fromContentType: s)
        _ = try? Timestamps.parse(s)
        _ = mentionedCharacterNames(in: s)
        _ = parseLocalTime(s, utcOffsetSeconds: 0)
        _ = timeZoneOffsetSeconds(identifier: s)
        _ = TimeMath.parseISO8601(s)
        _ = signedURLExpiry(s)
        _ = VeilID.upstreamVideoID(fromVeil: s)
        _ = KeyRedactor.redact(b, secret: Array("\"usage\"".utf8))
        _ = OpenAIError.bytes(status: b.count, message: s)
    }
}
