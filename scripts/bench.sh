#!/bin/sh
# The benchmark of issue 6: builds kactus in release and prints the table (see BENCHMARK.md).
# Needs root, `ip` and the CNI reference plugins in /usr/lib/cni. KACTUS_BENCH_REPS=N sets the
# repetitions per row (default 20).
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "scripts/bench.sh: run as root (it makes network namespaces)" >&2
    exit 2
fi
exec cargo bench --bench plugin "$@"
