#!/usr/bin/env bash
# The benchmark harness: one command, one run on this machine, a table and a JSON file.
#
#   bench/run.sh            full run (~10 minutes on 2 cores): results in bench/results/
#   bench/run.sh --quick    shorter runs (~3 minutes), same table
#   bench/run.sh --smoke    seconds-long runs that only check the harness works (nothing written)
#
# It builds the release binaries (callhook, bare-hyper, loadgen, normalizer-bench,
# bench-harness), then bench-harness measures ingest beside a bare hyper ceiling (keep-alive
# and a connection per push), end-to-end latency at a steady rate, the normalizer draining a
# pre-filled raw log, peak RSS and the dedupe cache's memory, and Kafka-mode ingest when it is
# available. Each ingest figure is also given as a ratio to the ceiling measured in the same
# run, because the machine is shared and absolute figures drift.
#
# Results: bench/results/<git-sha>-<date>.json and bench/results/latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p callhook -p callhook-bench
target_dir="${CARGO_TARGET_DIR:-target}"
sha="$(git rev-parse --short=12 HEAD)"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    sha="${sha}-dirty"
fi
exec "${target_dir}/release/bench-harness" \
    --bin-dir "${target_dir}/release" \
    --out-dir bench/results \
    --git-sha "${sha}" \
    "$@"
