/// The `type` values Veil puts in its OpenAI-style error envelopes.
public enum OpenAIErrorType: String, Sendable, CaseIterable {
    case invalidRequest = "invalid_request_error"
    case authentication = "authentication_error"
    case permission = "permission_error"
    case rateLimit = "rate_limit_error"
    case api = "api_error"

    /// The default type for an HTTP status: 401 → authentication, 403 → permission,
    /// 429 → rate limit, any other 4xx (400/404/405/409/413/414/431…) → invalid request,
    /// and everything else (5xx, or a non-error status passed by mistake) → api_error.
    public init(status: Int) {
        switch status {
        case 401: self = .authentication
        case 403: self = .permission
        case 429: self = .rateLimit
        case 400...499: self = .invalidRequest
        default: self = .api
        }
    }
}

/// OpenAI's error envelope: `{"error":{"message":…,"type":…,"param":…|null,"code":…|null}}`.
/// Written by hand so the key order is fixed and `param`/`code` are explicit `null`s, as
/// OpenAI's clients expect.
public struct OpenAIError: Sendable, Equatable, Error {
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?

    public init(message: String, type: String, param: String? = nil, code: String? = nil) {
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public init(message: String, type: OpenAIErrorType, param: String? = nil, code: String? = nil) {
        self.init(message: message, type: type.rawValue, param: param, code: code)
    }

    /// An error whose `type` is the default for `status`.
    public init(status: Int, message: String, param: String? = nil, code: String? = nil) {
        self.init(message: message, type: OpenAIErrorType(status: status), param: param, code: code)
    }

    /// The envelope's bytes.
    public var jsonBytes: [UInt8] {
        var inner = JSONObjectWriter(reserving: message.utf8.count + 96)
        inner.string("message", message)
        inner.string("type", type)
        inner.string("param", param)
        inner.string("code", code)
        var outer = JSONObjectWriter(reserving: message.utf8.count + 112)
        outer.raw("error", inner.finish())
        return outer.finish()
    }

    /// Shorthand: the envelope bytes for `status` with the default type.
    public static func bytes(status: Int, message: String, param: String? = nil, code: String? = nil) -> [UInt8] {
        OpenAIError(status: status, message: message, param: param, code: code).jsonBytes
    }
}
