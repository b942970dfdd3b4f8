#!/usr/bin/env bash
# The deploy/ checks (issue 14), for CI and a developer machine alike:
#   1. tests/deploy/validate.py: Kubernetes manifests and rendered overlays against the
#      Kubernetes schemas (kubernetes-validate), the compose file against the Compose schema;
#   2. tests/deploy/dashboard_metrics.py: every metric deploy/grafana/assist.json queries exists
#      in a live assistd's /metrics;
#   3. tests/deploy/keys.py: deploy/compose/make-keys.sh makes keys assistd accepts, once;
#   4. tests/deploy/image.sh: deploy/Dockerfile's runtime stage built with podman, started,
#      healthy, /healthz answered, drained on SIGTERM, make-keys.sh runs in it (needs root;
#      skipped otherwise unless ASSIST_REQUIRE_IMAGE=1, which CI sets).
# Python packages go in target/deploy/venv (made on first run). Usage: bash tests/deploy/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
venv=target/deploy/venv
mkdir -p target/deploy
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import kubernetes_validate, jsonschema, yaml' 2>/dev/null; then
  echo "==> deploy: Python venv ($venv: kubernetes-validate, jsonschema, PyYAML)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' 'jsonschema>=4.23,<5' 'PyYAML>=6,<7'
fi
# Two builds, not one: `-p assistd` is the build ./test.sh already made (the SDK test's), so it
# is free; naming both packages in one command would unify their features into a third variant
# of every shared dependency and recompile them.
cargo build -q --locked -p assistd
cargo build -q --locked -p assist-loadgen

failed=0
echo "==> deploy: manifests (tests/deploy/validate.py)"
"$venv/bin/python" tests/deploy/validate.py | grep -v '^ok ' || failed=1
echo "==> deploy: dashboard metrics (tests/deploy/dashboard_metrics.py)"
python3 tests/deploy/dashboard_metrics.py | grep -v '^ok ' || failed=1
echo "==> deploy: cluster keys (tests/deploy/keys.py)"
python3 tests/deploy/keys.py | grep -v '^ok ' || failed=1
echo "==> deploy: container image (tests/deploy/image.sh)"
if [ "$(id -u)" = 0 ]; then
  bash tests/deploy/image.sh || failed=1
elif [ "${ASSIST_REQUIRE_IMAGE:-}" = 1 ]; then
  echo "FAIL image: needs root (rootful podman)"; failed=1
else
  echo "skipped: needs root for rootful podman (sudo bash tests/deploy/image.sh)"
fi
echo "==> deploy: done in $((SECONDS - start)) s"
exit $failed
