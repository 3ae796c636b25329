import Foundation
import Glibc
import Testing

/// A slow reader must not make Veil buffer the upstream's bytes: the transfer is paused when the
/// client's queue passes the high-water mark and resumed as it drains.
@Suite struct BackPressureTests {
    @Test func aClientThatDoesNotReadKeepsVeilsQueueBounded() throws {
        let size = 24 * 1024 * 1024
        let h = try VeilHarness(sandboxTweak: { $0.videoFileBytes = size; $0.videoPollsToComplete = 1 })
        defer { h.stop() }
        let m = { () -> (body: [UInt8], contentType: String) in
            var b = MultipartBuilder()
            b.field("prompt", "big file")
            return (b.finished(), b.contentType)
        }()
        _ = try RawHTTPClient.request(port: h.port, method: "POST", path: "/v1/videos", headers: h.auth() + [("Content-Type", m.contentType)], body: m.body)
        var status = ""
        for _ in 0..<20 where status != "completed" {
            status = jsonObject(try h.get("/v1/videos/video_4000"))["status"] as? String ?? ""
        }
        #expect(status == "completed")

        let fd = try RawHTTPClient.connect(port: h.port, timeoutMillis: 10_000)
        defer { close(fd) }
        let req = "GET /v1/videos/video_4000/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(VeilHarness.teamTokens["web"]!)\r\n\r\n"
        RawHTTPClient.sendAll(fd, Array(req.utf8))
        // Don't read for a while: the kernel buffers fill, then Veil must stop pulling from upstream.
        usleep(1_500_000)
        let highWater = 256 * 1024
        let peakWhileStalled = h.runtime.server.peakQueuedBytes.current
        #expect(peakWhileStalled < highWater + 512 * 1024, "Veil queued \(peakWhileStalled) bytes for a client that does not read")

        // Now read everything: the transfer resumes and the file arrives whole and intact.
        var received: [UInt8] = []
        received.reserveCapacity(size + 4096)
        var buf = [UInt8](repeating: 0, count: 256 * 1024)
        let deadline = Date().addingTimeInterval(30)
        var headerEnd: Int?
        while Date() < deadline {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            received.append(contentsOf: buf[0..<n])
            if headerEnd == nil, let r = find(received, Array("\r\n\r\n".utf8)) { headerEnd = r + 4 }
            if let he = headerEnd, received.count - he >= size { break }
        }
        guard let he = headerEnd else { Issue.record("no response head"); return }
        let head = String(decoding: received[0..<he], as: UTF8.self)
        #expect(head.hasPrefix("HTTP/1.1 200"))
        #expect(head.lowercased().contains("content-length: \(size)"))
        #expect(Array(received[he...].prefix(size)) == h.sandbox.expectedFileBytes(videoID: "4000", variant: "clean"))
    }

    private func find(_ hay: [UInt8], _ needle: [UInt8]) -> Int? {
        guard hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] && Array(hay[i..<(i + needle.count)]) == needle { return i }
        return nil
    }
}
