import CCrypto

/// Lower-case hex SHA-256 of `text` (OpenSSL's libcrypto, already linked by libcurl).
public func sha256Hex(_ text: String) -> String {
    var digest = [UInt8](repeating: 0, count: Int(SHA256_DIGEST_LENGTH))
    var bytes = Array(text.utf8)
    _ = SHA256(&bytes, bytes.count, &digest)
    let hex: [UInt8] = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(64)
    for b in digest { out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)]) }
    return String(decoding: out, as: UTF8.self)
}

/// Maps a presented bearer token to its team. Only digests are kept; the presented token is
/// hashed and compared with every configured digest in constant time (no early exit on a match),
/// so timing reveals neither which digest matched nor how much of one did.
public struct TokenAuthenticator: Sendable {
    struct Entry: Sendable { let digest: [UInt8]; let team: Int; let expiresAt: Int? }
    private let entries: [Entry]

    public enum Outcome: Equatable, Sendable { case team(Int), missing, invalid, expired }

    public init(teams: [GatewayConfig.Team]) {
        var e: [Entry] = []
        for (i, t) in teams.enumerated() {
            for tok in t.tokens { e.append(Entry(digest: Array(tok.sha256.utf8), team: i, expiresAt: tok.expiresAt)) }
        }
        entries = e
    }

    /// `authorization` is the raw header value; `now` is Unix seconds.
    public func authenticate(authorization: String?, now: Int) -> Outcome {
        guard let auth = authorization else { return .missing }
        // Byte-level trimming and scheme check: this runs for every request.
        let trimmed = trimSpaceTab(Substring(auth))
        let u = trimmed.utf8
        guard u.count > 7, u.prefix(7).elementsEqual("bearer ".utf8, by: { $0 == $1 || ($1 != 0x20 && $0 | 0x20 == $1) }) else { return .invalid }
        let token = String(trimSpaceTab(trimmed.dropFirst(7)))
        guard !token.isEmpty, token.utf8.count <= 512 else { return .invalid }
        let presented = Array(sha256Hex(token).utf8)
        var found = -1
        var foundExpiry: Int? = nil
        for e in entries {
            let same = presented.withUnsafeBytes { p in e.digest.withUnsafeBytes { q in CRYPTO_memcmp(p.baseAddress, q.baseAddress, 64) } } == 0
            if same { found = e.team; foundExpiry = e.expiresAt }
        }
        guard found >= 0 else { return .invalid }
        if let exp = foundExpiry, now >= exp { return .expired }
        return .team(found)
    }
}

/// `s` without leading and trailing spaces and tabs (ASCII, no allocation).
@inline(__always)
func trimSpaceTab(_ s: Substring) -> Substring {
    var t = s
    while let f = t.utf8.first, f == 0x20 || f == 0x09 { t = t.dropFirst() }
    while let l = t.utf8.last, l == 0x20 || l == 0x09 { t = t.dropLast() }
    return t
}

extension StringProtocol {
    /// The string without leading and trailing characters of `set` (no Foundation needed).
    public func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let f = s.first, chars.contains(f) { s = s.dropFirst() }
        while let l = s.last, chars.contains(l) { s = s.dropLast() }
        return String(s)
    }
}
