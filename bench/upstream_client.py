#!/usr/bin/env python3
"""Veil's upstream client (UpstreamHTTP) alone: requests/s, instructions, allocations (libcurl's,
which it replaced, was measured side by side before its removal: BENCHMARKS.md).

Each client runs alone on one event loop in `upstream-bench` (bench/UpstreamBench), sending the
gateway's chat request (POST /v1/chat/completions, shared Authorization block, JSON body) to
bench/upstream.c (1 thread), over plain HTTP and over TLS (a local nginx terminating TLS with a
certificate made here by the openssl CLI, proxying to the same upstream).

Figures (medians where timed):
  requests/s          --requests N --concurrency C, runs alternating between the clients
  instructions        callgrind totals: per request = (I(n2) - I(n1)) / (n2 - n1), sequential
                      requests on one kept-alive connection; per SSE event = (I(e2 events) -
                      I(e1)) / ((e2 - e1) x requests)
  allocations         valgrind DHAT: blocks and bytes per request, same differencing
Standard library only. Called by bench/upstream-client.
"""
import argparse, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

def log(*a):
    print(*a, file=sys.stderr, flush=True)

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p

def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")

def run_bench(exe, client, url, requests, conc, events=None, ca=None, wrap=None):
    cmd = [exe, "--client", client, "--url", url, "--requests", str(requests), "--concurrency", str(conc)]
    if events is not None:
        cmd += ["--events", str(events)]
    if ca:
        cmd += ["--ca", ca]
    out = subprocess.run((wrap or []) + cmd, capture_output=True, text=True, timeout=1800)
    line = [l for l in out.stdout.splitlines() if l.startswith("client=")]
    if not line or "failed=0" not in line[-1]:
        raise RuntimeError(f"{' '.join(cmd)} failed: {out.stdout} {out.stderr[-2000:]}")
    return dict(kv.split("=", 1) for kv in line[-1].split() if "=" in kv)

def callgrind_total(tmp, exe, name, *a, **k):
    out = f"{tmp}/cg-{name}.out"
    run_bench(exe, *a, wrap=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], **k)
    for line in open(out):
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")

def dhat_total(tmp, exe, name, *a, **k):
    out = f"{tmp}/dhat-{name}.json"
    log_file = f"{tmp}/dhat-{name}.log"
    cmd = ["valgrind", "--tool=dhat", f"--dhat-out-file={out}", f"--log-file={log_file}"]
    run_bench(exe, *a, wrap=cmd, **k)
    text = open(log_file).read()
    m = re.search(r"Total:\s+([\d,]+) bytes in ([\d,]+) blocks", text)
    return int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))

def start_nginx(tmp, upstream_port):
    """nginx terminating TLS (test CA made here) in front of the upstream; returns (port, ca, pid)."""
    d = f"{tmp}/nginx"
    os.makedirs(d)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    open(f"{d}/ext", "w").write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    for cmd in (["openssl", "req", "-x509"] + ec + ["-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem", "-days", "2",
                 "-subj", "/CN=bench CA", "-addext", "basicConstraints=critical,CA:TRUE"],
                ["openssl", "req"] + ec + ["-keyout", f"{d}/srv.key", "-out", f"{d}/srv.csr", "-subj", "/CN=localhost"],
                ["openssl", "x509", "-req", "-in", f"{d}/srv.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
                 "-set_serial", "1", "-days", "2", "-extfile", f"{d}/ext", "-out", f"{d}/srv.pem"]):
        subprocess.run(cmd, check=True, capture_output=True)
    port = free_port()
    port2 = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    open(f"{d}/nginx.conf", "w").write(f"""{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
    keepalive_requests 1000000;
    upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/srv.pem;
        ssl_certificate_key {d}/srv.key;
        location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }}
    }}
    server {{
        listen 127.0.0.1:{port2} ssl http2;
        http2_max_concurrent_streams 1000;
        ssl_certificate {d}/srv.pem;
        ssl_certificate_key {d}/srv.key;
        location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }}
    }}
}}
""")
    subprocess.run(["nginx", "-p", d, "-c", f"{d}/nginx.conf", "-e", f"{d}/error.log"], check=True)
    wait_port(port)
    wait_port(port2)
    pid = int(open(f"{d}/nginx.pid").read().strip())
    return port, port2, f"{d}/ca.pem", pid

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="upstream-bench (release)")
    ap.add_argument("--upstream", required=True, help="bench-upstream (gcc -O2)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--requests", type=int, default=30000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--ir-requests", default="2000,10000")
    ap.add_argument("--ir-events", default="20,220")
    ap.add_argument("--alloc-requests", default="1000,3000")
    ap.add_argument("--no-tls", action="store_true")
    ap.add_argument("--out", default="bench/out/upstream-client.md")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="veil-upbench-")
    procs = []
    nginx_pid = None
    try:
        # valgrind can't read the toolchain's DWARF 5: a copy without debug info.
        exe = f"{tmp}/upstream-bench"
        subprocess.run(["objcopy", "--strip-debug", a.bench, exe], check=True)
        up_port = free_port()
        procs.append(subprocess.Popen([a.upstream, "--port", str(up_port), "--threads", "1"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(up_port)
        targets = [("plain", f"http://127.0.0.1:{up_port}/v1/chat/completions", None)]
        if not a.no_tls:
            port, port2, ca, nginx_pid = start_nginx(tmp, up_port)
            targets.append(("TLS, HTTP/1.1 (nginx in front)", f"https://localhost:{port}/v1/chat/completions", ca))
            targets.append(("TLS, HTTP/2 (nginx in front, both clients negotiate h2 by ALPN)", f"https://localhost:{port2}/v1/chat/completions", ca))
        clients = ["native"]
        n1, n2 = map(int, a.ir_requests.split(","))
        e1, e2 = map(int, a.ir_events.split(","))
        m1, m2 = map(int, a.alloc_requests.split(","))
        md = ["# Upstream client: Veil's own (UpstreamHTTP)", "",
              f"One event loop per client, bench/upstream.c with 1 thread, {time.strftime('%Y-%m-%d %H:%M')}. "
              f"requests/s: median of {a.runs} runs of {a.requests} requests at concurrency {a.concurrency} "
              "(runs alternate between the clients). Instructions: callgrind, user space, whole bench process "
              f"(the driver's own work is in both); per request = (I({n2}) − I({n1})) / {n2 - n1} sequential requests on one "
              f"kept-alive connection; per event = (I({e2} events) − I({e1})) / ({e2 - e1} × 200 streams, 8 at a time). "
              f"Allocations: DHAT, (blocks({m2}) − blocks({m1})) / {m2 - m1}.", ""]
        for label, url, ca in targets:
            log(f"==> {label}: requests/s")
            rps = {c: [] for c in clients}
            for r in range(a.runs):
                for c in clients:
                    res = run_bench(exe, c, url, a.requests, a.concurrency, ca=ca)
                    rps[c].append(int(res["rps"]))
                    log(f"  run {r + 1} {c}: {res['rps']} req/s")
            log(f"==> {label}: instructions and allocations")
            fig = {}
            for c in clients:
                i1 = callgrind_total(tmp, exe, f"{c}-{n1}", c, url, n1, 1, ca=ca)
                i2 = callgrind_total(tmp, exe, f"{c}-{n2}", c, url, n2, 1, ca=ca)
                per_req = (i2 - i1) / (n2 - n1)
                j1 = callgrind_total(tmp, exe, f"{c}-ev{e1}", c, url, 200, 8, events=e1, ca=ca)
                j2 = callgrind_total(tmp, exe, f"{c}-ev{e2}", c, url, 200, 8, events=e2, ca=ca)
                per_ev = (j2 - j1) / ((e2 - e1) * 200)
                b1, k1 = dhat_total(tmp, exe, f"{c}-{m1}", c, url, m1, 1, ca=ca)
                b2, k2 = dhat_total(tmp, exe, f"{c}-{m2}", c, url, m2, 1, ca=ca)
                fig[c] = (per_req, per_ev, (k2 - k1) / (m2 - m1), (b2 - b1) / (m2 - m1))
                log(f"  {c}: {per_req:,.0f} instr/request, {per_ev:,.0f} instr/event, {fig[c][2]:.1f} allocations/request")
            md += [f"## {label}", "",
                   "| client | requests/s (median) | runs | instructions per request | instructions per SSE event | allocations per request | bytes allocated per request |",
                   "|---|---|---|---|---|---|---|"]
            for c in clients:
                name = "Veil (UpstreamHTTP)" if c == "native" else "libcurl (Upstream)"
                p, e, k, b = fig[c]
                md.append(f"| {name} | {statistics.median(rps[c]):,.0f} | {', '.join(map(str, rps[c]))} | {p:,.0f} | {e:,.0f} | {k:.1f} | {b:,.0f} |")
            md += [""]
        text = "\n".join(md) + "\n"
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        open(a.out, "w").write(text)
        print(text)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        if nginx_pid:
            try:
                os.kill(nginx_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)

if __name__ == "__main__":
    main()
