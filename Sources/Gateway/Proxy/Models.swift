import HTTPWire
import Translation
import Upstream

/// `GET /v1/models`: the upstream's list, checked and redacted.
enum Models {
    static func list(_ x: Exchange, _ g: Gateway) {
        let r = HeaderPolicy.upstreamRequest(x.snapshot, requestID: x.requestID, "GET", x.snapshot.upstreamBase + "/v1/models",
                                             forwarding: x.request.headers)
        UpstreamEngine.proxy(x, ModelsHooks(request: r, key: x.snapshot.apiKeyBytes))
    }
}

struct ModelsHooks: UpstreamHooks {
    let request: UpstreamRequest
    let key: [UInt8]
    private var status = 0
    private var headers: [(name: String, value: String)] = []

    init(request: UpstreamRequest, key: [UInt8]) { self.request = request; self.key = key }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        status = head.status
        headers = head.headers
        return .buffer(limit: nil)
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<Never> {
        var unused: Usage?
        if let e = ChatHooks.refusal(status: status, raw: answer.body, key: key, usage: &unused) { return .fail(e) }
        return .json(status: status, body: answer.body, headers: HeaderPolicy.callerHeaders(from: headers))
    }
}
