import HTTPWire
import Store
import Translation
import Upstream

/// `GET /v1/videos/{id}/content[?variant=video|watermarked]`: streams the file from the signed
/// URL to the caller as it arrives (never whole in memory), forwarding `Range`. A slow caller
/// pauses the transfer. The upstream key is never sent to the file host.
final class VideoContent: UpstreamDelegate {
    let x: Exchange
    var transfer: UpstreamTransfer?
    var headSent = false

    init(_ x: Exchange) { self.x = x }

    static let forwardedFields: Set<String> = ["content-type", "content-length", "content-range", "accept-ranges", "etag", "last-modified"]

    static func start(_ x: Exchange, _ g: Gateway, id: String) {
        guard let record = VideoRoutes.ownedVideo(x, g, id: id) else { return }
        let variant = QueryString.parse(x.request.head.query)["variant"] ?? "video"
        let url: String?
        switch variant {
        case "video": url = record.videoURL
        case "watermarked": url = record.watermarkedURL
        case "thumbnail", "spritesheet":
            return x.fail(APIError(404, "This upstream produces no \(variant); only `video` and `watermarked` are available.", param: "variant", code: "variant_unavailable"))
        default:
            return x.fail(APIError(400, "`variant` must be `video` or `watermarked`.", param: "variant", code: "invalid_variant"))
        }
        guard record.status == "completed" else {
            return x.fail(APIError(400, "Video \(id) is \(record.status); its content is available once it is completed.", code: "video_not_ready"))
        }
        guard let u = url, !u.isEmpty else {
            return x.fail(APIError(404, "Video \(id) has no \(variant == "watermarked" ? "watermarked " : "")file.", param: "variant", code: "variant_unavailable"))
        }
        var headers: [(name: String, value: String)] = [("accept", "*/*")]
        if let range = x.request.headers["range"] {
            guard isByteRange(range) else {
                return x.fail(APIError(416, "`Range` must be `bytes=start-end`, `bytes=start-` or `bytes=-suffix`.", code: "invalid_range"), headers: ["accept-ranges": "bytes"])
            }
            headers.append(("range", range))
        }
        let cfg = x.snapshot.config.upstream
        var r = UpstreamRequest(method: "GET", url: u, headers: headers)
        r.allowedSchemes = ["http", "https"]
        r.connectTimeoutMillis = cfg.connectTimeoutMillis
        r.timeoutMillis = cfg.requestTimeoutMillis
        r.stallTimeoutMillis = cfg.stallTimeoutMillis
        r.receiveBufferBytes = 64 * 1024      // bulk: fewer reads and callbacks per megabyte
        let p = VideoContent(x)
        x.model = record.model
        x.response.onClose = { [weak p] in p?.transfer?.cancel() }
        p.transfer = x.context.upstream.start(r, delegate: p)
    }

    /// A single byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`). Several ranges are refused:
    /// multipart/byteranges is not worth its complexity for video players.
    static func isByteRange(_ v: String) -> Bool {
        guard v.hasPrefix("bytes="), v.utf8.count <= 64 else { return false }
        let spec = v.dropFirst(6)
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return false }
        let digits: (Substring) -> Bool = { $0.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } && $0.utf8.count <= 18 }
        guard digits(parts[0]), digits(parts[1]), !(parts[0].isEmpty && parts[1].isEmpty) else { return false }
        if let a = Int(parts[0]), let b = Int(parts[1]), a > b { return false }
        return true
    }

    func upstreamDidReceiveHead(_ head: UpstreamResponseHead) {
        x.upstreamLatencyMillis = x.elapsedMillis
        guard head.status == 200 || head.status == 206 || head.status == 416 else {
            transfer?.cancel()
            transfer = nil
            let expired = head.status == 403 || head.status == 404 || head.status == 410
            x.fail(APIError(502, expired ? "The video file's signed URL was refused by its host (HTTP \(head.status)); it may have expired."
                                          : "The video file's host answered HTTP \(head.status).", code: "file_unavailable"))
            return
        }
        var h = HTTPHeaders()
        for (name, value) in head.headers where VideoContent.forwardedFields.contains(name.lowercased()) {
            h.add(name.lowercased(), value)
        }
        if !h.contains("accept-ranges") { h.add("accept-ranges", "bytes") }
        if head.status == 416 {
            // No body worth relaying; keep the host's Content-Range (`bytes */N`).
            transfer?.cancel()
            transfer = nil
            var e = HTTPHeaders()
            if let cr = h["content-range"] { e.add("content-range", cr) }
            e.add("accept-ranges", "bytes")
            x.fail(APIError(416, "The requested range is outside the file.", code: "range_not_satisfiable"), headers: e)
            return
        }
        headSent = true
        x.sendHead(head.status, headers: h)
    }

    func upstreamDidReceive(_ bytes: UnsafeRawBufferPointer) {
        guard headSent else { return }
        x.write(bytes)
        if !x.response.isWritable {
            transfer?.pause()
            x.response.onWritable = { [weak self] in self?.transfer?.resume() }
        }
    }

    func upstreamDidFinish(_ error: UpstreamError?) {
        transfer = nil
        guard headSent else {
            if let error, error != .cancelled { x.fail(APIError.from(error)) }
            return
        }
        if let error {
            // Mid-body: the client must see a truncated message, not a complete one.
            x.abandon(error == .cancelled ? "client_closed" : "file_transfer_cut")
        } else {
            x.end()
        }
    }
}
