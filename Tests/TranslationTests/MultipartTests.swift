import Testing
@testable import Translation

@Suite struct MultipartTests {
    @Test(arguments: [
        ("multipart/form-data; boundary=abc123", "abc123"),
        ("multipart/form-data; boundary=\"a b;c\"", "a b;c"),
        ("Multipart/Form-Data;charset=utf-8;  BOUNDARY=----WebKitFormBoundaryX", "----WebKitFormBoundaryX"),
        ("multipart/form-data; boundary=\"q\\\"x\"", "q\"x"),
    ])
    func boundaryFromContentType(_ ct: String, _ want: String) {
        #expect(Multipart.boundary(fromContentType: ct) == want)
    }

    @Test(arguments: ["application/json; boundary=x", "multipart/form-data", "multipart/form-data; boundary=",
                      "multipart/form-data; boundary=\"\"", "", ";;;", "multipart/form-data; boundary=\"a\u{01}\""])
    func noBoundary(_ ct: String) {
        #expect(Multipart.boundary(fromContentType: ct) == nil)
    }

    static let prompt = "镜头运动：45° 俯视角起步\r\n右拳动作闭环\r\n\r\n起势（0-1 秒）：@alice_01 挥拳\n末尾\r\n"

    @Test func roundTripByteExact() throws {
        var enc = MultipartEncoder(seed: 1)
        let image: [UInt8] = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 31) } + Array("\r\n--\(enc.boundary)X".utf8) + [0x0D]
        enc.addField(name: "prompt", value: Self.prompt)
        enc.addField(name: "model", value: "sora-2")
        enc.addFile(name: "input_reference", filename: "a \"quoted\" \\ 名.jpg", contentType: "image/jpeg", data: image)
        enc.addField(name: "empty", value: "")
        let (body, ct) = enc.finish()
        #expect(ct == "multipart/form-data; boundary=\(enc.boundary)")
        #expect(MultipartEncoder(seed: 1).boundary == enc.boundary)
        #expect(MultipartEncoder(seed: 2).boundary != enc.boundary)
        let b = try #require(Multipart.boundary(fromContentType: ct))
        let parts = try Multipart.parse(body, boundary: b)
        #expect(parts.map(\.name) == ["prompt", "model", "input_reference", "empty"])
        #expect(parts[0].text == Self.prompt)
        #expect(Array(parts[0].data) == Array(Self.prompt.utf8))
        #expect(parts[1].text == "sora-2")
        #expect(parts[2].filename == "a \"quoted\" \\ 名.jpg")
        #expect(parts[2].contentType == "image/jpeg")
        #expect(Array(parts[2].data) == image)
        #expect(Array(body[parts[2].range]) == image)
        #expect(parts[3].text == "")
        #expect(parts[0].filename == nil)
    }

    @Test func headerInjectionIsNeutralised() throws {
        var enc = MultipartEncoder(boundary: "B")
        enc.addField(name: "x\"\r\nContent-Type: evil", value: "v")
        let parts = try Multipart.parse(enc.finish().body, boundary: "B")
        #expect(parts.count == 1)
        #expect(parts[0].name == "x\"%0D%0AContent-Type: evil")
        #expect(parts[0].contentType == nil)
    }

    @Test func browserStyleBodyWithPreambleAndEpilogue() throws {
        let body = "preamble\r\n--XyZ  \r\ncontent-disposition: form-data; name=\"a\"\r\n\r\n1\r\n--XyZ\r\n"
            + "Content-Disposition: form-data; name=b; filename*=UTF-8''%E4%B8%AD.png; filename=\"x.png\"\r\nContent-Type:  image/png \r\n\r\n"
            + "\r\n--XyZ--\r\nepilogue"
        let parts = try Multipart.parse(Array(body.utf8), boundary: "XyZ")
        #expect(parts.count == 2)
        #expect(parts[0].name == "a" && parts[0].text == "1")
        #expect(parts[1].filename == "中.png" && parts[1].contentType == "image/png" && parts[1].data.isEmpty)
    }

    @Test func lfOnlyBody() throws {
        let body = "--b\nContent-Disposition: form-data; name=\"a\"\n\nline1\r\nline2\n--b--\n"
        let parts = try Multipart.parse(Array(body.utf8), boundary: "b")
        #expect(parts.first?.text == "line1\r\nline2")
    }

    @Test func emptyForm() throws {
        #expect(try Multipart.parse(Array("--b--\r\n".utf8), boundary: "b").isEmpty)
    }

    @Test(arguments: [
        "",
        "garbage",
        "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nno end",
        "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n",
        "--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--",
        "--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--",
        "--b\r\nno colon here\r\n\r\nx\r\n--b--",
        "--bX\r\n",
        "--b",
        "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--bogus\r\n",
    ])
    func rejectsMalformed(_ body: String) {
        #expect(throws: TranslationError.self) { try Multipart.parse(Array(body.utf8), boundary: "b") }
    }

    @Test func limits() {
        var enc = MultipartEncoder(boundary: "b")
        for i in 0..<5 { enc.addField(name: "f\(i)", value: "v") }
        let body = enc.finish().body
        #expect(throws: TranslationError(.limitExceeded, "more than 4 parts")) {
            try Multipart.parse(body, boundary: "b", limits: MultipartLimits(maxParts: 4))
        }
        #expect((try? Multipart.parse(body, boundary: "b", limits: MultipartLimits(maxParts: 5)))?.count == 5)
        let big = "--b\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Pad: \(String(repeating: "p", count: 9000))\r\n\r\nx\r\n--b--"
        #expect(throws: TranslationError.self) { try Multipart.parse(Array(big.utf8), boundary: "b") }
        let many = "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n" + String(repeating: "X: y\r\n", count: 20) + "\r\nx\r\n--b--"
        #expect(throws: TranslationError.self) { try Multipart.parse(Array(many.utf8), boundary: "b") }
    }

    @Test func everyTruncationIsHandled() throws {
        var enc = MultipartEncoder(boundary: "bnd")
        enc.addField(name: "a", value: "hello\r\n--bn")
        enc.addFile(name: "f", filename: "x", data: Array("--bnd\r".utf8))
        let body = enc.finish().body
        #expect(try Multipart.parse(body, boundary: "bnd").map(\.text) == ["hello\r\n--bn", "--bnd\r"])
        for cut in 0..<body.count {
            _ = try? Multipart.parse(Array(body[..<cut]), boundary: "bnd")
        }
    }
}
