import Translation

/// The names a prompt might refer to with `@`, for the ownership check of `POST /v1/videos`.
///
/// Deliberately looser than `mentionedCharacterNames` (which skips `a@b`, treating it as an
/// e-mail address): the upstream's own rule for what counts as a mention is unknown, so for a
/// security check every `@` counts, whatever precedes it (`x@alice`, `mail@alice.com`, `@@alice`).
/// For each `@`, the candidates are the run of name characters after it with trailing dots
/// removed, and each prefix of that run ending just before a `.` (`@alice.bob` → `alice.bob`,
/// `alice`), since a dot may be punctuation to the upstream. Only valid names are returned
/// (`isValidCharacterName`), lower-cased (names are unique case-insensitively), deduplicated, in
/// order of first appearance. Pure.
func characterNameCandidates(in prompt: String) -> [String] {
    let u = Array(prompt.utf8)
    var out: [String] = []
    var seen = Set<String>()
    func add(_ bytes: ArraySlice<UInt8>) {
        let name = String(decoding: bytes, as: UTF8.self).lowercased()
        if isValidCharacterName(name), seen.insert(name).inserted { out.append(name) }
    }
    var i = 0
    while i < u.count {
        guard u[i] == UInt8(ascii: "@") else { i += 1; continue }
        var j = i + 1
        while j < u.count, isCharacterNameByte(u[j]) { j += 1 }
        var end = j
        while end > i + 1, u[end - 1] == UInt8(ascii: ".") { end -= 1 }
        if end > i + 1 {
            add(u[(i + 1)..<end])
            var k = i + 1
            while k < end {
                if u[k] == UInt8(ascii: ".") { add(u[(i + 1)..<k]) }
                k += 1
            }
        }
        i = j
    }
    return out
}

/// ASCII letters, digits, `_` and `.` — the bytes of a character name.
@inline(__always) func isCharacterNameByte(_ b: UInt8) -> Bool {
    (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A)
        || b == UInt8(ascii: "_") || b == UInt8(ascii: ".")
}
