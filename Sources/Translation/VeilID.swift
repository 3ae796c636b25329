/// Veil's public ids wrap the upstream's (`video_4078`, `char_58`). Parsing is a strict whitelist
/// because the result goes into an upstream URL path: anything that could change the path or
/// query (`/`, `..`, `%2e`, `?`, `#`, `;`, CR/LF, non-ASCII) or is over-long is refused.
public enum VeilID {
    public static let maxUpstreamLength = 64

    /// `video_<id>`, or nil when the upstream id isn't itself safe.
    public static func videoID(upstream: String) -> String? { wrap("video_", upstream) }
    public static func characterID(upstream: String) -> String? { wrap("char_", upstream) }

    /// The upstream id inside `video_<[A-Za-z0-9_-]{1,64}>`, else nil.
    public static func upstreamVideoID(fromVeil s: String) -> String? { unwrap("video_", s) }
    /// The upstream id inside `char_<[A-Za-z0-9_-]{1,64}>`, else nil.
    public static func upstreamCharacterID(fromVeil s: String) -> String? { unwrap("char_", s) }

    /// `[A-Za-z0-9_-]{1,64}`.
    public static func isSafeUpstreamID(_ s: String) -> Bool {
        let u = s.utf8
        return (1...maxUpstreamLength).contains(u.count) && u.allSatisfy { b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
                || b == UInt8(ascii: "_") || b == UInt8(ascii: "-")
        }
    }

    static func wrap(_ prefix: String, _ id: String) -> String? {
        isSafeUpstreamID(id) ? prefix + id : nil
    }

    static func unwrap(_ prefix: String, _ s: String) -> String? {
        let u = Array(s.utf8), p = Array(prefix.utf8)
        guard u.count > p.count, Array(u[..<p.count]) == p else { return nil }
        let rest = String(decoding: u[p.count...], as: UTF8.self)
        return isSafeUpstreamID(rest) ? rest : nil
    }
}
