#!/usr/bin/env bash
# The console's pages against a 1,000,000-call database: server-side render times (p50, p99,
# max over 50 renders each) with the functions the console serves them with.
#
#   bench/console.sh                  fills target/bench-console/callhook.db once (~1 M calls,
#                                     3 M events), then measures
#   bench/console.sh --calls 100000   a smaller database (use another --data-dir)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin callhook
target_dir="${CARGO_TARGET_DIR:-target}"
exec "${target_dir}/release/callhook" bench-console --data-dir "${target_dir}/bench-console" "$@"
