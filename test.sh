#!/usr/bin/env bash
# Runs every test Assist has: the Rust workspace (unit, property and integration tests against
# real servers on loopback) and the Microsoft Graph Python SDK conformance test.
# Usage: ./test.sh            (from anywhere; installs the SDK into target/sdk-venv on first run)
set -euo pipefail
cd "$(dirname "$0")"

echo "==> cargo test (workspace)"
cargo test --workspace --locked

echo "==> Graph SDK conformance (tests/sdk)"
cargo build --locked -p assistd
ASSISTD_BIN="$PWD/target/debug/assistd" bash tests/sdk/run.sh
