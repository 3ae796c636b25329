import Foundation
import Gateway
import Glibc
import Sandbox
import Testing

/// The five failures an attacker found on the landed build before the connection became a state
/// machine, each against the real binary (a child process: "the process never dies" is checked,
/// not assumed). Run them against another build with `VEIL_TEST_BINARY=/path/to/veil`.
@Suite(.serialized) struct AttackTests {
    static let token = "tok-attack-\(UUID().uuidString)"

    static func veil(extra: String = "", workers: Int = 2) throws -> (VeilProcess, Sandbox) {
        let key = "sk-attackTEST-\(UUID().uuidString.prefix(8))-KEY"
        var sc = SandboxConfig(apiKey: key)
        sc.sseChunkDelayMillis = 20
        let sandbox = Sandbox(config: sc)
        _ = try sandbox.start()
        let store = "/tmp/veil-attack-\(UUID().uuidString).sqlite3"
        var text = VeilProcess.config(upstream: sandbox.baseURL, key: key, store: store, tokenDigest: sha256Hex(token), extra: extra)
        text = text.replacingOccurrences(of: "workers: 2", with: "workers: \(workers)")
        return (try VeilProcess(configText: text, storePath: store), sandbox)
    }

    /// `VmRSS` of a process, KiB.
    static func rssKiB(_ pid: pid_t) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return -1 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
    }

    /// utime + stime of a process, in clock ticks.
    static func cpuTicks(_ pid: pid_t) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = s.lastIndex(of: ")") else { return -1 }
        let fields = s[s.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3); utime and stime are fields 14 and 15.
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }

    static func healthz(_ port: UInt16) -> Int {
        (try? RawHTTPClient.request(port: port, method: "GET", path: "/healthz", timeoutMillis: 3_000).status) ?? 0
    }

    /// Reads from `fd` until `count` occurrences of `needle` were seen, EOF, or the deadline.
    static func countResponses(_ fd: Int32, needle: [UInt8], count: Int, seconds: Double) -> Int {
        var seen = 0
        var carry: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        let deadline = Date().addingTimeInterval(seconds)
        while seen < count && Date() < deadline {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { if n < 0 && (errno == EAGAIN || errno == EINTR) { continue }; break }
            var data = carry + buf[0..<n]
            var i = 0
            while i + needle.count <= data.count {
                if data[i] == needle[0] && Array(data[i..<(i + needle.count)]) == needle { seen += 1; i += needle.count } else { i += 1 }
            }
            data = Array(data.suffix(needle.count - 1))
            carry = data
        }
        return seen
    }

    // 1. A burst of pipelined requests Veil answers itself (no upstream) used to dispatch each
    //    next request from inside the previous answer's call chain: the stack overflowed.
    @Test(.timeLimit(.minutes(2))) func oneHundredThousandPipelinedInstantRequestsLeaveVeilAlive() throws {
        let (veil, sandbox) = try Self.veil()
        defer { veil.kill(); sandbox.stop() }
        let n = 100_000
        let fd = try RawHTTPClient.connect(port: veil.port, timeoutMillis: 30_000)
        defer { close(fd) }
        let healthz = Array("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        let noToken = Array("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        let counted = Counter()
        let reader = Thread { counted.set(AttackTests.countResponses(fd, needle: Array("HTTP/1.1 ".utf8), count: n, seconds: 90)) }
        reader.start()
        var burst: [UInt8] = []
        for i in 0..<n { burst += i % 2 == 0 ? healthz : noToken }    // instant 200s and instant 401s
        RawHTTPClient.sendAll(fd, burst)
        while !reader.isFinished { usleep(20_000) }
        #expect(counted.value == n, "answered \(counted.value) of \(n)")
        #expect(veil.process.isRunning, "Veil died under the burst: \(veil.stderr.suffix(2000))")
        #expect(Self.healthz(veil.port) == 200)
    }

    // 2. A client that pipelines and never reads made Veil queue answer after answer (tens of
    //    MiB within seconds). Now reading and dispatching stop at the write high-water mark.
    @Test(.timeLimit(.minutes(1))) func aPipeliningClientThatNeverReadsCostsBoundedMemory() throws {
        let (veil, sandbox) = try Self.veil()
        defer { veil.kill(); sandbox.stop() }
        _ = Self.healthz(veil.port)
        let before = Self.rssKiB(veil.pid)
        let fd = try RawHTTPClient.connect(port: veil.port, timeoutMillis: 1_000)
        defer { close(fd) }
        var small: Int32 = 64 * 1024                    // a small receive window: the kernel holds little for us
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, socklen_t(MemoryLayout<Int32>.size))
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let chunk = Array(String(repeating: "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", count: 2_000).utf8)
        var sent = 0
        var stalledSince: Date?
        let deadline = Date().addingTimeInterval(8)
        while Date() < deadline {
            let k = chunk.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if k > 0 { sent += k; stalledSince = nil; continue }
            if stalledSince == nil { stalledSince = Date() }
            if Date().timeIntervalSince(stalledSince!) > 1.5 { break }   // Veil stopped reading
            usleep(10_000)
        }
        let after = Self.rssKiB(veil.pid)
        #expect(stalledSince != nil, "Veil kept reading \(sent) bytes from a client that reads nothing")
        // What Veil took is its read-ahead plus what the two kernels buffer (a few MiB each on
        // loopback); a reader without a bound took hundreds of MB here.
        #expect(sent < 32 << 20, "Veil accepted \(sent) bytes of requests it could not answer")
        #expect(after - before < 16 * 1024, "RSS grew by \(after - before) KiB (sent \(sent) bytes of requests)")
        // Others are served meanwhile.
        #expect(Self.healthz(veil.port) == 200)
        #expect(veil.process.isRunning)
    }

    // 3. A token-less 20 MiB POST: 401 from the head, no `100 Continue`, no body buffered.
    @Test(.timeLimit(.minutes(1))) func aTokenlessHugeBodyIsRefusedFromItsHead() throws {
        let (veil, sandbox) = try Self.veil()
        defer { veil.kill(); sandbox.stop() }
        let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20971520\r\n"

        // With Expect: the client waits, and gets the refusal instead of an invitation.
        let a = try RawHTTPClient.exchange(port: veil.port, bytes: Array((head + "Expect: 100-continue\r\n\r\n").utf8), quietMillis: 3_000)
        #expect(a.statuses == [401])
        #expect(a.responses.first?.header("connection")?.lowercased() == "close")

        // Without: the answer comes before the body is sent; the body that follows is thrown away
        // as it arrives and the client still reads its 401 (no reset).
        let fd = try RawHTTPClient.connect(port: veil.port, timeoutMillis: 10_000)
        defer { close(fd) }
        RawHTTPClient.sendAll(fd, Array((head + "\r\n").utf8))
        var reader = RawHTTPClient.Reader(fd: fd)
        let r = try reader.readResponse(isHead: false)
        #expect(r.status == 401)
        RawHTTPClient.sendAll(fd, [UInt8](repeating: 0x41, count: 20_971_520))
        // Access lines are buffered per loop (log.flush_ms): wait for both.
        #expect(waitUntil(5) { veil.stdout.split(separator: "\n").filter { $0.contains("\"status\":401") }.count == 2 })
        let lines = veil.stdout.split(separator: "\n").filter { $0.contains("/v1/chat/completions") }
        #expect(lines.count == 2 && lines.allSatisfy { $0.contains("\"bytes_in\":0") }, "\(lines)")
        #expect(sandbox.requests().isEmpty)
    }

    // 4. Oversized headers and bodies: a client that sends its whole request, then reads (as
    //    HTTP clients do), gets the 431/413 instead of a reset in the middle of sending (Veil
    //    lingers, discarding what the client still sends, before it closes).
    @Test(.timeLimit(.minutes(1))) func oversizedHeadersAndBodiesGetTheirAnswerNotAReset() throws {
        let (veil, sandbox) = try Self.veil()
        defer { veil.kill(); sandbox.stop() }
        func sendThenRead(_ bytes: [UInt8]) throws -> (sent: Int, status: Int) {
            let fd = try RawHTTPClient.connect(port: veil.port, timeoutMillis: 10_000)
            defer { close(fd) }
            let sent = RawHTTPClient.sendAll(fd, bytes)
            var reader = RawHTTPClient.Reader(fd: fd)
            return (sent, (try? reader.readResponse(isHead: false).status) ?? 0)
        }
        let big = "GET /healthz HTTP/1.1\r\nHost: x\r\n" + String(repeating: "X-Pad: \(String(repeating: "a", count: 990))\r\n", count: 200) + "\r\n"
        let h = try sendThenRead(Array(big.utf8))
        #expect(h.sent == big.utf8.count, "the connection was reset after \(h.sent) of \(big.utf8.count) bytes")
        #expect(h.status == 431)

        let body = [UInt8](repeating: 0x20, count: 40_000_000)
        let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(Self.token)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
        let b = try sendThenRead(Array(head.utf8) + body)
        #expect(b.sent == head.utf8.count + body.count, "the connection was reset after \(b.sent) bytes")
        #expect(b.status == 413)
        #expect(veil.process.isRunning)
    }

    // 5. Out of descriptors: the listener stays readable and accept fails; the loops must not spin.
    @Test(.timeLimit(.minutes(1))) func runningOutOfDescriptorsDoesNotSpinAndServiceResumes() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/prlimit") else {
            Issue.record("prlimit (util-linux) is needed to lower a running process's descriptor limit"); return
        }
        let (veil, sandbox) = try Self.veil()
        defer { veil.kill(); sandbox.stop() }
        #expect(Self.healthz(veil.port) == 200)
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(veil.pid)/fd").count) ?? 0
        #expect(open > 0)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        p.arguments = ["--pid", "\(veil.pid)", "--nofile=\(open + 8):\(open + 8)"]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)

        // Far more connections than descriptors left; each sends a request head it never finishes.
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        for _ in 0..<40 {
            guard let fd = try? RawHTTPClient.connect(port: veil.port, timeoutMillis: 2_000) else { continue }
            RawHTTPClient.sendAll(fd, Array("GET /healthz HTTP/1.1\r\n".utf8))
            fds.append(fd)
        }
        usleep(300_000)
        let t0 = Self.cpuTicks(veil.pid)
        usleep(2_000_000)
        let used = Self.cpuTicks(veil.pid) - t0
        let hz = sysconf(Int32(_SC_CLK_TCK))
        // Spinning burns ~2 s of CPU here (two loops); back-off costs almost nothing.
        #expect(used * 10 < hz * 4, "Veil used \(used) ticks (\(hz)/s) in 2 s while out of descriptors")
        // Clients past the limit were told 503 rather than left hanging.
        var refused = 0
        for fd in fds {
            var tv = timeval(tv_sec: 0, tv_usec: 50_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            var buf = [UInt8](repeating: 0, count: 512)
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 && String(decoding: buf[0..<n], as: UTF8.self).hasPrefix("HTTP/1.1 503") { refused += 1 }
        }
        #expect(refused > 0, "no client past the limit got a 503")
        for fd in fds { close(fd) }
        fds = []
        var seen: [String] = []
        let resumed = waitUntil(10) {
            do {
                let r = try RawHTTPClient.request(port: veil.port, method: "GET", path: "/healthz", timeoutMillis: 2_000)
                seen.append("\(r.status)")
                return r.status == 200
            } catch {
                seen.append("\(error)")
                return false
            }
        }
        // On failure, say why: what the probes got and what holds Veil's descriptors.
        let fdDir = "/proc/\(veil.pid)/fd"
        let held = ((try? FileManager.default.contentsOfDirectory(atPath: fdDir)) ?? []).compactMap {
            try? FileManager.default.destinationOfSymbolicLink(atPath: fdDir + "/" + $0)
        }
        #expect(resumed, "service did not resume: probes got \(seen.suffix(4)); Veil holds \(held.count) of \(open + 8) descriptors: \(held.sorted())")
        #expect(veil.process.isRunning)
    }
}

/// A value set by one thread and read by another after it finished.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var v = 0
    func set(_ x: Int) { lock.lock(); v = x; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return v }
}
