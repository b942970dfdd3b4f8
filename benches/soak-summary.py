#!/usr/bin/env python3
"""Summarises a benches/soak.sh run: python3 benches/soak-summary.py OUT MINUTES RATE PAIRS.

Writes OUT/summary.md and exits 1 unless the run was flat: after the warm-up, RSS, open FDs and
tokio tasks each stay within 10% of their median (RSS: its anonymous part, when sampled), compared within one relay transport (odd
minutes' rounds run over WSS, even minutes' over QUIC: a QUIC round holds no TCP socket and
fewer tasks per leg, so the two kinds of minute differ by design), and once the load has
stopped FDs and tasks come back to their level before it.
"""
import collections
import csv
import json
import sys

out, minutes, rate, pairs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
load = [r for r in rows if r["phase"] == "load"]
warmup = min(5, len(load) // 4)
before = next(r for r in rows if r["phase"] == "before")
after = next((r for r in rows if r["phase"] == "after"), None)


def transport(r):
    return "quic" if int(r["minute"]) % 2 == 0 else "wss"


def spread(key, kind):
    v = [int(r[key]) for r in load if int(r["minute"]) > warmup and transport(r) == kind and r[key]]
    if not v:
        return None
    med = sorted(v)[len(v) // 2]
    # The largest distance from the median, in % of it ("within 10% of the median").
    return min(v), med, max(v), max(max(v) - med, med - min(v)) / med * 100 if med else 0.0


try:
    sig = json.load(open(f"{out}/signal.json"))
except (OSError, ValueError):
    sig = {}
try:
    codes = collections.Counter(open(f"{out}/admin.codes").read().split())
except OSError:
    codes = collections.Counter()
rounds_ok = 0
for m in range(1, minutes + 1):
    try:
        json.load(open(f"{out}/relay-{m}.json"))
        rounds_ok += 1
    except (OSError, ValueError):
        pass
lat = sig.get("codeToActiveMs", {})
lines = [
    f"Soak: {minutes} min, signalling at {rate} pairings/s, relay rounds of {pairs} pairs (WSS on odd "
    "minutes, QUIC on even ones), admin writes every 2 s; samples 30 s into each minute.",
    "",
    f"- Sessions (signalling pairings code → active → end): {sig.get('pairings', '?')}, code → active "
    f"p50/p99 {lat.get('p50', 0):.1f}/{lat.get('p99', 0):.1f} ms",
    f"- Relay rounds completed: {rounds_ok}/{minutes} ({rounds_ok * pairs} relay sessions)",
    f"- Admin answers by HTTP status: {dict(codes)}",
    "",
    "| figure | before load | after warm-up, WSS minutes: min / median / max (largest distance from the median) | QUIC minutes: min / median / max (largest distance) | idle after load |",
    "|---|---|---|---|---|",
]
ok = True
# Older runs sampled VmRSS only. Newer ones also sample its two parts: anonymous memory (the process's
# own heap and stacks), which is what must stay flat, and file-backed pages (the memory-mapped SQLite
# database: reclaimable page cache that follows SQLite's remapping of the growing file), shown but not
# judged. Without the parts, total RSS is judged.
has_parts = any(r.get("rss_anon_kib") for r in load)
figures = [("rss_kib", "RSS KiB" + (" (total, not judged)" if has_parts else ""), not has_parts)]
if has_parts:
    figures += [("rss_anon_kib", "RSS anonymous KiB", True), ("rss_file_kib", "RSS file-backed KiB (not judged)", False)]
figures += [("fds", "open FDs", True), ("tasks", "tokio tasks", True)]
for key, label, judged in figures:
    cells = []
    for kind in ("wss", "quic"):
        s = spread(key, kind)
        if s is None:
            cells.append("n/a")
            continue
        cells.append(f"{s[0]} / {s[1]} / {s[2]} (±{s[3]:.1f}%)")
        if judged:
            ok &= s[3] <= 10
    lines.append(f"| {label} | {before.get(key) or 'n/a'} | {cells[0]} | {cells[1]} | {(after.get(key) if after else None) or 'n/a'} |")
for key in ("fds", "tasks"):
    if after and before[key] and after[key] and int(after[key]) > int(before[key]) + 8:
        ok = False
        lines.append(f"\n{key}: {after[key]} idle after the load against {before[key]} before it: a leak")
lines += ["", "Verdict: " + (
    f"flat ({'anonymous RSS' if has_parts else 'RSS'}, FDs and tasks within 10% of their medians after warm-up; "
    "FDs and tasks back to their idle level after the load)"
    if ok else "NOT flat: see above")]
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if ok else 1)
