#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS each (default 60), one after the other, and
# fails on the first crash (its input is left in fuzz/artifacts/<target>/). Seeds come from
# fuzz/corpus/<target>/ (committed, never written); what a run adds goes to
# target/fuzz-corpus/<target>/, so later runs start from there.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]     (CI: .ci/run calls it with 60)
# Needs the nightly toolchain; installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

echo "==> building the fuzz targets"
(cd fuzz && cargo +nightly fuzz build)

for t in "${targets[@]}"; do
  work="target/fuzz-corpus/$t"
  mkdir -p "$work" "fuzz/artifacts/$t"
  echo "==> fuzzing $t for ${seconds}s"
  # -rss_limit_mb bounds memory; -max_len covers the largest seeds (screen frames, WS messages).
  rc=0
  (cd fuzz && cargo +nightly fuzz run "$t" "../$work" "corpus/$t" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1) \
      >"target/fuzz-$t.log" 2>&1 || rc=$?
  grep -E '^(Done [0-9]+ runs|stat::number_of_executed_units|stat::new_units_added|SUMMARY)' "target/fuzz-$t.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "target/fuzz-$t.log" >&2
    echo "fuzz.sh: $t failed (exit $rc); see target/fuzz-$t.log and fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
echo "==> fuzzing: no crash in ${#targets[@]} targets (${seconds}s each)"
