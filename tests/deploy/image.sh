#!/usr/bin/env bash
# Builds deploy/Dockerfile's runtime stage with podman and checks that the container starts,
# reports healthy and answers /healthz, then drains and exits 0 on `podman stop`.
#
# No container registry is reachable in CI, so the stage is built the way it can be here:
# - the base image is a minimal Debian bookworm made with debootstrap from the mirror apt
#   already uses (cached as target/deploy/base-bookworm.tar), imported as
#   localhost/assist-base:bookworm and passed as RUNTIME_IMAGE (the Dockerfile's default is
#   debian:bookworm-slim);
# - the target is `prebuilt`: the runtime stage with an assistd binary from the build context
#   (ASSISTD_BIN, default target/debug/assistd, stripped into target/deploy/context) instead
#   of the `build` stage's cargo build --release.
# Everything else (user, volume, environment, ports, HEALTHCHECK, entrypoint) is the image users
# get. Needs root (rootful podman); installs podman, runc and debootstrap with apt-get if missing.
# Usage: bash tests/deploy/image.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
cache=target/deploy
bin=${ASSISTD_BIN:-target/debug/assistd}
image=localhost/assistd:deploy-test
base=localhost/assist-base:bookworm
name=assist-deploy-test-$$

say() { echo "  [image] $*"; }
fail() { echo "FAIL image: $*" >&2; exit 1; }

[ -x "$bin" ] || fail "no $bin (cargo build -p assistd first, or set ASSISTD_BIN)"
[ "$(id -u)" = 0 ] || fail "needs root for rootful podman (run with sudo)"

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v runc >/dev/null || missing+=(runc)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# What this sandbox needs, found the hard way (docs/deploy.md, "CI"):
# - crun refuses a hybrid cgroup v1/v2 hierarchy ("cgroups in hybrid mode not supported"): use
#   runc unless the machine has a pure cgroup v2 tree;
# - podman as root asks for RLIMIT_NOFILE 1048576 and RLIMIT_NPROC 4194304, above the
#   sandbox's hard limits (no CAP_SYS_RESOURCE): pass limits that fit.
runtime=()
[ -f /sys/fs/cgroup/cgroup.controllers ] || runtime=(--runtime runc)
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max)
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; } && nproc=$pid_max
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")

# The Debian mirror apt uses (the first bookworm suite that is not -security).
mirror=$(python3 - <<'EOF'
import glob, re
for f in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(f).read().split("\n\n"):
        fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
        if "bookworm" in fields.get("Suites", "").split() and "deb" in fields.get("Types", ""):
            print(fields["URIs"].split()[0]); raise SystemExit
for f in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        for line in open(f):
            m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if m:
                print(m.group(1)); raise SystemExit
    except FileNotFoundError:
        pass
EOF
)
[ -n "$mirror" ] || fail "no Debian bookworm mirror in /etc/apt/sources.list*"

mkdir -p "$cache"
if ! podman image exists "$base"; then
  if [ ! -s "$cache/base-bookworm.tar" ]; then
    say "debootstrap --variant=minbase bookworm from $mirror (once; cached in $cache)"
    rm -rf "$cache/rootfs"
    debootstrap --variant=minbase bookworm "$cache/rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
      || { tail -20 "$cache/debootstrap.log"; fail "debootstrap failed"; }
    rm -rf "$cache/rootfs/var/cache/apt/archives/"*.deb "$cache/rootfs/var/lib/apt/lists/"*
    tar -C "$cache/rootfs" -cf "$cache/base-bookworm.tar.part" . && mv "$cache/base-bookworm.tar.part" "$cache/base-bookworm.tar"
    rm -rf "$cache/rootfs"
  fi
  say "importing $base"
  podman import -q "$cache/base-bookworm.tar" "$base" >/dev/null
fi

ctx="$cache/context"
rm -rf "$ctx" && mkdir -p "$ctx"
cp "$bin" "$ctx/assistd"
strip "$ctx/assistd"
say "binary $(du -h "$ctx/assistd" | cut -f1) stripped (from $bin)"

say "podman build --target prebuilt (RUNTIME_IMAGE=$base)"
podman build -q "${runtime[@]}" "${limits[@]}" --network host --format docker --target prebuilt \
  --build-arg "RUNTIME_IMAGE=$base" -f deploy/Dockerfile -t "$image" "$ctx" >/dev/null
say "image $(podman image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}')"

# Free loopback ports for HTTPS/QUIC and metrics.
read -r port mport < <(python3 -c '
import socket
def free():
    while True:
        t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", p)); u.close(); t.close(); return p
        except OSError:
            t.close(); u.close()
a = free(); b = free()
while b == a: b = free()
print(a, b)')

cleanup() { podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; }
# Any earlier run's container that a killed test left behind.
podman ps -a --format '{{.Names}}' | grep '^assist-deploy-test-' | xargs -r podman rm -f -t 0 >/dev/null 2>&1 || true
trap cleanup EXIT
# As Kubernetes runs it (deploy/kubernetes): read-only root filesystem, no tmpfs, every
# capability dropped; the configuration from a file (compose's) plus ASSIST_* variables.
podman run -d --name "$name" "${runtime[@]}" "${limits[@]}" --network host \
  --health-interval disable --read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges \
  -v "$PWD/deploy/compose/assistd.toml:/etc/assist/assistd.toml:ro" \
  -e ASSIST_CONFIG=/etc/assist/assistd.toml \
  -e "ASSIST_LISTEN=127.0.0.1:$port" -e "ASSIST_QUIC_LISTEN=127.0.0.1:$port" \
  -e "ASSIST_METRICS_LISTEN=127.0.0.1:$mport" \
  "$image" >/dev/null 2>"$cache/podman-run.log" \
  || { cat "$cache/podman-run.log"; fail "podman run failed"; }

healthy=""
for _ in $(seq 1 60); do
  state=$(podman inspect --format '{{.State.Status}}' "$name" 2>/dev/null || echo gone)
  [ "$state" = running ] || { podman logs "$name" 2>&1 | tail -20; fail "container is $state"; }
  # podman runs HEALTHCHECK from systemd timers, which this machine may not have: run it here.
  if podman healthcheck run "$name" >/dev/null 2>&1; then healthy=1; break; fi
  sleep 1
done
[ -n "$healthy" ] || { podman logs "$name" 2>&1 | tail -20; fail "HEALTHCHECK never passed"; }
say "HEALTHCHECK passed ($(podman inspect --format '{{.State.Health.Status}}' "$name"))"

body=$(curl -fsS --max-time 5 "http://127.0.0.1:$mport/healthz") || fail "/healthz did not answer 200"
[ "$body" = ok ] || fail "/healthz answered '$body'"
curl -fsS --max-time 5 "http://127.0.0.1:$mport/readyz" >/dev/null || fail "/readyz did not answer 200"
curl -fsSk --max-time 5 "https://localhost:$port/v1/auth/config" >/dev/null \
  || fail "HTTPS listener did not answer /v1/auth/config"
say "/healthz: $body; /readyz and HTTPS answer"

uid=$(podman top "$name" huser | tail -n +2 | head -1 | tr -d ' ')
[ "$uid" = 10001 ] || [ "$uid" = assist ] || fail "runs as '$uid', not the assist user (10001)"
podman exec "$name" test -O /var/lib/assist/assist.db || fail "the database is not owned by assist"

# (podman logs that it cannot reach systemd for the HEALTHCHECK timer: harmless, kept in the log)
podman stop -t 20 "$name" >/dev/null 2>>"$cache/podman-run.log"
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { podman logs "$name" 2>&1 | tail -20; fail "exit code $code after SIGTERM (expected a drain and 0)"; }
podman logs "$name" 2>&1 | grep -q "stopped" || fail "no 'stopped' line after SIGTERM"
say "SIGTERM: drained and exited 0 (user $uid)"

# The compose cluster profile's `keys` service: deploy/compose/make-keys.sh in this image (its
# openssl comes with ca-certificates), as root, handing the files to the nodes' user.
keys="$cache/keys-test"
rm -rf "$keys" && mkdir -p "$keys"
podman run --rm "${runtime[@]}" "${limits[@]}" --network none --user 0:0 \
  -e ASSIST_KEYS_OWNER=10001:10001 -v "$PWD/$keys:/keys" \
  -v "$PWD/deploy/compose/make-keys.sh:/usr/local/share/assist/make-keys.sh:ro" \
  --entrypoint /bin/sh "$image" /usr/local/share/assist/make-keys.sh /keys localhost \
  >"$cache/make-keys.log" 2>&1 || { cat "$cache/make-keys.log"; fail "make-keys.sh failed in the image"; }
for f in relay-ticket-key.pem signal-code-key dev-issuer-key.pem tls-cert.pem tls-key.pem; do
  [ -s "$keys/$f" ] && [ "$(stat -c %u:%g "$keys/$f")" = 10001:10001 ] \
    || fail "make-keys.sh in the image: $f missing or not owned by 10001:10001"
done
rm -rf "$keys"
say "make-keys.sh (compose's keys service) runs in the image"
echo "ok   image: built, healthy, /healthz answered, stopped cleanly, makes the cluster keys ($((SECONDS - start)) s)"
