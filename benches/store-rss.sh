#!/usr/bin/env bash
# The records writer and RSS (issue 15): one assistd under the signalling bench alone (8 pairs,
# RATE pairings/s, 0 = as fast as they go) for SECONDS, sampling every 10 s its RSS (anonymous and
# file-backed), the records writer queue depth, sessions started and the database size (with WAL).
# REPORT_EVERY (optional, seconds): also read the sessions report as the soak does (POST
# getRemoteAssistanceSessionsReport, top 50, startDateTime desc) every REPORT_EVERY s, one call at a
# time, logging each call's status and seconds to report.log.
# Usage: benches/store-rss.sh LABEL ASSISTD_BIN SECONDS RATE [REPORT_EVERY]   (needs
#   target/debug/examples/signal_bench: cargo build -p assistd --example signal_bench).
# Output: target/store-rss/LABEL/samples.csv. Loopback only.
set -euo pipefail
LABEL=$1 BIN=$2 SECS=$3 RATE=$4 REPORT_EVERY=${5:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/store-rss/$LABEL; rm -rf "$OUT"; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/assist-store-rss.XXXXXX); DATA=$WORK/data
PORT=$((19000 + RANDOM % 500)); METRICS=$((PORT + 600))
cat >"$WORK/assistd.toml" <<EOT
[signal]
requests_per_second = 1000
request_burst = 1000
EOT
"$BIN" serve --data-dir "$DATA" --config "$WORK/assistd.toml" --listen 127.0.0.1:$PORT --quic-listen 127.0.0.1:$PORT \
  --metrics-listen 127.0.0.1:$METRICS --log warn >"$OUT/assistd.log" 2>&1 &
SERVER=$!
BENCH= READER=
trap 'kill $SERVER $BENCH $READER 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$METRICS/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
metric() { curl -sf "http://127.0.0.1:$METRICS/metrics" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 { s += $2; f=1 } END { if (f) printf "%d", s; else print "" }'; }
$ROOT/target/debug/examples/signal_bench --data-dir "$DATA" --addr 127.0.0.1:$PORT --concurrency 8 --rate "$RATE" --duration "$SECS" --server-pid "$SERVER" >"$OUT/signal.json" 2>"$OUT/signal.log" &
BENCH=$!
if [ "$REPORT_EVERY" != 0 ]; then
  sleep 5 # the bench creates the tenant `bench` first
  ADMIN=$("$BIN" token --data-dir "$DATA" --tenant bench --user admin@bench.example \
    --wids 62e90394-69f5-4237-9190-012177145e10 --ttl 24h)
  ( while kill -0 $BENCH 2>/dev/null; do
      curl -sS --cacert "$DATA/tls/cert.pem" --resolve "localhost:$PORT:127.0.0.1" -H "Authorization: Bearer $ADMIN" \
        -H 'Content-Type: application/json' -o /dev/null -w '%{http_code} %{time_total}\n' \
        -X POST "https://localhost:$PORT/beta/deviceManagement/reports/getRemoteAssistanceSessionsReport" \
        -d '{"top":50,"orderBy":["startDateTime desc"]}' || true
      sleep "$REPORT_EVERY"
    done ) >"$OUT/report.log" 2>&1 &
  READER=$!
fi
echo "t,rss_kib,anon_kib,file_kib,queue_depth,started,db_kib" >"$OUT/samples.csv"
t0=$(date +%s)
while kill -0 $BENCH 2>/dev/null; do
  sleep 10
  rss=$(awk '/^VmRSS/ {print $2}' /proc/$SERVER/status); anon=$(awk '/^RssAnon/ {print $2}' /proc/$SERVER/status); file=$(awk '/^RssFile/ {print $2}' /proc/$SERVER/status)
  db=$(du -kc "$DATA"/assist.db* | tail -1 | cut -f1)
  echo "$(( $(date +%s) - t0 )),$rss,$anon,$file,$(metric assist_store_write_queue_depth),$(metric assist_signal_sessions_started_total),$db" >>"$OUT/samples.csv"
done
sleep 20
rss=$(awk '/^VmRSS/ {print $2}' /proc/$SERVER/status); anon=$(awk '/^RssAnon/ {print $2}' /proc/$SERVER/status)
echo "idle,$rss,$anon,,$(metric assist_store_write_queue_depth),$(metric assist_signal_sessions_started_total)," >>"$OUT/samples.csv"
curl -sf "http://127.0.0.1:$METRICS/metrics" | grep -E "^assist_store_write_batch" > "$OUT/batches.txt" || true
cat "$OUT/samples.csv"
