import Testing
import Translation
@testable import Gateway

@Suite struct MentionNormalizationTests {
    /// (prompt, a name that must be among the candidates)
    static let hidden: [(String, String)] = [
        ("make a video with ＠alice", "alice"),                 // full-width commercial at
        ("with ﹫alice", "alice"),                               // small commercial at
        ("with @ａｌｉｃｅ please", "alice"),                    // full-width letters
        ("with ＠ＡＬＩＣＥ", "alice"),
        ("with @al\u{200B}ice", "alice"),                       // zero-width space
        ("with @al\u{200D}ice", "alice"),                       // zero-width joiner
        ("with @al\u{2060}ice", "alice"),                       // word joiner
        ("with @\u{FEFF}alice", "alice"),                       // BOM
        ("with @ali\u{00AD}ce", "alice"),                       // soft hyphen
        ("with @ali\u{FE0F}ce", "alice"),                       // variation selector
        ("with @a\u{200E}lice", "alice"),                       // left-to-right mark
        ("with @𝐚𝐥𝐢𝐜𝐞", "alice"),                               // mathematical bold
        ("with @ⓐⓛⓘⓒⓔ", "alice"),                              // circled letters
        ("with @alice\u{0301}", "alice"),                       // combining acute after the name
        ("with @ali\u{0301}ce", "alice"),                       // combining mark inside it
        ("with @alicé", "alice"),                               // precomposed é, read loosely
        ("请@ａｌｉｃｅ．ｂｏｂ拍", "alice.bob"),
        ("请@ａｌｉｃｅ．ｂｏｂ拍", "alice"),
        ("x＠\u{200B}ｂｏｂ_１", "bob_1"),
    ]

    @Test(arguments: hidden)
    func hiddenNamesAreFound(_ prompt: String, _ name: String) {
        #expect(mentionCandidates(in: prompt).contains(name), "\(prompt.unicodeScalars.map { String($0.value, radix: 16) })")
    }

    /// What the old scan missed (the bug this fixes): full-width `＠` and a zero-width space.
    @Test func theByteScanAloneMissesThem() {
        #expect(!characterNameCandidates(in: "＠alice").contains("alice"))
        #expect(!characterNameCandidates(in: "@al\u{200B}ice").contains("alice"))
        #expect(mentionCandidates(in: "＠alice") == ["alice"])
    }

    @Test func plainPromptsAreUnchanged() {
        for p in ["@alice and @bob.", "mail@alice.com", "no mention", "@@x_y", "请@alice拍"] {
            #expect(mentionCandidates(in: p) == characterNameCandidates(in: p))
        }
        #expect(mentionNormalized("plain ASCII @alice") == "plain ASCII @alice")
    }

    @Test func normalisationDropsInvisiblesAndFoldsCompatibilityForms() {
        #expect(mentionNormalized("＠ａｌ\u{200B}ｉｃｅ") == "@alice")
        #expect(mentionNormalized("ﬁle") == "file")
        #expect(mentionNormalized("e\u{0301}") == "é")                 // NFKC composes
        #expect(droppingInvisibleScalars("a\u{00AD}b\u{2060}c\u{FEFF}") == "abc")
        #expect(droppingInvisibleScalars("中文 é") == "中文 é")
        #expect(droppingCombiningMarks("e\u{0301}x") == "ex")
    }
}
