// Per-event cost of the chat stream's filtering: today's path (KeyRedactor + SSEUsageScanner)
// against SSEEventFilter (key redactor + framing + escaped-key check + usage). Built by `run`
// (swiftc -O, whole module, the Translation sources compiled in). No assertions on timing.
//
//   main <old|new|none> <workload> [events] [reps]     prints ns/event (best of reps)
//   (`none` only builds the stream: the baseline subtracted from instruction counts)
//
// Workloads (OpenAI chunk events, ~230 bytes, fed in 1,024-byte pieces like ChatProxy's libcurl
// receive buffer; no key anywhere):
//   plain     no backslash in any event
//   newlines  one event in five has `\n` in its content (escapes that cannot form the key)
//   unicode   one event in ten has `\u00e9`-style escapes (non-ASCII: cannot form an ASCII key)
//   usagenull every event carries `"usage":null` (what the upstream sends once Veil asks it for
//             usage on every stream)

#if canImport(Glibc)
import Glibc
#endif

let key = Array("sk-5D7uFAKEefGHIjkl0123456789abcdefGHIJKLmnop".utf8)

func event(_ i: Int, _ workload: String) -> String {
    var content = "tok\(i % 97)"
    switch workload {
    case "newlines" where i % 5 == 0: content += "\\n\\n- item"
    case "unicode" where i % 10 == 0: content += " caf\\u00e9 \\u4e2d\\u6587"
    default: break
    }
    let usage = workload == "usagenull" ? ",\"usage\":null" : ""
    return "data: {\"id\":\"chatcmpl-AbC123xyz\",\"object\":\"chat.completion.chunk\",\"created\":1762415032,\"model\":\"gpt-4o-mini\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\(content)\"},\"logprobs\":null,\"finish_reason\":null}]\(usage)}\n\n"
}

func stream(_ n: Int, _ workload: String) -> [UInt8] {
    var s: [UInt8] = []
    for i in 0..<n { s += Array(event(i, workload).utf8) }
    s += Array("data: {\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: [DONE]\n\n".utf8)
    return s
}

func now() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

// The old path exists only in the old tree (SSEUsageScanner is gone since issue 13 landed).
#if !HAS_SSE_EVENT_FILTER
@inline(never) func runOld(_ s: [UInt8], piece: Int) -> Int {
    var r = KeyRedactor(secret: key)
    var u = SSEUsageScanner()
    var out = 0
    s.withUnsafeBytes { all in
        var i = 0
        while i < all.count {
            let p = UnsafeRawBufferPointer(rebasing: all[i..<min(all.count, i + piece)])
            u.feed(p)
            r.process(p) { out &+= $0.count }
            i += piece
        }
    }
    r.finish { out &+= $0.count }
    u.finish()
    precondition(u.sawDone && u.usage?.totalTokens == 7)
    return out
}
#else
func runOld(_ s: [UInt8], piece: Int) -> Int { fatalError("built from a tree without SSEUsageScanner") }
#endif

#if HAS_SSE_EVENT_FILTER
@inline(never) func runNew(_ s: [UInt8], piece: Int) -> Int {
    var f = SSEEventFilter(secret: key)
    var out = 0
    s.withUnsafeBytes { all in
        var i = 0
        while i < all.count {
            let p = UnsafeRawBufferPointer(rebasing: all[i..<min(all.count, i + piece)])
            try! f.process(p) { out &+= $0.count }
            i += piece
        }
    }
    try! f.finish { out &+= $0.count }
    precondition(f.sawDone && f.usage?.totalTokens == 7 && f.redactedEvents == 0)
    return out
}
#else
func runNew(_ s: [UInt8], piece: Int) -> Int { fatalError("built from a tree without SSEEventFilter") }
#endif

let args = CommandLine.arguments
let mode = args.count > 1 ? args[1] : "new"
let workload = args.count > 2 ? args[2] : "plain"
let n = args.count > 3 ? Int(args[3])! : 100_000
let reps = args.count > 4 ? Int(args[4])! : 7
let s = stream(n, workload)
if mode == "none" { print("none \(workload) built \(s.count) bytes"); exit(0) }
var best = UInt64.max
for _ in 0..<reps {
    let t0 = now()
    let out = mode == "old" ? runOld(s, piece: 1024) : runNew(s, piece: 1024)
    let dt = now() - t0
    precondition(out == s.count)
    best = min(best, dt)
}
let perEvent = Double(best) / Double(n)
print("\(mode) \(workload) events=\(n) bytes/event=\(s.count / n) best_ns_per_event=\(String(Int(perEvent * 10)).dropLast()).\(String(Int(perEvent * 10)).suffix(1))")
