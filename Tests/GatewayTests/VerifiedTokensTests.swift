import Testing
@testable import Gateway

/// A loop's memory of verified team tokens: the exact value only, per configuration generation,
/// expiry still applied, bounded.
@Suite struct VerifiedTokensTests {
    @Test func onlyTheExactValueUnderTheSameGenerationHits() {
        let c = VerifiedTokens()
        c.remember("Bearer tok-a", team: 2, expiresAt: nil, generation: 1)
        #expect(c.lookup("Bearer tok-a", generation: 1, now: 0) == .team(2))
        #expect(c.lookup("Bearer tok-b", generation: 1, now: 0) == nil)
        #expect(c.lookup("Bearer tok-", generation: 1, now: 0) == nil)
        #expect(c.lookup("bearer tok-a", generation: 1, now: 0) == nil)     // verified again, not assumed
        #expect(c.lookup("Bearer tok-a", generation: 2, now: 0) == nil)     // a reload forgets
    }

    @Test func expiryStillApplies() {
        let c = VerifiedTokens()
        c.remember("Bearer t", team: 0, expiresAt: 100, generation: 1)
        #expect(c.lookup("Bearer t", generation: 1, now: 99) == .team(0))
        #expect(c.lookup("Bearer t", generation: 1, now: 100) == .expired)
    }

    @Test func boundedMostRecentKept() {
        let c = VerifiedTokens()
        for i in 0..<(VerifiedTokens.capacity + 3) { c.remember("Bearer t\(i)", team: i, expiresAt: nil, generation: 1) }
        #expect(c.lookup("Bearer t0", generation: 1, now: 0) == nil)
        #expect(c.lookup("Bearer t\(VerifiedTokens.capacity + 2)", generation: 1, now: 0) == .team(VerifiedTokens.capacity + 2))
    }

    /// Through the gateway's path: a remembered verdict equals a fresh one, an unknown token is
    /// never remembered.
    @Test func theGatewaysVerdictIsTheAuthenticatorsVerdict() {
        let snap = hookSnapshot { c in
            c.teams = [GatewayConfig.Team(name: "a", tokens: [.init(sha256: sha256Hex("tok-1"), expiresAt: nil)], models: nil)]
        }
        let cache = VerifiedTokens()
        #expect(Gateway.authenticate("Bearer tok-1", snap, cache) == .team(0))
        #expect(Gateway.authenticate("Bearer tok-1", snap, cache) == .team(0))
        #expect(Gateway.authenticate("Bearer nope", snap, cache) == .invalid)
        #expect(cache.lookup("Bearer nope", generation: snap.generation, now: 0) == nil)
        #expect(Gateway.authenticate(nil, snap, cache) == .missing)
    }
}
