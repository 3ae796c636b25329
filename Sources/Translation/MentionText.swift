// Prompt text as an `@name` check must read it. A name can be hidden from a byte-level scan by
// characters that render as nothing (a zero-width space inside it) or by look-alike forms
// (full-width `＠ａｌｉｃｅ`); the upstream, or the model behind it, may still read the name.
// Compatibility normalisation (NFKC) needs Foundation, so it lives in the gateway
// (`MentionNormalization.swift`); the rest is here, standard library only.

/// Whether a scalar is invisible in text: general category Cf (format: U+00AD soft hyphen,
/// U+200B zero-width space, U+200C/D joiners, U+2060 word joiner, U+FEFF, bidi controls, tags)
/// or another default-ignorable code point (variation selectors, U+034F combining grapheme
/// joiner, Hangul fillers). Dropped before names are looked for.
@inline(__always) public func isInvisibleInText(_ s: Unicode.Scalar) -> Bool {
    s.properties.generalCategory == .format || s.properties.isDefaultIgnorableCodePoint
}

/// `s` without invisible scalars (`isInvisibleInText`). Returns `s` itself when it has none
/// (ASCII text never has any).
public func droppingInvisibleScalars(_ s: String) -> String {
    guard s.utf8.contains(where: { $0 >= 0x80 }), s.unicodeScalars.contains(where: isInvisibleInText) else { return s }
    var out = String.UnicodeScalarView()
    for u in s.unicodeScalars where !isInvisibleInText(u) { out.append(u) }
    return String(out)
}

/// `s` without nonspacing combining marks (category Mn: `e` + U+0301 reads `e`), for the
/// loosest reading of a decomposed prompt.
public func droppingCombiningMarks(_ s: String) -> String {
    guard s.utf8.contains(where: { $0 >= 0x80 }) else { return s }
    var out = String.UnicodeScalarView()
    for u in s.unicodeScalars where u.properties.generalCategory != .nonspacingMark { out.append(u) }
    return String(out)
}
