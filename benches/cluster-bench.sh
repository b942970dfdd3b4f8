#!/usr/bin/env bash
# Cluster mode's signalling benchmark (issue 13): code → active pairings against one embedded
# assistd (SQLite, live state in process) and against 3 cluster nodes (one PostgreSQL, one Redis),
# same-node (helper and sharer on node 1) and cross-node (helper on node 1, sharer on node 2),
# at each concurrency. Per run: pairings/s, code → active p50/p99, pairings per CPU-second of every
# server process (each assistd, Redis, PostgreSQL with its backends), and Redis commands per
# pairing (INFO commandstats before/after). See docs/benchmarks.md, "Cluster mode".
#
#   benches/cluster-bench.sh                      # 3 runs of each, 2000 pairings, concurrency 8 and 32
#   benches/cluster-bench.sh --pairs 200 --runs 1 # smoke
#
# Options: --pairs N, --runs N, --concurrency 8,32, --only embedded,same,cross, --no-build,
#   --no-wait (do not wait for an idle machine: smoke runs only), --warmup N (unmeasured pairings
#   per pair first, default 5: cold caches and pool connections stay out of the latencies).
# Binaries: ASSISTD (default target/release/assistd) and SIGNAL_BENCH (default
# target/release/examples/signal_bench); setting either skips the build, e.g. a debug smoke:
#   ASSISTD=target/debug/assistd SIGNAL_BENCH=target/debug/examples/signal_bench benches/cluster-bench.sh --pairs 200 --runs 1
# BENCH_LOG sets the nodes' log filter (default warn), e.g. BENCH_LOG=warn,assistd::signal=debug.
# PG_STATS=1 loads pg_stat_statements and writes each cluster run's statements to <run>-pgstat.txt.
# Servers (every assistd, Redis, PostgreSQL) are pinned to core 0, the generator to core 1, at
# nice -15 as root; each run waits for an idle machine. Loopback only, free ports.
# Results: target/bench-results/cluster-<UTC stamp>/ (one JSON per run, summary.json, summary.md, logs).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PAIRS=2000
RUNS=3
CONCS=8,32
ONLY=embedded,same,cross
BUILD=1
WAIT=1
WARMUP=5
[ -n "${ASSISTD:-}${SIGNAL_BENCH:-}" ] && BUILD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --pairs) PAIRS=$2; shift ;;
        --runs) RUNS=$2; shift ;;
        --concurrency) CONCS=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --no-build) BUILD=0 ;;
        --no-wait) WAIT=0 ;;
        --warmup) WARMUP=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
ASSISTD=$(realpath "${ASSISTD:-$ROOT/target/release/assistd}")
SIGNAL_BENCH=$(realpath "${SIGNAL_BENCH:-$ROOT/target/release/examples/signal_bench}")

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
    echo "needs at least 2 cores (servers on core 0, generator on core 1)" >&2
    exit 2
fi
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
for tool in redis-server redis-cli python3 curl taskset; do
    if ! command -v "$tool" >/dev/null 2>&1 || [ -z "$(pg_bin)" ]; then
        log "installing redis-server, postgresql, python3, curl"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools postgresql python3 curl util-linux >/dev/null
        break
    fi
done
PGBIN=$(pg_bin)

cd "$ROOT"
if [ "$BUILD" = 1 ]; then
    log "building release binaries"
    cargo build -j1 --release -p assistd --bin assistd --example signal_bench
fi
for b in "$ASSISTD" "$SIGNAL_BENCH"; do [ -x "$b" ] || { echo "missing $b" >&2; exit 2; }; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/target/bench-results/cluster-$STAMP
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/assist-cluster-bench.XXXXXX)
chmod 711 "$WORK"   # PostgreSQL runs as nobody under it when we are root
KEYS=$WORK/keys
NODE_PIDS=()
REDIS_PID=
PG_PID=
NICE=()
AS_PG=()
if [ "$(id -u)" = 0 ]; then NICE=(nice -n -15); AS_PG=(runuser -u nobody --); fi

# A port free for TCP and UDP on 127.0.0.1 (HTTPS and QUIC share the number), never one handed
# out before in this run: the kernel may give the same ephemeral port to two calls in a row
# (a node's HTTPS and metrics ports were once the same number).
free_port() {
    local p
    while :; do
        p=$(pick_port)
        grep -qx "$p" "$OUT/ports" 2>/dev/null && continue
        echo "$p" >>"$OUT/ports"
        echo "$p"
        return
    done
}
pick_port() {
    python3 - <<'EOF'
import socket
for _ in range(100):
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        t.close(); u.close()
EOF
}

stop_pid() { # pid: TERM, up to 15 s, then KILL
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop_nodes() {
    local p
    for p in "${NODE_PIDS[@]}"; do stop_pid "$p"; done
    NODE_PIDS=()
}
cleanup() {
    stop_nodes
    [ -n "$REDIS_PID" ] && stop_pid "$REDIS_PID"
    # The postmaster (runuser's child when root): SIGINT is a fast shutdown.
    if [ -n "$PG_PID" ]; then
        kill -INT "$PG_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$PG_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Starts one assistd: start_node NAME DATA_DIR PORT METRICS_PORT [VAR=value ...]; appends its pid.
start_node() {
    local name=$1 data=$2 port=$3 mport=$4; shift 4
    env ASSIST_SHUTDOWN_GRACE_SECS=1 \
        ASSIST_KEYS_RELAY_TICKET_FILE="$KEYS/relay-ticket-key.pem" \
        ASSIST_KEYS_SIGNAL_CODE_FILE="$KEYS/signal-code-key" \
        ASSIST_KEYS_DEV_ISSUER_FILE="$KEYS/dev-issuer-key.pem" \
        ASSIST_TLS_CERT_FILE="$KEYS/tls/cert.pem" ASSIST_TLS_KEY_FILE="$KEYS/tls/key.pem" \
        "$@" "${NICE[@]}" taskset -c 0 "$ASSISTD" serve --data-dir "$data" \
        --config "$ROOT/benches/signal-bench.toml" --listen "127.0.0.1:$port" \
        --quic-listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$mport" --log "${BENCH_LOG:-warn}" \
        >>"$OUT/$name.log" 2>&1 &
    local pid=$!
    NODE_PIDS+=("$pid")
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$mport/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || { echo "$name exited; see $OUT/$name.log" >&2; tail -5 "$OUT/$name.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "$name not ready after 30 s; see $OUT/$name.log" >&2
    exit 1
}

# The keys every node shares (relay ticket, signal code, dev issuer) and one TLS certificate for
# localhost: made by a first embedded start, then given to every node as files.
log "making the shared keys"
mkdir -p "$KEYS"
P=$(free_port); M=$(free_port)
ASSIST_SHUTDOWN_GRACE_SECS=1 "$ASSISTD" serve --data-dir "$KEYS" --listen "127.0.0.1:$P" \
    --quic-listen "127.0.0.1:$P" --metrics-listen "127.0.0.1:$M" --log warn >>"$OUT/keys.log" 2>&1 &
NODE_PIDS+=("$!")
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$M/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
stop_nodes
for f in relay-ticket-key.pem signal-code-key dev-issuer-key.pem tls/cert.pem tls/key.pem; do
    [ -f "$KEYS/$f" ] || { echo "the first start made no $KEYS/$f; see $OUT/keys.log" >&2; exit 1; }
done

# Redis: no persistence, as the tests run it.
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
"${NICE[@]}" taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK/redis" --daemonize no --protected-mode yes --loglevel warning >"$OUT/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$REDIS_PORT" ping >/dev/null || { echo "redis-server did not start; see $OUT/redis.log" >&2; exit 1; }

# PostgreSQL in a temp dir (as nobody when root: initdb refuses root), settings as
# crates/assist-testkit's (fsync and synchronous_commit off: CPU, not the disk, is measured).
PG_PORT=$(free_port)
PGBASE=$WORK/pg
PG_STATS_OPTS=()
[ "${PG_STATS:-0}" = 1 ] && PG_STATS_OPTS=(-c shared_preload_libraries=pg_stat_statements
    -c pg_stat_statements.track=all -c pg_stat_statements.track_planning=on)
PGPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
mkdir -p "$PGBASE"
echo "$PGPASS" >"$PGBASE/pwfile"
if [ "$(id -u)" = 0 ]; then chown -R nobody "$PGBASE"; fi
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGBASE/data" -U assist -E UTF8 --no-sync --auth-local=trust \
    --auth-host=scram-sha-256 --pwfile="$PGBASE/pwfile" >"$OUT/initdb.log" 2>&1 \
    || { echo "initdb failed; see $OUT/initdb.log" >&2; exit 1; }
"${NICE[@]}" taskset -c 0 "${AS_PG[@]}" "$PGBIN/postgres" -D "$PGBASE/data" -p "$PG_PORT" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories="$PGBASE" -c fsync=off \
    -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB \
    "${PG_STATS_OPTS[@]}" >"$OUT/postgres.log" 2>&1 &
for _ in $(seq 300); do "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.1; done
"$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || { echo "postgres did not start; see $OUT/postgres.log" >&2; exit 1; }
PG_PID=$(head -1 "$PGBASE/data/postmaster.pid")
export PGPASSWORD=$PGPASS
# PostgreSQL's processes now, comma-separated: $PG_PID and everything under it (as root,
# runuser → the postmaster → its backends and background workers).
pg_tree() {
    local all=$PG_PID frontier=$PG_PID next
    while [ -n "$frontier" ]; do
        next=$(awk -v pp=",$frontier," 'index(pp, "," $4 ",") {printf "%s,", $1}' /proc/[0-9]*/stat 2>/dev/null)
        next=${next%,}
        [ -n "$next" ] && all="$all,$next"
        frontier=$next
    done
    echo "$all"
}
psql_q() { "$PGBIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U assist -d postgres -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }

# Other work on the machine skews CPU-normalised figures: wait until it is idle (busy under a
# fifth of a core, up to 60 s); each run's other_cpu_pct is in its JSON and the summary.
busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
wait_quiet() {
    local i a b
    [ "$WAIT" = 1 ] || return 0
    for i in $(seq 60); do
        a=$(busy_ticks); sleep 1; b=$(busy_ticks)
        if [ $((b - a)) -lt 20 ]; then return 0; fi
        [ "$i" = 1 ] && log "waiting for the machine to be idle (busy: $((b - a))% of a core)"
    done
    log "machine still busy after 60 s; running anyway (see other_cpu_pct)"
}

# Runs the generator and measures around it: CPU of every server process (PostgreSQL: the
# postmaster, every backend alive at either edge, and the backends reaped meanwhile), the
# generator's own CPU, the rest of the machine's, and Redis commands (INFO commandstats).
MEASURE=$(cat <<'EOF'
import json, os, re, resource, subprocess, sys, time, urllib.request
out, config, run, redis_port, pg_pid, pids = sys.argv[1:7]
cmd = sys.argv[7:]
pids = [int(p) for p in pids.split(",") if p]
pg_pid = int(pg_pid) if pg_pid else None
HZ = os.sysconf("SC_CLK_TCK")
def stat(pid):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return {"ppid": int(f[1]), "self": (int(f[11]) + int(f[12])) / HZ, "reaped": (int(f[13]) + int(f[14])) / HZ}
def pg_cpu():
    # Every process under pg_pid (as root: runuser, the postmaster under it, the backends and
    # background workers under that), each with what it has reaped: a backend that exits in
    # the window moves its whole CPU into the postmaster's reaped time, so the sum over the
    # tree stays consistent.
    if pg_pid is None:
        return 0.0
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            c = stat(int(d))
            if c:
                procs[int(d)] = c
    tree, todo = set(), [pg_pid]
    while todo:
        p = todo.pop()
        if p in tree or p not in procs:
            continue
        tree.add(p)
        todo.extend(q for q, c in procs.items() if c["ppid"] == p)
    return sum(procs[p]["self"] + procs[p]["reaped"] for p in tree)
def cpus():
    return {p: (stat(p) or {"self": 0.0})["self"] for p in pids}
def busy():
    f = open("/proc/stat").readline().split()
    return (int(f[1]) + int(f[2]) + int(f[3]) + int(f[6]) + int(f[7])) / HZ
def redis_calls():
    if not redis_port:
        return {}
    text = subprocess.run(["redis-cli", "-p", redis_port, "INFO", "commandstats"], capture_output=True, text=True).stdout
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"cmdstat_(\w+):calls=(\d+)", text)}
r0, c0, g0, b0, t0 = redis_calls(), cpus(), pg_cpu(), busy(), time.time()
gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out + ".bench.json", "w") as so, open(out + ".bench.log", "w") as se:
    rc = subprocess.run(cmd, stdout=so, stderr=se).returncode
# The pairings are done, but their session records and audit events may still be on their way
# to the store: the window closes once every node's records writer is idle (queue empty and no
# batch committed for 0.2 s; at most 10 s), so the writes a run caused count in its CPU.
def writer_state():
    depth, batches = 0.0, 0.0
    for port in filter(None, os.environ.get("METRICS_PORTS", "").split(",")):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith("assist_store_write_queue_depth"):
                depth += float(line.split()[-1])
            elif line.startswith("assist_store_write_batches_total"):
                batches += float(line.split()[-1])
    return depth, batches
drain_start, last, steady = time.time(), None, 0
while time.time() - drain_start < 10:
    st = writer_state()
    if st is None:
        break
    steady = steady + 1 if (st[0] == 0 and st == last) else 0
    if steady >= 2:
        break
    last = st
    time.sleep(0.1)
drain_s = time.time() - drain_start
gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
c1, g1, b1, t1, r1 = cpus(), pg_cpu(), busy(), time.time(), redis_calls()
try:
    res = json.load(open(out + ".bench.json"))
except ValueError:
    res = {}
res.update({"config": config, "run": int(run), "exitCode": rc})
if rc != 0 or not res.get("pairings"):
    json.dump(res, open(out, "w"), indent=2)
    sys.exit(f"signal_bench failed (exit {rc}); see {out}.bench.log")
gen = (gen1.ru_utime + gen1.ru_stime) - (gen0.ru_utime + gen0.ru_stime)
by = {"assistd": 0.0, "redis": 0.0, "postgres": g1 - g0}
for p in pids:
    by["redis" if str(p) == os.environ.get("REDIS_PID") else "assistd"] += c1[p] - c0[p]
total = sum(by.values())
wall = t1 - t0
res["cpuSecondsByProcess"] = {k: round(v, 3) for k, v in by.items()}
res["recordsDrainSeconds"] = round(drain_s, 3)
res["serverCpuSecondsWhole"] = round(total, 3)
# The whole-process window also holds the warm-up pairings (not in `pairings`).
done_pairings = res["pairings"] + res.get("warmupPerPair", 0) * res["concurrency"]
res["serverCpuMsPerPairing"] = round(1000 * total / done_pairings, 3)
res["generatorCpuPct"] = round(100 * gen / wall, 1)
res["other_cpu_pct"] = round(max(0.0, 100 * ((b1 - b0) - total - gen) / wall), 1)
if redis_port:
    delta = {k: r1.get(k, 0) - r0.get(k, 0) for k in r1}
    delta.pop("info", None)
    delta = {k: v for k, v in delta.items() if v > 0}
    res["redisCommands"] = sum(delta.values())
    res["redisCommandsPerPairing"] = round(sum(delta.values()) / res["pairings"], 2)
    res["redisCommandsByName"] = dict(sorted(delta.items(), key=lambda kv: -kv[1]))
json.dump(res, open(out, "w"), indent=2)
EOF
)

RUN_N=0
run_one() { # config concurrency run
    local config=$1 conc=$2 r=$3 name=$1-c$2-$3 p1 m1 p2 m2 p3 m3 url pids sharer mports
    RUN_N=$((RUN_N + 1))
    wait_quiet
    log "run $name"
    local dir=$WORK/run-$RUN_N
    mkdir -p "$dir"
    p1=$(free_port); m1=$(free_port)
    if [ "$config" = embedded ]; then
        start_node "$name-node1" "$dir/node1" "$p1" "$m1"
        pids=${NODE_PIDS[0]}
        mports=$m1
        sharer=$p1
        REDIS_ARG=
        PG_ARG=
    else
        psql_q "CREATE DATABASE run_$RUN_N"
        if [ "${PG_STATS:-0}" = 1 ]; then
            "$PGBIN/psql" -q -h 127.0.0.1 -p "$PG_PORT" -U assist -d "run_$RUN_N" -c "CREATE EXTENSION pg_stat_statements" >/dev/null
            psql_q "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()"
        fi
        redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
        url="postgres://assist:$PGPASS@127.0.0.1:$PG_PORT/run_$RUN_N"
        local cl=(ASSIST_STORE_URL="$url" ASSIST_CLUSTER_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0")
        # Node 1 first (it runs the migrations), then the others.
        start_node "$name-node1" "$dir/node1" "$p1" "$m1" "${cl[@]}" ASSIST_CLUSTER_NODE_ID=node1
        p2=$(free_port); m2=$(free_port); p3=$(free_port); m3=$(free_port)
        start_node "$name-node2" "$dir/node2" "$p2" "$m2" "${cl[@]}" ASSIST_CLUSTER_NODE_ID=node2
        start_node "$name-node3" "$dir/node3" "$p3" "$m3" "${cl[@]}" ASSIST_CLUSTER_NODE_ID=node3
        mports=$m1,$m2,$m3
        # Let every node see the others in the registry (heartbeats every 2 s).
        sleep 5
        pids=$(IFS=,; echo "${NODE_PIDS[*]},$REDIS_PID")
        # PostgreSQL's processes for signal_bench's own window: the postmaster and its backends now.
        pids="$pids,$(pg_tree)"
        sharer=$p1
        [ "$config" = cross ] && sharer=$p2
        REDIS_ARG=$REDIS_PORT
        PG_ARG=$PG_PID
    fi
    METRICS_PORTS=$mports REDIS_PID=$REDIS_PID python3 -c "$MEASURE" "$OUT/$name.json" "$config" "$r" "$REDIS_ARG" "$PG_ARG" \
        "$(IFS=,; echo "${NODE_PIDS[*]}")${REDIS_ARG:+,$REDIS_PID}" \
        "${NICE[@]}" taskset -c 1 "$SIGNAL_BENCH" --data-dir "$KEYS" --addr "127.0.0.1:$p1" \
        --sharer-addr "127.0.0.1:$sharer" --pairs "$PAIRS" --concurrency "$conc" --server-pid "$pids" \
        --warmup "$WARMUP" \
        || { stop_nodes; echo "run $name failed; see $OUT/$name.json.bench.log and the node logs" >&2; exit 1; }
    stop_nodes
    # PG_STATS=1: each cluster run's statements (pg_stat_statements), slowest first.
    if [ "${PG_STATS:-0}" = 1 ] && [ "$config" != embedded ]; then
        "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U assist -d "run_$RUN_N" -P pager=off -c \
            "SELECT calls, rows, round(total_exec_time::numeric, 1) AS exec_ms,
                    round(total_plan_time::numeric, 1) AS plan_ms, left(regexp_replace(query, '\\s+', ' ', 'g'), 140) AS query
             FROM pg_stat_statements ORDER BY total_exec_time + total_plan_time DESC LIMIT 40" \
            >"$OUT/$name-pgstat.txt" 2>&1 || true
        psql_q "SELECT pg_stat_statements_reset()" || true
    fi
    # The run's database goes with it: PostgreSQL's background work on it (autovacuum of its
    # session rows) would otherwise land in a later run's CPU window.
    [ "$config" = embedded ] || psql_q "DROP DATABASE IF EXISTS run_$RUN_N WITH (FORCE)"
    rm -rf "$dir"
}

IFS=, read -r -a CONC_LIST <<<"$CONCS"
IFS=, read -r -a CONFIGS <<<"$ONLY"
for r in $(seq "$RUNS"); do
    for c in "${CONC_LIST[@]}"; do
        for config in "${CONFIGS[@]}"; do
            run_one "$config" "$c" "$r"
        done
    done
done

python3 - "$OUT" "$PAIRS" <<'EOF'
import json, statistics, sys
from pathlib import Path
out, pairs = Path(sys.argv[1]), sys.argv[2]
runs = [json.loads(p.read_text()) for p in sorted(out.glob("*-c*-*.json")) if not p.name.endswith(".bench.json")]
def med(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None
rows = {}
for r in runs:
    rows.setdefault((r["config"], r["concurrency"]), []).append(r)
summary = []
for (config, conc), rs in sorted(rows.items(), key=lambda kv: (kv[0][1], ["embedded", "same", "cross"].index(kv[0][0]))):
    summary.append({
        "config": config, "concurrency": conc, "runs": len(rs),
        "pairingsPerSecond": med([r["pairingsPerSecond"] for r in rs]),
        "codeToActiveP50Ms": med([r["codeToActiveMs"]["p50"] for r in rs]),
        "codeToActiveP99Ms": med([r["codeToActiveMs"]["p99"] for r in rs]),
        "pairingsPerServerCpuSecond": med([r.get("pairingsPerServerCpuSecond") for r in rs]),
        "serverCpuMsPerPairing": med([r["serverCpuMsPerPairing"] for r in rs]),
        "cpuSecondsByProcess": {k: med([r["cpuSecondsByProcess"][k] for r in rs]) for k in ("assistd", "redis", "postgres")},
        "redisCommandsPerPairing": med([r.get("redisCommandsPerPairing") for r in rs]),
        "generatorCpuPct": med([r["generatorCpuPct"] for r in rs]),
        "otherCpuPct": med([r["other_cpu_pct"] for r in rs]),
    })
by = {(s["config"], s["concurrency"]): s for s in summary}
checks = []
for conc in sorted({s["concurrency"] for s in summary}):
    emb = by.get(("embedded", conc))
    for config in ("same", "cross"):
        s = by.get((config, conc))
        if emb and s and emb["serverCpuMsPerPairing"]:
            s["cpuPerPairingVsEmbedded"] = round(s["serverCpuMsPerPairing"] / emb["serverCpuMsPerPairing"], 2)
x = by.get(("cross", 32))
if x:
    checks.append(f"cross-node code → active p99 at 32 concurrent: {x['codeToActiveP99Ms']} ms (target ≤ 30 ms): "
                  + ("met" if x["codeToActiveP99Ms"] <= 30 else "NOT met"))
for s in summary:
    if "cpuPerPairingVsEmbedded" in s:
        checks.append(f"{s['config']} at {s['concurrency']}: CPU per pairing {s['cpuPerPairingVsEmbedded']}× embedded (target ≤ 2×): "
                      + ("met" if s["cpuPerPairingVsEmbedded"] <= 2 else "NOT met"))
(out / "summary.json").write_text(json.dumps({"pairsPerRun": int(pairs), "rows": summary, "checks": checks}, indent=2) + "\n")
md = [f"# Cluster signalling bench ({out.name})", "",
      f"{pairs} pairings per run; medians over runs. CPU: every server process (each assistd, Redis, "
      "PostgreSQL with its backends), measured around the generator.", "",
      "| config | conc. | runs | pairings/s | p50 ms | p99 ms | pairings/server CPU-s | server CPU ms/pairing | × embedded | assistd / redis / postgres CPU s | Redis cmds/pairing | generator CPU % | other CPU % |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for s in summary:
    c = s["cpuSecondsByProcess"]
    md.append(f"| {s['config']} | {s['concurrency']} | {s['runs']} | {s['pairingsPerSecond']} | {s['codeToActiveP50Ms']} | "
              f"{s['codeToActiveP99Ms']} | {s['pairingsPerServerCpuSecond']} | {s['serverCpuMsPerPairing']} | "
              f"{s.get('cpuPerPairingVsEmbedded', '')} | {c['assistd']} / {c['redis']} / {c['postgres']} | "
              f"{s['redisCommandsPerPairing'] if s['redisCommandsPerPairing'] is not None else ''} | {s['generatorCpuPct']} | {s['otherCpuPct']} |")
md += [""] + [f"- {c}" for c in checks]
(out / "summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
log "results in $OUT"
