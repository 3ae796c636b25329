import Glibc
import Testing
@testable import Upstream

/// Opt-in: needs an HTTPS server with HTTP/2 serving `/big.bin` (2,000,000 bytes) and `/small.txt`.
/// `VEIL_H2_URL=https://localhost:18443 VEIL_H2_CA=/path/cert.pem swift test --filter HTTP2`
private let h2URL = getenv("VEIL_H2_URL").map { String(cString: $0) }
private let h2CA = getenv("VEIL_H2_CA").map { String(cString: $0) }

@Suite(.serialized, .enabled(if: h2URL != nil)) struct HTTP2Tests {
    func harness() -> LoopHarness {
        var s = UpstreamClientSettings()
        s.caInfoPath = h2CA
        return LoopHarness(settings: s)
    }

    @Test func http2HeadVersionAndBody() {
        let h = harness()
        defer { h.shutdown() }
        let rec = Recorder()
        h.start(UpstreamRequest(method: "GET", url: h2URL! + "/big.bin"), rec)
        #expect(rec.waitFinished())
        #expect(rec.finishes.first! == nil)
        #expect(rec.snapshot.head?.httpVersion == 2)
        #expect(rec.snapshot.head?.status == 200)
        #expect(rec.snapshot.body.count == 2_000_000)
    }

    @Test func http2PauseResume() {
        let h = harness()
        defer { h.shutdown() }
        let rec = Recorder()
        rec.onData = { r, total in if total >= 100_000 { r.transfer?.pause() } }
        h.start(UpstreamRequest(method: "GET", url: h2URL! + "/big.bin"), rec)
        usleep(800_000)
        let a = rec.snapshot.body.count
        usleep(400_000)
        let b = rec.snapshot.body.count
        #expect(a == b, "data arrived while paused")
        #expect(a < 2_000_000)
        rec.onData = nil
        h.onLoop { rec.transfer?.resume() }
        #expect(rec.waitFinished())
        #expect(rec.finishes.first! == nil)
        #expect(rec.snapshot.body.count == 2_000_000)
    }

    @Test func http2ConcurrentAndCancel() {
        let h = harness()
        defer { h.shutdown() }
        let recs = (0..<10).map { _ in Recorder() }
        let victim = Recorder()
        victim.onData = { r, _ in r.transfer?.cancel() }
        h.onLoop {
            for r in recs { r.transfer = h.client.start(UpstreamRequest(method: "GET", url: h2URL! + "/small.txt"), delegate: r) }
            victim.transfer = h.client.start(UpstreamRequest(method: "GET", url: h2URL! + "/big.bin"), delegate: victim)
            return ()
        }
        for r in recs {
            #expect(r.waitFinished())
            #expect(r.finishes.first! == nil)
            #expect(r.bodyText == "hi\n")
            #expect(r.snapshot.head?.httpVersion == 2)
        }
        #expect(victim.waitFinished())
        #expect(victim.finishes == [.cancelled])
        // The connection survives a cancelled stream: one more request still works.
        let after = Recorder()
        h.start(UpstreamRequest(method: "GET", url: h2URL! + "/small.txt"), after)
        #expect(after.waitFinished())
        #expect(after.finishes.first! == nil)
    }
}
