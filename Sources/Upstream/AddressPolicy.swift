import HTTPWire
import Glibc

/// Classification of the addresses an upstream transfer may connect to when
/// `UpstreamRequest.refusePrivateAddresses` is set. Pure functions (no I/O), unit-tested.
public enum AddressPolicy {
    /// Parses an IPv4 or IPv6 literal (brackets and a `%zone` suffix are tolerated) into its
    /// 4 or 16 bytes in network order.
    public static func parseIP(_ text: String) -> [UInt8]? {
        var s = Substring(text)
        if s.hasPrefix("[") && s.hasSuffix("]") { s = s.dropFirst().dropLast() }
        if let pct = s.firstIndex(of: "%") { s = s[..<pct] }
        let str = String(s)
        var v4 = in_addr()
        if inet_pton(AF_INET, str, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, str, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// Why `ip` (4 or 16 bytes) is not a public unicast address, or nil when it is.
    public static func nonPublicReason(_ ip: [UInt8]) -> String? {
        if ip.count == 4 { return v4Reason(ip[0], ip[1], ip[2], ip[3]) }
        guard ip.count == 16 else { return "unknown address family" }
        let zeros = { (r: Range<Int>) in ip[r].allSatisfy { $0 == 0 } }
        // ::ffff:a.b.c.d (IPv4-mapped)
        if zeros(0..<10) && ip[10] == 0xff && ip[11] == 0xff {
            return v4Reason(ip[12], ip[13], ip[14], ip[15]).map { "IPv4-mapped \($0)" }
        }
        if zeros(0..<16) { return "unspecified (::)" }
        if zeros(0..<15) && ip[15] == 1 { return "loopback (::1)" }
        // ::a.b.c.d (deprecated IPv4-compatible) and the rest of ::/96
        if zeros(0..<12) { return "IPv4-compatible (::/96)" }
        // 64:ff9b::/96 (NAT64): judge the embedded IPv4 address
        if ip[0] == 0 && ip[1] == 0x64 && ip[2] == 0xff && ip[3] == 0x9b && zeros(4..<12) {
            return v4Reason(ip[12], ip[13], ip[14], ip[15]).map { "NAT64 \($0)" }
        }
        // 2002::/16 (6to4): judge the embedded IPv4 address
        if ip[0] == 0x20 && ip[1] == 0x02 {
            return v4Reason(ip[2], ip[3], ip[4], ip[5]).map { "6to4 \($0)" }
        }
        if ip[0] & 0xfe == 0xfc { return "unique local (fc00::/7)" }
        if ip[0] == 0xfe && ip[1] & 0xc0 == 0x80 { return "link-local (fe80::/10)" }
        if ip[0] == 0xfe && ip[1] & 0xc0 == 0xc0 { return "site-local (fec0::/10)" }
        if ip[0] == 0xff { return "multicast (ff00::/8)" }
        return nil
    }

    private static func v4Reason(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) -> String? {
        switch a {
        case 0: return "this network (0.0.0.0/8)"
        case 10: return "private (10.0.0.0/8)"
        case 127: return "loopback (127.0.0.0/8)"
        case 100 where b & 0xc0 == 64: return "shared/CGNAT (100.64.0.0/10)"
        case 169 where b == 254: return "link-local (169.254.0.0/16)"
        case 172 where b & 0xf0 == 16: return "private (172.16.0.0/12)"
        case 192 where b == 168: return "private (192.168.0.0/16)"
        case 224...239: return "multicast (224.0.0.0/4)"
        case 240...255: return a == 255 && b == 255 && c == 255 && d == 255
            ? "broadcast (255.255.255.255)" : "reserved (240.0.0.0/4)"
        default: return nil
        }
    }

    /// One allow-list entry: an address, a CIDR network, or a host name.
    enum AllowEntry: Equatable {
        case network([UInt8], prefix: Int)
        case host(String)

        init(_ text: String) {
            let t = text.trimmingASCIISpaces()
            if let slash = t.firstIndex(of: "/"), let ip = AddressPolicy.parseIP(String(t[..<slash])),
               let bits = Int(t[t.index(after: slash)...]), bits >= 0, bits <= ip.count * 8 {
                self = AllowEntry.normalized(ip, bits)
            } else if let ip = AddressPolicy.parseIP(t) {
                self = AllowEntry.normalized(ip, ip.count * 8)
            } else {
                self = .host(AddressPolicy.normalizeHost(t))
            }
        }

        /// IPv4-mapped networks (::ffff:0:0/96 and narrower) are stored as IPv4.
        static func normalized(_ ip: [UInt8], _ bits: Int) -> AllowEntry {
            if ip.count == 16, bits >= 96, let v4 = AddressPolicy.unmapped(ip), v4.count == 4 {
                return .network(v4, prefix: bits - 96)
            }
            return .network(ip, prefix: bits)
        }

        func contains(_ ip: [UInt8]) -> Bool {
            guard case .network(let net, let bits) = self, net.count == ip.count else { return false }
            var left = bits
            var i = 0
            while left > 0 {
                let take = min(8, left)
                let mask = UInt8(truncatingIfNeeded: 0xff << (8 - take))
                if net[i] & mask != ip[i] & mask { return false }
                left -= take
                i += 1
            }
            return true
        }
    }

    /// `::ffff:a.b.c.d` → `a.b.c.d`; anything else unchanged.
    static func unmapped(_ ip: [UInt8]) -> [UInt8]? {
        if ip.count == 16 && ip[0..<10].allSatisfy({ $0 == 0 }) && ip[10] == 0xff && ip[11] == 0xff {
            return Array(ip[12..<16])
        }
        return ip
    }

    static func normalizeHost(_ h: String) -> String {
        var s = Substring(h.lowercased())
        if s.hasPrefix("[") && s.hasSuffix("]") { s = s.dropFirst().dropLast() }
        while s.hasSuffix(".") { s = s.dropLast() }
        return String(s)
    }

    /// nil when connecting to `ip` (reached through the URL host `host`) is allowed; otherwise the
    /// reason it is refused. Public addresses are always allowed; a non-public one only when the
    /// address matches an allow-list IP/CIDR or the host name matches an allow-list host name.
    public static func refusal(address ip: [UInt8], host: String, allowList: [String]) -> String? {
        guard let reason = nonPublicReason(ip) else { return nil }
        let addr = unmapped(ip) ?? ip
        let h = normalizeHost(host)
        for text in allowList {
            let entry = AllowEntry(text)
            switch entry {
            case .network: if entry.contains(addr) { return nil }
            case .host(let name): if !name.isEmpty && name == h { return nil }
            }
        }
        return "\(format(ip)) is \(reason)"
    }

    /// Text form of a 4- or 16-byte address.
    public static func format(_ ip: [UInt8]) -> String {
        var buf = [CChar](repeating: 0, count: 64)
        var bytes = ip
        let family = ip.count == 4 ? AF_INET : AF_INET6
        guard ip.count == 4 || ip.count == 16 else { return "?" }
        return bytes.withUnsafeMutableBytes { p in
            inet_ntop(family, p.baseAddress, &buf, socklen_t(buf.count)) == nil ? "?" : String(cString: buf)
        }
    }
}
