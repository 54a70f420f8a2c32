#!/usr/bin/env bash
# Builds and runs callhook's AFL++ fuzz targets, one at a time, at nice 19. Not run by CI.
#
#   fuzz/run.sh [TARGET...] [--execs N] [--cmin | --cmin-only] [--build-only]
#
#   TARGET        phone time lenient map_7moor map_coocenter map_uincall ingest (default: all)
#   --execs N     executions per target (AFL++ -E), default 10000000
#   --cmin        afterwards, minimize corpus/<target> + the new queue with AFL++'s afl-cmin
#                 and replace corpus/<target> with the result (review, then commit)
#   --cmin-only   only that minimization, from the queue of the last run in out/<target>
#   --build-only  build the binaries and stop
#
# Needs `cargo install cargo-afl` (AFL++ is built from the source vendored in the crate; no
# download beyond crates.io). Inputs start from corpus/<target>/ (checked in; the replay test
# in fuzz/tests/corpus.rs runs them on every `cargo test`), with dict/<target>.dict. Findings
# go to out/<target>/default/{crashes,hangs}/; each run appends target, execs, exec/s,
# crashes, hangs and corpus size from AFL's fuzzer_stats to out/results.tsv and prints them.
# Exits non-zero when a target saved a crash or a hang.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
all_targets=(phone time lenient map_7moor map_coocenter map_uincall ingest)
execs=10000000
cmin=false
fuzz=true
build_only=false
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --execs) execs="$2"; shift 2 ;;
        --cmin) cmin=true; shift ;;
        --cmin-only) cmin=true; fuzz=false; shift ;;
        --build-only) build_only=true; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ ${#targets[@]} -eq 0 ]] && targets=("${all_targets[@]}")

if ! cargo afl --version >/dev/null 2>&1; then
    echo "cargo-afl is missing: cargo install cargo-afl" >&2
    exit 2
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/afl/target}"
(cd "$here/afl" && nice -n 19 cargo afl build --release --locked)
$build_only && exit 0

# No UI (a log instead), no CPU pinning (the machine is shared), and no core_pattern demand.
export AFL_NO_UI=1 AFL_NO_AFFINITY=1 AFL_SKIP_CPUFREQ=1
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CRASHES=1
mkdir -p "$here/out"
results="$here/out/results.tsv"
[[ -f "$results" ]] || printf 'target\texecs_done\texecs_per_sec\tsaved_crashes\tsaved_hangs\tcorpus_count\trun_time_s\n' >"$results"

stat_of() { awk -F' *: *' -v key="$1" '$1 == key { print $2 }' "$2"; }

# Fuzzes $target for $execs executions and records its fuzzer_stats; fails on a finding.
fuzz_target() {
    rm -rf "$out"
    echo "== $target: $execs executions (log: $out.log)"
    # -G: inputs up to 64 KiB. Past the limits that matter at that size (nesting 32, 20k
    # values, the 256-byte body limit of the ingest target's `coocenter` source) longer
    # inputs only slow the run down; the 1 MiB limits have unit tests.
    nice -n 19 cargo afl fuzz -i "$corpus" -o "$out" -x "$here/dict/$target.dict" \
        -E "$execs" -G 65536 -t "$timeout_ms" -- "$binary" >"$out.log" 2>&1 || true
    local stats="$out/default/fuzzer_stats"
    [[ -f "$stats" ]] || { echo "$target: no fuzzer_stats, see $out.log" >&2; return 1; }
    local row="$target" key
    for key in execs_done execs_per_sec saved_crashes saved_hangs corpus_count run_time; do
        row+=$'\t'"$(stat_of "$key" "$stats")"
    done
    printf '%s\n' "$row" | tee -a "$results"
    local crashes hangs
    crashes="$(stat_of saved_crashes "$stats")"
    hangs="$(stat_of saved_hangs "$stats")"
    if [[ "$crashes" != 0 || "$hangs" != 0 ]]; then
        echo "$target: $crashes crash(es), $hangs hang(s) in $out/default/{crashes,hangs}/" >&2
        return 1
    fi
}

# AFL++'s afl-cmin.bash from cargo-afl's build: `cargo afl cmin` runs afl-cmin.py, which
# records no coverage from these persistent-mode binaries (it keeps 0 files).
cmin_script() {
    local scripts=("${XDG_DATA_HOME:-$HOME/.local/share}"/afl.rs/rustc-*/afl.rs-*/afl/bin/afl-cmin.bash)
    [[ -x "${scripts[-1]}" ]] || { echo "afl-cmin.bash not found under afl.rs" >&2; return 1; }
    echo "${scripts[-1]}"
}

# Replaces corpus/$target with afl-cmin of itself plus the last run's queue.
minimize_target() {
    local minimized="$out/cmin" file script
    script="$(cmin_script)"
    rm -rf "$minimized" "$out/all"
    mkdir -p "$out/all"
    cp "$corpus"/* "$out/all/"
    cp "$out"/default/queue/id:* "$out/all/" 2>/dev/null || true
    # -e: edges only, not hit counts, which keeps a few hundred files rather than ~1000.
    nice -n 19 "$script" -e -i "$out/all" -o "$minimized" -t "$timeout_ms" -- "$binary" \
        >"$out.cmin.log" 2>&1 || true
    if [[ -z "$(ls -A "$minimized" 2>/dev/null)" ]]; then
        echo "$target: cmin kept nothing (see $out.cmin.log); corpus left as it was" >&2
        return 1
    fi
    rm -rf "$corpus"
    mkdir -p "$corpus"
    # Content-addressed names: stable across runs, no `:` in file names.
    for file in "$minimized"/*; do
        cp "$file" "$corpus/$(sha1sum "$file" | cut -c1-16)"
    done
    echo "$target: corpus minimized to $(find "$corpus" -type f | wc -l) files"
}

failed=0
for target in "${targets[@]}"; do
    binary="$CARGO_TARGET_DIR/release/$target"
    corpus="$here/corpus/$target"
    out="$here/out/$target"
    [[ -x "$binary" ]] || { echo "unknown target $target" >&2; exit 2; }
    # The ingest target runs a whole HTTP exchange per input: a longer per-input timeout.
    timeout_ms=$([[ $target == ingest ]] && echo 2000 || echo 500)
    if $fuzz; then
        fuzz_target || failed=1
    fi
    if $cmin; then
        minimize_target || failed=1
    fi
done
exit "$failed"
