import Testing
@testable import Gateway
import Store

/// Issue 15: the store's settings (SQLite or PostgreSQL, timeouts), and the pure parts of
/// sharing limits among replicas.
@Suite struct StoreConfigTests {
    let digest = String(repeating: "ab", count: 32)
    func yaml(_ store: String, videos: String = "") -> String {
        """
        upstream:
          base_url: "http://127.0.0.1:9"
          api_key: "sk-test"
        \(store)
        \(videos)
        teams:
          - name: web
            tokens_sha256: ["\(digest)"]
        """
    }

    @Test func defaultsAreSQLite() throws {
        let c = try ConfigLoader.load(yaml: yaml(""), environment: [:])
        #expect(c.store.url == nil && c.store.path == "veil.sqlite3" && c.store.label == "veil.sqlite3")
        #expect(c.store.poolSize == 4 && c.store.connectTimeoutMillis == 2_000 && c.store.statementTimeoutMillis == 2_500)
        #expect(c.store.timeoutMillis == 3_000 && c.store.heartbeatMillis == 2_000 && c.store.usageBufferRecords == 100_000)
        #expect(c.videos.inFlightMaxAgeSeconds == 3_600)
    }

    @Test func everyStoreKeyLoads() throws {
        let c = try ConfigLoader.load(yaml: yaml("""
        store:
          url: "postgres://veil:${PGPW}@db:5432/veil?sslmode=require"
          pool_size: 8
          connect_timeout_ms: 1500
          statement_timeout_ms: 900
          timeout_ms: 1000
          heartbeat_ms: 500
          usage_buffer_records: 5000
        """, videos: "videos:\n  in_flight_max_age_s: 7200"), environment: ["PGPW": "s3cret"])
        #expect(c.store.url == "postgres://veil:s3cret@db:5432/veil?sslmode=require")
        #expect(c.store.label == "postgres://veil:***@db:5432/veil?sslmode=require")
        #expect(c.store.poolSize == 8 && c.store.connectTimeoutMillis == 1_500 && c.store.statementTimeoutMillis == 900)
        #expect(c.store.timeoutMillis == 1_000 && c.store.heartbeatMillis == 500 && c.store.usageBufferRecords == 5_000)
        #expect(c.videos.inFlightMaxAgeSeconds == 7_200)
        let p = VeilRuntime.postgresSettings(c.store, url: c.store.url!)
        #expect(p.poolSize == 8 && p.connectTimeoutMillis == 1_500 && p.statementTimeoutMillis == 900)
        #expect(p.callTimeoutMillis == 1_000 && p.usageBufferRecords == 5_000)
    }

    @Test(arguments: [
        ("store:\n  path: \"/x/v.sqlite3\"\n  url: \"postgres://db/veil\"", "store.url", "not both"),
        ("store:\n  url: \"host=db dbname=veil\"", "store.url", "PostgreSQL URI"),
        ("store:\n  url: \"mysql://db/veil\"", "store.url", "PostgreSQL URI"),
        ("store:\n  timeout_ms: 1000\n  statement_timeout_ms: 2000", "store.statement_timeout_ms", "must not exceed"),
        ("store:\n  pool_size: 0", "store.pool_size", "between"),
        ("store:\n  timeout_ms: 10", "store.timeout_ms", "between"),
        ("store:\n  heartbeat_ms: 50", "store.heartbeat_ms", "between"),
        ("store:\n  poolsize: 4", "store.poolsize", "unknown key"),
    ])
    func badStoreSettingsNameTheirKey(_ store: String, _ key: String, _ words: String) {
        #expect {
            _ = try ConfigLoader.load(yaml: yaml(store), environment: [:])
        } throws: { e in
            guard let e = e as? ConfigError else { return false }
            return e.key == key && e.description.contains(words)
        }
    }

    /// `VEIL_STORE_URL` overrides: it chooses PostgreSQL, whatever the file's store.path says.
    @Test func theEnvironmentChoosesPostgres() throws {
        let c = try ConfigLoader.load(yaml: yaml("store:\n  path: \"/var/lib/veil/veil.sqlite3\""),
                                      environment: ["VEIL_STORE_URL": "postgresql://veil@db/veil"])
        #expect(c.store.url == "postgresql://veil@db/veil")
        #expect(c.store.label == "postgresql://veil@db/veil")
        #expect(throws: ConfigError.self) {
            _ = try ConfigLoader.load(yaml: yaml(""), environment: ["VEIL_STORE_URL": "veil.sqlite3"])
        }
    }
}

@Suite struct ReplicaShareTests {
    /// Every replica's part, for every limit and replica count: they add up to the limit, and
    /// differ by at most one.
    @Test(arguments: [1, 2, 3, 5, 8])
    func sharesAddUpToTheLimit(_ live: Int) {
        for limit in [0, 1, 2, 3, 7, 10, 60, 1000, 1001] {
            let parts = (0..<live).map { ReplicaShare(rank: $0, live: live).of(limit) }
            #expect(parts.reduce(0, +) == limit, "limit \(limit) over \(live): \(parts)")
            #expect((parts.max() ?? 0) - (parts.min() ?? 0) <= 1)
        }
    }

    @Test func rankComesFromTheSortedLiveIDs() {
        #expect(ReplicaShare(live: ["b", "a", "c"], me: "b") == ReplicaShare(rank: 1, live: 3))
        // The store's list not yet holding this replica: it counts itself.
        #expect(ReplicaShare(live: ["a"], me: "z") == ReplicaShare(rank: 1, live: 2))
        #expect(ReplicaShare(live: [], me: "z") == .whole)
        #expect(ReplicaShare(rank: 1, live: 2).of(10) == 5 && ReplicaShare(rank: 0, live: 3).of(10) == 4)
        #expect(ReplicaShare(rank: 2, live: 3).of(1) == 0)        // more replicas than the limit: some get none
    }

    /// A share changing keeps the bucket's level instead of handing out a fresh full bucket.
    @Test func aShareChangeCarriesTheBucketsFillOver() {
        let team = GatewayConfig.Team(name: "t", tokens: [], models: nil, requestsPerMinute: 60, maxConcurrentStreams: 4,
                                      maxVideosInFlight: nil, videosPerDay: nil)
        let whole = Policy(teams: [team], previous: nil)
        let b = TokenBucket(capacity: 60, refillPerMillis: 1.0 / 1_000)
        let t: UInt64 = 2_000_000
        for _ in 0..<45 { _ = b.take(now: t) }
        #expect(abs(b.fill(now: t) - 0.25) < 0.001)
        let half = TokenBucket(capacity: 30, refillPerMillis: 0.5 / 1_000, fill: b.fill(now: t), now: t)
        var allowed = 0
        while half.take(now: t).allowed { allowed += 1 }
        #expect(allowed == 7)            // a quarter of 30, not 30
        // A policy rebuilt with a share keeps the stream counters and halves the stream limit.
        let halfPolicy = Policy(teams: [team], previous: whole, share: ReplicaShare(rank: 0, live: 2))
        #expect(halfPolicy.state("t") === whole.state("t"))
        let l1 = halfPolicy.admitStream(team: team), l2 = halfPolicy.admitStream(team: team), l3 = halfPolicy.admitStream(team: team)
        guard case .success = l1, case .success = l2, case .failure = l3 else { Issue.record("2 of 4 streams expected"); return }
    }
}
