/// `veil token new`: a team token made from the system's random source, and the configuration
/// lines that admit it (its digest only; Veil never stores a token).
public enum TokenIssue {
    /// Tokens are `veil_` + 43 base-62 characters: 256 bits of randomness.
    public static let prefix = "veil_"
    public static let randomCharacters = 43
    private static let alphabet = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    /// A new token. `rng` is `SystemRandomNumberGenerator` (getrandom(2)) outside tests.
    public static func newToken(using rng: inout some RandomNumberGenerator) -> String {
        prefix + String((0..<randomCharacters).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &rng)] })
    }

    /// Latest expiry the loader accepts (`teams[].tokens[].expires_at`).
    public static let maxExpiresAt = Int(Int32.max) * 4

    /// `--expires`: a duration from now (`90s`, `30m`, `24h`, `30d`, `2w`) or Unix seconds.
    /// The time must lie in the future and within what the configuration accepts.
    public static func parseExpiry(_ text: String, now: Int) -> Result<Int, ExpiryProblem> {
        let t = text.trimmingASCIISpaces()
        let at: Int
        if !t.isEmpty, t.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
            guard let v = Int(t) else { return .failure(.init("`\(t)` is too large")) }
            at = v
        } else if let d = UsageReport.parseDuration(t) {
            let (v, overflow) = now.addingReportingOverflow(d)
            if overflow { return .failure(.init("`\(t)` is too far away")) }
            at = v
        } else {
            return .failure(.init("`\(t)`: use a duration (90s, 30m, 24h, 30d, 2w) or Unix seconds"))
        }
        guard at > now else { return .failure(.init("`\(t)` is not in the future")) }
        guard at <= maxExpiresAt else { return .failure(.init("`\(t)` is later than the configuration accepts (\(maxExpiresAt))")) }
        return .success(at)
    }

    public struct ExpiryProblem: Error, Equatable, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    /// Team names as the configuration accepts them.
    public static func isValidTeamName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 64
            && name.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 || $0 == 46 }
    }

    /// The YAML to paste under the team (`tokens:` entries; a team may mix them with `tokens_sha256`).
    public static func configSnippet(team: String, digest: String, expiresAt: Int?) -> String {
        var s = """
        teams:
          - name: "\(team)"
            tokens:
              - sha256: "\(digest)"

        """
        if let e = expiresAt {
            s += "        expires_at: \(e)   # \(LogClock.iso8601(unixSeconds: e))\n"
        }
        return s
    }
}
