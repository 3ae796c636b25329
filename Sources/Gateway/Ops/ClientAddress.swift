import Upstream

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `fd00::/8`) or one address (`192.0.2.7`, `::1`).
/// IPv4-mapped IPv6 networks and addresses (`::ffff:10.0.0.0/104`) are kept as IPv4, so a peer
/// reported either way matches.
public struct CIDR: Sendable, Equatable {
    public let network: [UInt8]
    public let prefix: Int

    public init?(_ text: String) {
        let t = text.trimmingASCIISpaces()
        var bits: Int?
        var addr = Substring(t)
        if let slash = t.firstIndex(of: "/") {
            let tail = t[t.index(after: slash)...]
            guard !tail.isEmpty, tail.utf8.count <= 3, tail.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            bits = Int(tail)
            addr = t[..<slash]
        }
        guard let ip = CIDR.parseIP(String(addr)) else { return nil }
        let width = ip.count * 8
        let b = bits ?? width
        guard b >= 0, b <= width else { return nil }
        if ip.count == 16, let v4 = CIDR.unmapped(ip), b >= 96 {
            network = CIDR.masked(v4, b - 96); prefix = b - 96
        } else {
            network = CIDR.masked(ip, b); prefix = b
        }
    }

    public func contains(_ ip: [UInt8]) -> Bool {
        let a = CIDR.unmapped(ip) ?? ip
        guard a.count == network.count else { return false }
        return CIDR.masked(a, prefix) == network
    }

    /// 4 or 16 bytes; brackets and a `%zone` are tolerated.
    static func parseIP(_ text: String) -> [UInt8]? { AddressPolicy.parseIP(text) }

    static func unmapped(_ ip: [UInt8]) -> [UInt8]? {
        guard ip.count == 16, ip[0..<10].allSatisfy({ $0 == 0 }), ip[10] == 0xFF, ip[11] == 0xFF else { return nil }
        return Array(ip[12..<16])
    }

    static func masked(_ ip: [UInt8], _ bits: Int) -> [UInt8] {
        var out = ip
        for i in 0..<out.count {
            let keep = max(0, min(8, bits - i * 8))
            out[i] &= keep == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        return out
    }
}

/// The configured `trusted_proxies`, parsed once per configuration.
public struct TrustedProxies: Sendable {
    public let networks: [CIDR]

    /// Entries that don't parse are dropped (the loader refuses them before this is built).
    public init(_ entries: [String]) { networks = entries.compactMap(CIDR.init) }

    public var isEmpty: Bool { networks.isEmpty }

    public func contains(_ ip: [UInt8]) -> Bool { networks.contains { $0.contains(ip) } }
}

/// The client address for logs and per-client limits.
///
/// The usual right-to-left walk of `X-Forwarded-For` (as nginx's `real_ip_recursive on`): only
/// when the peer is a trusted proxy is the header read at all; then, from its last (rightmost)
/// entry leftwards, each address a trusted proxy appended is skipped, and the first untrusted one
/// is the client. Entries left of it were written by the client and are never believed. If every
/// entry is trusted, the leftmost is the client.
///
/// Several `X-Forwarded-For` fields count as one list, in order. Empty entries are skipped; a
/// malformed entry (not an IP; `a.b.c.d:port` and `[v6]:port` are read as their address) stops
/// the walk, and the last good address stands. At most `maxForwardedHops` entries are read.
/// Addresses come back in their canonical text form.
public func forwardedClientAddress(peer: String, forwardedFor: [String], trusted: TrustedProxies) -> String {
    guard !trusted.isEmpty, let peerIP = CIDR.parseIP(peer), trusted.contains(peerIP) else { return peer }
    var hops: [Substring] = []
    for field in forwardedFor {
        for entry in field.split(separator: ",", omittingEmptySubsequences: true) { hops.append(entry) }
    }
    var client = peer
    var examined = 0
    for raw in hops.reversed() {
        let entry = raw.trimmingASCIISpaces()
        if entry.isEmpty { continue }
        examined += 1
        guard examined <= maxForwardedHops, let ip = forwardedIP(entry) else { break }
        client = AddressPolicy.format(CIDR.unmapped(ip) ?? ip)
        if !trusted.contains(ip) { break }
    }
    return client
}

/// Entries of `X-Forwarded-For` read per request, at most (a longer chain stops there).
public let maxForwardedHops = 32

/// An `X-Forwarded-For` entry's address: `1.2.3.4`, `2001:db8::1`, `1.2.3.4:5678`,
/// `[2001:db8::1]` or `[2001:db8::1]:5678`; nil for anything else (`unknown`, names, garbage).
func forwardedIP(_ entry: String) -> [UInt8]? {
    guard entry.utf8.count <= 64, !entry.contains("%") else { return nil }
    if entry.hasPrefix("[") {
        guard let close = entry.firstIndex(of: "]") else { return nil }
        let rest = entry[entry.index(after: close)...]
        guard rest.isEmpty || (rest.hasPrefix(":") && isPort(rest.dropFirst())) else { return nil }
        let ip = CIDR.parseIP(String(entry[entry.index(after: entry.startIndex)..<close]))
        return ip?.count == 16 ? ip : nil
    }
    if let ip = CIDR.parseIP(entry) { return ip }
    // IPv4 with a port (exactly one colon; IPv6 without brackets has several).
    let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
    guard parts.count == 2, isPort(parts[1]), let ip = CIDR.parseIP(String(parts[0])), ip.count == 4 else { return nil }
    return ip
}

private func isPort(_ s: Substring) -> Bool {
    !s.isEmpty && s.utf8.count <= 5 && s.utf8.allSatisfy { $0 >= 48 && $0 <= 57 } && (Int(s) ?? 70_000) <= 65_535
}
