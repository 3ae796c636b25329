import HTTPWire
import Translation
import Upstream

/// `GET /v1/models` and `GET /v1/models/{id}`: the upstream's list as OpenAI model objects only
/// (`id`, `object`, `created`, `owned_by`), vendor names mapped back (`upstream.model_suffixes`),
/// filtered by the team's allow-list (`ModelCatalog`). A model the team can't see and an unknown
/// one get the same 404, so the allow-list reveals nothing.
enum Models {
    static func list(_ x: Exchange, _ g: Gateway) {
        UpstreamEngine.proxy(x, ModelsHooks(x, id: nil))
    }

    static func retrieve(_ x: Exchange, _ g: Gateway) {
        guard let id = x.params.first.map(String.init), id.utf8.count <= ModelCatalog.maxIDBytes else {
            return x.fail(APIError(ModelCatalog.notFound(id: "")))
        }
        UpstreamEngine.proxy(x, ModelsHooks(x, id: id))
    }
}

struct ModelsHooks: UpstreamHooks {
    let request: UpstreamRequest
    let key: [UInt8]
    let suffixes: [String]
    let allowed: [String]?
    /// `GET /v1/models/{id}`: only this model (nil: the list).
    let id: String?
    private var status = 0

    init(_ x: Exchange, id: String?) {
        request = HeaderPolicy.upstreamRequest(x.snapshot, requestID: x.requestID, "GET", x.snapshot.upstreamBase + "/v1/models")
        key = x.snapshot.apiKeyBytes
        suffixes = x.snapshot.config.upstream.modelSuffixes
        allowed = x.team?.models
        self.id = id
    }

    init(request: UpstreamRequest, key: [UInt8], suffixes: [String], allowed: [String]?, id: String?) {
        self.request = request; self.key = key; self.suffixes = suffixes; self.allowed = allowed; self.id = id
    }

    func makeRequest() -> Result<UpstreamRequest, APIError> { .success(request) }

    mutating func onHead(_ head: UpstreamResponseHead) -> HeadDecision {
        status = head.status
        return .buffer(limit: nil)
    }

    mutating func finish(_ answer: UpstreamAnswer) -> Outcome<Never> {
        if status >= 300 { return .fail(.upstreamStatus(status, answer.body, key: key, keepStatus: true)) }
        let visible: [OpenAIModel]
        do throws(TranslationError) {
            visible = try ModelCatalog.visibleModels(upstreamJSON: answer.body, vendorSuffixes: suffixes, allowed: allowed)
        } catch {
            return .fail(APIError(502, "The upstream's model list was not understood.", code: "upstream_invalid_response"))
        }
        guard let id else { return .json(status: 200, body: ModelCatalog.listBody(visible)) }
        guard let model = ModelCatalog.model(id: id, in: visible) else { return .fail(APIError(ModelCatalog.notFound(id: id))) }
        return .json(status: 200, body: model.jsonBytes)
    }
}
