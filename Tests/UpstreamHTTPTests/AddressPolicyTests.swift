import Testing
@testable import Upstream

/// The address policy for caller-supplied URLs (pure; the client applies it to the address it connects).
@Suite struct AddressPolicyTests {
    @Test(arguments: [
        ("127.0.0.1", true), ("127.255.1.2", true), ("10.1.2.3", true), ("172.16.0.1", true),
        ("172.31.255.255", true), ("172.32.0.1", false), ("172.15.0.1", false), ("192.168.1.1", true),
        ("192.169.0.1", false), ("169.254.169.254", true), ("100.64.0.1", true), ("100.127.255.255", true),
        ("100.128.0.1", false), ("100.63.255.255", false), ("0.0.0.0", true), ("0.1.2.3", true),
        ("224.0.0.1", true), ("239.255.255.255", true), ("240.0.0.1", true), ("255.255.255.255", true),
        ("8.8.8.8", false), ("1.1.1.1", false), ("93.184.216.34", false), ("11.0.0.1", false),
        ("::1", true), ("::", true), ("fc00::1", true), ("fd12:3456::1", true), ("fe80::1", true),
        ("febf::1", true), ("fec0::1", true), ("ff02::1", true),
        ("::ffff:127.0.0.1", true), ("::ffff:10.0.0.1", true), ("::ffff:8.8.8.8", false),
        ("::127.0.0.1", true), ("64:ff9b::10.0.0.1", true), ("64:ff9b::8.8.8.8", false),
        ("2002:0a00:0001::", true), ("2002:0808:0808::", false),
        ("2001:4860:4860::8888", false), ("2606:4700::1111", false), ("[::1]", true), ("fe80::1%eth0", true),
    ])
    func classification(address: String, nonPublic: Bool) throws {
        let ip = try #require(AddressPolicy.parseIP(address))
        #expect((AddressPolicy.nonPublicReason(ip) != nil) == nonPublic, "\(address)")
    }

    @Test func parseRejectsNonAddresses() {
        #expect(AddressPolicy.parseIP("example.com") == nil)
        #expect(AddressPolicy.parseIP("256.1.1.1") == nil)
        #expect(AddressPolicy.parseIP("") == nil)
        #expect(AddressPolicy.parseIP("1.2.3.4")?.count == 4)
        #expect(AddressPolicy.parseIP("::1")?.count == 16)
    }

    @Test func allowList() throws {
        let lo = try #require(AddressPolicy.parseIP("127.0.0.1"))
        let mappedLo = try #require(AddressPolicy.parseIP("::ffff:127.0.0.1"))
        let ten = try #require(AddressPolicy.parseIP("10.9.8.7"))
        let v6lo = try #require(AddressPolicy.parseIP("::1"))
        let pub = try #require(AddressPolicy.parseIP("8.8.8.8"))
        #expect(AddressPolicy.refusal(address: pub, host: "dns.google", allowList: []) == nil)
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: []) != nil)
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: ["127.0.0.0/8"]) == nil)
        #expect(AddressPolicy.refusal(address: mappedLo, host: "x", allowList: ["127.0.0.0/8"]) == nil)
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: ["::ffff:127.0.0.0/104"]) == nil)
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: ["127.0.0.2"]) != nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["10.9.0.0/16"]) == nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["10.8.0.0/16"]) != nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["10.0.0.0/7"]) == nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["0.0.0.0/0"]) == nil)
        #expect(AddressPolicy.refusal(address: v6lo, host: "x", allowList: ["::1/128"]) == nil)
        #expect(AddressPolicy.refusal(address: v6lo, host: "x", allowList: ["127.0.0.0/8"]) != nil)
        #expect(AddressPolicy.refusal(address: ten, host: "Internal.Example.", allowList: ["internal.example"]) == nil)
        #expect(AddressPolicy.refusal(address: ten, host: "other.example", allowList: ["internal.example"]) != nil)
        #expect(AddressPolicy.refusal(address: ten, host: "x", allowList: ["10.0.0.0/99"]) != nil)  // bad CIDR = a host name
        #expect(AddressPolicy.refusal(address: lo, host: "x", allowList: [])?.contains("loopback") == true)
    }
}
