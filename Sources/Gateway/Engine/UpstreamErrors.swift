import Translation
import Upstream

extension APIError {
    /// How a transport failure is told to the caller: a stable, generic message and code (the
    /// transport's detail — host, port, the client's words — goes to the log with the request id,
    /// never to the caller). 502 unreachable or broken, 504 too slow.
    static func upstream(_ error: UpstreamError) -> APIError {
        switch error {
        case .connect: return APIError(502, "The upstream could not be reached.", code: "upstream_unreachable")
        case .timeout: return APIError(504, "The upstream did not answer in time.", code: "upstream_timeout")
        case .tooLarge: return APIError(502, "The upstream's answer was larger than Veil accepts.", code: "upstream_response_too_large")
        case .refused: return APIError(502, "The upstream's address was refused.", code: "upstream_refused")
        case .broken: return APIError(502, "The upstream's answer was cut or malformed.", code: "upstream_broken")
        case .cancelled: return APIError(499, "The client closed the connection.", code: "client_closed")
        }
    }

    /// The code of an answer that says the upstream refused the gateway's own credentials.
    static let upstreamAuthFailedCode = "upstream_auth_failed"

    /// An upstream error answer (status ≥ 300) in Veil's envelope, its message redacted (also
    /// after JSON decoding: a key written with escapes would otherwise come back decoded).
    /// - The upstream refusing Veil's own key (401; 403 whose message is about the key, the token
    ///   or its quota) is the gateway's problem, not the caller's token: 502
    ///   `upstream_auth_failed` (the SDKs would otherwise raise `AuthenticationError` and the team
    ///   would blame its own token). `Exchange.fail` logs it loudly and counts it.
    /// - Other 4xx keep their status; 5xx become 502 unless `keepStatus` (chat and models relay
    ///   the upstream's status as is).
    static func upstreamStatus(_ status: Int, _ raw: [UInt8], key: [UInt8], keepStatus: Bool = false) -> APIError {
        let detail = upstreamErrorMessage(raw, secret: key)
        if status == 401 || (status == 403 && isAboutCredentials(detail)) {
            return APIError(502, "The upstream refused the gateway's own credentials (HTTP \(status)); this is not about your token. The platform team must fix the gateway's upstream key.",
                            code: upstreamAuthFailedCode)
        }
        var message = "The upstream refused the request (HTTP \(status))."
        if let m = detail { message = "The upstream refused the request (HTTP \(status)): \(m)" }
        let s = keepStatus && status >= 400 ? status : (status >= 500 ? 502 : (status >= 400 ? status : 502))
        // An OpenAI-shaped error keeps its `code` and `param` (`model_not_found`, `rate_limit_exceeded`:
        // what the SDKs and callers branch on), when they are plain words.
        let (code, param) = upstreamErrorCodeAndParam(raw)
        return APIError(s, message, param: param, code: code ?? "upstream_error")
    }

    /// `error.code` and `error.param` of an OpenAI-shaped error body, each only when it is a plain
    /// token (letters, digits, `_.-`, at most 64 bytes): never a place for the key to hide.
    static func upstreamErrorCodeAndParam(_ raw: [UInt8]) -> (code: String?, param: String?) {
        guard let v = try? JSONValue.parse(raw), let e = v["error"] else { return (nil, nil) }
        func token(_ s: String?) -> String? {
            guard let s, !s.isEmpty, s.utf8.count <= 64,
                  s.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 122) || $0 == 95 || $0 == 46 || $0 == 45 }) else { return nil }
            return s
        }
        return (token(e["code"]?.stringValue), token(e["param"]?.stringValue))
    }

    /// Words of new-api style messages about the key itself: an invalid, expired or exhausted
    /// token (`无效的令牌`, `该令牌额度已用尽`, `token quota exhausted`, …).
    static func isAboutCredentials(_ message: String?) -> Bool {
        guard let m = message?.lowercased() else { return false }
        return ["令牌", "额度", "token", "api key", "api_key", "apikey", "credential", "quota"].contains { m.contains($0) }
    }
}
