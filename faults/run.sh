#!/usr/bin/env bash
# The fault suite: one command, every fault under simulated vendor load, one table.
#
#   faults/run.sh            full run (~60 min on 2 cores, 30 of them the soak)
#   faults/run.sh --quick    fewer iterations, a 2-minute soak (~15 min)
#   faults/run.sh --only sigkill --only torn    some faults only (see fault-suite --help)
#
# Needs root (tmpfs and loop mounts for the disk faults), python3 with pip (the test broker
# tansu and the S3 server it stores on in the Kafka fault, installed into the target dir on
# first use), mkfs.ext4, e2fsck. It builds callhook with the crash points
# (`--features failpoints`: never ship that build) and the suite, then runs the suite at nice 5.
# The table goes to stdout and to faults/results/latest.md; exit 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet --features failpoints -p callhook
cargo build --release --quiet -p callhook-faults
moto="${CARGO_TARGET_DIR}/faults/python/moto"
if [ ! -x "${moto}/bin/moto_server" ]; then
    echo "installing moto[server] (a local S3 server for the Kafka fault) into ${moto}" >&2
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "${moto}" 'moto[server]'
fi
mkdir -p faults/results
exec nice -n 5 "${CARGO_TARGET_DIR}/release/fault-suite" \
    --bin "${CARGO_TARGET_DIR}/release/callhook" \
    --work-dir "${CARGO_TARGET_DIR}/faults/work" \
    --out faults/results/latest.md \
    "$@"
