import CZlib

/// Decodes a gzip or deflate answer as its chunks arrive (zlib's `inflate`), so that redaction
/// sees the bytes a caller would see after decompressing.
///
/// - Input: any chunking; nothing is buffered but zlib's own window (32 KiB) and, for deflate,
///   the first byte until the second arrives (it tells zlib from raw deflate).
/// - Output: `emit` gets the decoded bytes in pieces of at most `outputChunkBytes`, from one
///   buffer allocated per inflater; the pointer is valid during the call only.
/// - Bounds: `limits.maxOutputBytes` in all, and `limits.maxRatio` decoded bytes per compressed
///   byte once `limits.ratioFloorBytes` are out (a decompression bomb is refused before the
///   piece that crosses a limit is emitted).
/// - Errors: corrupt data, a truncated stream (at `finish`), bytes after the end (except further
///   gzip members) — each an `InflateError`; after one, every call throws it again.
/// - `identity` passes the input through unchanged (counted against `maxOutputBytes`), so a
///   caller can route every answer through one inflater.
///
/// One inflater per answer, on one thread (not Sendable). `deinit` frees zlib's state.
public final class Inflater {
    public let coding: ContentCoding
    public let limits: InflateLimits
    /// Compressed bytes consumed so far.
    public private(set) var totalIn = 0
    /// Decoded bytes emitted so far.
    public private(set) var totalOut = 0

    /// The size of the output buffer, and so of the largest piece given to `emit`.
    public static let outputChunkBytes = 16 * 1024

    private let strm: UnsafeMutablePointer<z_stream>
    private let out: UnsafeMutableRawBufferPointer
    private var initialised = false
    /// The current zlib/gzip member is complete.
    private var ended = false
    private var header: [UInt8] = []
    private var failed: InflateError?

    public init(coding: ContentCoding, limits: InflateLimits = InflateLimits()) {
        self.coding = coding
        self.limits = limits
        strm = .allocate(capacity: 1)
        strm.initialize(to: z_stream())
        out = .allocate(byteCount: coding == .identity ? 0 : Self.outputChunkBytes, alignment: 16)
    }

    deinit {
        if initialised { inflateEnd(strm) }
        strm.deinitialize(count: 1)
        strm.deallocate()
        out.deallocate()
    }

    /// Feeds one chunk of the answer's body as received.
    public func process(_ input: UnsafeRawBufferPointer, emit: (UnsafeRawBufferPointer) -> Void) throws(InflateError) {
        if let failed { throw failed }
        guard let base = input.baseAddress, !input.isEmpty else { return }
        if coding == .identity {
            guard totalOut + input.count <= limits.maxOutputBytes else { throw fail(.outputTooLarge(limit: limits.maxOutputBytes)) }
            totalIn += input.count
            totalOut += input.count
            return emit(input)
        }
        var rest = UnsafeRawBufferPointer(start: base, count: input.count)
        if !initialised {
            var windowBits: Int32 = 15 + 16                     // gzip only
            if coding == .deflate {
                let need = 2 - header.count
                header += rest.prefix(need)
                rest = UnsafeRawBufferPointer(rebasing: rest.dropFirst(need))
                guard header.count == 2 else { return }
                windowBits = Self.isZlibHeader(header[0], header[1]) ? 15 : -15
            }
            guard veil_inflate_init2(strm, windowBits) == Z_OK else { throw fail(.corrupt("zlib could not start")) }
            initialised = true
            if !header.isEmpty {
                let h = header
                header = []
                var failure: InflateError?
                h.withUnsafeBytes { b in
                    do throws(InflateError) { try feed(b, emit) } catch { failure = error }
                }
                if let failure { throw failure }
            }
        }
        try feed(rest, emit)
    }

    /// End of the answer: throws `truncated` unless the compressed data ended properly. An empty
    /// body is an empty answer.
    public func finish() throws(InflateError) {
        if let failed { throw failed }
        guard coding != .identity else { return }
        if !initialised {
            if header.isEmpty { return }
            throw fail(.truncated)
        }
        guard ended else { throw fail(.truncated) }
    }

    /// Convenience for tests and small bodies: the whole decoded answer.
    public static func decode(_ body: [UInt8], coding: ContentCoding, limits: InflateLimits = InflateLimits()) throws(InflateError) -> [UInt8] {
        let i = Inflater(coding: coding, limits: limits)
        var out: [UInt8] = []
        var failure: InflateError?
        body.withUnsafeBytes { b in
            do throws(InflateError) { try i.process(b) { out.append(contentsOf: $0) } } catch { failure = error }
        }
        if let failure { throw failure }
        try i.finish()
        return out
    }

    /// RFC 1950: compression method 8, window at most 32 KiB, header checksum a multiple of 31.
    static func isZlibHeader(_ cmf: UInt8, _ flg: UInt8) -> Bool {
        cmf & 0x0F == 8 && cmf >> 4 <= 7 && (UInt16(cmf) << 8 | UInt16(flg)) % 31 == 0
    }

    private func fail(_ e: InflateError) -> InflateError {
        failed = e
        return e
    }

    private func feed(_ input: UnsafeRawBufferPointer, _ emit: (UnsafeRawBufferPointer) -> Void) throws(InflateError) {
        guard let base = input.baseAddress, !input.isEmpty else { return }
        // zlib reads `next_in` only; its header declares it non-const.
        strm.pointee.next_in = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: Bytef.self))
        strm.pointee.avail_in = uInt(input.count)
        defer { totalIn += input.count - Int(strm.pointee.avail_in); strm.pointee.next_in = nil; strm.pointee.avail_in = 0 }
        while true {
            if ended {
                guard strm.pointee.avail_in > 0 else { return }
                // Only another gzip member may follow (zlib checks the rest of its header).
                guard coding == .gzip, strm.pointee.next_in[0] == 0x1F else { throw fail(.trailingData) }
                inflateReset(strm)
                ended = false
            }
            strm.pointee.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
            strm.pointee.avail_out = uInt(out.count)
            let rc = inflate(strm, Z_NO_FLUSH)
            let produced = out.count - Int(strm.pointee.avail_out)
            if produced > 0 {
                let consumed = totalIn + input.count - Int(strm.pointee.avail_in)
                let after = totalOut + produced
                if after > limits.maxOutputBytes { throw fail(.outputTooLarge(limit: limits.maxOutputBytes)) }
                let allowed = consumed.multipliedReportingOverflow(by: limits.maxRatio)
                if after > limits.ratioFloorBytes, !allowed.overflow, after > allowed.partialValue {
                    throw fail(.ratioTooHigh(limit: limits.maxRatio))
                }
                totalOut = after
                emit(UnsafeRawBufferPointer(rebasing: out[0..<produced]))
            }
            switch rc {
            case Z_OK:
                // More output may be waiting when the buffer filled; otherwise zlib wants input.
                if strm.pointee.avail_out == 0 { continue }
                if strm.pointee.avail_in == 0 { return }
            case Z_STREAM_END:
                ended = true
            case Z_BUF_ERROR:
                return                                   // no progress without more input
            case Z_NEED_DICT:
                throw fail(.corrupt("a preset dictionary is required"))
            default:
                let message = strm.pointee.msg.map { String(cString: $0) } ?? "zlib error \(rc)"
                throw fail(.corrupt(String(message.prefix(80))))
            }
        }
    }
}

/// zlib's `deflate`, one shot: for tests, fuzzing and the stand-in upstream (which answers
/// compressed on request to exercise the inflater). Not used on Veil's request path.
public enum Deflate {
    public enum Format: Sendable { case gzip, zlib, raw }

    public static func compress(_ bytes: [UInt8], format: Format, level: Int32 = 6) -> [UInt8] {
        // zlib keeps a pointer back to its z_stream: it must not move, so not a Swift local.
        let s = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        s.initialize(to: z_stream())
        defer { s.deinitialize(count: 1); s.deallocate() }
        let bits: Int32 = switch format { case .gzip: 15 + 16; case .zlib: 15; case .raw: -15 }
        guard veil_deflate_init2(s, level, bits) == Z_OK else { return [] }
        defer { deflateEnd(s) }
        var out = [UInt8](repeating: 0, count: Int(deflateBound(s, uLong(bytes.count))) + 32)
        let written: Int = bytes.withUnsafeBytes { input in
            out.withUnsafeMutableBytes { o in
                s.pointee.next_in = input.isEmpty ? nil : UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: Bytef.self))
                s.pointee.avail_in = uInt(input.count)
                s.pointee.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self)
                s.pointee.avail_out = uInt(o.count)
                return deflate(s, Z_FINISH) == Z_STREAM_END ? o.count - Int(s.pointee.avail_out) : -1
            }
        }
        return written < 0 ? [] : Array(out[0..<written])
    }
}
