import Glibc
import Reactor
import Upstream
import UpstreamHTTP

// upstream-bench: drives Veil's upstream client (`HTTPUpstreamClient`) on one event loop against bench/upstream.c, the way the gateway's chat
// path does (POST /v1/chat/completions with the shared Authorization block, a JSON body), and
// prints requests/s. Used by bench/upstream-client (requests/s, callgrind, DHAT).
//
//   upstream-bench [--client native] --url http://127.0.0.1:P/v1/chat/completions
//                  [--requests N] [--concurrency C] [--key K] [--events E (SSE, E events each)]
//                  [--interval MS (between events)] [--ca FILE]

/// Loop-thread only (`@unchecked Sendable` to be handed to the loop once).
final class Driver: UpstreamDelegate, @unchecked Sendable {
    let client: UpstreamClientProtocol
    let loop: EventLoop
    let template: UpstreamRequest
    let total: Int
    var started = 0
    var finished = 0
    var failed = 0
    var bytes = 0
    var firstError: String?
    var status = 0

    init(client: UpstreamClientProtocol, loop: EventLoop, template: UpstreamRequest, total: Int) {
        self.client = client; self.loop = loop; self.template = template; self.total = total
    }

    func startOne() {
        guard started < total else { return }
        started += 1
        _ = client.start(template, delegate: self)
    }

    func upstreamDidReceiveHead(_ head: UpstreamResponseHead) { status = head.status }
    func upstreamDidReceive(_ b: UnsafeRawBufferPointer) { bytes += b.count }
    func upstreamDidFinish(_ error: UpstreamError?) {
        finished += 1
        if let error {
            failed += 1
            if firstError == nil { firstError = "\(error)" }
        } else if status != 200 {
            failed += 1
            if firstError == nil { firstError = "status \(status)" }
        }
        if finished == total { loop.stop(); return }
        startOne()
    }
}

@main
struct UpstreamBench {
    static func main() {
        var kind = "native", url = "", requests = 10_000, concurrency = 32, key = "sk-bench-upstream-key"
        var stream = false, ca: String?, events = 20, interval = 0
        var args = CommandLine.arguments.dropFirst()
        while let a = args.popFirst() {
            switch a {
            case "--client": kind = args.popFirst() ?? kind
            case "--url": url = args.popFirst() ?? url
            case "--requests": requests = Int(args.popFirst() ?? "") ?? requests
            case "--concurrency": concurrency = Int(args.popFirst() ?? "") ?? concurrency
            case "--key": key = args.popFirst() ?? key
            case "--stream": stream = true
            case "--ca": ca = args.popFirst()
            case "--events": events = Int(args.popFirst() ?? "") ?? events; stream = true
            case "--interval": interval = Int(args.popFirst() ?? "") ?? interval
            default: print("unknown argument \(a)"); exit(2)
            }
        }
        guard !url.isEmpty else { print("--url is required"); exit(2) }
        let loop = EventLoop()
        guard kind == "native" else {
            print("--client \(kind): only Veil's own client is left (libcurl was removed; its figures are in BENCHMARKS.md)")
            exit(2)
        }
        var s = HTTPUpstreamSettings()
        s.tls.caFile = ca
        if getenv("VEIL_BENCH_TLS_KEEP_BUFFERS") != nil { s.tls.releaseBuffers = false }
        let client: UpstreamClientProtocol = HTTPUpstreamClient(loop: loop, settings: s)
        let shared = UpstreamHeaderBlock(["Authorization": "Bearer \(key)", "Accept-Encoding": "identity"])
        let body = stream
            ? #"{"model":"bench-model","stream":true,"bench_events":"# + String(events) + #","bench_interval_ms":"# + String(interval) + #","messages":[{"role":"user","content":"hi"}]}"#
            : #"{"model":"bench-model","messages":[{"role":"user","content":"Say something of about a kilobyte."}]}"#
        var req = UpstreamRequest(method: "POST", url: url, headers: ["Content-Type": "application/json"], body: Array(body.utf8))
        req.sharedHeaders = shared
        req.timeoutMillis = 600_000
        req.connectTimeoutMillis = 120_000       // under valgrind a TLS handshake takes ~1 s
        let driver = Driver(client: client, loop: loop, template: req, total: requests)
        let first = min(concurrency, requests)
        loop.execute { for _ in 0..<first { driver.startOne() } }
        let t0 = EventLoop.monotonicMillis()
        loop.run()
        let ms = max(1, EventLoop.monotonicMillis() - t0)
        let rps = Double(requests) * 1000 / Double(ms)
        var extra = ""
        if let n = client as? HTTPUpstreamClient {
            extra = " connections=\(n.connectionsOpened) tls_handshakes=\(n.tlsHandshakes) tls_resumed=\(n.tlsResumptions) h2_connections=\(n.http2Connections)"
        }
        print("client=\(kind) requests=\(requests) concurrency=\(concurrency) ms=\(ms) rps=\(Int(rps)) failed=\(driver.failed) bytes=\(driver.bytes)\(extra)"
              + (driver.firstError.map { " first_error=\($0)" } ?? ""))
        exit(driver.failed == 0 ? 0 : 1)
    }
}
