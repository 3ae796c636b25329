#!/usr/bin/env python3
"""Veil vs nginx vs the upstream direct, on loopback. Run through `bench/run` (which builds first).

Starts the fast C upstream, nginx (Debian's package, own config and pid file in a temp dir) and
Veil, all on 127.0.0.1, runs the scenarios of BENCHMARKS.md, prints one markdown table per
scenario and saves them to bench/out/. Every process it starts is stopped on exit (also on
Ctrl-C). Every loop is bounded in count and time.
"""
import argparse
import atexit
import ctypes
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSTREAM_KEY = "sk-bench-upstream-key-0123456789abcdef"
TEAM_TOKEN = "veil-bench-team-token"

started = []          # Popen objects and bare pids we own


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# processes

def set_subreaper():
    # Orphans (coldstart's children) are re-parented to us so we can reap them.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http_get(port, path, timeout=1.0, headers="", tls_ca=None):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        s = raw
        if tls_ca:
            import ssl
            s = ssl.create_default_context(cafile=tls_ca).wrap_socket(raw, server_hostname="localhost")
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    return int(data[9:12]), data


def wait_ready(port, what, timeout=20.0, tls_ca=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http_get(port, "/healthz", tls_ca=tls_ca)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not answer /healthz on port {port} within {timeout}s")


def rss_kib(pid, field="VmRSS:"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                ppid = int(st[st.rindex(")") + 2:].split()[1])
                if ppid == pid:
                    out.append(int(d))
            except (OSError, ValueError):
                pass
    return out


def tree_rss_kib(pid, field="VmRSS:"):
    """RSS of a process plus its direct children (nginx: master + workers)."""
    return rss_kib(pid, field) + sum(rss_kib(c, field) for c in children(pid))


def cpu_seconds(pid):
    """utime + stime of a process and its direct children (nginx: master + workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in [pid] + children(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fields = st[st.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError):
            pass
    return total / tick


class Sampler:
    """Samples a process tree's RSS every 50 ms in the background; keeps the peak."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop_flag = pid, 0, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_flag:
            self.peak = max(self.peak, tree_rss_kib(self.pid))
            time.sleep(0.05)

    def stop(self):
        self.stop_flag = True
        self.t.join(timeout=2)
        return self.peak


def stop_proc(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
    if p in started:
        started.remove(p)


def kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (OSError, ChildProcessError):
        pass


TMPDIRS = []


def cleanup():
    for p in list(started):
        if isinstance(p, int):
            kill_pid(p)
        else:
            try:
                stop_proc(p, signal.SIGTERM, timeout=5)
            except Exception:
                pass
    started.clear()
    import shutil
    for d in TMPDIRS:
        shutil.rmtree(d, ignore_errors=True)
    TMPDIRS.clear()


# ---------------------------------------------------------------------------------------------
# the three targets

class Env:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="veil-bench-")
        if not args.keep_tmp:
            TMPDIRS.append(self.tmp)
        self.bin = args.bin
        self.veil = args.veil
        self.up_port = free_port()
        self.upstream = None
        self.token_hash = subprocess.check_output([self.veil, "hash-token", TEAM_TOKEN], text=True).strip()
        import resource
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]

    # upstream ------------------------------------------------------------------------------
    def start_upstream(self):
        p = subprocess.Popen([f"{self.bin}/bench-upstream", "--port", str(self.up_port), "--threads", str(self.args.upstream_threads),
                              "--key", UPSTREAM_KEY, "--file-bytes", str(self.args.video_bytes)],
                             stdout=subprocess.DEVNULL, stderr=open(f"{self.tmp}/upstream.log", "w"))
        started.append(p)
        wait_ready(self.up_port, "bench-upstream")
        self.upstream = p
        if self.args.upstream_tls:
            self.start_tls_front()

    def start_tls_front(self):
        """The upstream on TLS: an nginx terminating TLS (a certificate for `localhost` signed by
        a CA made here with the openssl CLI) in front of bench/upstream.c. Both proxies verify it
        against that CA; its own cost is the same for both."""
        t = f"{self.tmp}/tls"
        os.makedirs(t, exist_ok=True)
        def ossl(*a):
            subprocess.run(["openssl", *a], check=True, capture_output=True)
        ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Bench CA",
             "-keyout", f"{t}/ca.key", "-out", f"{t}/ca.pem")
        ossl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", f"{t}/up.key", "-out", f"{t}/up.csr")
        with open(f"{t}/ext.cnf", "w") as f:
            f.write("subjectAltName=DNS:localhost\n")
        ossl("x509", "-req", "-in", f"{t}/up.csr", "-CA", f"{t}/ca.pem", "-CAkey", f"{t}/ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{t}/ext.cnf", "-out", f"{t}/up.pem")
        self.ca_file = f"{t}/ca.pem"
        self.up_tls_port = free_port()
        conf = f"""
worker_processes 1;
daemon off;
pid {t}/front.pid;
error_log {t}/front-error.log warn;
worker_rlimit_nofile {self.nofile};
events {{ worker_connections {max(1024, self.nofile - 64)}; use epoll; }}
http {{
  access_log off;
  client_body_temp_path {t}/cb; proxy_temp_path {t}/px; fastcgi_temp_path {t}/fc; uwsgi_temp_path {t}/uw; scgi_temp_path {t}/sc;
  keepalive_requests 1000000;
  upstream plain {{ server 127.0.0.1:{self.up_port}; keepalive 256; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{self.up_tls_port} ssl backlog=4096;
    ssl_certificate {t}/up.pem;
    ssl_certificate_key {t}/up.key;
    ssl_session_cache shared:SSL:10m;
    location / {{
      proxy_pass http://plain;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"""
        with open(f"{t}/front.conf", "w") as f:
            f.write(conf)
        p = subprocess.Popen(["nginx", "-p", t, "-c", f"{t}/front.conf"], stdout=subprocess.DEVNULL,
                             stderr=open(f"{t}/front-stderr.log", "w"))
        started.append(p)
        wait_ready(self.up_tls_port, "TLS front", tls_ca=self.ca_file)
        self.tls_front = p

    @property
    def nginx_tls_lines(self):
        if not self.args.upstream_tls:
            return ""
        return (f"\n      proxy_ssl_verify on;\n      proxy_ssl_trusted_certificate {self.ca_file};"
                "\n      proxy_ssl_name localhost;\n      proxy_ssl_server_name on;\n      proxy_ssl_session_reuse on;")

    @property
    def upstream_origin_nginx(self):
        return f"https://reseller" if self.args.upstream_tls else "http://reseller"

    @property
    def upstream_server(self):
        return f"127.0.0.1:{self.up_tls_port}" if self.args.upstream_tls else f"127.0.0.1:{self.up_port}"

    # nginx ---------------------------------------------------------------------------------
    def nginx_conf(self, port, workers, access_log=False, single_process=False):
        t = self.tmp
        os.makedirs(f"{t}/nginx", exist_ok=True)
        conns = max(1024, self.nofile - 64)
        # Buffered like Veil's (log.buffer_bytes 64 KiB, log.flush_ms 1000): one write per many lines.
        al = f"access_log {t}/nginx/access.log combined buffer=64k flush=1s;" if access_log else "access_log off;"
        conf = f"""
worker_processes {workers};
{"master_process off;" if single_process else ""}
daemon off;
pid {t}/nginx/nginx.pid;
error_log {t}/nginx/error.log warn;
worker_rlimit_nofile {self.nofile};
events {{ worker_connections {conns}; use epoll; }}
http {{
  {al}
  client_body_temp_path {t}/nginx/client_body;
  proxy_temp_path {t}/nginx/proxy;
  fastcgi_temp_path {t}/nginx/fastcgi;
  uwsgi_temp_path {t}/nginx/uwsgi;
  scgi_temp_path {t}/nginx/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  upstream reseller {{
    server {self.upstream_server};
    keepalive 64;
    keepalive_requests 1000000;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /healthz {{ default_type application/json; return 200 '{{"status":"ok"}}'; }}
    location ~ ^/v1/videos/[^/]+/content$ {{
      rewrite ^ /files/video.mp4 break;
      proxy_pass {self.upstream_origin_nginx};{self.nginx_tls_lines}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_buffering off;
    }}
    location /v1/ {{
      proxy_pass {self.upstream_origin_nginx};{self.nginx_tls_lines}
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {UPSTREAM_KEY}";
      proxy_buffering off;
    }}
  }}
}}
"""
        path = f"{t}/nginx/nginx.conf"
        with open(path, "w") as f:
            f.write(conf)
        return path

    def nginx_cmd(self, port, workers, access_log=False, single_process=False):
        conf = self.nginx_conf(port, workers, access_log, single_process)
        return ["nginx", "-p", f"{self.tmp}/nginx", "-c", conf]

    def start_nginx(self, workers, access_log=False):
        port = free_port()
        p = subprocess.Popen(self.nginx_cmd(port, workers, access_log), stdout=subprocess.DEVNULL,
                             stderr=open(f"{self.tmp}/nginx-stderr.log", "a"))
        started.append(p)
        wait_ready(port, "nginx")
        return p, port

    # Veil ----------------------------------------------------------------------------------
    def veil_conf(self, port, workers, access_log=False, tag="veil"):
        store = f"{self.tmp}/{tag}-{port}.sqlite3"
        conf = f"""listen: "127.0.0.1:{port}"
workers: {workers}
shutdown_grace_ms: 1000
upstream:
  base_url: "{f'https://localhost:{self.up_tls_port}' if self.args.upstream_tls else f'http://127.0.0.1:{self.up_port}'}"
  api_key: "{UPSTREAM_KEY}"{f'{chr(10)}  ca_file: "{self.ca_file}"' if self.args.upstream_tls else ''}
limits:
  max_connections: 100000
store:
  path: "{store}"
log:
  level: warning
  access: {"true" if access_log else "false"}
teams:
  - name: bench
    tokens_sha256: ["{self.token_hash}"]
"""
        path = f"{self.tmp}/{tag}-{port}.yaml"
        with open(path, "w") as f:
            f.write(conf)
        return path

    def veil_cmd(self, port, workers, access_log=False):
        return [self.veil, "serve", "--config", self.veil_conf(port, workers, access_log)]

    def start_veil(self, workers, access_log=False):
        port = free_port()
        # The access log goes to stdout: /dev/null here (the cost of formatting it is still paid).
        p = subprocess.Popen(self.veil_cmd(port, workers, access_log), stdout=subprocess.DEVNULL,
                             stderr=open(f"{self.tmp}/veil-stderr.log", "a"))
        started.append(p)
        wait_ready(port, "veil")
        return p, port


# ---------------------------------------------------------------------------------------------
# formatting

def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return f"{a / b:.2f}×"


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


# ---------------------------------------------------------------------------------------------
# scenario 1: non-streaming chat completion under wrk

WRK_LUA = """wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"Say something of about a kilobyte."}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def parse_dur_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)", s)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v if u == "ms" else v * 1000 if u == "s" else v * 60000


def run_wrk(env, port, token, seconds, conns, pid=None):
    lua = f"{env.tmp}/post-{token[:6]}.lua"
    with open(lua, "w") as f:
        f.write(WRK_LUA % token)
    c0 = cpu_seconds(pid) if pid else None
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", lua,
                          f"http://127.0.0.1:{port}/v1/chat/completions"],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_dur_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = parse_dur_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    cpu_us = (cpu_seconds(pid) - c0) * 1e6 / max(1, rps * seconds) if pid else None
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errs, "cpu_us": cpu_us}


def scenario_chat(env, workers, access_log=False):
    a = env.args
    ng, ng_port = env.start_nginx(workers, access_log)
    vl, vl_port = env.start_veil(workers, access_log)
    targets = [("direct", env.up_port, UPSTREAM_KEY, env.upstream.pid), ("nginx", ng_port, TEAM_TOKEN, ng.pid), ("Veil", vl_port, TEAM_TOKEN, vl.pid)]
    res = {t[0]: [] for t in targets}
    for name, port, tok, pid in targets:       # warm-up: connections, caches, page faults
        run_wrk(env, port, tok, a.warmup, a.conns)
    for i in range(a.runs):
        for name, port, tok, pid in targets:   # interleaved, so background noise hits all three alike
            r = run_wrk(env, port, tok, a.duration, a.conns, pid)
            res[name].append(r)
            log(f"  chat w={workers} run {i + 1}/{a.runs} {name}: {r['rps']:.0f} req/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms errors {r['errors']} cpu {r['cpu_us']:.1f} us/req")
    rss = {"nginx": tree_rss_kib(ng.pid), "Veil": rss_kib(vl.pid)}
    stop_proc(ng, signal.SIGQUIT)
    stop_proc(vl)
    s = {n: {k: med([r[k] for r in rs]) for k in ("rps", "p50", "p99", "cpu_us")} | {"errors": sum(r["errors"] for r in rs)} for n, rs in res.items()}
    rows = []
    for n in ("direct", "nginx", "Veil"):
        rows.append([n, fmt(s[n]["rps"]), fmt(s[n]["p50"], 2), fmt(s[n]["p99"], 2), fmt(s[n]["cpu_us"], 1), str(s[n]["errors"]),
                     "–" if n == "direct" else f"{rss[n] / 1024:.1f}"])
    for base in ("nginx", "direct"):
        rows.append([f"**Veil/{base}**", ratio(s["Veil"]["rps"], s[base]["rps"]), ratio(s["Veil"]["p50"], s[base]["p50"]),
                     ratio(s["Veil"]["p99"], s[base]["p99"]), ratio(s["Veil"]["cpu_us"], s[base]["cpu_us"]), "", ""])
    title = (f"### 1. Non-streaming chat completion — `wrk -t1 -c{a.conns} -d{a.duration}s`, "
             f"{workers} worker{'s' if workers > 1 else ''} each, access log {'on' if access_log else 'off'}")
    note = (f"Median of {a.runs} interleaved runs (after a {a.warmup}s warm-up each). Veil p99 − nginx p99 = "
            f"{s['Veil']['p99'] - s['nginx']['p99']:+.2f} ms. CPU µs/req = CPU time (user + system) of the server process(es) "
            "during the run ÷ requests answered — for `direct`, the upstream's own cost; it is far less sensitive to "
            "other load on the machine than req/s.")
    return title + "\n\n" + table(["target", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors", "RSS after MiB"], rows) + "\n\n" + note, s


def scenario_coldpool(env, workers):
    """The first seconds of load after a start: each proxy started fresh (its upstream pool cold:
    with a TLS upstream, every first connection is a handshake), then at once `wrk -c64` for a
    few seconds, no warm-up. p99 over that window, median of the runs."""
    a = env.args
    res = {"nginx": [], "Veil": []}
    for i in range(a.cold_runs if a.quick else 5):
        for name in ("nginx", "Veil"):
            p, port = env.start_nginx(workers) if name == "nginx" else env.start_veil(workers)
            r = run_wrk(env, port, TEAM_TOKEN, a.coldpool_seconds, a.conns, p.pid)
            res[name].append(r)
            stop_proc(p, signal.SIGQUIT if name == "nginx" else signal.SIGTERM)
            log(f"  cold pool run {i + 1} {name}: {r['rps']:.0f} req/s p99 {r['p99']:.2f} ms errors {r['errors']}")
    s = {n: {k: med([r[k] for r in rs]) for k in ("rps", "p50", "p99")} | {"errors": sum(r["errors"] for r in rs), "p99s": [r["p99"] for r in rs]}
         for n, rs in res.items()}
    rows = [[n, fmt(s[n]["rps"]), fmt(s[n]["p50"], 2), fmt(s[n]["p99"], 2), ", ".join(f"{x:.1f}" for x in s[n]["p99s"]), str(s[n]["errors"])]
            for n in ("nginx", "Veil")]
    rows.append(["**Veil/nginx**", ratio(s["Veil"]["rps"], s["nginx"]["rps"]), ratio(s["Veil"]["p50"], s["nginx"]["p50"]),
                 ratio(s["Veil"]["p99"], s["nginx"]["p99"]), "", ""])
    up = "TLS upstream" if a.upstream_tls else "plain upstream"
    title = (f"### 7. The first {a.coldpool_seconds} s after a start (cold upstream pool, {up}) — `wrk -t1 -c{a.conns}` at once, "
             f"{workers} worker{'s' if workers > 1 else ''} each")
    note = ("Each proxy is started fresh before each run and loaded at once, without warm-up: its connections to the upstream "
            "are all new (with a TLS upstream, handshakes). Median of the runs; every run's p99 listed.")
    return title + "\n\n" + table(["proxy", "req/s", "p50 ms", "p99 ms", "p99 per run", "errors"], rows) + "\n\n" + note, s


# ---------------------------------------------------------------------------------------------
# scenarios 2+3: SSE streams, latency per event, TTFB, memory

def run_sse(env, port, token, streams, events, interval, ramp, pid=None):
    sampler = Sampler(pid) if pid else None
    c0 = cpu_seconds(pid) if pid else None
    timeout = int(ramp / 1000 + events * interval / 1000 + 60)
    p = subprocess.run([f"{env.bin}/bench-sseclient", "--port", str(port), "--token", token, "--streams", str(streams),
                        "--events", str(events), "--interval-ms", str(interval), "--ramp-ms", str(ramp),
                        "--timeout-s", str(timeout)], capture_output=True, text=True, timeout=timeout + 30)
    peak = sampler.stop() if sampler else None
    try:
        r = json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:
        raise RuntimeError(f"sseclient failed: {p.stdout} {p.stderr}")
    r["peak_rss_kib"] = peak
    r["cpu_us_event"] = (cpu_seconds(pid) - c0) * 1e6 / max(1, r["events"]) if pid else None
    return r


def sse_plan(env):
    a = env.args
    cap = (env.nofile - 500) // 2      # a proxy holds two descriptors per stream (+ headroom: listeners, idle upstream connections)
    plan = []
    for n in a.sse_streams:
        if n >= 5000:
            interval, events = a.sse_big_interval, a.sse_big_events
        else:
            interval, events = a.sse_interval, a.sse_events
        plan.append((min(n, cap), n, interval, events))
    return plan, cap


def scenario_sse(env, workers):
    a = env.args
    ng, ng_port = env.start_nginx(workers)
    vl, vl_port = env.start_veil(workers)
    time.sleep(0.5)
    idle = {"nginx": tree_rss_kib(ng.pid), "Veil": rss_kib(vl.pid)}
    plan, cap = sse_plan(env)
    tables, mem = [], {}
    for streams, asked, interval, events in plan:
        # Streams arrive at a steady rate (a real fleet does not open 1,000 streams in the same
        # millisecond), so their event phases are spread; every stream is open at once after the ramp.
        ramp = max(interval, streams * 1000 // a.sse_open_rate)
        targets = [("direct", env.up_port, UPSTREAM_KEY, None), ("nginx", ng_port, TEAM_TOKEN, ng.pid), ("Veil", vl_port, TEAM_TOKEN, vl.pid)]
        res = {t[0]: [] for t in targets}
        after = {}
        runs = a.sse_runs if streams < 5000 else max(1, a.sse_runs_big)
        for i in range(runs):
            for name, port, tok, pid in targets:
                r = run_sse(env, port, tok, streams, events, interval, ramp, pid)
                res[name].append(r)
                if pid:
                    time.sleep(2.0)           # streams closed: let the proxy settle
                    after[name] = tree_rss_kib(pid)
                log(f"  sse {streams} run {i + 1}/{runs} {name}: ok {r['ok']}/{streams} events {r['events']}/{r['expected_events']} "
                    f"lat p50 {r['lat_p50_us']} p99 {r['lat_p99_us']} max {r['lat_max_us']} us, ttfb p50 {r['ttfb_p50_us']} p99 {r['ttfb_p99_us']} us"
                    + (f", peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB" if r["peak_rss_kib"] else ""))
        s = {}
        for n, rs in res.items():
            s[n] = {k: med([r[k] for r in rs]) for k in ("lat_p50_us", "lat_p99_us", "lat_p999_us", "ttfb_p50_us", "ttfb_p99_us", "cpu_us_event")}
            s[n]["lat_max_us"] = max(r["lat_max_us"] for r in rs)
            s[n]["ok"] = sum(r["ok"] for r in rs)
            s[n]["failed"] = sum(r["failed"] for r in rs)
            s[n]["events"] = sum(r["events"] for r in rs)
            s[n]["expected"] = sum(r["expected_events"] for r in rs)
            s[n]["late"] = sum(r["late"] for r in rs)
            s[n]["ooo"] = sum(r["out_of_order"] for r in rs)
            s[n]["peak"] = max((r["peak_rss_kib"] or 0) for r in rs)
        rows = []
        for n in ("direct", "nginx", "Veil"):
            x = s[n]
            rows.append([n, f"{x['ok']}/{x['ok'] + x['failed']}", f"{x['events']}/{x['expected']}",
                         fmt(x["lat_p50_us"] / 1000, 3), fmt(x["lat_p99_us"] / 1000, 3), fmt(x["lat_p999_us"] / 1000, 3),
                         fmt(x["lat_max_us"] / 1000, 2), str(x["late"]),
                         fmt(x["ttfb_p50_us"] / 1000, 2), fmt(x["ttfb_p99_us"] / 1000, 2), fmt(x["cpu_us_event"], 1)])
        for base in ("nginx", "direct"):
            v, b = s["Veil"], s[base]
            rows.append([f"**Veil/{base}**", "", "", ratio(v["lat_p50_us"], b["lat_p50_us"]), ratio(v["lat_p99_us"], b["lat_p99_us"]),
                         ratio(v["lat_p999_us"], b["lat_p999_us"]), ratio(v["lat_max_us"], b["lat_max_us"]), "",
                         ratio(v["ttfb_p50_us"], b["ttfb_p50_us"]), ratio(v["ttfb_p99_us"], b["ttfb_p99_us"]),
                         ratio(v["cpu_us_event"], b["cpu_us_event"]) if base == "nginx" else ""])
        # The latency the proxy adds over the direct path (same client, same upstream).
        added = {n: (s[n]["lat_p99_us"] - s["direct"]["lat_p99_us"]) / 1000 for n in ("nginx", "Veil")}
        capped = f" (asked {asked}; capped by the {env.nofile}-descriptor hard limit, see below)" if streams < asked else ""
        title = (f"### 2. SSE — {streams:,} concurrent streams{capped}, {events} events each every {interval} ms "
                 f"(≈{streams * 1000 // interval:,} events/s), opened over {ramp / 1000:g} s, {workers} worker{'s' if workers > 1 else ''} each")
        note = (f"Latency = client receive − upstream `sent_at_us`, per event; median over {runs} run(s) of each run's percentile, max = worst event of all runs. "
                f"`late` = events received more than half an interval ({interval // 2} ms) after they were sent (an event held back "
                f"waiting for the next would land here). TTFB = request written → first response byte (the headers; the first "
                f"event follows one interval later). CPU µs/event = proxy CPU time during the run (stream setup included) ÷ events delivered. p99 over direct: nginx {added['nginx']:+.3f} ms, Veil {added['Veil']:+.3f} ms.")
        tables.append(title + "\n\n" + table(["target", "streams ok", "events", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "late",
                                              "TTFB p50 ms", "TTFB p99 ms", "CPU µs/event"], rows) + "\n\n" + note)
        mem[streams] = {n: {"peak": s[n]["peak"], "after": after.get(n)} for n in ("nginx", "Veil")}
    stop_proc(ng, signal.SIGQUIT)
    stop_proc(vl)
    # scenario 3 from the biggest run
    big = max(mem)
    rows = []
    for n in ("nginx", "Veil"):
        m = mem[big][n]
        per = (m["peak"] - idle[n]) * 1024 / big
        rows.append([n, f"{idle[n] / 1024:.1f}", f"{m['peak'] / 1024:.1f}", f"{per / 1024:.1f}", f"{(m['after'] or 0) / 1024:.1f}"])
    rows.append(["**Veil/nginx**", ratio(idle["Veil"], idle["nginx"]), ratio(mem[big]["Veil"]["peak"], mem[big]["nginx"]["peak"]),
                 ratio(mem[big]["Veil"]["peak"] - idle["Veil"], mem[big]["nginx"]["peak"] - idle["nginx"]),
                 ratio(mem[big]["Veil"]["after"], mem[big]["nginx"]["after"])])
    title = f"### 3. Memory — RSS while holding {big:,} open SSE streams, {workers} worker{'s' if workers > 1 else ''} each"
    note = ("RSS = VmRSS (nginx: master + workers). Idle = after start, before any request. Peak = highest sample (every 50 ms) "
            f"during the {big:,}-stream run; per stream = (peak − idle) / streams. After = 2 s after the last stream closed.")
    mtable = title + "\n\n" + table(["proxy", "idle MiB", f"peak with {big:,} streams MiB", "KiB per stream", "after close MiB"], rows) + "\n\n" + note
    return tables, mtable, mem, idle


# ---------------------------------------------------------------------------------------------
# scenario 4: video download through /v1/videos/{id}/content

def run_curl(url, headers, pid=None):
    sampler = Sampler(pid) if pid else None
    c0 = cpu_seconds(pid) if pid else None
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{speed_download} %{time_starttransfer}", url]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout.split()
    peak = sampler.stop() if sampler else None
    cpu = (cpu_seconds(pid) - c0) / (int(out[1]) / 1e9) if pid else None
    return {"status": int(out[0]), "bytes": int(out[1]), "mbps": float(out[2]) / 1e6, "ttfb_ms": float(out[3]) * 1000, "peak": peak, "cpu_s_gb": cpu}


def scenario_video(env, workers):
    a = env.args
    ng, ng_port = env.start_nginx(workers)
    vl, vl_port = env.start_veil(workers)
    # Veil: the video must be the team's: create it (the stand-in answers `completed` with its URL).
    body = b'{"model":"sora-2","prompt":"a benchmark","seconds":"4","size":"720x1280"}'
    with socket.create_connection(("127.0.0.1", vl_port), timeout=5) as s:
        s.sendall(b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer " + TEAM_TOKEN.encode()
                  + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        resp = b""
        while chunk := s.recv(65536):
            resp += chunk
    vid = json.loads(resp.split(b"\r\n\r\n", 1)[1])["id"]
    time.sleep(0.3)
    idle = {"nginx": tree_rss_kib(ng.pid), "Veil": rss_kib(vl.pid)}
    auth = [f"Authorization: Bearer {TEAM_TOKEN}"]
    targets = [("direct", f"http://127.0.0.1:{env.up_port}/files/video.mp4", [], env.upstream.pid),
               ("nginx", f"http://127.0.0.1:{ng_port}/v1/videos/{vid}/content", auth, ng.pid),
               ("Veil", f"http://127.0.0.1:{vl_port}/v1/videos/{vid}/content", auth, vl.pid)]
    res = {t[0]: [] for t in targets}
    for i in range(a.video_runs):
        for name, url, hdr, pid in targets:
            r = run_curl(url, hdr, pid)
            if r["status"] != 200 or r["bytes"] != a.video_bytes:
                raise RuntimeError(f"video via {name}: HTTP {r['status']}, {r['bytes']} bytes")
            res[name].append(r)
            log(f"  video run {i + 1}/{a.video_runs} {name}: {r['mbps']:.0f} MB/s, {r['cpu_s_gb']:.2f} CPU s/GB" + (f", peak RSS {r['peak'] / 1024:.1f} MiB" if name != "direct" else ""))
    stop_proc(ng, signal.SIGQUIT)
    stop_proc(vl)
    s = {n: {"mbps": med([r["mbps"] for r in rs]), "peak": max((r["peak"] or 0) for r in rs),
             "cpu": med([r["cpu_s_gb"] for r in rs])} for n, rs in res.items()}
    rows = []
    for n in ("direct", "nginx", "Veil"):
        rows.append([n, fmt(s[n]["mbps"]), fmt(s[n]["cpu"], 2), "–" if n == "direct" else f"{idle[n] / 1024:.1f}",
                     "–" if n == "direct" else f"{s[n]['peak'] / 1024:.1f}"])
    for base in ("nginx", "direct"):
        rows.append([f"**Veil/{base}**", ratio(s["Veil"]["mbps"], s[base]["mbps"]), "" if base == "direct" else ratio(s["Veil"]["cpu"], s["nginx"]["cpu"]),
                     "" if base == "direct" else ratio(idle["Veil"], idle["nginx"]),
                     "" if base == "direct" else ratio(s["Veil"]["peak"], s["nginx"]["peak"])])
    mib = a.video_bytes / (1 << 20)
    title = f"### 4. Video download — {mib:,.0f} MiB through `/v1/videos/{{id}}/content`, `curl -o /dev/null`, {workers} worker{'s' if workers > 1 else ''} each"
    note = (f"Median MB/s (10^6 bytes/s) of {a.video_runs} runs. nginx maps the same URL onto the file with a `rewrite` "
            "(it has no notion of video ownership); Veil looks the video up in its store and streams the signed URL. "
            "Peak RSS sampled every 50 ms during the download.")
    return title + "\n\n" + table(["target", "MB/s", "CPU s/GB", "RSS before MiB", "peak RSS during MiB"], rows) + "\n\n" + note, s


# ---------------------------------------------------------------------------------------------
# scenario 6: instructions per request and per event, under callgrind

CHAT_BODY = '{"model":"bench-model","messages":[{"role":"user","content":"Say something of about a kilobyte."}]}'


def sequential_chat(port, token, n):
    """n non-streaming chat requests, one after another on one kept-alive connection."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    ok = 0
    for _ in range(n):
        c.request("POST", "/v1/chat/completions", CHAT_BODY, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        r = c.getresponse()
        r.read()
        ok += r.status == 200
    c.close()
    return ok


def callgrind_total(env, name, cmd, port, stop_sig, work):
    """Runs `cmd` under callgrind, `work()` against it, stops it; returns the instructions it
    executed in user space (all threads), from callgrind's totals."""
    out = f"{env.tmp}/callgrind-{name}.out"
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + cmd,
                         stdout=subprocess.DEVNULL, stderr=open(f"{env.tmp}/callgrind-{name}.log", "w"))
    started.append(p)
    wait_ready(port, f"{name} under valgrind", timeout=120)
    done = work()
    stop_proc(p, stop_sig, timeout=60)
    with open(out) as f:
        for line in f:
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1]), done
    raise RuntimeError(f"no totals in {out}")


def scenario_instructions(env, workers):
    """Instructions (user space) per proxied request and per streamed event, counted by callgrind:
    a deterministic figure — the same binary and input give the same count whatever else the
    machine does — where CPU time moves by ±15 % between runs. Each proxy runs twice, for a small
    and a large amount of work; the difference divided by the difference in work removes start-up
    and shutdown. The upstream runs natively."""
    a = env.args
    veil_bin = f"{env.tmp}/veil-nodebug"        # valgrind cannot read the toolchain's DWARF 5
    subprocess.run(["objcopy", "--strip-debug", env.veil, veil_bin], check=True)
    n1, n2 = a.ir_requests
    e1, e2 = a.ir_events
    streams = a.ir_streams
    res = {}
    for name in ("nginx", "Veil"):
        def cmd(port):
            if name == "nginx":
                return env.nginx_cmd(port, 1, single_process=True)
            return [veil_bin] + env.veil_cmd(port, workers)[1:]
        sig = signal.SIGQUIT if name == "nginx" else signal.SIGTERM
        counts = []
        for n in (n1, n2):
            port = free_port()
            total, ok = callgrind_total(env, f"{name}-chat-{n}", cmd(port), port, sig, lambda: sequential_chat(port, TEAM_TOKEN, n))
            if ok != n:
                raise RuntimeError(f"{name}: {ok}/{n} chat answers were 200")
            counts.append(total)
        per_req = (counts[1] - counts[0]) / (n2 - n1)
        ev = []
        for e in (e1, e2):
            port = free_port()
            total, r = callgrind_total(env, f"{name}-sse-{e}", cmd(port), port, sig,
                                       lambda: run_sse(env, port, TEAM_TOKEN, streams, e, 5, 20))
            if r["events"] != streams * e:
                raise RuntimeError(f"{name}: {r['events']}/{streams * e} events")
            ev.append(total)
        per_event = (ev[1] - ev[0]) / ((e2 - e1) * streams)
        res[name] = {"per_request": per_req, "per_event": per_event}
        log(f"  instructions {name}: {per_req:,.0f} per request, {per_event:,.0f} per event")
    rows = [[n, f"{res[n]['per_request']:,.0f}", f"{res[n]['per_event']:,.0f}"] for n in ("nginx", "Veil")]
    rows.append(["**Veil/nginx**", ratio(res["Veil"]["per_request"], res["nginx"]["per_request"]),
                 ratio(res["Veil"]["per_event"], res["nginx"]["per_event"])])
    title = f"### 6. Instructions per proxied request and per streamed event — `valgrind --tool=callgrind`, {workers} worker each"
    note = (f"User-space instructions of the proxy process (all its threads: Veil's usage writer included), "
            f"from callgrind's totals: per request = (I({n2} requests) − I({n1})) / {n2 - n1}, sequential non-streaming "
            f"chat requests on one kept-alive connection; per event = (I({e2} events) − I({e1})) / ({e2 - e1} × {streams}), "
            f"{streams} streams with an event every 5 ms (so it also carries what the proxy does on its own timers "
            "while the streams run). Kernel work (the sends and receives) is not counted. Deterministic: rerunning "
            "the same binaries gives the same figures to within a fraction of a percent; `--quick` uses fewer "
            "requests and events, so compare builds within one mode.")
    return title + "\n\n" + table(["proxy", "instructions per request", "instructions per event"], rows) + "\n\n" + note, res


# ---------------------------------------------------------------------------------------------
# scenario 5: cold start

def cold_start(env, cmd, port, settle=1.0):
    out = subprocess.run([f"{env.bin}/bench-coldstart", str(port), "10000", "--"] + cmd, capture_output=True, text=True, timeout=30).stdout
    r = json.loads(out.strip().splitlines()[-1])
    pid = r["pid"]
    started.append(pid)
    time.sleep(settle)
    rss = (tree_rss_kib(pid), tree_rss_kib(pid, "RssAnon:"))
    if cmd[0] == "nginx":
        os.kill(pid, signal.SIGQUIT)
    else:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                break
        except ChildProcessError:
            break
        time.sleep(0.01)
    else:
        kill_pid(pid)
    started.remove(pid)
    return r["ms"], rss


def scenario_cold(env, workers):
    a = env.args
    res = {"nginx": [], "Veil": []}
    for i in range(a.cold_runs):
        port = free_port()
        res["nginx"].append(cold_start(env, env.nginx_cmd(port, workers), port))
        port = free_port()
        res["Veil"].append(cold_start(env, env.veil_cmd(port, workers), port))
        log(f"  cold start run {i + 1}/{a.cold_runs}: nginx {res['nginx'][-1][0]:.1f} ms, Veil {res['Veil'][-1][0]:.1f} ms")
    s = {n: {"ms": med([x[0] for x in v]), "rss": med([x[1][0] for x in v]), "anon": med([x[1][1] for x in v])} for n, v in res.items()}
    rows = [[n, fmt(s[n]["ms"], 1), f"{s[n]['rss'] / 1024:.1f}", f"{s[n]['anon'] / 1024:.1f}"] for n in ("nginx", "Veil")]
    rows.append(["**Veil/nginx**", ratio(s["Veil"]["ms"], s["nginx"]["ms"]), ratio(s["Veil"]["rss"], s["nginx"]["rss"]), ratio(s["Veil"]["anon"], s["nginx"]["anon"])])
    title = f"### 5. Cold start — exec → first `200` on `/healthz`, {workers} worker{'s' if workers > 1 else ''} each"
    note = (f"Median of {a.cold_runs} starts. A C helper forks, execs and polls with a new connection every ~0.1 ms. "
            "Idle RSS read 1 s after the first answer (nginx: master + workers). Private = RssAnon (heap, stacks: what each "
            "extra instance really costs); the rest of VmRSS is shared library pages. Veil opens its SQLite store and reads its YAML config on the way.")
    return title + "\n\n" + table(["proxy", "exec → first 200 ms", "idle VmRSS MiB", "idle private (RssAnon) MiB"], rows) + "\n\n" + note, s


# ---------------------------------------------------------------------------------------------

def machine_facts():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ng = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0] if True else ""
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return cpu, ng, wrk, load


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--veil", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="chat,sse,video,cold,instructions", help="also: coldpool")
    ap.add_argument("--workers", type=int, default=1, help="event loops (Veil) / worker processes (nginx)")
    ap.add_argument("--chat-workers", default=None, help="comma list for scenario 1 (default: --workers)")
    ap.add_argument("--upstream-threads", type=int, default=1)
    ap.add_argument("--upstream-tls", action="store_true", help="the upstream on TLS (an nginx terminating it, a CA made here; both proxies verify)")
    ap.add_argument("--chat-access", default="off", help="comma list of access-log settings for scenario 1 (off,on)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--nice", type=int, default=-10, help="niceness for everything the bench starts (0 = leave as is)")
    args = ap.parse_args()
    q = args.quick
    args.runs = 2 if q else 5
    args.duration = 3 if q else 10
    args.warmup = 1 if q else 2
    args.conns = 64
    args.sse_streams = [100, 1000] if q else [100, 1000, 10000]
    args.sse_interval, args.sse_events = 50, (20 if q else 40)
    args.sse_big_interval, args.sse_big_events = 1000, (10 if q else 20)
    args.sse_open_rate = 2000        # new streams per second
    args.sse_runs = 1 if q else 3
    args.sse_runs_big = 1
    args.video_bytes = (256 if q else 2048) << 20
    args.video_runs = 1 if q else 3
    args.cold_runs = 3 if q else 10
    args.coldpool_seconds = 4
    args.ir_requests = (50, 250) if q else (100, 600)
    args.ir_events = (10, 60) if q else (20, 220)
    args.ir_streams = 10
    chat_workers = [int(x) for x in (args.chat_workers or str(args.workers)).split(",")]
    only = set(args.only.split(","))

    if args.nice:
        try:
            os.nice(args.nice)   # inherited by everything started: less noise from other work on the machine
        except OSError:
            args.nice = 0
    set_subreaper()
    atexit.register(cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))

    env = Env(args)
    cpu, ngv, wrkv, load = machine_facts()
    t_start = time.time()
    env.start_upstream()
    sections = []
    head = (f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} × {cpu}, {ngv}, {wrkv.split(' Copyright')[0]}, "
            f"loopback only, fd hard limit {env.nofile}, load average at start {' '.join(load)}"
            f"{' — QUICK mode (smoke test, not for quoting)' if q else ''}. "
            f"Upstream: bench/upstream.c ({args.upstream_threads} thread){', behind a TLS-terminating nginx (both proxies verify its certificate)' if args.upstream_tls else ''}. Client, proxy and upstream share the same {os.cpu_count()} cores"
            f"{f', all at nice {args.nice}' if args.nice else ''}.")
    log(head)
    results = {}
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")

    def save(final=False):
        with open("/proc/loadavg") as f:
            load_end = " ".join(f.read().split()[:3])
        tail = f"Total {time.time() - t_start:.0f} s; load average at end {load_end}." if final else "(partial: run in progress or failed)"
        md = "\n\n".join([head] + sections + [tail]) + "\n"
        for name in (f"bench-{stamp}{'-quick' if q else ''}.md", "latest.md"):
            with open(os.path.join(args.out, name), "w") as f:
                f.write(md)
        with open(os.path.join(args.out, "latest.json"), "w") as f:
            json.dump(results, f, indent=1, default=str)
        return tail

    def emit(t):
        sections.append(t)
        print(t + "\n", flush=True)
        save()

    try:
        if "chat" in only:
            for w in chat_workers:
                for acc in args.chat_access.split(","):
                    log(f"== scenario 1: non-streaming, {w} worker(s), access log {acc}")
                    t, s = scenario_chat(env, w, access_log=(acc == "on"))
                    results[f"chat_w{w}_access_{acc}"] = s
                    emit(t)
        if "coldpool" in only:
            log(f"== scenario 7: the first seconds after a start, {args.workers} worker(s)")
            t, s = scenario_coldpool(env, args.workers)
            results["coldpool"] = s
            emit(t)
        if "sse" in only:
            log(f"== scenarios 2+3: SSE and memory, {args.workers} worker(s)")
            ts, mt, mem, idle = scenario_sse(env, args.workers)
            results["sse_mem"] = {"mem": mem, "idle": idle}
            for t in ts:
                emit(t)
            emit(mt)
        if "video" in only:
            log(f"== scenario 4: video download, {args.workers} worker(s)")
            t, s = scenario_video(env, args.workers)
            results["video"] = s
            emit(t)
        if "cold" in only:
            log(f"== scenario 5: cold start, {args.workers} worker(s)")
            t, s = scenario_cold(env, args.workers)
            results["cold"] = s
            emit(t)
        if "instructions" in only:
            log(f"== scenario 6: instructions under callgrind, {args.workers} worker(s)")
            t, s = scenario_instructions(env, args.workers)
            results["instructions"] = s
            emit(t)
    finally:
        cleanup()
    print(save(final=True))
    log(f"saved {os.path.join(args.out, 'latest.md')}")


if __name__ == "__main__":
    main()
