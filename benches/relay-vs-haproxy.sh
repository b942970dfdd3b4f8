#!/usr/bin/env bash
# The relay next to HAProxy on the same traffic, on a 2-core machine: the server under test
# (assistd or HAProxy) pinned to core 0, the load generator to core 1. See benches/README.md.
#
#   benches/relay-vs-haproxy.sh            # full: every configuration 3 times, ~10 s measured each
#   benches/relay-vs-haproxy.sh --quick    # smoke: once each, 3 s measured
#
# Options: --runs N, --duration 10s, --warmup 2s, --only a,b,...  (scenarios a-e), --no-build,
#          --servers relay-wss,haproxy (a subset of relay-wss, relay-quic, haproxy; default all three).
# ASSIST_BIN=dir runs the assistd and assist-loadgen found there (another build, for A/B runs).
# Results: target/bench-results/<UTC timestamp>/ (one JSON per run, summary.json, summary.md).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=3
DURATION=10s
WARMUP=2s
ONLY=a,b,c,d,e
BUILD=1
SERVERS=relay-wss,relay-quic,haproxy
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) RUNS=1; DURATION=3s; WARMUP=1s ;;
        --runs) RUNS=$2; shift ;;
        --duration) DURATION=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --no-build) BUILD=0 ;;
        --servers) SERVERS=$2; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
    echo "needs at least 2 cores (server on core 0, generator on core 1)" >&2
    exit 2
fi
for tool in haproxy python3 curl taskset ss; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        log "installing what provides $tool"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy python3 curl util-linux iproute2 >/dev/null
        break
    fi
done

cd "$ROOT"
if [ "$BUILD" = 1 ]; then
    log "building release binaries"
    cargo build -j1 --release -p assist-loadgen -p assistd
fi
# ASSIST_BIN: a directory with other release binaries (assistd, assist-loadgen) to compare against.
BIN=${ASSIST_BIN:-$ROOT/target/release}
# 65536 where allowed; some containers cap the hard limit (20000 here), which is still plenty.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
# HAProxy needs about 2 descriptors per connection (front + back): keep maxconn within the limit.
HA_MAXCONN=$(( (NOFILE - 200) / 2 < 20000 ? (NOFILE - 200) / 2 : 20000 ))

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/target/bench-results/$STAMP
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/assist-bench.XXXXXX)
DATA=$WORK/data
RELAY_PORT=18443
METRICS_PORT=18444
FRONT_PORT=18445
BACKEND_PORT=18446
SERVER_PID=

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
trap 'stop_server; rm -rf "$WORK"' EXIT

cat >"$WORK/assistd.toml" <<EOF
[relay]
max_sessions = 20000
max_session_bytes_per_sec = 10000000000
pair_timeout_secs = 60
EOF

start_relay() {
    "${NICE[@]}" taskset -c 0 "$BIN/assistd" serve --data-dir "$DATA" --config "$WORK/assistd.toml" \
        --listen 127.0.0.1:$RELAY_PORT --quic-listen 127.0.0.1:$RELAY_PORT \
        --metrics-listen 127.0.0.1:$METRICS_PORT >>"$OUT/assistd.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 300); do
        if curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "assistd exited; see $OUT/assistd.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "assistd not ready after 30 s; see $OUT/assistd.log" >&2
    exit 1
}

# The data dir (ticket key, self-signed certificate) is created by a first start.
start_relay
stop_server
cat "$DATA/tls/cert.pem" "$DATA/tls/key.pem" >"$WORK/haproxy.pem"
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HA_MAXCONN
defaults
    mode tcp
    timeout connect 10s
    timeout client 120s
    timeout server 120s
frontend fe
    bind 127.0.0.1:$FRONT_PORT ssl crt $WORK/haproxy.pem
    maxconn $HA_MAXCONN
    default_backend be
backend be
    server s1 127.0.0.1:$BACKEND_PORT ssl verify none maxconn $HA_MAXCONN
EOF

start_haproxy() {
    "${NICE[@]}" taskset -c 0 haproxy -f "$WORK/haproxy.cfg" -db >>"$OUT/haproxy.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if ss -ltn | grep -q "127.0.0.1:$FRONT_PORT "; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "haproxy exited; see $OUT/haproxy.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "haproxy not listening after 10 s" >&2
    exit 1
}

# scenario -> "pairs frame_bytes fps"
declare -A SCEN=(
    [a]="1 65536 unthrottled"
    [b]="1 65536 30"
    [c]="100 65536 30"
    [d]="1000 4096 30"
    [e]="1 65536 30"
)

# Other work on the machine (a build, say) skews CPU-normalised figures: the server and the generator
# run at nice -15 (as root), each run waits until the machine is idle (busy under a fifth of a core,
# up to 60 s), and a run during which other processes used over 15 % of a core is run once more.
# Each run's other_cpu_pct is in its JSON and the summary.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
wait_quiet() {
    local i a b
    for i in $(seq 60); do
        a=$(busy_ticks); sleep 1; b=$(busy_ticks)
        if [ $((b - a)) -lt 20 ]; then return 0; fi
        [ "$i" = 1 ] && log "waiting for the machine to be idle (busy: $((b - a))% of a core)"
    done
    log "machine still busy after 60 s; running anyway (see other_cpu_pct)"
}

NICE=()
if [ "$(id -u)" = 0 ]; then NICE=(nice -n -15); fi
LG=("${NICE[@]}" taskset -c 1 "$BIN/assist-loadgen")
run_one() { # name scenario target run -> writes $OUT/name-run.json
    local attempt other
    for attempt in 1 2; do
        wait_quiet
        run_attempt "$@"
        other=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1])).get("other_cpu_pct", 0)))' "$OUT/$1-$4.json")
        if [ "$other" -le 15 ]; then return 0; fi
        log "    other processes used ${other}% of a core during that run; again"
    done
}
run_attempt() {
    local name=$1 s=$2 target=$3 r=$4
    read -r pairs bytes fps <<<"${SCEN[$s]}"
    local traffic=(--pairs "$pairs" --frame-bytes "$bytes" --fps "$fps" --input-hz 100
        --duration "$DURATION" --warmup "$WARMUP" --json)
    local file=$OUT/$name-$r.json
    case "$target" in
        relay-wss|relay-quic)
            start_relay
            "${LG[@]}" relay --data-dir "$DATA" --addr 127.0.0.1:$RELAY_PORT \
                --quic-addr 127.0.0.1:$RELAY_PORT --transport "${target#relay-}" \
                --relay-pid "$SERVER_PID" "${traffic[@]}" >"$file.tmp"
            ;;
        haproxy)
            start_haproxy
            "${LG[@]}" baseline --front 127.0.0.1:$FRONT_PORT --backend-listen 127.0.0.1:$BACKEND_PORT \
                --cert "$DATA/tls/cert.pem" --key "$DATA/tls/key.pem" \
                --relay-pid "$SERVER_PID" "${traffic[@]}" >"$file.tmp"
            ;;
        direct)
            "${LG[@]}" baseline --front 127.0.0.1:$BACKEND_PORT --backend-listen 127.0.0.1:$BACKEND_PORT \
                --cert "$DATA/tls/cert.pem" --key "$DATA/tls/key.pem" "${traffic[@]}" >"$file.tmp"
            ;;
    esac
    stop_server
    python3 - "$file.tmp" "$file" "$s" "$target" "$r" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
v.update(scenario=sys.argv[3], target=sys.argv[4], run=int(sys.argv[5]))
json.dump(v, open(sys.argv[2], "w"), indent=1)
PY
    rm -f "$file.tmp"
    python3 - "$file" <<'PY' >&2
import json, sys
v = json.load(open(sys.argv[1]))
f = lambda k: v.get(k) or 0
print(f"    {v['target']:<10} {f('bytes_per_s')/1e6:8.1f} MB/s {f('msgs_per_s'):8.0f} msg/s"
      f"  cpu {f('relay_cpu_pct'):5.1f}%  {f('bytes_per_relay_cpu_s')/1e9:6.3f} GB/cpu-s {f('msgs_per_relay_cpu_s'):8.0f} msg/cpu-s"
      f"  input p99 {v['input_latency']['p99_us']/1000:7.2f} ms  gen {f('gen_cpu_pct'):5.1f}%  other {f('other_cpu_pct'):4.1f}%"
      + (f"  events {v['events']}" if v['events'] else ""))
PY
}

# Which servers each scenario runs against (HAProxy has no QUIC; e is the direct-TLS baseline).
targets_for() {
    case "$1" in
        e) echo "direct" ;;
        *) tr ',' ' ' <<<"$SERVERS" ;;
    esac
}

log "results in $OUT ($RUNS run(s) per configuration, $DURATION measured after $WARMUP warm-up)"
{
    echo "nproc: $(nproc)"
    grep -m1 'model name' /proc/cpuinfo || true
    uname -srm
    haproxy -v 2>/dev/null | head -1 || true  # head closing the pipe early must not end the script (pipefail)
    "$BIN/assistd" --version 2>/dev/null || true
} >"$OUT/machine.txt"

IFS=, read -r -a SCENARIOS <<<"$ONLY"
for s in "${SCENARIOS[@]}"; do
    read -r pairs bytes fps <<<"${SCEN[$s]}"
    log "scenario $s: $pairs pair(s) x $bytes B @ $fps (loadavg $(cut -d' ' -f1-3 /proc/loadavg))"
    for r in $(seq "$RUNS"); do
        for target in $(targets_for "$s"); do
            run_one "$s-$target" "$s" "$target" "$r"
        done
    done
done

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "*-[0-9]*.json")))]
groups = {}
for v in runs:
    groups.setdefault((v["scenario"], v["target"]), []).append(v)

def get(v, path):
    for k in path.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v

KEYS = ["bytes_per_s", "msgs_per_s", "frames_per_s", "inputs_per_s", "relay_cpu_pct",
        "bytes_per_relay_cpu_s", "msgs_per_relay_cpu_s", "relay_rss_kib", "relay_rss_per_pair_kib",
        "gen_cpu_pct", "frames_dropped", "inputs_dropped", "frames_skipped", "inputs_skipped",
        "keyframe_requests", "connect_s", "other_cpu_pct", "steal_pct", "udp_rcvbuf_errors"]
for lat in ("frame_latency", "input_latency"):
    for q in ("p50_us", "p99_us", "p999_us", "max_us"):
        KEYS.append(f"{lat}.{q}")
summary = {}
for (s, t), vs in sorted(groups.items()):
    m = {}
    for k in KEYS:
        xs = [get(v, k) for v in vs if get(v, k) is not None]
        if xs:
            m[k] = statistics.median(xs)
    m["runs"] = len(vs)
    m["events"] = [v["events"] for v in vs if v["events"]]
    m["tls"] = vs[0].get("tls", "")
    summary[f"{s}/{t}"] = m
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)

desc = {"a": "1 pair x 64 KiB unthrottled", "b": "1 pair x 64 KiB @ 30 fps",
        "c": "100 pairs x 64 KiB @ 30 fps", "d": "1000 pairs x 4 KiB @ 30 fps",
        "e": "direct TLS, 1 pair x 64 KiB @ 30 fps"}
def f(m, k, scale=1.0, fmt="{:.1f}"):
    x = m.get(k)
    return "-" if x is None else fmt.format(x * scale)
lines = ["| scenario | server | MB/s | msgs/s | server CPU % | GB per CPU-s | msgs per CPU-s | frame p50 / p99 / p99.9 ms | input p50 / p99 / p99.9 ms | RSS MiB | RSS/pair KiB | dropped f/i | skipped f/i | gen CPU % | other CPU % |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for key, m in summary.items():
    s, t = key.split("/")
    lat = lambda n: " / ".join(f(m, f"{n}.{q}", 1e-3, "{:.2f}") for q in ("p50_us", "p99_us", "p999_us"))
    lines.append(f"| {s}: {desc.get(s, s)} | {t} | {f(m, 'bytes_per_s', 1e-6)} | {f(m, 'msgs_per_s', 1, '{:.0f}')} | "
                 f"{f(m, 'relay_cpu_pct')} | {f(m, 'bytes_per_relay_cpu_s', 1e-9, '{:.3f}')} | {f(m, 'msgs_per_relay_cpu_s', 1, '{:.0f}')} | "
                 f"{lat('frame_latency')} | {lat('input_latency')} | {f(m, 'relay_rss_kib', 1/1024)} | {f(m, 'relay_rss_per_pair_kib')} | "
                 f"{f(m, 'frames_dropped', 1, '{:.0f}')}/{f(m, 'inputs_dropped', 1, '{:.0f}')} | {f(m, 'frames_skipped', 1, '{:.0f}')}/{f(m, 'inputs_skipped', 1, '{:.0f}')} | {f(m, 'gen_cpu_pct')} | {f(m, 'other_cpu_pct')} |")
lines.append("")
lines.append("| scenario | relay/HAProxy bytes per CPU-s (WSS) | relay/HAProxy msgs per CPU-s (WSS) | QUIC/HAProxy bytes per CPU-s | QUIC/HAProxy msgs per CPU-s |")
lines.append("|---|---|---|---|---|")
def ratio(a, b, k):
    x, y = summary.get(a, {}).get(k), summary.get(b, {}).get(k)
    return "-" if not x or not y else f"{x / y:.2f}x"
for s in "abcd":
    if f"{s}/haproxy" in summary:
        lines.append(f"| {s} | {ratio(s+'/relay-wss', s+'/haproxy', 'bytes_per_relay_cpu_s')} | {ratio(s+'/relay-wss', s+'/haproxy', 'msgs_per_relay_cpu_s')} | "
                     f"{ratio(s+'/relay-quic', s+'/haproxy', 'bytes_per_relay_cpu_s')} | {ratio(s+'/relay-quic', s+'/haproxy', 'msgs_per_relay_cpu_s')} |")
d = summary.get("e/direct")
if d:
    lines.append("")
    lines.append("Latency added over direct TLS (scenario b vs e, 1 pair x 64 KiB @ 30 fps), ms:")
    lines.append("")
    lines.append("| server | frame p50 | frame p99 | frame p99.9 | input p50 | input p99 | input p99.9 |")
    lines.append("|---|---|---|---|---|---|---|")
    for t in ("relay-wss", "relay-quic", "haproxy"):
        m = summary.get(f"b/{t}")
        if not m:
            continue
        cells = []
        for lat in ("frame_latency", "input_latency"):
            for q in ("p50_us", "p99_us", "p999_us"):
                k = f"{lat}.{q}"
                cells.append(f"{(m[k] - d[k]) / 1000:.3f}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
for key, m in summary.items():
    for ev in m["events"]:
        lines.append(f"\n{key} events: {ev}")
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
log "done: $OUT/summary.md"
