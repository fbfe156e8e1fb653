#!/bin/sh
# The benchmarks of issue 6 (kactus on top of its delegates) and issue 15 (node-local against
# host-local, apiserver writes per pod start): builds in release and prints the tables (see
# BENCHMARK.md).
# Needs root, `ip` and the CNI reference plugins in /usr/lib/cni. KACTUS_BENCH_REPS=N sets the
# repetitions per row (default 20; 200 for node_local).
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "scripts/bench.sh: run as root (it makes network namespaces)" >&2
    exit 2
fi
exec cargo bench --bench plugin --bench node_local "$@"
