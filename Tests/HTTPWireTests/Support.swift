import HTTPWire

/// What feeding a byte string to the parser produced.
struct Outcome {
    var heads: [HTTPRequestHead] = []
    /// One body per completed request (`.end`), de-chunked and concatenated.
    var bodies: [[UInt8]] = []
    var ends = 0
    var error: HTTPError?
    /// Bytes left unconsumed at the end.
    var leftover = 0

    var head: HTTPRequestHead? { heads.first }
    var body: String? { bodies.first.map { String(decoding: $0, as: UTF8.self) } }
}

/// Feeds `input` to a fresh parser `step` bytes at a time, the way the server does: unconsumed
/// bytes are offered again with the new ones appended; `next` is called until it asks for more.
func feed(_ input: [UInt8], step: Int = .max, limits: HTTPLimits = HTTPLimits()) -> Outcome {
    var parser = HTTPRequestParser(limits: limits)
    var out = Outcome()
    var buf: [UInt8] = []
    var start = 0
    var pos = 0
    var current: [UInt8] = []
    var guardCount = 0
    repeat {
        let take = min(step, input.count - pos)
        buf.append(contentsOf: input[pos..<(pos + take)])
        pos += take
        while true {
            guardCount += 1
            if guardCount > 10_000_000 { out.error = HTTPError(-1, "parser loops"); return out }
            let s = start
            let result: (consumed: Int, event: HTTPParserEvent?)
            do {
                result = try buf.withUnsafeBytes { try parser.next(UnsafeRawBufferPointer(rebasing: $0[s...])) }
            } catch {
                out.error = (error as? HTTPError) ?? HTTPError(-2, "non-HTTPError thrown")
                out.leftover = buf.count - start
                return out
            }
            precondition(result.consumed >= 0 && result.consumed <= buf.count - start, "consumed out of range")
            switch result.event {
            case .head(let h):
                out.heads.append(h)
                current = []
            case .body(let r):
                precondition(r.lowerBound >= 0 && r.upperBound <= result.consumed, "body range outside consumed")
                current.append(contentsOf: buf[(s + r.lowerBound)..<(s + r.upperBound)])
            case .end:
                out.ends += 1
                out.bodies.append(current)
                current = []
            case nil:
                break
            }
            start += result.consumed
            if result.event == nil { break }
        }
    } while pos < input.count
    out.leftover = buf.count - start
    return out
}

func feed(_ input: String, step: Int = .max, limits: HTTPLimits = HTTPLimits()) -> Outcome {
    feed(Array(input.utf8), step: step, limits: limits)
}

/// A small limits set so tests can hit each bound cheaply.
func smallLimits() -> HTTPLimits {
    var l = HTTPLimits()
    l.maxRequestLineBytes = 64
    l.maxHeaderBytes = 128
    l.maxHeaderCount = 5
    l.maxBodyBytes = 32
    l.maxChunkLineBytes = 32
    l.maxTrailerBytes = 32
    return l
}
