import Foundation
import Glibc
import PostgresTestSupport
import Store
import Testing

/// Issue 15's commands against a real PostgreSQL: `veil migrate`, `veil check-config` with
/// store.url, `veil store copy`, `veil usage` reading PostgreSQL.
@Suite struct StoreCLITests {
    static func temp(_ name: String) -> String { "/tmp/veil-storecli-\(UUID().uuidString)-\(name)" }
    static func write(_ text: String) throws -> String {
        let p = temp("veil.yaml")
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }
    static func config(url: String) -> String {
        """
        listen: "127.0.0.1:8080"
        upstream:
          api_key: "sk-x"
        store:
          url: "\(url)"
          connect_timeout_ms: 500
        teams:
          - name: web
            tokens_sha256: ["\(String(repeating: "ab", count: 32))"]
        """
    }

    @Test func checkConfigConnectsAndMigrateBringsTheSchemaUpToDate() throws {
        let url = try PostgresCluster.shared().createDatabase()
        let cfg = try Self.write(Self.config(url: url))
        let (rc1, out1) = try VeilProcess.run(["check-config", "--config", cfg])
        #expect(rc1 == 0 && out1.contains("schema at version 0, this build needs \(PostgresSchema.version)") && out1.contains("veil migrate"), "\(out1)")
        let (rc2, out2) = try VeilProcess.run(["migrate", "--config", cfg])
        #expect(rc2 == 0 && out2.contains("schema at version \(PostgresSchema.version)"), "\(out2)")
        let (rc3, out3) = try VeilProcess.run(["check-config", "--config", cfg])
        #expect(rc3 == 0 && out3.contains("schema current"), "\(out3)")
        // Unreachable: check-config fails (serve would not start), naming the store without its password.
        let dead = "postgres://veil:pw-never-shown@127.0.0.1:\(PostgresCluster.freePort())/veil"
        let (rc4, out4) = try VeilProcess.run(["check-config", "--config", try Self.write(Self.config(url: dead))])
        #expect(rc4 == 2 && out4.contains("store.url") && out4.contains("***") && !out4.contains("pw-never-shown"), "\(out4)")
        let (rc5, out5) = try VeilProcess.run(["serve", "--config", try Self.write(Self.config(url: dead).replacingOccurrences(of: "8080", with: "0"))])
        #expect(rc5 == 2 && out5.contains("cannot open the store") && !out5.contains("pw-never-shown"), "\(out5)")
    }

    @Test func storeCopyMovesAOneBoxDeploymentIntoPostgres() throws {
        let path = Self.temp("one-box.sqlite3")
        defer { for s in ["", "-wal", "-shm"] { unlink(path + s) } }
        do {
            let s = try SQLiteStore(path: path)
            try s.insertVideo(VideoRecord(id: "video_1", upstreamID: "1", team: "web", model: "sora-2", prompt: "tab\there\nand a \\ backslash",
                                          size: "720x1280", seconds: "4", status: "completed", progress: 100, createdAt: 1_700_000_000,
                                          completedAt: 1_700_000_100, videoURL: "https://cdn/1.mp4"))
            try s.insertVideo(VideoRecord(id: "video_2", upstreamID: "2", team: "web", model: "sora-2", prompt: "gone", createdAt: 1_700_000_001))
            #expect(try s.deleteVideo(id: "video_2", team: "web"))
            try s.insertCharacter(CharacterRecord(id: "char_1", upstreamID: "1", team: "web", name: "Émile", description: "d",
                                                  videoID: "video_1", start: 0.5, end: 3.25, status: "ready", createdAt: 1_700_000_200))
            for i in 0..<2_500 {
                try s.recordUsage(UsageRecord(time: 1_700_000_000 + i, team: i % 2 == 0 ? "web" : "mobile", endpoint: "GET /v1/models",
                                              status: 200, requestID: "req_\(i)"))
            }
            // A video whose end is waiting in the webhook outbox (issue 16): the outbox moves too.
            let pending = VideoRecord(id: "video_3", upstreamID: "3", team: "web", model: "sora-2", prompt: "p", createdAt: 1_700_000_002)
            try s.insertVideo(pending)
            var done = pending
            done.status = "completed"
            #expect(try s.recordVideoState(done, event: WebhookDelivery(id: "evt_copied", team: "web", type: "video.completed",
                                                                         videoID: "video_3", payload: "{}", createdAt: 1_700_000_003)))
            s.close()
        }
        let url = try PostgresCluster.shared().createDatabase()
        let (rc, out) = try VeilProcess.run(["store", "copy", "--from", path, "--to", url])
        #expect(rc == 0 && out.contains("done: 3 video(s), 1 character(s), 2500 usage record(s), 1 webhook event(s)"), "\(out)")

        let pg = try PostgresStore(settings: PostgresSettings(url: url))
        defer { pg.close() }
        let v = try pg.video(id: "video_1", team: "web")
        #expect(v?.prompt == "tab\there\nand a \\ backslash" && v?.completedAt == 1_700_000_100 && v?.videoURL == "https://cdn/1.mp4")
        #expect(try pg.video(id: "video_2", team: "web") == nil, "deleted stays deleted")
        #expect(try pg.countVideos(team: "web", since: 0) == 3, "…and still counts for the quota")
        #expect(try pg.webhookDeliveries(status: .pending, limit: 10).map(\.id) == ["evt_copied"])
        #expect(try pg.characterByName("émile")?.end == 3.25)
        #expect(try pg.usageSummary(team: nil, since: 0).map(\.requests) == [1_250, 1_250])

        // `veil usage` reads it there.
        let (urc, uout) = try VeilProcess.run(["usage", "--store", url, "--since", "1000w"])
        #expect(urc == 0 && uout.contains("(all)") && uout.contains("2500"), "\(uout)")

        // A second copy into the same database is refused, leaving it as it is.
        let (rc2, out2) = try VeilProcess.run(["store", "copy", "--from", path, "--to", url])
        #expect(rc2 == 2 && out2.contains("already holds Veil data"), "\(out2)")
        #expect(try pg.usageSummary(team: nil, since: 0).map(\.requests) == [1_250, 1_250])
    }
}
