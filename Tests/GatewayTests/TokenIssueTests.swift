@testable import Gateway
import Testing

@Suite struct TokenIssueTests {
    struct Counter: RandomNumberGenerator {
        var state: UInt64 = 1
        mutating func next() -> UInt64 { state = state &* 6364136223846793005 &+ 1442695040888963407; return state }
    }

    @Test func tokensAreLongAndVaried() {
        var rng = Counter()
        let a = TokenIssue.newToken(using: &rng), b = TokenIssue.newToken(using: &rng)
        #expect(a != b && a.hasPrefix("veil_") && a.utf8.count == 48)
        #expect(a.dropFirst(5).allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) })
        var sys = SystemRandomNumberGenerator()
        #expect(Set((0..<50).map { _ in TokenIssue.newToken(using: &sys) }).count == 50)
    }

    @Test(arguments: [
        ("30d", 1_000_000 + 30 * 86_400 as Int?),
        ("12h", 1_000_000 + 43_200),
        (" 2w ", 1_000_000 + 1_209_600),
        ("1000001", 1_000_001),
        ("1000000", nil),            // now is not the future
        ("999", nil),
        ("0d", nil),
        ("soon", nil),
        ("", nil),
        ("-5d", nil),
        ("99999999999999999999", nil),
        ("\(Int(Int32.max) * 4 + 1)", nil),   // beyond what the configuration accepts
    ])
    func expiries(_ text: String, _ expected: Int?) {
        switch TokenIssue.parseExpiry(text, now: 1_000_000) {
        case .success(let at): #expect(at == expected, "\(text)")
        case .failure(let why): #expect(expected == nil, "\(text): \(why)")
        }
    }

    @Test func theSnippetLoadsAsConfiguration() throws {
        let digest = sha256Hex("veil_example")
        for expiry in [nil, 1_767_225_600] as [Int?] {
            let yaml = "upstream:\n  api_key: \"k\"\n" + TokenIssue.configSnippet(team: "web", digest: digest, expiresAt: expiry)
            let c = try ConfigLoader.load(yaml: yaml, environment: [:])
            #expect(c.teams.first?.name == "web" && c.teams.first?.tokens.first?.sha256 == digest && c.teams.first?.tokens.first?.expiresAt == expiry)
        }
        #expect(TokenIssue.configSnippet(team: "web", digest: digest, expiresAt: 1_767_225_600).contains("# 2026-01-01T00:00:00Z"))
    }

    @Test(arguments: [("web", true), ("team.a-b_c", true), ("", false), ("a b", false), ("ü", false), (String(repeating: "a", count: 65), false)])
    func teamNames(_ name: String, _ ok: Bool) {
        #expect(TokenIssue.isValidTeamName(name) == ok)
    }

    @Test func teamsReport() {
        let teams = [
            GatewayConfig.Team(name: "web", tokens: [.init(sha256: String(repeating: "ab", count: 32), expiresAt: nil)],
                               models: nil, requestsPerMinute: 600, maxConcurrentStreams: nil, maxVideosInFlight: 5, videosPerDay: nil),
            GatewayConfig.Team(name: "ops", tokens: [.init(sha256: String(repeating: "cd", count: 32), expiresAt: 1_000_000 - 7_200),
                                                     .init(sha256: String(repeating: "ef", count: 32), expiresAt: 1_000_000 + 3 * 86_400)],
                               models: ["gpt-4o-mini", "sora-2"], requestsPerMinute: nil, maxConcurrentStreams: 2, maxVideosInFlight: nil, videosPerDay: 10),
        ]
        #expect(TeamsReport.render(teams, now: 1_000_000) == """
        TEAM  MODELS              REQUESTS/MIN  STREAMS    VIDEOS_IN_FLIGHT  VIDEOS/DAY
        web   all                 600           unlimited  5                 unlimited
        ops   gpt-4o-mini,sora-2  unlimited     2          unlimited         10

        TEAM  TOKEN_SHA256   EXPIRES
        web   abababababab…  never
        ops   cdcdcdcdcdcd…  1970-01-12T11:46:40Z (expired 2h ago)
        ops   efefefefefef…  1970-01-15T13:46:40Z (in 3d)

        """)
        #expect(TeamsReport.render([], now: 0).contains("no teams"))
    }

    /// A team's webhook is listed by its URL, without user info, query or fragment; never its secret.
    @Test func teamsReportShowsWebhooksWithoutCredentials() {
        var web = GatewayConfig.Team(name: "web", tokens: [], models: nil, requestsPerMinute: nil, maxConcurrentStreams: nil,
                                     maxVideosInFlight: nil, videosPerDay: nil)
        web.webhook = .init(url: "https://user:pw@hooks.example.com/veil?sig=abc#x", key: Array("secret-bytes".utf8))
        let out = TeamsReport.render([web], now: 0)
        #expect(out.hasSuffix("TEAM  WEBHOOK\nweb   https://hooks.example.com/veil\n"))
        #expect(!out.contains("pw") && !out.contains("sig=") && !out.contains("secret"))
        #expect(!TeamsReport.render([GatewayConfig.Team(name: "a", tokens: [], models: nil, requestsPerMinute: nil, maxConcurrentStreams: nil,
                                                         maxVideosInFlight: nil, videosPerDay: nil)], now: 0).contains("WEBHOOK"))
    }
}
