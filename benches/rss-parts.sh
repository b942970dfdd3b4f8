#!/usr/bin/env bash
# Side sampler for the soak (issue 15): every INTERVAL seconds while PID lives, one CSV row of the
# process's anonymous memory split by heap: mimalloc's arenas (anonymous mappings at
# 0x10000000000 and up, below 0x7f0000000000: the Rust heap) against the rest (glibc's malloc
# arenas, where SQLite's page caches and aws-lc allocate, and the stacks), from /proc/PID/smaps.
#
# Usage: benches/rss-parts.sh PID INTERVAL OUT.csv
# Columns: t (s since start), anon_kib (RssAnon), mi_rss_kib, other_anon_kib, threads, thp_kib
# (AnonHugePages: anonymous memory backed by transparent huge pages, 2 MiB each).
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,9p' "$0"; exit 2; }
pid=$1 iv=$2 out=$3
echo "t,anon_kib,mi_rss_kib,other_anon_kib,threads,thp_kib" >"$out"
t0=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
    python3 - "$pid" "$t0" >>"$out" <<'PY' || true
import re, sys, time
pid, t0 = sys.argv[1], int(sys.argv[2])
mi = other = thp = 0
kind = None
for line in open(f"/proc/{pid}/smaps"):
    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        f = line.split()
        start = int(f[0].split("-")[0], 16)
        path = f[5] if len(f) > 5 else ""
        kind = "mi" if 0x10000000000 <= start < 0x7F0000000000 and not path else "other"
    elif line.startswith("Anonymous:"):
        kb = int(line.split()[1])
        if kind == "mi":
            mi += kb
        else:
            other += kb
    elif line.startswith("AnonHugePages:"):
        thp += int(line.split()[1])
status = {l.split(":")[0]: l.split()[1] for l in open(f"/proc/{pid}/status") if ":" in l and len(l.split()) > 1}
print(f"{int(time.time()) - t0},{status.get('RssAnon', 0)},{mi},{other},{status.get('Threads', 0)},{thp}")
PY
    sleep "$iv"
done
