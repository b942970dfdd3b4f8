#!/usr/bin/env bash
# Runs the Microsoft Graph Python SDK (msgraph-beta-sdk) against a local assistd.
#
# Env:
#   ASSISTD_BIN      assistd binary (default: <repo>/target/debug/assistd)
#   ASSIST_SDK_VENV  virtualenv location (default: <repo>/target/sdk-venv)
#   PYTHON           interpreter used to create the venv (default: python3)
# Extra arguments are passed to pytest.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

bin="${ASSISTD_BIN:-$repo/target/debug/assistd}"
case "$bin" in
  /*) ;;
  *) bin="$repo/$bin" ;;
esac
if [[ ! -x "$bin" ]]; then
  echo "error: assistd binary not found or not executable at '$bin'." >&2
  echo "       Build it with: (cd '$repo' && cargo build -p assistd), or set ASSISTD_BIN." >&2
  exit 1
fi
export ASSISTD_BIN="$bin"

venv="${ASSIST_SDK_VENV:-$repo/target/sdk-venv}"
if [[ ! -x "$venv/bin/python" ]]; then
  echo "creating virtualenv at $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

cd "$here"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "$here/test_graph_sdk.py" "$@"
