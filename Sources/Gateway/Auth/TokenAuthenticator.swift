import CCrypto

/// Lower-case hex SHA-256 of `text` (OpenSSL's libcrypto).
public func sha256Hex(_ text: String) -> String {
    let d = sha256Digest(Substring(text))
    let hex: [UInt8] = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(64)
    withUnsafeBytes(of: d) { for b in $0 { out.append(hex[Int(b >> 4)]); out.append(hex[Int(b & 15)]) } }
    return String(decoding: out, as: UTF8.self)
}

/// A SHA-256 digest as four words: kept and compared on the stack.
typealias SHA256Digest = (UInt64, UInt64, UInt64, UInt64)

/// The 32-byte SHA-256 of `text`'s UTF-8 (no allocation, no provider lookup: `veil_sha256`).
@inline(__always)
func sha256Digest(_ text: Substring) -> SHA256Digest {
    var d: SHA256Digest = (0, 0, 0, 0)
    var s = text
    s.withUTF8 { u in
        withUnsafeMutableBytes(of: &d) { out in
            veil_sha256(u.baseAddress, u.count, out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }
    return d
}

/// The 32 bytes of a 64-digit hex digest (nil unless it is one).
func digestBytes(hex: String) -> SHA256Digest? {
    let u = Array(hex.utf8)
    guard u.count == 64 else { return nil }
    var d: SHA256Digest = (0, 0, 0, 0)
    var ok = true
    withUnsafeMutableBytes(of: &d) { out in
        for i in 0..<32 {
            func nibble(_ c: UInt8) -> UInt8? {
                switch c {
                case 48...57: return c - 48
                case 97...102: return c - 87
                case 65...70: return c - 55
                default: return nil
                }
            }
            guard let hi = nibble(u[2 * i]), let lo = nibble(u[2 * i + 1]) else { ok = false; return }
            out[i] = hi << 4 | lo
        }
    }
    return ok ? d : nil
}

/// Whether two digests are equal, in constant time (OpenSSL's `CRYPTO_memcmp`).
func sameDigest(_ a: SHA256Digest, _ b: SHA256Digest) -> Bool {
    var a = a, b = b
    return withUnsafeBytes(of: &a) { p in withUnsafeBytes(of: &b) { q in CRYPTO_memcmp(p.baseAddress, q.baseAddress, 32) } } == 0
}

/// The token of an `Authorization: Bearer <token>` value: scheme case-insensitive, spaces and tabs
/// trimmed, read as bytes. Nil when absent, another scheme, empty, or over 512 bytes.
func bearerToken(_ authorization: String?) -> Substring? {
    guard let auth = authorization else { return nil }
    let trimmed = auth.trimmingOWS()
    let u = trimmed.utf8
    guard u.count > 7, u.prefix(7).elementsEqual("bearer ".utf8, by: { $0 == $1 || ($1 != 0x20 && $0 | 0x20 == $1) }) else { return nil }
    let token = trimmed.dropFirst(7).trimmingOWS()
    guard !token.isEmpty, token.utf8.count <= 512 else { return nil }
    return token
}

/// Maps a presented bearer token to its team. Only digests are kept; the presented token is
/// hashed and compared with every configured digest in constant time (no early exit on a match),
/// so timing reveals neither which digest matched nor how much of one did.
public struct TokenAuthenticator: Sendable {
    struct Entry: Sendable { let digest: SHA256Digest; let team: Int; let expiresAt: Int? }
    private let entries: [Entry]

    public enum Outcome: Equatable, Sendable { case team(Int), missing, invalid, expired }

    public init(teams: [GatewayConfig.Team]) {
        var e: [Entry] = []
        for (i, t) in teams.enumerated() {
            // The loader only accepts 64-digit hex digests; anything else could never match.
            for tok in t.tokens { if let d = digestBytes(hex: tok.sha256) { e.append(Entry(digest: d, team: i, expiresAt: tok.expiresAt)) } }
        }
        entries = e
    }

    /// `authorization` is the raw header value; `now` is Unix seconds.
    public func authenticate(authorization: String?, now: Int) -> Outcome {
        authenticateWithExpiry(authorization: authorization, now: now).outcome
    }

    /// The same, with the matched token's expiry (what `VerifiedTokens` keeps).
    func authenticateWithExpiry(authorization: String?, now: Int) -> (outcome: Outcome, expiresAt: Int?) {
        guard authorization != nil else { return (.missing, nil) }
        // Byte-level parsing, digest on the stack.
        guard let token = bearerToken(authorization) else { return (.invalid, nil) }
        let presented = sha256Digest(token)
        var found = -1
        var foundExpiry: Int? = nil
        for e in entries where sameDigest(presented, e.digest) {
            found = e.team
            foundExpiry = e.expiresAt
        }
        guard found >= 0 else { return (.invalid, nil) }
        if let exp = foundExpiry, now >= exp { return (.expired, exp) }
        return (.team(found), foundExpiry)
    }
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

/// `Authorization` values one loop verified recently (a keep-alive client sends the same one with
/// every request): a hit costs a constant-time comparison instead of a SHA-256. Only successes
/// are kept, each with its team, expiry and configuration generation (a reload forgets them all).
/// Loop-confined.
final class VerifiedTokens {
    private struct Entry { var value: [UInt8]; var team: Int; var expiresAt: Int?; var generation: Int }
    private var entries: [Entry] = []
    static let capacity = 8

    /// The outcome for `authorization` if this loop verified that exact value under `generation`.
    func lookup(_ authorization: String, generation: Int, now: Int) -> TokenAuthenticator.Outcome? {
        var value = authorization
        return value.withUTF8 { u -> TokenAuthenticator.Outcome? in
            guard let base = u.baseAddress else { return nil }
            for i in entries.indices where entries[i].generation == generation && entries[i].value.count == u.count {
                let same = entries[i].value.withUnsafeBytes { CRYPTO_memcmp($0.baseAddress, base, u.count) } == 0
                guard same else { continue }
                if let exp = entries[i].expiresAt, now >= exp { return .expired }
                if i > 0 { entries.swapAt(0, i) }
                return .team(entries[0].team)
            }
            return nil
        }
    }

    func remember(_ authorization: String, team: Int, expiresAt: Int?, generation: Int) {
        if entries.count >= Self.capacity { entries.removeLast() }
        entries.insert(Entry(value: Array(authorization.utf8), team: team, expiresAt: expiresAt, generation: generation), at: 0)
    }
}
