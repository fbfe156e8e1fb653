#!/usr/bin/env bash
# Fuzzes kactus's parsers of outside input (fuzz/, see fuzz/README.md) with cargo-fuzz on the
# nightly toolchain, and prints executions, speed, new inputs and crashes per target.
#
#   scripts/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]   fuzz each target (default 60 s, all);
#                                                       FUZZ_RUNS=N stops a target after N
#                                                       executions if that comes first
#   scripts/fuzz.sh --minimize [TARGET...]              merge what fuzzing found into the
#                                                       committed corpora, minimised (as cargo
#                                                       fuzz cmin does, keeping the seed-* files)
# FUZZ_NO_BUILD=1 uses the targets as last built (e.g. to minimise after the sources moved on).
#
# Fuzzing reads the committed corpus (fuzz/corpus/<target>) and writes what it finds to
# $CARGO_TARGET_DIR/fuzz-corpus/<target>, so a run leaves the repository as it was; crashes go
# to fuzz/artifacts/<target>/ (git-ignored). Needs `cargo install cargo-fuzz` and nightly.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# Safe Rust: a crash is a panic, which needs no ASan bookkeeping; without it malloc is cheaper.
export ASAN_OPTIONS="${ASAN_OPTIONS:-malloc_context_size=0:quarantine_size_mb=0:detect_leaks=0}"
work="$CARGO_TARGET_DIR/fuzz-corpus"
minimize=false
if [ "${1:-}" = "--minimize" ]; then
    minimize=true
    shift
fi
seconds=60
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(ls fuzz/fuzz_targets | sed -n 's/\.rs$//p')
fi

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 1; }
# The targets build the dependency versions the product ships.
[ -f fuzz/Cargo.lock ] && [ fuzz/Cargo.lock -nt Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock
[ -n "${FUZZ_NO_BUILD:-}" ] || cargo +nightly fuzz build -O

if $minimize; then
    for t in "${targets[@]}"; do
        bin=$(ls "$CARGO_TARGET_DIR"/*/release/"$t" | head -1)
        kept=$(mktemp -d)
        # libFuzzer's merge keeps what is in the first directory (the named seeds) and adds
        # the smallest inputs that reach new coverage: every edge, not every hit count, so the
        # committed corpora stay small.
        cp "fuzz/corpus/$t"/seed-* "$kept/"
        "$bin" -merge=1 -use_counters=0 -max_len=8192 "$kept" "fuzz/corpus/$t" "$work/$t" >"$work/$t.merge.log" 2>&1
        rm -f "fuzz/corpus/$t"/*
        cp "$kept"/* "fuzz/corpus/$t/"
        rm -rf "$kept"
        echo "$t: $(ls "fuzz/corpus/$t" | wc -l) inputs, $(du -sk --apparent-size "fuzz/corpus/$t" | cut -f1) KiB"
    done
    exit 0
fi

printf '%-16s %12s %9s %6s %8s %8s %s\n' target executions exec/s new corpus KiB crashes
failed=0
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    dict=fuzz/dict/$t.dict
    [ -f "$dict" ] || dict=fuzz/dict/cni.dict
    log="$work/$t.log"
    set +e
    # -timeout: an input that takes 10 s is a hang, reported like a crash.
    cargo +nightly fuzz run -O "$t" "$work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -timeout=10 -rss_limit_mb=2048 -max_len=8192 \
        -dict="$dict" -print_final_stats=1 >"$log" 2>&1
    status=$?
    set -e
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    crashes=$(ls "fuzz/artifacts/$t" 2>/dev/null | wc -l)
    [ "$status" -eq 0 ] || failed=1
    printf '%-16s %12s %9s %6s %8s %8s %s\n' "$t" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
        "$(stat new_units_added)" "$(find "$work/$t" "fuzz/corpus/$t" -type f | wc -l)" \
        "$(du -sck "$work/$t" "fuzz/corpus/$t" | tail -1 | cut -f1)" \
        "$crashes$([ "$status" -eq 0 ] || echo " (exit $status: see $log)")"
done
exit "$failed"
