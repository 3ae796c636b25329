/// Model-name cues: a frontend developer (or a test) picks a misbehaviour of the upstream by
/// naming a model, without touching the stand-in's configuration. They apply wherever a request
/// names a model: chat completions, responses, embeddings, images, moderations, speech and
/// transcriptions (a multipart `model` field).
///
/// | model | answer |
/// |---|---|
/// | `sandbox-rate-limited` | 429, new-api's own rate-limit body (`type: new_api_error`, `code: ""`) |
/// | `sandbox-upstream-error` | 500, new-api relaying a failed channel (`type: upstream_error`, `code: bad_response_status_code`) |
/// | `sandbox-missing-model` | 404, OpenAI's `model_not_found` error, which new-api relays as the channel sent it |
/// | `sandbox-tools` | chat and responses answer with a function call (streamed as argument deltas) |
/// | `sandbox-slow-stream` | streams with `SandboxConfig.slowStreamGapMillis` between events |
/// | `sandbox-echo-key` | (chat) 401 echoing the presented key |
/// | `…-slow` | (chat) the whole answer waits `SandboxConfig.slowModelDelayMillis` |
enum ModelCue: Equatable {
    case none
    case rateLimited
    case upstreamError
    case modelNotFound
    case tools
    case slowStream

    static let rateLimitedModel = "sandbox-rate-limited"
    static let upstreamErrorModel = "sandbox-upstream-error"
    static let missingModel = "sandbox-missing-model"
    static let toolsModel = "sandbox-tools"
    static let slowStreamModel = "sandbox-slow-stream"

    static func from(model: String) -> ModelCue {
        switch model {
        case rateLimitedModel: return .rateLimited
        case upstreamErrorModel: return .upstreamError
        case missingModel: return .modelNotFound
        case toolsModel: return .tools
        case slowStreamModel: return .slowStream
        default: return .none
        }
    }

    /// The error answer for the three error cues (status, body), nil for the others.
    /// `requestID` is new-api's id, appended to its own messages as new-api does.
    func errorAnswer(model: String, requestID: String) -> (status: Int, body: JSONOut)? {
        switch self {
        case .rateLimited:
            // new-api's ModelRequestRateLimit middleware (abortWithOpenAiMessage).
            return (429, .object([("error", .object([
                ("message", .string("您已达到请求数限制：1分钟内最多请求60次 (request id: \(requestID))")),
                ("type", .string("new_api_error")), ("code", .string("")),
            ]))]))
        case .upstreamError:
            // new-api when the channel behind it failed without an OpenAI-shaped body.
            return (500, .object([("error", .object([
                ("message", .string("bad response status code 500 (request id: \(requestID))")),
                ("type", .string("upstream_error")), ("param", .string("500")), ("code", .string("bad_response_status_code")),
            ]))]))
        case .modelNotFound:
            // OpenAI's own answer, relayed by new-api with the channel's status.
            return (404, .object([("error", .object([
                ("message", .string("The model `\(model)` does not exist or you do not have access to it.")),
                ("type", .string("invalid_request_error")), ("param", .null), ("code", .string("model_not_found")),
            ]))]))
        case .none, .tools, .slowStream:
            return nil
        }
    }
}
