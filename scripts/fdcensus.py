#!/usr/bin/env python3
"""Counts a process's file descriptors by kind: Veil's client-facing sockets, upstream sockets
(libcurl -> stand-in), the stand-in's own sockets (sandbox mode: same process), other fds.
Usage: fdcensus.py PID VEIL_PORT UPSTREAM_PORT  -> one JSON line."""
import json, os, sys
pid, vp, up = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
inodes, other = set(), 0
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        d = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    if d.startswith("socket:["):
        inodes.add(d[8:-1])
    else:
        other += 1
out = {"client": 0, "listen": 0, "upstream_open": 0, "upstream_closing": 0, "standin": 0, "other_sockets": 0, "other_fds": other}
seen = set()
for f in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(f).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        c = line.split()
        if c[9] not in inodes:
            continue
        seen.add(c[9])
        lp, rp, st = int(c[1].split(":")[1], 16), int(c[2].split(":")[1], 16), c[3]
        if st == "0A": out["listen"] += 1
        elif lp == vp: out["client"] += 1
        elif rp == up: out["upstream_open" if st == "01" else "upstream_closing"] += 1
        elif lp == up: out["standin"] += 1
        else: out["other_sockets"] += 1
out["other_sockets"] += len(inodes - seen)
print(json.dumps(out))
