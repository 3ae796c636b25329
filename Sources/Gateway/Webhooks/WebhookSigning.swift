import CCrypto
import Translation

// Webhooks as OpenAI sends its own, in the Standard Webhooks shape (standardwebhooks.com), so the
// official SDKs' `client.webhooks.unwrap(body, headers, secret=…)` accepts Veil's deliveries.
// Pure functions: the secret, the signature, the body, the back-off, the URL check.

/// A webhook secret: `whsec_` + the base64 of the key's bytes (the key is the decoded bytes,
/// not the text).
enum WebhookSecret {
    static let prefix = "whsec_"
    /// Standard Webhooks asks for 24 to 64 random bytes; fewer than 16 is refused as guessable.
    static let minKeyBytes = 16
    static let maxKeyBytes = 1_024

    /// The key bytes, or nil when `secret` is not `whsec_<base64>` of a sane length.
    static func key(_ secret: String) -> [UInt8]? {
        guard secret.hasPrefix(prefix) else { return nil }
        let b64 = secret.dropFirst(prefix.count)
        guard let bytes = Base64.decode(b64), (minKeyBytes...maxKeyBytes).contains(bytes.count) else { return nil }
        return bytes
    }
}

enum WebhookSignature {
    /// `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`: the `webhook-signature` value.
    static func sign(id: String, timestamp: Int, body: [UInt8], key: [UInt8]) -> String {
        var message: [UInt8] = []
        message.reserveCapacity(id.utf8.count + 24 + body.count)
        message.append(contentsOf: id.utf8)
        message.append(UInt8(ascii: "."))
        message.append(contentsOf: String(timestamp).utf8)
        message.append(UInt8(ascii: "."))
        message.append(contentsOf: body)
        return "v1," + Base64.encode(hmacSHA256(key: key, message: message))
    }

    /// HMAC-SHA256 (OpenSSL's libcrypto).
    static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        let ok = key.withUnsafeBytes { k in
            message.withUnsafeBytes { m in
                out.withUnsafeMutableBufferPointer { o in
                    veil_hmac_sha256(k.baseAddress, k.count, m.baseAddress, m.count, o.baseAddress!)
                }
            }
        }
        precondition(ok == 1, "HMAC-SHA256 failed")
        return out
    }
}

extension Base64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Standard base64 with padding (RFC 4648 §4).
    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            for shift in [18, 12, 6, 0] { out.append(alphabet[Int((n >> UInt32(shift)) & 63)]) }
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            let n = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
            out.append(alphabet[Int((n >> 18) & 63)])
            out.append(alphabet[Int((n >> 12) & 63)])
            out.append(rest == 2 ? alphabet[Int((n >> 6) & 63)] : UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The body of Veil's video events, in OpenAI's `video.completed` / `video.failed` shape.
enum WebhookPayload {
    /// `{"id":"evt_…","object":"event","created_at":…,"type":"video.completed","data":{"id":"video_…"}}`
    static func videoEvent(id: String, type: String, createdAt: Int, videoID: String) -> [UInt8] {
        var data = JSONObjectWriter(reserving: 48)
        data.string("id", videoID)
        var w = JSONObjectWriter(reserving: 160)
        w.string("id", id)
        w.string("object", "event")
        w.int("created_at", createdAt)
        w.string("type", type)
        w.raw("data", data.finish())
        return w.finish()
    }

    /// The event type a video's final status is told with; nil while it is unfinished.
    static func eventType(_ status: VideoStatus) -> String? {
        switch status {
        case .completed: return "video.completed"
        case .failed: return "video.failed"
        case .queued, .inProgress: return nil
        }
    }

    /// `evt_` + 32 hex digits (128 random bits), as OpenAI's event ids look.
    static func newEventID<G: RandomNumberGenerator>(using rng: inout G) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out = Array("evt_".utf8)
        for _ in 0..<2 {
            var n: UInt64 = rng.next()
            for _ in 0..<16 { out.append(hex[Int(n & 15)]); n >>= 4 }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// When the next attempt of a failed delivery goes: exponential back-off with jitter.
enum WebhookBackoff {
    /// After `attempts` failed attempts (≥ 1): `initial · 2^(attempts−1)`, at most `max`, scaled
    /// by `jitter` ∈ [0, 1] into the upper half ([d/2, d]): receivers recovering from an outage
    /// are not hit by every replica's retries at the same instant, and a retry never comes much
    /// earlier than planned.
    static func delayMillis(afterAttempts attempts: Int, initial: Int, max maxMillis: Int, jitter: Double) -> Int {
        let exponent = Swift.min(Swift.max(attempts - 1, 0), 40)
        let (scaled, overflow) = initial.multipliedReportingOverflow(by: 1 << exponent)
        let d = overflow ? maxMillis : Swift.min(scaled, maxMillis)
        let j = Swift.min(Swift.max(jitter, 0), 1)
        return Swift.max(1, d / 2 + Int((Double(d - d / 2) * j).rounded(.down)))
    }

    /// What a failed attempt becomes: retried after `delay`, or given up when that would fall
    /// past `retryFor` seconds after `retryFrom` (both Unix seconds).
    static func decide(delayMillis delay: Int, now: Int, retryFrom: Int, retryForSeconds: Int) -> Decision {
        (now + (delay + 999) / 1000) > retryFrom + retryForSeconds ? .giveUp : .retry(afterMillis: delay)
    }

    enum Decision: Equatable {
        case retry(afterMillis: Int)
        case giveUp
    }
}

/// Where a team's webhook may point (checked at load; the address itself is checked again at
/// every connection, as for image fetching).
enum WebhookEndpoint {
    /// Why `url` can't be a webhook endpoint, or nil.
    static func urlProblem(_ url: String, allowHTTP: Bool) -> String? {
        let lower = url.lowercased()
        let rest: Substring
        if lower.hasPrefix("https://") { rest = url.dropFirst(8) }
        else if lower.hasPrefix("http://") {
            guard allowHTTP else { return "must be https:// (or set webhooks.allow_http)" }
            rest = url.dropFirst(7)
        } else { return "must be an https:// URL" }
        guard url.utf8.count <= 2_048, url.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            return "must be at most 2048 printable ASCII characters without spaces"
        }
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.isEmpty else { return "has no host" }
        guard !authority.contains("@") else { return "must not carry credentials (the signature authenticates Veil)" }
        guard !rest.contains("#") else { return "must not carry a fragment" }
        return nil
    }
}
