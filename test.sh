#!/usr/bin/env bash
# Runs every test Assist has: the Rust workspace (unit, property and integration tests against
# real servers on loopback), the Microsoft Graph Python SDK conformance test, and the browser
# end-to-end test of the helper page (headless Chromium, Xvfb, the sharer agent), README.md's
# own commands (tests/readme/run.py), and the deploy/ checks (tests/deploy/run.sh).
# Usage: ./test.sh            (from anywhere; installs the SDK into target/sdk-venv on first run,
#                              and the e2e and store tests' dependencies, PostgreSQL included,
#                              with scripts/install-test-deps.sh)
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -x /usr/bin/chromium ] || ! command -v Xvfb >/dev/null || ! command -v setxkbmap >/dev/null \
  || [ ! -d tests/e2e/node_modules/playwright-core ] || [ ! -d tests/oidc/node_modules/oidc-provider ] \
  || ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || ! command -v redis-server >/dev/null; then
  echo "==> installing the e2e and store tests' dependencies (scripts/install-test-deps.sh)"
  bash scripts/install-test-deps.sh || echo "warning: could not install them; the browser e2e and PostgreSQL tests may be skipped" >&2
fi

echo "==> cargo test (workspace)"
cargo test --workspace --locked --no-fail-fast

# The admin API, directory and report tests once more with the server's store on PostgreSQL
# (a server of the tests' own on loopback; about a minute). The store's own conformance suite
# already ran on both databases above.
echo "==> admin API tests against PostgreSQL (ASSIST_TEST_STORE=postgres)"
ASSIST_TEST_STORE=postgres cargo test --locked -p assistd \
  --test admin_settings --test admin_directory --test directory_roles --test reports

echo "==> Graph SDK conformance (tests/sdk)"
cargo build --locked -p assistd
ASSISTD_BIN="$PWD/target/debug/assistd" bash tests/sdk/run.sh

echo "==> README.md's commands, as written (tests/readme)"
python3 tests/readme/run.py

echo "==> Deploy: manifests, dashboard metrics, container image (tests/deploy)"
bash tests/deploy/run.sh

echo "==> Browser helper end-to-end (tests/e2e)"
bash tests/e2e/run.sh
