import Upstream

/// An upstream call whose answer is small and read whole (JSON APIs: models, videos,
/// characters), capped at `upstream.max_response_bytes`.
final class BufferedCall: UpstreamDelegate {
    typealias Completion = (Result<(head: UpstreamResponseHead, body: [UInt8]), UpstreamError>) -> Void
    private var head: UpstreamResponseHead?
    private var body: [UInt8] = []
    private var completion: Completion?
    private(set) var transfer: UpstreamTransfer?

    private init(completion: @escaping Completion) { self.completion = completion }

    @discardableResult
    static func start(_ ctx: LoopContext, _ request: UpstreamRequest, completion: @escaping Completion) -> BufferedCall {
        var r = request
        let up = ctx.snapshot.config.upstream
        r.connectTimeoutMillis = up.connectTimeoutMillis
        if r.timeoutMillis == UpstreamRequest(method: "GET", url: "").timeoutMillis { r.timeoutMillis = up.requestTimeoutMillis }
        if r.stallTimeoutMillis == 0 { r.stallTimeoutMillis = up.stallTimeoutMillis }
        if r.maxResponseBytes == nil { r.maxResponseBytes = up.maxResponseBytes }
        let call = BufferedCall(completion: completion)
        call.transfer = ctx.upstream.start(r, delegate: call)
        return call
    }

    func cancel() { transfer?.cancel() }

    func upstreamDidReceiveHead(_ head: UpstreamResponseHead) { self.head = head }

    func upstreamDidReceive(_ bytes: UnsafeRawBufferPointer) { body.append(contentsOf: bytes) }

    func upstreamDidFinish(_ error: UpstreamError?) {
        guard let done = completion else { return }
        completion = nil
        transfer = nil
        if let error { return done(.failure(error)) }
        guard let head else { return done(.failure(.broken("no response head"))) }
        done(.success((head, body)))
    }
}

extension APIError {
    /// How an upstream failure is told to the caller: 502 unreachable or broken, 504 too slow.
    static func from(_ error: UpstreamError) -> APIError {
        switch error {
        case .connect(let d): return .badGateway(d)
        case .timeout(let d): return .gatewayTimeout(d)
        case .tooLarge: return APIError(502, "The upstream's answer was larger than Veil accepts.", code: "upstream_response_too_large")
        case .refused(let d): return APIError(400, "The address was refused: \(d)", code: "address_refused")
        case .broken(let d): return APIError(502, "The upstream's answer was cut or malformed: \(d)", code: "upstream_broken")
        case .cancelled: return APIError(499, "Cancelled.", code: "cancelled")
        }
    }
}
