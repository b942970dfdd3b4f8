#!/usr/bin/env bash
# End-to-end test of the browser helper page (crates/assistd/web/) in headless Chromium:
#   1. node unit tests of the page's pure functions (unit.test.mjs);
#   2. a real `assistd serve` on free loopback ports with the demo tenant (scripts/demo-tenant.sh);
#   3. sign-in (signin.test.mjs): auth.mjs and the CLI against the dev provider and against panva's
#      oidc-provider (tests/oidc/), each with its own assistd;
#   4. the page against a scripted sharer (fake-sharer.mjs), then against the real sharer agent
#      (`assist sharer --display`) sharing an Xvfb display that runs `assist-xtest-app`.
# Needs node 20+, tests/e2e/node_modules (npm ci), /usr/bin/chromium and Xvfb: see
# scripts/install-test-deps.sh. Missing parts (browser, Xvfb, the agent) skip those tests unless
# ASSIST_REQUIRE_XVFB=1 (set by .ci/run), which makes them an error. Screenshots: target/e2e/.
# Usage: bash tests/e2e/run.sh        (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
e2e="$root/tests/e2e"
out="$root/target/e2e"
chromium="${CHROMIUM:-/usr/bin/chromium}"
require="${ASSIST_REQUIRE_XVFB:-0}"

skip() {
  if [ "$require" = 1 ]; then
    echo "e2e: $1 (ASSIST_REQUIRE_XVFB=1: failing; run scripts/install-test-deps.sh)" >&2
    exit 1
  fi
  echo "e2e: SKIPPED: $1 (run scripts/install-test-deps.sh)" >&2
  exit 0
}

command -v node >/dev/null || skip "node is not installed"
# node 20 has WebSocket only behind a flag (the scripted sharer uses it).
node -e 'WebSocket' >/dev/null 2>&1 || export NODE_OPTIONS="${NODE_OPTIONS:-} --experimental-websocket"

echo "==> e2e: unit tests of the page's functions"
node --test --test-reporter=spec "$e2e/unit.test.mjs"
node --test --test-reporter=spec "$e2e/view-unit.test.mjs"
node --test --test-reporter=spec "$e2e/share-unit.test.mjs"
node --test --test-reporter=spec "$e2e/auth-unit.test.mjs"
node --test --test-reporter=spec "$e2e/signal-unit.test.mjs"
node --test --test-reporter=spec "$e2e/admin-unit.test.mjs"

[ -x "$chromium" ] || skip "no Chromium at $chromium"
[ -d "$e2e/node_modules/playwright-core" ] || skip "tests/e2e/node_modules is missing (npm ci)"
[ -d "$root/tests/oidc/node_modules/oidc-provider" ] || skip "tests/oidc/node_modules is missing (npm ci)"

started=$(date +%s)
echo "==> e2e: building assistd, the sharer agent and the assist CLI"
cargo build --locked -q -p assistd -p assist-agent -p assist-cli

tmp=$(mktemp -d "${TMPDIR:-/tmp}/assist-e2e.XXXXXX")
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    for f in assistd.log xvfb.log app.out app.log; do
      [ -s "$tmp/$f" ] && { echo "--- $f (last lines)" >&2; tail -n 30 "$tmp/$f" >&2; }
    done
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2
  shift 2
  for _ in $(seq $((secs * 10))); do
    "$@" && return 0
    sleep 0.1
  done
  echo "e2e: timed out after ${secs}s waiting for $what" >&2
  return 1
}

echo "==> e2e: starting assistd"
data="$tmp/data"
"$root/target/debug/assistd" serve --data-dir "$data" --listen 127.0.0.1:0 --quic-listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --log warn >"$tmp/assistd.out" 2>"$tmp/assistd.log" &
pids+=($!)
wait_for 30 "assistd to listen" grep -q 'serving https://' "$tmp/assistd.out"
port=$(grep -o 'serving https://[0-9.]*:[0-9]*' "$tmp/assistd.out" | grep -o '[0-9]*$')
url="https://localhost:$port"
ASSISTD="$root/target/debug/assistd" bash scripts/demo-tenant.sh "$data" "$url" >"$tmp/demo.env"
{
  echo "DEVICE_ID=e2e-kiosk"
  echo "DEVICE_TOKEN=$(target/debug/assistd token --data-dir "$data" --tenant contoso --user sam@contoso.com --device e2e-kiosk)"
} >>"$tmp/demo.env"
{ # the admin console's test: a Global Administrator, and a device of its own for the launch flow
  echo "ADMIN_TOKEN=$(target/debug/assistd token --data-dir "$data" --tenant contoso --user ada@contoso.com --name 'Ada Admin' --wids 62e90394-69f5-4237-9190-012177145e10)"
  echo "ADMIN_DEVICE_ID=admin-e2e-kiosk"
  echo "ADMIN_DEVICE_TOKEN=$(target/debug/assistd token --data-dir "$data" --tenant contoso --user sam@contoso.com --device admin-e2e-kiosk)"
} >>"$tmp/demo.env"
set -a
# shellcheck disable=SC1091
. "$tmp/demo.env"
set +a

display=""
app_log=""
have_agent=0
if [ -x target/debug/assist-xtest-app ] && target/debug/assist sharer --help 2>/dev/null | grep -q -- '--display'; then
  have_agent=1
fi
if ! command -v Xvfb >/dev/null; then
  [ "$require" = 1 ] && { echo "e2e: Xvfb is not installed (ASSIST_REQUIRE_XVFB=1)" >&2; exit 1; }
  echo "e2e: no Xvfb: the test with the real sharer agent is skipped" >&2
elif [ "$have_agent" = 0 ]; then
  [ "$require" = 1 ] && { echo "e2e: target/debug/assist-xtest-app or \`assist sharer --display\` is missing (ASSIST_REQUIRE_XVFB=1)" >&2; exit 1; }
  echo "e2e: target/debug/assist-xtest-app or \`assist sharer --display\` is missing: the test with the real sharer agent is skipped" >&2
else
  echo "==> e2e: starting Xvfb and the X test app"
  Xvfb -displayfd 3 -screen 0 640x480x24 -nolisten tcp 3>"$tmp/display" 2>"$tmp/xvfb.log" &
  pids+=($!)
  wait_for 15 "Xvfb to pick a display" test -s "$tmp/display"
  display=":$(tr -dc '0-9' <"$tmp/display")"
  app_log="$tmp/app.log"
  : >"$app_log"
  DISPLAY="$display" target/debug/assist-xtest-app --log "$app_log" >"$tmp/app.out" 2>&1 &
  pids+=($!)
  wait_for 15 "the X test app to be ready" grep -q '^ready' "$tmp/app.out"
fi

echo "==> e2e: browser tests (Chromium $("$chromium" --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1), $url${display:+, display $display})"
rm -rf "$out"
mkdir -p "$out"
(
  cd "$e2e"
  ASSIST_URL="$url" ASSIST_CA="$data/tls/cert.pem" ASSIST_BIN_DIR="$root/target/debug" \
    E2E_DISPLAY="$display" E2E_APP_LOG="$app_log" E2E_OUT="$out" CHROMIUM="$chromium" \
    NODE_EXTRA_CA_CERTS="$data/tls/cert.pem" \
    timeout 420 node --test --test-reporter=spec e2e.test.mjs share.test.mjs helper-view.test.mjs
)
echo "==> e2e: sign-in (auth.mjs against the dev provider and a second OIDC provider)"
(
  cd "$e2e"
  ASSIST_BIN_DIR="$root/target/debug" E2E_OUT="$out" CHROMIUM="$chromium" \
    timeout 240 node --test --test-reporter=spec signin.test.mjs
)
echo "==> e2e: admin console (screenshots in target/e2e/admin/)"
(
  cd "$e2e"
  ASSIST_URL="$url" E2E_OUT="$out" CHROMIUM="$chromium" NODE_EXTRA_CA_CERTS="$data/tls/cert.pem" \
    timeout 240 node --test --test-reporter=spec admin.test.mjs
)
echo "==> e2e: passed in $(($(date +%s) - started))s"
