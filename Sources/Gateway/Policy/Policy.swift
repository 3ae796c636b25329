import Glibc
import HTTPWire
import Reactor
import Store

/// Team policy, checked before anything is sent upstream: request rate (at admission, from the
/// head), concurrent chat streams, and — through the store, for the whole deployment — the
/// daily video quota and videos in flight.
///
/// Rate and streams are decided on atomics (no lock, no store call on the request path) and
/// hold for the deployment by shares: each replica enforces its `ReplicaShare` of a team's limit,
/// the live replicas' shares adding up to the limit exactly (docs/deployment.md). Videos are
/// admitted by one atomic reservation in the store (`CoordinationStore.reserveVideo`), made by
/// the create flow; `videoRefusal` only words its answer. Slots come as `Lease`s that their
/// owner (the exchange) lets go: nobody releases one by hand.
public final class Policy: @unchecked Sendable {
    public struct Refusal: Error { public let error: APIError; public let headers: HTTPHeaders }
    private let states: [String: TeamState]
    private let buckets: [String: TokenBucket]
    private let teams: [String: GatewayConfig.Team]
    /// This replica's part of every team's rate and stream limits.
    let share: ReplicaShare

    /// `previous` carries live state over a reload (or a change of share) for teams that keep
    /// their name: the stream counters always (requests started under the old snapshot release
    /// their slots on the same objects), the token bucket when the team's rate is unchanged —
    /// or, when only this replica's share of it changed, the bucket's fill.
    init(teams list: [GatewayConfig.Team], previous: Policy?, share: ReplicaShare = .whole) {
        var s: [String: TeamState] = [:]
        var b: [String: TokenBucket] = [:]
        var t: [String: GatewayConfig.Team] = [:]
        let now = EventLoop.monotonicMillis()
        for team in list {
            t[team.name] = team
            s[team.name] = previous?.states[team.name] ?? TeamState(name: team.name)
            if let rpm = team.requestsPerMinute {
                let mine = share.of(rpm)
                guard mine > 0 else { continue }               // this replica's share is 0: `admitRequest` refuses
                if let old = previous?.buckets[team.name], old.capacity == mine { b[team.name] = old }
                else {
                    let fill = previous?.buckets[team.name]?.fill(now: now) ?? 1
                    b[team.name] = TokenBucket(capacity: mine, refillPerMillis: Double(mine) / 60_000, fill: fill, now: now)
                }
            }
        }
        states = s
        buckets = b
        teams = t
        self.share = share
    }

    func state(_ team: String) -> TeamState? { states[team] }

    /// Rate limit: adds the `x-ratelimit-*` headers to the exchange (every answer carries them;
    /// they describe this replica's share) and refuses with 429 when the bucket is empty.
    func admitRequest(_ x: Exchange, team: GatewayConfig.Team) -> Refusal? {
        guard let rpm = team.requestsPerMinute else { return nil }
        guard let bucket = buckets[team.name] else {
            // More live replicas than requests per minute: this one's share is none.
            x.commonHeaders.replace("x-ratelimit-limit-requests", "0")
            x.commonHeaders.replace("x-ratelimit-remaining-requests", "0")
            return Refusal(error: APIError(429, "Team `\(team.name)` is over its limit of \(rpm) requests per minute.", code: "rate_limit_exceeded"),
                           headers: ["retry-after": "60"])
        }
        let o = bucket.take(now: EventLoop.monotonicMillis())
        x.commonHeaders.replace("x-ratelimit-limit-requests", String(bucket.capacity))
        x.commonHeaders.replace("x-ratelimit-remaining-requests", String(o.remaining))
        x.commonHeaders.replace("x-ratelimit-reset-requests", Policy.duration(o.millisUntilFull))
        if o.allowed { return nil }
        let retry = max(1, (o.millisUntilOne + 999) / 1000)
        return Refusal(error: APIError(429, "Team `\(team.name)` is over its limit of \(rpm) requests per minute.", code: "rate_limit_exceeded"),
                       headers: ["retry-after": String(retry)])
    }

    /// A chat stream slot (of this replica's share), held by the exchange until its stream ends
    /// (nil: no limit).
    func admitStream(team: GatewayConfig.Team) -> Result<Lease?, Refusal> {
        guard let max = team.maxConcurrentStreams, let s = states[team.name] else { return .success(nil) }
        if TeamState.acquire(s.openStreams, max: share.of(max)) { return .success(Lease(stream: s)) }
        return .failure(Refusal(error: APIError(429, "Team `\(team.name)` already has \(max) streams open (chat completions and video event streams).", code: "concurrent_streams_exceeded"),
                                headers: ["retry-after": "1"]))
    }

    /// The answer to a video reservation the store refused (nil: reserved).
    static func videoRefusal(team: GatewayConfig.Team, _ r: VideoReservation) -> Refusal? {
        switch r {
        case .reserved: return nil
        case .overDailyQuota:
            return Refusal(error: APIError(429, "Team `\(team.name)` has used its quota of \(team.videosPerDay ?? 0) videos in the last 24 hours.", code: "quota_exceeded"),
                           headers: ["retry-after": "3600"])
        case .overInFlight:
            return Refusal(error: APIError(429, "Team `\(team.name)` already has \(team.maxVideosInFlight ?? 0) videos in progress.", code: "videos_in_flight_exceeded"),
                           headers: ["retry-after": "10"])
        }
    }

    /// OpenAI's duration style: `1s`, `6m0s`, `250ms`.
    static func duration(_ ms: Int) -> String {
        if ms < 1000 { return "\(ms)ms" }
        let s = ms / 1000
        if s < 60 { return "\(s)s" }
        return "\(s / 60)m\(s % 60)s"
    }
}

/// This replica's part of a deployment-wide limit: the live replicas (from the store's
/// heartbeats) sorted by id; the one at `rank` of `live` gets `limit / live`, plus one of the
/// remainder when `rank < limit % live`. The parts add up to the limit exactly.
public struct ReplicaShare: Sendable, Equatable, CustomStringConvertible {
    public let rank: Int
    public let live: Int
    public static let whole = ReplicaShare(rank: 0, live: 1)

    public init(rank: Int, live: Int) {
        self.live = max(1, live)
        self.rank = min(max(0, rank), self.live - 1)
    }

    /// From the live replicas' ids (sorted by the store) and this replica's own.
    public init(live ids: [String], me: String) {
        var all = ids
        if !all.contains(me) { all.append(me) }
        all.sort()
        self.init(rank: all.firstIndex(of: me) ?? 0, live: all.count)
    }

    public func of(_ limit: Int) -> Int {
        limit / live + (rank < limit % live ? 1 : 0)
    }

    public var description: String { "\(rank + 1) of \(live)" }
}

/// One team slot (a chat stream; a video reservation in the store), released exactly once:
/// when its owner lets it go (`Exchange.finish`), or at the latest when it is freed. `keep()`
/// hands it over to a longer life (a reservation the store confirmed into a video row).
final class Lease {
    private enum Kind {
        case stream(TeamState)
        case reservation(() -> Void)
    }
    private var kind: Kind?

    init(stream state: TeamState) { kind = .stream(state) }
    /// `release` gives the reservation back (a store call, on the owner's loop).
    init(reservation release: @escaping () -> Void) { kind = .reservation(release) }

    /// Not to be released: someone else owns the slot now.
    func keep() { kind = nil }

    func release() {
        guard let k = kind else { return }
        kind = nil
        switch k {
        case .stream(let s): TeamState.release(s.openStreams)
        case .reservation(let giveBack): giveBack()
        }
    }

    deinit { release() }
}
