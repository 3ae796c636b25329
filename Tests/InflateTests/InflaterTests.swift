import Testing
@testable import Inflate

/// Decodes `body` fed in pieces of `piece` bytes.
func inflate(_ body: [UInt8], _ coding: ContentCoding, piece: Int, limits: InflateLimits = InflateLimits()) throws(InflateError) -> [UInt8] {
    let i = Inflater(coding: coding, limits: limits)
    var out: [UInt8] = []
    var failure: InflateError?
    var k = 0
    while k < body.count && failure == nil {
        let chunk = Array(body[k..<min(body.count, k + piece)])
        chunk.withUnsafeBytes { b in
            do throws(InflateError) { try i.process(b) { out.append(contentsOf: $0) } } catch { failure = error }
        }
        k += piece
    }
    if let failure { throw failure }
    try i.finish()
    return out
}

func expectError(_ want: InflateError, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("no error, expected \(want)")
    } catch {
        #expect(error as? InflateError == want)
    }
}

@Suite struct ContentCodingTests {
    @Test(arguments: [
        (nil, ContentCoding.identity), ("", .identity), ("identity", .identity), ("gzip", .gzip), ("GZIP", .gzip),
        (" x-gzip ", .gzip), ("deflate", .deflate), ("Deflate", .deflate), ("identity, gzip", .gzip), ("gzip,", .gzip),
    ] as [(String?, ContentCoding)])
    func known(_ value: String?, _ want: ContentCoding) {
        #expect(ContentCoding.parse(value) == .success(want))
    }

    @Test(arguments: ["br", "zstd", "compress", "x-compress", "gzip, gzip", "gzip, br", "deflate,gzip", "gzip;q=1", "snappy"])
    func unsupported(_ value: String) {
        guard case .failure(.unsupportedCoding) = ContentCoding.parse(value) else {
            Issue.record("\(value) accepted")
            return
        }
    }
}

@Suite struct InflaterTests {
    /// Python-made fixtures decode to the original at every piece size.
    @Test(arguments: [1, 2, 3, 7, 64, 1 << 20])
    func pythonFixturesAtEveryPieceSize(_ piece: Int) throws {
        #expect(try inflate(Fixtures.gzipWithName, .gzip, piece: piece) == Fixtures.text)
        #expect(try inflate(Fixtures.gzipTwoMembers, .gzip, piece: piece) == Fixtures.text)
        #expect(try inflate(Fixtures.zlibLevel9, .deflate, piece: piece) == Fixtures.sse)
        #expect(try inflate(Fixtures.rawDeflate, .deflate, piece: piece) == Fixtures.sse)
    }

    @Test func corruptTruncatedAndTrailingDataAreErrors() {
        expectError(.corrupt("incorrect data check")) { _ = try inflate(Fixtures.gzipBadCRC, .gzip, piece: 5) }
        expectError(.trailingData) { _ = try inflate(Fixtures.gzipTrailingGarbage, .gzip, piece: 5) }
        expectError(.corrupt("a preset dictionary is required")) { _ = try inflate(Fixtures.zlibWithDictionary, .deflate, piece: 64) }
        for cut in [1, 2, 10, Fixtures.gzipWithName.count - 1] {
            expectError(.truncated) { _ = try inflate(Array(Fixtures.gzipWithName.prefix(cut)), .gzip, piece: 3) }
        }
        expectError(.truncated) { _ = try inflate([0x78], .deflate, piece: 1) }
        // gzip is not deflate, and plain text is neither.
        do {
            _ = try inflate(Fixtures.gzipWithName, .deflate, piece: 8)
            Issue.record("gzip accepted as deflate")
        } catch {
            guard case .corrupt = error else { Issue.record("\(error)"); return }
        }
        do {
            _ = try inflate(Array("plain text, not compressed".utf8), .gzip, piece: 4)
            Issue.record("plain text accepted as gzip")
        } catch {
            guard case .corrupt = error else { Issue.record("\(error)"); return }
        }
    }

    @Test func errorsStick() {
        let i = Inflater(coding: .gzip)
        let garbage: [UInt8] = Array("not gzip at all".utf8)
        expectError(.corrupt("incorrect header check")) { try garbage.withUnsafeBytes { (b) in try i.process(b) { _ in } } }
        expectError(.corrupt("incorrect header check")) { try Fixtures.gzipWithName.withUnsafeBytes { (b) in try i.process(b) { _ in } } }
        expectError(.corrupt("incorrect header check")) { try i.finish() }
    }

    @Test func roundTripsThroughDeflate() throws {
        var rng = SystemRandomNumberGenerator()
        for size in [0, 1, 100, 70_000, 300_000] {
            let data = (0..<size).map { i in i % 3 == 0 ? UInt8.random(in: 0...255, using: &rng) : UInt8(i & 0x7F) }
            for (format, coding) in [(Deflate.Format.gzip, ContentCoding.gzip), (.zlib, .deflate), (.raw, .deflate)] {
                let c = Deflate.compress(data, format: format)
                #expect(!c.isEmpty)
                #expect(try inflate(c, coding, piece: 4096) == data, "\(format) \(size)")
                #expect(try inflate(c, coding, piece: 1) == data, "\(format) \(size) byte by byte")
            }
        }
    }

    @Test func anEmptyBodyIsAnEmptyAnswer() throws {
        #expect(try inflate([], .gzip, piece: 1).isEmpty)
        #expect(try inflate([], .deflate, piece: 1).isEmpty)
    }

    @Test func identityPassesThroughWithinTheCap() throws {
        let body = Array("{\"a\":1}".utf8)
        #expect(try inflate(body, .identity, piece: 3) == body)
        expectError(.outputTooLarge(limit: 4)) { _ = try inflate(body, .identity, piece: 3, limits: InflateLimits(maxOutputBytes: 4)) }
    }

    /// A bomb (10 MiB of zeros in ~10 KiB) is refused by ratio, or by size, and never emits more
    /// than the cap; a real stream passes.
    @Test func bombsAreRefused() throws {
        let zeros = [UInt8](repeating: 0, count: 10 << 20)
        let bomb = Deflate.compress(zeros, format: .gzip, level: 9)
        #expect(bomb.count < 20_000)
        expectError(.ratioTooHigh(limit: 200)) { _ = try inflate(bomb, .gzip, piece: 4096) }
        // By size: the emitted total never crosses the cap.
        let i = Inflater(coding: .gzip, limits: InflateLimits(maxOutputBytes: 100_000, maxRatio: 1_000_000))
        var emitted = 0
        expectError(.outputTooLarge(limit: 100_000)) {
            try bomb.withUnsafeBytes { (b) in try i.process(b) { emitted += $0.count } }
        }
        #expect(emitted <= 100_000)
        // Under the ratio floor a very compressible answer is fine.
        let small = [UInt8](repeating: 0x20, count: 500_000)
        #expect(try inflate(Deflate.compress(small, format: .zlib), .deflate, piece: 100) == small)
        // A chat stream (gzips about 28 times) decodes under the defaults.
        let json = (0..<40_000).flatMap { Array("data: {\"id\":\"chatcmpl-AbC\",\"choices\":[{\"delta\":{\"content\":\"tok\($0)\"}}]}\n\n".utf8) }
        #expect(try inflate(Deflate.compress(json, format: .gzip), .gzip, piece: 1024) == json)
    }

    @Test func outputComesInBoundedPieces() throws {
        let data = [UInt8](repeating: 0x61, count: 200_000)
        let c = Deflate.compress(data, format: .gzip)
        let i = Inflater(coding: .gzip)
        var biggest = 0, total = 0
        try c.withUnsafeBytes { (b) in try i.process(b) { biggest = max(biggest, $0.count); total += $0.count } }
        try i.finish()
        #expect(total == 200_000 && biggest <= Inflater.outputChunkBytes)
        #expect(i.totalIn == c.count && i.totalOut == 200_000)
    }

    @Test func zlibHeaderDetection() {
        #expect(Inflater.isZlibHeader(0x78, 0x9C) && Inflater.isZlibHeader(0x78, 0xDA) && Inflater.isZlibHeader(0x78, 0x01))
        #expect(!Inflater.isZlibHeader(0x1F, 0x8B) && !Inflater.isZlibHeader(0x78, 0x00))
    }
}
