#!/usr/bin/env python3
"""Veil on SQLite vs Veil on PostgreSQL, side by side. Run through `bench/store` (which builds first).

Two Veil processes, identical but for the store — `store.path` (SQLite, WAL) and `store.url`
(PostgreSQL: a private cluster this script starts with initdb/pg_ctl in a temp dir, on loopback)
— measured interleaved with wrk on:

  polls  GET /v1/videos/{id} of a finished video: answered from the store (one read each), no
         upstream call — the store-bound request.
  chat   POST /v1/chat/completions (non-streaming) through bench/upstream.c: no store call on the
         request path, only the usage record (buffered) — what the store must not slow down.

Prints one markdown table (medians), saves it to bench/out/store-latest.md. Stops everything it
started and removes its temp dir, also on Ctrl-C.
"""
import argparse
import atexit
import os
import pwd
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import (ROOT, TEAM_TOKEN, UPSTREAM_KEY, WRK_LUA, TMPDIRS, cleanup, cpu_seconds, free_port, fmt, log, med,  # noqa: E402
                   parse_dur_ms, ratio, started, stop_proc, table, wait_ready, machine_facts)

VIDEO_ID = "video_4242"


def pg_bin():
    root = "/usr/lib/postgresql"
    for v in sorted((int(x) for x in os.listdir(root) if x.isdigit()), reverse=True) if os.path.isdir(root) else []:
        d = f"{root}/{v}/bin"
        if os.access(f"{d}/initdb", os.X_OK):
            return d
    sys.exit("PostgreSQL server programs not found: apt-get install postgresql (scripts/deps installs it)")


class Cluster:
    """A private PostgreSQL cluster (as the `postgres` user when run as root)."""

    def __init__(self, tmp):
        self.bin = pg_bin()
        self.dir = f"{tmp}/pg"
        self.port = free_port()
        os.makedirs(self.dir)
        self.as_postgres = os.getuid() == 0
        if self.as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.run([f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "veil", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync"])
        # Durable commits as a deployment would run them (fsync on); shared_buffers at the default.
        self.run([f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-l", f"{self.dir}/server.log", "-w", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=100", "start"])
        self.started = True
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "veil", "-d", "postgres", "-qc", "CREATE DATABASE veil"],
                       check=True, stdout=subprocess.DEVNULL)
        self.url = f"postgresql://veil@127.0.0.1:{self.port}/veil"

    def run(self, cmd):
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        subprocess.run(cmd, check=True, cwd="/tmp", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def postmaster_pid(self):
        with open(f"{self.dir}/data/postmaster.pid") as f:
            return int(f.readline())

    def stop(self):
        if getattr(self, "started", False):
            try:
                self.run([f"{self.bin}/pg_ctl", "-D", f"{self.dir}/data", "-m", "fast", "-w", "stop"])
            except Exception:
                pass
            self.started = False


def veil_config(tmp, name, port, workers, token_hash, up_port, store_yaml):
    path = f"{tmp}/{name}.yaml"
    with open(path, "w") as f:
        f.write(f"""listen: "127.0.0.1:{port}"
workers: {workers}
shutdown_grace_ms: 1000
upstream:
  base_url: "http://127.0.0.1:{up_port}"
  api_key: "{UPSTREAM_KEY}"
limits:
  max_connections: 100000
store:
{store_yaml}
log:
  level: warning
  access: false
teams:
  - name: bench
    tokens_sha256: ["{token_hash}"]
""")
    return path


VIDEO_COLUMNS = ("id, upstream_id, team, model, prompt, size, seconds, status, progress, created_at, completed_at, "
                 "expires_at, video_url, watermarked_url, updated_at")
VIDEO_VALUES = (VIDEO_ID, "4242", "bench", "sora-2", "a lighthouse at dawn", "720x1280", "4", "completed", 100,
                1_700_000_000, 1_700_000_060, 4_000_000_000, "http://127.0.0.1:9/files/video.mp4", None, 1_700_000_060)


def seed_sqlite(path):
    c = sqlite3.connect(path)
    c.execute(f"INSERT INTO videos ({VIDEO_COLUMNS}) VALUES ({', '.join('?' * len(VIDEO_VALUES))})", VIDEO_VALUES)
    c.commit()
    c.close()


def seed_postgres(url):
    def lit(v):
        return "NULL" if v is None else (str(v) if isinstance(v, int) else "'" + v.replace("'", "''") + "'")
    subprocess.run(["psql", url, "-qc", f"INSERT INTO videos ({VIDEO_COLUMNS}) VALUES ({', '.join(lit(v) for v in VIDEO_VALUES)})"],
                   check=True, stdout=subprocess.DEVNULL)


def run_wrk(tmp, port, scenario, seconds, conns, pids):
    if scenario == "chat":
        lua = f"{tmp}/chat.lua"
        with open(lua, "w") as f:
            f.write(WRK_LUA % TEAM_TOKEN)
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", lua, f"http://127.0.0.1:{port}/v1/chat/completions"]
    else:
        cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-H", f"Authorization: Bearer {TEAM_TOKEN}",
               f"http://127.0.0.1:{port}/v1/videos/{VIDEO_ID}"]
    c0 = [cpu_seconds(p) for p in pids]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    c1 = [cpu_seconds(p) for p in pids]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_dur_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = parse_dur_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    n = max(1, rps * seconds)
    cpu = [(b - a) * 1e6 / n for a, b in zip(c0, c1)]
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errs, "veil_cpu": cpu[0], "db_cpu": cpu[1] if len(cpu) > 1 else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--veil", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--pool-size", type=int, default=4)
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    args = ap.parse_args()
    runs, duration, warmup = (2, 3, 1) if args.quick else (5, 10, 2)

    atexit.register(cleanup)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))
    tmp = tempfile.mkdtemp(prefix="veil-bench-store-")
    TMPDIRS.append(tmp)
    cluster = Cluster(tmp)
    atexit.register(cluster.stop)       # registered last: runs first, before the temp dir goes

    up_port = free_port()
    up = subprocess.Popen([f"{args.bin}/bench-upstream", "--port", str(up_port), "--threads", "1", "--key", UPSTREAM_KEY],
                          stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/upstream.log", "w"))
    started.append(up)
    wait_ready(up_port, "bench-upstream")
    token_hash = subprocess.check_output([args.veil, "hash-token", TEAM_TOKEN], text=True).strip()

    targets = []
    for name, store_yaml in [("SQLite", f'  path: "{tmp}/veil.sqlite3"'),
                             ("PostgreSQL", f'  url: "{cluster.url}"\n  pool_size: {args.pool_size}')]:
        port = free_port()
        cfg = veil_config(tmp, name, port, args.workers, token_hash, up_port, store_yaml)
        subprocess.run([args.veil, "migrate", "--config", cfg], check=True, stdout=subprocess.DEVNULL)
        if name == "SQLite":
            seed_sqlite(f"{tmp}/veil.sqlite3")
        else:
            seed_postgres(cluster.url)
        p = subprocess.Popen([args.veil, "serve", "--config", cfg], stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/{name}.log", "w"))
        started.append(p)
        wait_ready(port, f"veil ({name})")
        pids = [p.pid] + ([cluster.postmaster_pid()] if name == "PostgreSQL" else [])
        targets.append((name, port, pids))

    cpu, _, wrkv, load = machine_facts()
    results = {}
    for scenario in ("polls", "chat"):
        for name, port, pids in targets:
            run_wrk(tmp, port, scenario, warmup, args.conns, pids)
        for i in range(runs):
            for name, port, pids in targets:       # interleaved: background noise hits both alike
                r = run_wrk(tmp, port, scenario, duration, args.conns, pids)
                results.setdefault((scenario, name), []).append(r)
                log(f"  {scenario} run {i + 1}/{runs} {name}: {r['rps']:.0f} req/s p50 {r['p50']:.2f} ms p99 {r['p99']:.2f} ms "
                    f"errors {r['errors']} veil cpu {r['veil_cpu']:.1f} us/req" + (f" db cpu {r['db_cpu']:.1f} us/req" if r['db_cpu'] is not None else ""))
    for p in [t for t in started if not isinstance(t, int)]:
        stop_proc(p)

    rows = []
    summary = {}
    for scenario in ("polls", "chat"):
        for name in ("SQLite", "PostgreSQL"):
            rs = results[(scenario, name)]
            s = {k: med([r[k] for r in rs]) for k in ("rps", "p50", "p99", "veil_cpu", "db_cpu")}
            s["errors"] = sum(r["errors"] for r in rs)
            summary[(scenario, name)] = s
            rows.append([scenario, name, fmt(s["rps"]), fmt(s["p50"], 2), fmt(s["p99"], 2), fmt(s["veil_cpu"], 1),
                         "–" if s["db_cpu"] is None else fmt(s["db_cpu"], 1), str(s["errors"])])
        a, b = summary[(scenario, "PostgreSQL")], summary[(scenario, "SQLite")]
        rows.append([scenario, "**PostgreSQL/SQLite**", ratio(a["rps"], b["rps"]), ratio(a["p50"], b["p50"]), ratio(a["p99"], b["p99"]),
                     ratio(a["veil_cpu"], b["veil_cpu"]), "", ""])
    head = (f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')} on {os.cpu_count()} × {cpu}, {wrkv.split(' Copyright')[0]}, "
            f"load average at start {' '.join(load)}{' — QUICK mode (smoke test, not for quoting)' if args.quick else ''}. "
            f"Veil {args.workers} worker(s), PostgreSQL {subprocess.check_output([cluster.bin + '/postgres', '-V'], text=True).strip()} "
            f"on loopback (pool_size {args.pool_size}, fsync on), `wrk -t1 -c{args.conns} -d{duration}s`, median of {runs} interleaved runs. "
            "`polls`: GET /v1/videos/{id} of a finished video (one store read, no upstream call); `chat`: non-streaming chat "
            "completion through bench/upstream.c (no store call on the request path; its usage record is buffered). "
            "CPU µs/req: user + system CPU of Veil (and of the PostgreSQL server's processes) ÷ requests answered.")
    text = head + "\n\n" + table(["scenario", "store", "req/s", "p50 ms", "p99 ms", "Veil CPU µs/req", "PostgreSQL CPU µs/req", "errors"], rows)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "store-latest.md"), "w") as f:
        f.write(text + "\n")
    log(f"saved {os.path.join(args.out, 'store-latest.md')}")


if __name__ == "__main__":
    main()
