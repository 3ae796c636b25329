import Glibc
import HTTPWire
import Reactor
import Store

/// Team policy, checked before anything is sent upstream: request rate (at admission, from the
/// head), concurrent chat streams, videos in flight and the daily video quota. Decisions are made
/// on atomics (no lock on the request path); the daily quota is counted in the store (so it
/// survives restarts) by the flow, which passes the count in. Slots come as `Lease`s that their
/// owner (the exchange) lets go: nobody releases one by hand.
public final class Policy: @unchecked Sendable {
    public struct Refusal: Error { public let error: APIError; public let headers: HTTPHeaders }
    private let states: [String: TeamState]
    private let buckets: [String: TokenBucket]
    private let teams: [String: GatewayConfig.Team]

    /// `previous` carries live state over a reload for teams that keep their name: the stream and
    /// video counters always (requests started under the old snapshot release their slots on the
    /// same objects), the token bucket when the team's rate is unchanged.
    init(teams list: [GatewayConfig.Team], previous: Policy?) {
        var s: [String: TeamState] = [:]
        var b: [String: TokenBucket] = [:]
        var t: [String: GatewayConfig.Team] = [:]
        for team in list {
            t[team.name] = team
            s[team.name] = previous?.states[team.name] ?? TeamState(name: team.name)
            if let rpm = team.requestsPerMinute {
                if let old = previous?.buckets[team.name], old.capacity == rpm { b[team.name] = old }
                else { b[team.name] = TokenBucket(capacity: rpm, refillPerMillis: Double(rpm) / 60_000) }
            }
        }
        states = s
        buckets = b
        teams = t
    }

    func state(_ team: String) -> TeamState? { states[team] }

    /// Rate limit: adds the `x-ratelimit-*` headers to the exchange (every answer carries them)
    /// and refuses with 429 when the bucket is empty.
    func admitRequest(_ x: Exchange, team: GatewayConfig.Team) -> Refusal? {
        guard let bucket = buckets[team.name] else { return nil }
        let o = bucket.take(now: EventLoop.monotonicMillis())
        x.commonHeaders.replace("x-ratelimit-limit-requests", String(bucket.capacity))
        x.commonHeaders.replace("x-ratelimit-remaining-requests", String(o.remaining))
        x.commonHeaders.replace("x-ratelimit-reset-requests", Policy.duration(o.millisUntilFull))
        if o.allowed { return nil }
        let retry = max(1, (o.millisUntilOne + 999) / 1000)
        return Refusal(error: APIError(429, "Team `\(team.name)` is over its limit of \(bucket.capacity) requests per minute.", code: "rate_limit_exceeded"),
                       headers: ["retry-after": String(retry)])
    }

    /// A chat stream slot, held by the exchange until its stream ends (nil: no limit).
    func admitStream(team: GatewayConfig.Team) -> Result<Lease?, Refusal> {
        guard let max = team.maxConcurrentStreams, let s = states[team.name] else { return .success(nil) }
        if TeamState.acquire(s.openStreams, max: max) { return .success(Lease(s, .stream)) }
        return .failure(Refusal(error: APIError(429, "Team `\(team.name)` already has \(max) chat streams open.", code: "concurrent_streams_exceeded"),
                                headers: ["retry-after": "1"]))
    }

    /// The daily quota (`usedToday`: the team's videos of the last 24 hours, from the store) and a
    /// video-in-flight slot. The slot is held by the exchange; a video the upstream accepted keeps
    /// it (`Lease.keep`) until a poll sees it finish (`videoFinished`).
    func admitVideo(team: GatewayConfig.Team, usedToday: Int) -> Result<Lease?, Refusal> {
        if let perDay = team.videosPerDay, usedToday >= perDay {
            return .failure(Refusal(error: APIError(429, "Team `\(team.name)` has used its quota of \(perDay) videos in the last 24 hours.", code: "quota_exceeded"),
                                    headers: ["retry-after": "3600"]))
        }
        guard let max = team.maxVideosInFlight, let s = states[team.name] else { return .success(nil) }
        if TeamState.acquire(s.videosInFlight, max: max) { return .success(Lease(s, .videoInFlight)) }
        return .failure(Refusal(error: APIError(429, "Team `\(team.name)` already has \(max) videos in progress.", code: "videos_in_flight_exceeded"),
                                headers: ["retry-after": "10"]))
    }

    /// A video whose slot was kept reached a final state (or was deleted unfinished): frees it.
    func videoFinished(team: String) {
        guard let s = states[team], teams[team]?.maxVideosInFlight != nil else { return }
        TeamState.release(s.videosInFlight)
    }

    /// OpenAI's duration style: `1s`, `6m0s`, `250ms`.
    static func duration(_ ms: Int) -> String {
        if ms < 1000 { return "\(ms)ms" }
        let s = ms / 1000
        if s < 60 { return "\(s)s" }
        return "\(s / 60)m\(s % 60)s"
    }
}

/// One team slot (a chat stream, a video in flight), released exactly once: when its owner lets
/// it go (`Exchange.finish`), or at the latest when it is freed. `keep()` hands it over to a
/// longer life (a video the upstream accepted: its slot is released when it finishes).
final class Lease {
    enum Kind { case stream, videoInFlight }
    private let state: TeamState
    private let kind: Kind
    private var held = true

    init(_ state: TeamState, _ kind: Kind) { self.state = state; self.kind = kind }

    /// The slot outlives this lease; it is released by whoever sees the video finish.
    func keep() { held = false }

    func release() {
        guard held else { return }
        held = false
        switch kind {
        case .stream: TeamState.release(state.openStreams)
        case .videoInFlight: TeamState.release(state.videosInFlight)
        }
    }

    deinit { release() }
}
