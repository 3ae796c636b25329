#!/usr/bin/env python3
"""Writes the small committed seed corpora (fuzz/seeds/<target>/). Parser seeds start with two
control bytes: byte 0 = how the input is cut into reads, byte 1 = small limits when odd."""
import json, os, hashlib
here = os.path.dirname(os.path.abspath(__file__))

def write(target, blobs):
    d = os.path.join(here, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for b in blobs:
        name = hashlib.sha1(b).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(b)

H = b"Host: veil\r\n"
reqs = [
    b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /v1/models HTTP/1.1\r\n" + H + b"Authorization: Bearer tok\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"model\":\"x\"}",
    b"POST /v1/videos HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3;q=\"a b\"\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"GET /a HTTP/1.1\r\n" + H + b"\r\nGET /b HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n",
    b"\r\n\r\nGET / HTTP/1.0\r\n\r\n",
    b"GET http://veil:8080/v1/models?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    b"CONNECT veil:443 HTTP/1.1\r\n" + H + b"\r\n",
    # hostile
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\tchunked, identity\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0005\r\n\r\nhello",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n\r\n",
    b"GET / HTTP/1.1\n" + b"Host: veil\n\n",
    b"GET / HTTP/1.1\r" + b"Host: veil\r\r",
    b"GET /\x00 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + b"0" * 40 + b"1\r\na\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n1;" + b"a=b;" * 300 + b"\r\nx\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b" folded\r\n\r\n",
    b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/2\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n\r\n",
    b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET http://user@veil/ HTTP/1.1\r\n" + H + b"\r\n",
]
blobs = []
for i, r in enumerate(reqs):
    blobs.append(bytes([0, 0]) + r)
    blobs.append(bytes([1 + i % 16, 1]) + r)
write("parser", blobs)

# Response parser seeds: byte 0 = how the input is cut into reads, byte 1 = small limits (bit 0)
# and a HEAD request (bit 1).
TE = b"Transfer-Encoding: chunked\r\n"
resps = [
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"id\":\"chat\"}",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + TE + b"\r\nb\r\ndata: one\n\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + TE + b"\r\n5;a=b;q=\"x y\"\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nHTTP/1.1 304 Not Modified\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nuntil close",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n" + TE + b"\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nContent-Length: 4\r\n\r\nabcd",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    b"HTTP/1.1 200 OK\r\n" + TE + b"\r\nffffffffffffffff\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\ncut",
]
rb = []
for i, r in enumerate(resps):
    rb.append(bytes([0, 0]) + r)
    rb.append(bytes([1 + i % 16, 1]) + r)
    rb.append(bytes([3 + i % 13, 2]) + r)
write("response", rb)

KEY = "sk-FUZZKEY-0123456789abcdef"
vids = [
    {"id": "4078", "object": "video", "status": "queued", "progress": 0, "created_at": 1762415032, "size": "720x720"},
    {"id": "4078", "status": "completed", "progress": 100, "url": "https://f/x.mp4?se=2025-11-08T00%3A00%3A00Z&sig=ab",
     "size": "https://f/wm.mp4?Expires=1762999999", "quality": "standard", "model": "sora-2-yijia", "seconds": "2"},
    {"id": "4079", "status": "completed", "url": "", "size": "1024x1808", "quality": "moderation: " + KEY},
    {"id": "4080", "status": "error", "error": {"message": "bad key " + KEY}},
    {"id": "4081", "status": "failure", "fail_reason": "x", "size": KEY},
]
chars = {"success": True, "data": [
    {"id": 58, "uuid": "123AMO2M", "instruction_value": "a cat", "api_key": KEY, "status": 999,
     "create_time": "2025-11-06 16:27:24", "token_id": 17, "username": "u", "timestamps": "1-3", "video_id": "4078"},
    {"id": "59", "uuid": "b", "instruction_value": "fail", "api_key": KEY, "status": -1, "timestamps": {"start": 0.5, "end": 2.5}},
]}
errs = [{"error": {"message": "无效的令牌 " + KEY, "type": "new_api_error"}}, {"success": False, "message": KEY}]
sse = ("data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"" + KEY + "\"}}]}\n\n"
       "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}}\n\ndata: [DONE]\n\n")
tb = []
for v in vids: tb.append(json.dumps(v).encode())
tb.append(json.dumps(chars).encode())
tb.append(json.dumps({"success": True, "data": chars["data"][0]}).encode())
for e in errs: tb.append(json.dumps(e).encode())
tb.append(json.dumps(errs[0], ensure_ascii=False).encode())
tb.append(sse.encode())
# byte 0 of a translation input picks the decoder and the chunking (see TranslationFuzz.swift)
write("translation", [bytes([i]) + b for b in tb for i in range(0, 6)])

# Modes 6-11 (SSE event filter, compressed streams, raw inflate, member names, end of stream).
# Bytes 0x01-0x05 in a body expand to the key in clear and in four JSON-escaped forms.
sse_events = [
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}',
    b'data: {"id":"c1","choices":[{"delta":{"content":"line\\nnext \\"q\\" \\u00e9"}}],"usage":null}',
    b'data: {"choices":[{"delta":{"content":"key \x02 and \x03"}}]}',
    b'data: {"error":{"message":"bad \x04","\x05":1}}',
    b': keep-alive',
    b'event: message\ndata: {"a":\ndata: "\x03"}',
    b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}',
    b'data: {"c":"\x01"}',
    b'data: [DONE]',
]
streams = []
for nl in (b"\n", b"\r\n", b"\r"):
    streams.append(b"".join(e.replace(b"\n", nl) + nl + nl for e in sse_events))
streams.append(b"data: {\"k\":\"sk-FUZZKEY-0123")                       # cut inside the key
streams.append(b"data: [DONE]")                                           # [DONE] without its blank line
bodies = [b'{"model":"a","MODEL":"b"}', b'{"model":"a","stream":true,"Stream":false}',
          b'{"mod\\u0065l":"a","\\u017ftream":true}', b'{"model":"a","stream":true,"stream_options":{"include_usage":false,"x":1}}',
          b'{"stream":true,"stream_options":null}', b'{"a":{"b":1,"B":2},"c":[{"d":1,"D":2}]}']
blobs = []
for s in streams:
    for mode in (6, 7, 8, 11):
        for b1 in (0, 5, 63):            # byte 1: piece sizes (and the compression format)
            blobs.append(bytes([mode, b1]) + s)
    blobs.append(bytes([8, 1, 2, 17, 0x40]) + s)   # one compressed byte flipped
import gzip as _gz, zlib as _zl
for s in streams[:1]:
    blobs.append(bytes([9, 0]) + _gz.compress(s, mtime=0))
    blobs.append(bytes([9, 1]) + _zl.compress(s))
    blobs.append(bytes([9, 0]) + _gz.compress(b"\0" * 200000, 9, mtime=0))   # a small bomb
for b in bodies:
    blobs.append(bytes([10]) + b)
write("translation", blobs)
