/// The human message inside an upstream error body (`{"error":{"message":…}}`, `{"error":"…"}`,
/// `{"message":…}`, `{"msg":…}`), with the shared key redacted *after* JSON decoding as well as
/// before: a key written with JSON escapes (`sk-\u0041…`) is invisible to a byte-level redactor
/// but becomes the key again once decoded. Nil when the body has no such message.
public func upstreamErrorMessage(_ raw: [UInt8], secret: [UInt8], maxChars: Int = 500) -> String? {
    let body = secret.isEmpty ? raw : KeyRedactor.redact(raw, secret: secret)
    guard let v = try? JSONValue.parse(body) else { return nil }
    guard let m = v["error"]?["message"]?.stringValue ?? v["error"]?.stringValue ?? v["message"]?.stringValue
            ?? v["msg"]?.stringValue else { return nil }
    let decoded = Array(m.utf8)
    let clean = secret.isEmpty ? decoded : KeyRedactor.redact(decoded, secret: secret)
    return String(String(decoding: clean, as: UTF8.self).prefix(maxChars))
}

/// True when `body` is JSON whose decoded strings contain `secret` although its bytes need not:
/// a key written with `\uXXXX` escapes passes a byte-level redactor and is the key again in the
/// client's JSON decoder. Cheap when the body has no `\u` escape at all (the common case).
public func jsonHidesSecret(_ body: [UInt8], secret: [UInt8]) -> Bool {
    guard !secret.isEmpty, body.count >= secret.count else { return false }
    // Backslashes found eight bytes at a time: the common answer has none, or no `\u`.
    let hasEscape = body.withUnsafeBytes { b -> Bool in
        guard let base = b.baseAddress else { return false }
        var from = 0
        while let i = firstIndex(of: 0x5C, in: base, from: from, count: b.count) {
            if i + 1 < b.count && b[i + 1] == 0x75 { return true }
            from = i + 2
        }
        return false
    }
    guard hasEscape, let v = try? JSONValue.parse(body) else { return false }
    func walk(_ v: JSONValue) -> Bool {
        switch v {
        case .string(let s): return Array(s.utf8).withUnsafeBufferPointer { containsBytes($0, secret) }
        case .array(let a): return a.contains(where: walk)
        case .object(let ms): return ms.contains { walk(.string($0.key)) || walk($0.value) }
        default: return false
        }
    }
    return walk(v)
}

private func containsBytes(_ hay: UnsafeBufferPointer<UInt8>, _ needle: [UInt8]) -> Bool {
    guard hay.count >= needle.count else { return false }
    for i in 0...(hay.count - needle.count) where hay[i] == needle[0] {
        var k = 1
        while k < needle.count && hay[i + k] == needle[k] { k += 1 }
        if k == needle.count { return true }
    }
    return false
}
