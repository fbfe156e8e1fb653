#!/usr/bin/env bash
# The full test suite, as CI runs it: installs what it needs, checks format and lints,
# then runs every unit and integration test (integration tests make network namespaces,
# so this runs as root). Tests that the kernel cannot run (no 8021q, ipvlan, dummy) are
# listed at the end as SKIPPED.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh needs root (it creates network namespaces): sudo scripts/test.sh" >&2
    exit 1
fi
scripts/install-deps.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

skips="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/tmp/kactus-test-skips.txt"
rm -f "$skips"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# A skipped test returns early, so cargo counts it as passed; the summary moves it to skipped.
# No doc tests exist; --lib --bins --tests keeps an empty doc-test run from being the last word.
set +e
cargo test --locked --workspace --lib --bins --tests 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
skipped=0
if [ -s "$skips" ]; then
    echo
    echo "Skipped tests (not failures; the kernel lacks what they need):"
    sort -u "$skips"
    skipped=$(sort -u "$skips" | wc -l)
fi
awk -v skipped="$skipped" '/^test result:/ { p += $4; f += $6 } END { printf "\ntests: %d passed, %d failed, %d skipped\n", p - skipped, f, skipped }' "$log"
exit "$status"
