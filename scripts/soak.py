#!/usr/bin/env python3
"""Bounded soak against a running Veil: N keep-alive connections for D seconds, each looping over a
mix of non-streamed chat, SSE chat and video create + polls. Prints one JSON summary line.
Usage: soak.py PORT TOKEN CONNECTIONS SECONDS"""
import asyncio, json, random, resource, sys, time, collections

port, token, nconn, secs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, nconn * 2 + 256)), hard))
statuses = collections.Counter()
kinds = collections.Counter()
errors = collections.Counter()
latency = collections.defaultdict(list)

CHAT = json.dumps({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hello soak"}]})
SSE = json.dumps({"model": "gpt-3.5-turbo", "stream": True, "messages": [{"role": "user", "content": "stream soak please"}]})
VIDEO = json.dumps({"prompt": "a soak cat", "model": "sora-2", "seconds": "4", "size": "720x1280"})

def req(method, path, body=None):
    h = f"{method} {path} HTTP/1.1\r\nHost: veil\r\nAuthorization: Bearer {token}\r\n"
    if body is not None:
        b = body.encode()
        return (h + f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b
    return (h + "\r\n").encode()

async def read_response(r):
    head = await r.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    hdrs = {}
    for l in lines[1:]:
        if ":" in l:
            k, v = l.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    body = b""
    if hdrs.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await r.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                await r.readuntil(b"\r\n")
                break
            body += await r.readexactly(size)
            await r.readexactly(2)
    elif "content-length" in hdrs:
        body = await r.readexactly(int(hdrs["content-length"]))
    return status, hdrs, body

async def one(r, w, kind, method, path, body=None):
    t0 = time.monotonic()
    w.write(req(method, path, body))
    await w.drain()
    status, hdrs, b = await read_response(r)
    statuses[status] += 1
    kinds[kind] += 1
    latency[kind].append(time.monotonic() - t0)
    if status >= 500:
        errors[f"{kind} {status} {b[:120]!r}"] += 1
    return status, hdrs, b

async def client(i, deadline):
    await asyncio.sleep(random.random() * 2)   # ramp up over 2 s
    r = w = None
    videos = []
    while time.monotonic() < deadline:
        try:
            if w is None:
                r, w = await asyncio.open_connection("127.0.0.1", port)
            x = random.random()
            if x < 0.35:
                await one(r, w, "chat", "POST", "/v1/chat/completions", CHAT)
            elif x < 0.65:
                status, _, b = await one(r, w, "sse", "POST", "/v1/chat/completions", SSE)
                if status == 200 and not b.rstrip().endswith(b"data: [DONE]"):
                    errors["sse without [DONE]"] += 1
            elif x < 0.75 or not videos:
                status, _, b = await one(r, w, "video_create", "POST", "/v1/videos", VIDEO)
                if status == 200:
                    videos.append(json.loads(b)["id"])
            else:
                await one(r, w, "video_poll", "GET", f"/v1/videos/{random.choice(videos)}")
            await asyncio.sleep(random.random() * 0.2)
        except Exception as e:
            errors[f"client {type(e).__name__}"] += 1
            if w is not None:
                w.close()
            r = w = None
            await asyncio.sleep(0.2)
    if w is not None:
        w.close()

async def main():
    deadline = time.monotonic() + secs
    await asyncio.gather(*(client(i, deadline) for i in range(nconn)))

t0 = time.monotonic()
asyncio.run(main())
lat = {k: {"n": len(v), "p50_ms": round(sorted(v)[len(v) // 2] * 1000), "p99_ms": round(sorted(v)[int(len(v) * 0.99)] * 1000)} for k, v in latency.items() if v}
print(json.dumps({"connections": nconn, "seconds": round(time.monotonic() - t0, 1), "requests": sum(kinds.values()),
                  "statuses": dict(statuses), "by_kind": lat, "errors": dict(errors)}))
