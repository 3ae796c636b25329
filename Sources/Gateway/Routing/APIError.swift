import HTTPServer
import HTTPWire
import Translation

/// An error Veil answers with, in the OpenAI envelope `{"error":{"message","type","param","code"}}`.
public struct APIError: Error, Sendable, Equatable {
    public var status: Int
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?

    public init(_ status: Int, _ message: String, type: String? = nil, param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type ?? APIError.defaultType(status)
        self.param = param
        self.code = code
    }

    public static func defaultType(_ status: Int) -> String {
        switch status {
        case 401: return "authentication_error"
        case 403: return "permission_error"
        case 429: return "rate_limit_error"
        case 500...: return "api_error"
        default: return "invalid_request_error"
        }
    }

    /// A 404 translation error (`ModelCatalog.notFound`) as an answer.
    init(_ notFound: OpenAIError, status: Int = 404) {
        self.init(status, notFound.message, type: notFound.type, param: notFound.param, code: notFound.code)
    }

    public var body: [UInt8] {
        OpenAIError(message: message, type: type, param: param, code: code).jsonBytes
    }

    // Common errors.
    public static func notFound(_ what: String = "Unknown route.") -> APIError { APIError(404, what, code: "not_found") }
    public static let unauthorized = APIError(401, "Missing or invalid team token. Send `Authorization: Bearer <team token>`.", code: "invalid_api_key")
    public static let tokenExpired = APIError(401, "This team token has expired.", code: "token_expired")
}

extension HTTPResponder {
    /// Answers with an OpenAI error envelope, plus any extra headers (request id, CORS, rate limits).
    func fail(_ error: APIError, headers extra: consuming HTTPHeaders = HTTPHeaders()) {
        json(error.status, error.body, headers: extra)
    }

    func json(_ status: Int, _ body: [UInt8], headers extra: consuming HTTPHeaders = HTTPHeaders()) {
        var h = extra
        h.fields.reserveCapacity(h.count + 5)      // content-type, content-length, date, framing
        h.replace("content-type", "application/json")
        respond(status: status, headers: consume h, body: body)
    }
}
