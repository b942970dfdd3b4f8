#!/usr/bin/env bash
# Soak (issue 15): one release `assistd` under mixed load for MINUTES (default 60): signalling
# pairings at RATE per second (default 30: ~108,000 sessions an hour, each code → consent →
# active → end, written to the session reports), relay traffic in one-minute rounds of fresh
# pairs (PAIRS pairs, 4 KiB screen frames at 15 fps and inputs at 50 Hz, over WSS and QUIC), and
# admin writes every 2 s (settings PATCH, a role assignment created and deleted, a sessions
# report page read). Every minute it samples the server's RSS, open file descriptors and tokio task
# count (`assist_runtime_alive_tasks`), and at the end, with the load stopped, once more: the
# idle figures must come back to where they were before the load (no FD or task leak).
#
# Usage: benches/soak.sh [--minutes M] [--rate R] [--pairs P] [--no-build]
# Output: target/soak/<UTC stamp>/{samples.csv,summary.md,assistd.log,...}; summary.md is what
# docs/benchmarks.md quotes. It only talks to 127.0.0.1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MINUTES=60 RATE=30 PAIRS=50 BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --pairs) PAIRS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
log() { echo "==> $(date -u +%H:%M:%S) $*"; }

cd "$ROOT"
if [ "$BUILD" = 1 ]; then
    log "building release binaries"
    cargo build --release --locked -p assistd -p assist-loadgen --bins --example signal_bench
fi
BIN=$ROOT/target/release
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/target/soak/$STAMP
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/assist-soak.XXXXXX)
DATA=$WORK/data
PORT=18543
METRICS=18544
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/assistd.toml" <<EOF
[relay]
max_sessions = 20000
max_session_bytes_per_sec = 10000000000
pair_timeout_secs = 60
# The bench's 8 pairs each send ~4 requests per pairing: above the default 10/s per connection.
[signal]
requests_per_second = 1000
request_burst = 1000
EOF
"$BIN/assistd" serve --data-dir "$DATA" --config "$WORK/assistd.toml" \
    --listen 127.0.0.1:$PORT --quic-listen 127.0.0.1:$PORT \
    --metrics-listen 127.0.0.1:$METRICS --log warn >"$OUT/assistd.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$METRICS/readyz" >/dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || { echo "assistd exited; see $OUT/assistd.log" >&2; exit 1; }
    sleep 0.1
done

metric() { # the value of an unlabelled metric, or of the sum of a labelled family
    curl -sf "http://127.0.0.1:$METRICS/metrics" | awk -v m="$1" '
        $1 == m || index($1, m "{") == 1 { s += $2; found = 1 } END { if (found) printf "%d", s; else print "" }'
}
sample() { # phase minute
    local rss fds tasks conns legs started
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER/status")
    # RSS = anonymous (the process's own heap and stacks) + file-backed (pages of the memory-mapped
    # SQLite database, reclaimable page cache that grows and shrinks as SQLite remaps the growing file).
    anon=$(awk '/^RssAnon/ {print $2}' "/proc/$SERVER/status")
    file=$(awk '/^RssFile/ {print $2}' "/proc/$SERVER/status")
    fds=$(find "/proc/$SERVER/fd" -mindepth 1 -maxdepth 1 | wc -l)
    tasks=$(metric assist_runtime_alive_tasks)
    conns=$(metric assist_signal_connections)
    legs=$(metric assist_relay_legs_active)
    started=$(metric assist_signal_sessions_started_total)
    echo "$1,$2,$(date -u +%s),$rss,$fds,$tasks,$conns,$legs,$started,$anon,$file" >>"$OUT/samples.csv"
}
echo "phase,minute,unix,rss_kib,fds,tasks,signal_connections,relay_legs,sessions_started,rss_anon_kib,rss_file_kib" >"$OUT/samples.csv"
sample before 0

# Admin token from the data dir's dev issuer (the signalling bench sets up tenant `bench`).
ADMIN=$("$BIN/assistd" token --data-dir "$DATA" --tenant bench --user admin@bench.example \
    --wids 62e90394-69f5-4237-9190-012177145e10 \
    --ttl 24h)
CA=$DATA/tls/cert.pem
BASE=https://localhost:$PORT
api() { curl -sS --cacert "$CA" --resolve "localhost:$PORT:127.0.0.1" -H "Authorization: Bearer $ADMIN" \
    -H 'Content-Type: application/json' -o /dev/null -w '%{http_code}\n' "$@"; }

log "load for $MINUTES min: $RATE pairings/s, relay rounds of $PAIRS pairs, admin writes every 2 s"
"$BIN/examples/signal_bench" --data-dir "$DATA" --addr 127.0.0.1:$PORT --concurrency 8 \
    --rate "$RATE" --duration $((MINUTES * 60)) --server-pid "$SERVER" >"$OUT/signal.json" 2>"$OUT/signal.log" &
BENCH=$!
PIDS+=("$BENCH")
sleep 5 # the bench creates the tenant, its users and the role assignment first

(
    i=0
    end=$(( $(date +%s) + MINUTES * 60 ))
    while [ "$(date +%s)" -lt "$end" ]; do
        i=$((i + 1))
        chat=$([ $((i % 2)) = 0 ] && echo true || echo false)
        api -X PATCH "$BASE/beta/deviceManagement/remoteAssistanceSettings" \
            -d "{\"remoteAssistanceState\":\"enabled\",\"allowSessionsToUnenrolledDevices\":true,\"blockChat\":$chat}"
        id=$(curl -sS --cacert "$CA" --resolve "localhost:$PORT:127.0.0.1" -H "Authorization: Bearer $ADMIN" \
            -H 'Content-Type: application/json' -X POST "$BASE/beta/deviceManagement/roleAssignments" \
            -d "{\"displayName\":\"soak $i\",\"members\":[],\"scopeType\":\"allLicensedUsers\",\"roleDefinition@odata.bind\":\"builtin-help-desk-operator\"}" \
            | python3 -c 'import json,sys; print(json.load(sys.stdin).get("id",""))' 2>/dev/null || true)
        [ -n "$id" ] && api -X DELETE "$BASE/beta/deviceManagement/roleAssignments/$id"
        api -X POST "$BASE/beta/deviceManagement/reports/getRemoteAssistanceSessionsReport" \
            -d '{"top":50,"orderBy":["startDateTime desc"]}'
        sleep 2
    done
) >"$OUT/admin.codes" 2>"$OUT/admin.log" &
PIDS+=("$!")

for m in $(seq 1 "$MINUTES"); do
    transport=$([ $((m % 2)) = 0 ] && echo quic || echo wss)
    "$BIN/assist-loadgen" relay --data-dir "$DATA" --addr 127.0.0.1:$PORT --quic-addr 127.0.0.1:$PORT \
        --ca "$CA" --transport "$transport" --pairs "$PAIRS" --frame-bytes 4096 --fps 15 --input-hz 50 \
        --warmup 2s --duration 50s --json >"$OUT/relay-$m.json" 2>"$OUT/relay-$m.log" &
    GEN=$!
    sleep 30
    kill -0 "$SERVER" 2>/dev/null || { echo "assistd died; see $OUT/assistd.log" >&2; exit 1; }
    sample load "$m"
    wait "$GEN" || echo "relay round $m failed: $(tail -n 3 "$OUT/relay-$m.log")" >&2
    # Keep each minute a minute: the round took ~55 s.
    sleep 3
done
wait "$BENCH" || echo "signal bench failed: $(tail -n 5 "$OUT/signal.log")" >&2
log "load stopped; idle sample in 20 s"
sleep 20
sample after "$MINUTES"

python3 "$ROOT/benches/soak-summary.py" "$OUT" "$MINUTES" "$RATE" "$PAIRS"
log "samples in $OUT/samples.csv"
