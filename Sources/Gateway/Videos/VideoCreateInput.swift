import HTTPWire
import Translation

/// What a caller asked for in `POST /v1/videos`, from either body form the OpenAI SDKs send.
struct VideoCreateInput: Equatable {
    enum Image: Equatable {
        case bytes([UInt8], filename: String?, contentType: String?)
        case url(String)
    }
    var prompt: String?
    var model: String?
    var size: String?
    var seconds: String?
    var image: Image?

    /// The fields Veil reads from either form.
    static let decisionFields: Set<String> = ["prompt", "model", "size", "seconds", "input_reference",
                                              "input_reference[image_url]", "input_reference[file_id]"]

    /// Parses multipart/form-data (the SDK's `client.videos.create`) or JSON. Pure.  A field
    /// Veil reads given twice (or, in JSON, spelled twice ignoring case) is refused.
    static func parse(body: [UInt8], contentType: String?) -> Result<VideoCreateInput, APIError> {
        let ct = (contentType ?? "").lowercased()
        if ct.hasPrefix("multipart/form-data") {
            guard let boundary = Multipart.boundary(fromContentType: contentType ?? "") else {
                return .failure(APIError(400, "multipart/form-data needs a boundary parameter.", code: "invalid_multipart"))
            }
            let parts: [MultipartPart]
            do { parts = try Multipart.parse(body, boundary: boundary) } catch {
                return .failure(APIError(400, "The multipart body is malformed: \(error.message)", code: "invalid_multipart"))
            }
            if let field = Multipart.repeatedField(in: parts, among: decisionFields) {
                return .failure(CharacterCreateInput.ambiguous(field))
            }
            var input = VideoCreateInput()
            for p in parts {
                switch p.name {
                case "prompt": input.prompt = p.text
                case "model": input.model = p.text
                case "size": input.size = p.text
                case "seconds": input.seconds = p.text
                case "input_reference":
                    if p.filename != nil || !(p.contentType ?? "").hasPrefix("text/") && p.contentType != nil {
                        input.image = .bytes(Array(p.data), filename: p.filename, contentType: p.contentType)
                    } else {
                        // A text field: a URL or data URL, as in the JSON form.
                        input.image = imageReference(p.text)
                    }
                case "input_reference[image_url]":
                    // The SDK's multipart form of `{"image_url": ...}`.
                    input.image = imageReference(p.text)
                case "input_reference[file_id]":
                    return .failure(APIError(400, "File ids are not supported by this upstream; upload the image or pass `image_url`.", param: "input_reference", code: "unsupported_file_id"))
                default: break // unknown fields are ignored, as OpenAI does for forward compatibility
                }
            }
            return .success(input)
        }
        if ct.isEmpty || ct.hasPrefix("application/json") {
            do throws(TranslationError) {
                if let name = try JSONParser.ambiguousTopLevelMember(body, reading: decisionFields) {
                    return .failure(CharacterCreateInput.ambiguous(name))
                }
            } catch {
                return .failure(APIError(400, "The body must be JSON or multipart/form-data.", code: "invalid_json"))
            }
            let v: JSONValue
            do { v = try JSONValue.parse(body) } catch {
                return .failure(APIError(400, "The body must be JSON or multipart/form-data.", code: "invalid_json"))
            }
            guard case .object = v else { return .failure(APIError(400, "The JSON body must be an object.", code: "invalid_json")) }
            var input = VideoCreateInput()
            for (key, path) in [("prompt", \VideoCreateInput.prompt), ("model", \.model), ("size", \.size), ("seconds", \.seconds)] {
                guard let f = v[key], !f.isNull else { continue }
                guard let s = f.lenientString else {
                    return .failure(APIError(400, "`\(key)` must be a string.", param: key, code: "invalid_type"))
                }
                input[keyPath: path] = s
            }
            if let ref = v["input_reference"], !ref.isNull {
                if let s = ref.stringValue { input.image = imageReference(s) }
                else if let u = ref["image_url"]?.stringValue ?? ref["url"]?.stringValue { input.image = imageReference(u) }
                else if let u = ref["image_url"]?["url"]?.stringValue { input.image = imageReference(u) }
                else if ref["file_id"] != nil {
                    return .failure(APIError(400, "File ids are not supported by this upstream; upload the image or pass `image_url`.", param: "input_reference", code: "unsupported_file_id"))
                }
                else {
                    return .failure(APIError(400, "`input_reference` must be {\"image_url\": \"...\"} or a data: URL.", param: "input_reference", code: "invalid_type"))
                }
            }
            return .success(input)
        }
        return .failure(APIError(415, "Send multipart/form-data or application/json.", code: "unsupported_media_type"))
    }

    /// `data:image/png;base64,...` → bytes; anything else is a URL to fetch.
    static func imageReference(_ s: String) -> Image {
        if s.hasPrefix("data:"), let comma = s.firstIndex(of: ",") {
            let meta = s[s.index(s.startIndex, offsetBy: 5)..<comma]
            let mediaType = meta.split(separator: ";").first.map(String.init)
            if meta.hasSuffix(";base64"), let bytes = Base64.decode(s[s.index(after: comma)...]) {
                return .bytes(bytes, filename: nil, contentType: mediaType)
            }
            return .bytes([], filename: nil, contentType: mediaType) // undecodable: refused by validation
        }
        return .url(s)
    }
}

/// A request that passed validation: exactly what goes upstream and into the store.
struct VideoSpec: Equatable {
    var prompt: String
    var model: String
    var size: String
    var seconds: String
    var image: VideoCreateInput.Image?
}

enum VideoValidation {
    /// Checks everything that can be checked before spending the team's money. Pure.
    static func validate(_ input: VideoCreateInput, settings s: GatewayConfig.VideoSettings, teamModels: [String]?) -> Result<VideoSpec, APIError> {
        guard let prompt = input.prompt, !prompt.allSatisfy({ $0.isWhitespace }) else {
            return .failure(APIError(400, "`prompt` is required.", param: "prompt", code: "missing_prompt"))
        }
        if prompt.count > s.maxPromptChars {
            return .failure(APIError(400, "`prompt` is longer than \(s.maxPromptChars) characters.", param: "prompt", code: "prompt_too_long"))
        }
        if prompt.unicodeScalars.contains(where: { $0.value == 0 }) {
            return .failure(APIError(400, "`prompt` contains a NUL character.", param: "prompt", code: "invalid_prompt"))
        }
        let model = input.model ?? s.defaultModel
        guard s.models.contains(model) else {
            return .failure(APIError(400, "Model `\(String(model.prefix(64)))` is not a video model here; use one of \(s.models.joined(separator: ", ")).", param: "model", code: "invalid_model"))
        }
        if let allowed = teamModels, !allowed.contains(model) {
            return .failure(APIError(403, "Model `\(model)` is not allowed for this team.", param: "model", code: "model_not_allowed"))
        }
        let size = input.size ?? s.defaultSize
        guard s.sizes.contains(size) else {
            return .failure(APIError(400, "`size` must be one of \(s.sizes.joined(separator: ", ")).", param: "size", code: "invalid_size"))
        }
        let seconds = input.seconds ?? s.defaultSeconds
        guard s.seconds.contains(seconds) else {
            return .failure(APIError(400, "`seconds` must be one of \(s.seconds.joined(separator: ", ")).", param: "seconds", code: "invalid_seconds"))
        }
        var image = input.image
        switch image {
        case .bytes(let b, let filename, _)?:
            if let e = checkImage(b, maxBytes: s.maxImageBytes) { return .failure(e) }
            image = .bytes(b, filename: filename, contentType: ImageKind.sniff(b)?.mimeType)
        case .url(let u)?:
            let lower = u.lowercased()
            guard lower.hasPrefix("https://") || (s.imageFetch.allowHTTP && lower.hasPrefix("http://")) else {
                return .failure(APIError(400, s.imageFetch.allowHTTP ? "`input_reference` must be an http(s) URL or a data: URL." : "`input_reference` URLs must use https.", param: "input_reference", code: "invalid_image_url"))
            }
            guard u.utf8.count <= 4096, u.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                return .failure(APIError(400, "`input_reference` URL is too long or contains spaces or control characters.", param: "input_reference", code: "invalid_image_url"))
            }
        case nil: break
        }
        return .success(VideoSpec(prompt: prompt, model: model, size: size, seconds: seconds, image: image))
    }

    /// Image bytes must be a JPEG, PNG or WebP within the size cap.
    static func checkImage(_ b: [UInt8], maxBytes: Int) -> APIError? {
        if b.isEmpty { return APIError(400, "`input_reference` is empty or not valid base64.", param: "input_reference", code: "invalid_image") }
        if b.count > maxBytes { return APIError(400, "`input_reference` is larger than \(maxBytes) bytes.", param: "input_reference", code: "image_too_large") }
        if ImageKind.sniff(b) == nil { return APIError(400, "`input_reference` must be a JPEG, PNG or WebP image.", param: "input_reference", code: "invalid_image_type") }
        return nil
    }
}

/// Image formats the upstream takes, recognised by their magic bytes (never by a claimed type).
enum ImageKind {
    case jpeg, png, webp
    static func sniff(_ b: [UInt8]) -> ImageKind? {
        if b.count >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF { return .jpeg }
        if b.count >= 8 && b[0..<8].elementsEqual([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if b.count >= 12 && b[0..<4].elementsEqual(Array("RIFF".utf8)) && b[8..<12].elementsEqual(Array("WEBP".utf8)) { return .webp }
        return nil
    }
    var mimeType: String { switch self { case .jpeg: "image/jpeg"; case .png: "image/png"; case .webp: "image/webp" } }
    var fileExtension: String { switch self { case .jpeg: "jpg"; case .png: "png"; case .webp: "webp" } }
}

/// Standard base64 (RFC 4648), padding optional, whitespace refused. Pure.
enum Base64 {
    static func decode<S: StringProtocol>(_ s: S) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count * 3 / 4)
        var acc: UInt32 = 0, bits = 0
        var padding = 0
        for c in s.utf8 {
            let v: UInt32
            switch c {
            case 65...90: v = UInt32(c - 65)
            case 97...122: v = UInt32(c - 71)
            case 48...57: v = UInt32(c + 4)
            case 43, 45: v = 62   // + (and - of the URL-safe alphabet)
            case 47, 95: v = 63   // / (and _)
            case 61: padding += 1; continue
            default: return nil
            }
            if padding > 0 { return nil }
            acc = (acc << 6) | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> UInt32(bits)) & 0xFF))
            }
        }
        return padding <= 2 ? out : nil
    }
}
