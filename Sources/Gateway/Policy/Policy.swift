import Glibc
import HTTPWire
import Reactor
import Store

/// Team policy, checked before anything is sent upstream: request rate, concurrent chat streams,
/// videos in flight and the daily video quota. Decisions are made on atomics (no lock on the
/// request path) except the daily quota, which is counted in the store so it survives restarts.
public final class Policy: @unchecked Sendable {
    public struct Refusal { public let error: APIError; public let headers: HTTPHeaders }
    private let states: [String: TeamState]
    private let buckets: [String: TokenBucket]
    private let teams: [String: GatewayConfig.Team]
    let store: (any VideoStore)?

    /// `previous` carries live state over a reload for teams that keep their name: the stream and
    /// video counters always (requests started under the old snapshot release their slots on the
    /// same objects), the token bucket when the team's rate is unchanged.
    init(teams list: [GatewayConfig.Team], previous: Policy?, store: (any VideoStore)?) {
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
        self.store = store
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

    /// A chat stream slot; release with `streamFinished`.
    func admitStream(team: GatewayConfig.Team) -> Refusal? {
        guard let max = team.maxConcurrentStreams, let s = states[team.name] else { return nil }
        if TeamState.acquire(s.openStreams, max: max) { return nil }
        return Refusal(error: APIError(429, "Team `\(team.name)` already has \(max) chat streams open.", code: "concurrent_streams_exceeded"),
                       headers: ["retry-after": "1"])
    }

    func streamFinished(team: String) {
        guard let s = states[team], teams[team]?.maxConcurrentStreams != nil else { return }
        TeamState.release(s.openStreams)
    }

    func admitVideo(_ x: Exchange, team: GatewayConfig.Team) -> Refusal? {
        if let perDay = team.videosPerDay, let store {
            let since = Int(time(nil)) - 86_400
            let used = (try? store.countVideos(team: team.name, since: since)) ?? 0
            if used >= perDay {
                return Refusal(error: APIError(429, "Team `\(team.name)` has used its quota of \(perDay) videos in the last 24 hours.", code: "quota_exceeded"),
                               headers: ["retry-after": "3600"])
            }
        }
        if let max = team.maxVideosInFlight, let s = states[team.name] {
            if !TeamState.acquire(s.videosInFlight, max: max) {
                return Refusal(error: APIError(429, "Team `\(team.name)` already has \(max) videos in progress.", code: "videos_in_flight_exceeded"),
                               headers: ["retry-after": "10"])
            }
        }
        return nil
    }

    /// A video reached a final state (or its creation failed): frees its in-flight slot.
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
