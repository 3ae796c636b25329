import Upstream

/// Fetches a caller-supplied `image_url` for a video's `input_reference`, with strict limits:
/// https only (unless `image_fetch.allow_http`), no loopback/private/link-local address (checked
/// on the address actually connected, so DNS rebinding can't dodge it) unless allow-listed, a size
/// cap, a timeout, no redirects, and never the upstream key.
enum ImageFetch {
    static func start(_ x: Exchange, url: String, settings: GatewayConfig.VideoSettings,
                      completion: @escaping (Result<[UInt8], APIError>) -> Void) {
        var r = UpstreamRequest(method: "GET", url: url, headers: [("accept", "image/*")])
        r.refusePrivateAddresses = true
        r.addressAllowList = settings.imageFetch.allowPrivate
        r.allowedSchemes = settings.imageFetch.allowHTTP ? ["http", "https"] : ["https"]
        r.maxResponseBytes = settings.maxImageBytes
        r.connectTimeoutMillis = min(settings.imageFetch.timeoutMillis, 5_000)
        r.timeoutMillis = settings.imageFetch.timeoutMillis
        var body: [UInt8] = []
        var status = 0
        let sink = FetchSink(onHead: { status = $0.status }, onData: { body.append(contentsOf: $0) }, onFinish: { error in
            if let error {
                switch error {
                case .refused(let d): return completion(.failure(APIError(400, "`input_reference` URL refused: \(d)", param: "input_reference", code: "image_url_refused")))
                case .tooLarge: return completion(.failure(APIError(400, "`input_reference` image is larger than \(settings.maxImageBytes) bytes.", param: "input_reference", code: "image_too_large")))
                case .timeout: return completion(.failure(APIError(400, "`input_reference` URL did not answer in time.", param: "input_reference", code: "image_url_timeout")))
                case .cancelled: return completion(.failure(APIError(499, "Cancelled.", code: "cancelled")))
                case .connect(let d), .broken(let d):
                    return completion(.failure(APIError(400, "`input_reference` URL could not be fetched: \(d)", param: "input_reference", code: "image_url_unreachable")))
                }
            }
            guard status == 200 else {
                return completion(.failure(APIError(400, "`input_reference` URL answered HTTP \(status).", param: "input_reference", code: "image_url_unreachable")))
            }
            if let e = VideoValidation.checkImage(body, maxBytes: settings.maxImageBytes) { return completion(.failure(e)) }
            completion(.success(body))
        })
        let t = x.context.upstream.start(r, delegate: sink)
        x.response.onClose = { t.cancel() }
    }
}

/// An upstream delegate made of closures (small, one-off transfers).
final class FetchSink: UpstreamDelegate {
    let onHead: (UpstreamResponseHead) -> Void
    let onData: (UnsafeRawBufferPointer) -> Void
    var onFinish: ((UpstreamError?) -> Void)?
    init(onHead: @escaping (UpstreamResponseHead) -> Void, onData: @escaping (UnsafeRawBufferPointer) -> Void,
         onFinish: @escaping (UpstreamError?) -> Void) {
        self.onHead = onHead; self.onData = onData; self.onFinish = onFinish
    }
    func upstreamDidReceiveHead(_ head: UpstreamResponseHead) { onHead(head) }
    func upstreamDidReceive(_ bytes: UnsafeRawBufferPointer) { onData(bytes) }
    func upstreamDidFinish(_ error: UpstreamError?) {
        let f = onFinish
        onFinish = nil
        f?(error)
    }
}
