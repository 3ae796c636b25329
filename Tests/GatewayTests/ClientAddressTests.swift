import Gateway
import Testing

@Suite struct ClientAddressTests {
    static let proxies = TrustedProxies(["10.0.0.0/8", "192.168.1.1", "fd00::/8"])

    @Test(arguments: [
        // peer, X-Forwarded-For fields, expected client
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),                       // untrusted peer: header ignored
        ("10.1.2.3", [], "10.1.2.3"),                                        // trusted peer, no header
        ("10.1.2.3", ["198.51.100.7"], "198.51.100.7"),                      // one hop
        ("10.1.2.3", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),             // spoofed left part not believed
        ("10.1.2.3", ["6.6.6.6, 198.51.100.7, 10.9.9.9"], "198.51.100.7"),   // trusted hops skipped
        ("10.1.2.3", ["6.6.6.6", "198.51.100.7, 192.168.1.1"], "198.51.100.7"), // several fields: one list
        ("10.1.2.3", ["10.0.0.1, 10.0.0.2"], "10.0.0.1"),                    // all trusted: the leftmost
        ("10.1.2.3", ["6.6.6.6, garbage, 10.0.0.2"], "10.0.0.2"),            // malformed stops the walk
        ("10.1.2.3", ["unknown"], "10.1.2.3"),                                // malformed at once: the peer
        ("10.1.2.3", ["198.51.100.7, , "], "198.51.100.7"),                  // empty entries skipped
        ("10.1.2.3", [" 198.51.100.7:4711 "], "198.51.100.7"),               // IPv4 with port
        ("10.1.2.3", ["[2001:db8::1]:443"], "2001:db8::1"),                  // bracketed IPv6 with port
        ("10.1.2.3", ["2001:DB8:0::1"], "2001:db8::1"),                       // canonical form
        ("10.1.2.3", ["[2001:db8::1"], "10.1.2.3"),                           // unclosed bracket
        ("10.1.2.3", ["198.51.100.7:99999"], "10.1.2.3"),                    // bad port
        ("10.1.2.3", ["fe80::1%eth0"], "10.1.2.3"),                           // zones are not client addresses
        ("fd12::5", ["2001:db8::7"], "2001:db8::7"),                          // IPv6 proxy
        ("::ffff:10.1.2.3", ["198.51.100.7"], "198.51.100.7"),               // IPv4-mapped peer matches the IPv4 CIDR
        ("10.1.2.3", ["::ffff:198.51.100.7"], "198.51.100.7"),               // mapped entry printed as IPv4
        ("192.168.1.2", ["1.2.3.4"], "192.168.1.2"),                         // a /32 trusts one address only
        ("not-an-ip", ["1.2.3.4"], "not-an-ip"),
    ])
    func walk(_ peer: String, _ xff: [String], _ expected: String) {
        #expect(forwardedClientAddress(peer: peer, forwardedFor: xff, trusted: Self.proxies) == expected)
    }

    @Test func noTrustedProxiesMeansThePeer() {
        #expect(forwardedClientAddress(peer: "10.1.2.3", forwardedFor: ["1.2.3.4"], trusted: TrustedProxies([])) == "10.1.2.3")
    }

    @Test func hopsAreBounded() {
        let chain = (0..<100).map { "10.0.\($0 / 256).\($0 % 256)" }.joined(separator: ",")
        // 100 trusted hops: the walk stops after maxForwardedHops and keeps the last one it read.
        let r = forwardedClientAddress(peer: "10.1.2.3", forwardedFor: ["6.6.6.6," + chain], trusted: Self.proxies)
        #expect(r == "10.0.0.\(100 - maxForwardedHops)")
    }

    @Test(arguments: [
        ("10.0.0.0/8", true), ("10.0.0.1", true), ("::1", true), ("fd00::/8", true), ("0.0.0.0/0", true), ("::/0", true),
        ("::ffff:10.0.0.0/104", true), ("10.0.0.0/33", false), ("fd00::/129", false), ("10.0.0.0/", false),
        ("10.0.0.0/a", false), ("example.com", false), ("", false), ("10.0.0.0/-1", false), ("10.0.0.0/8/8", false),
    ])
    func cidrSyntax(_ text: String, _ valid: Bool) {
        #expect((CIDR(text) != nil) == valid, "\(text)")
    }

    @Test func cidrMatching() {
        let net = CIDR("172.16.0.0/12")!
        #expect(net.contains([172, 31, 255, 255]) && !net.contains([172, 32, 0, 0]))
        let mapped = CIDR("::ffff:10.0.0.0/104")!
        #expect(mapped.network == [10, 0, 0, 0] && mapped.prefix == 8)
        #expect(CIDR("10.9.8.7/8")!.network == [10, 0, 0, 0])   // host bits masked
        #expect(!CIDR("fd00::/8")!.contains([10, 0, 0, 1]))     // families never match
    }
}
