#!/bin/sh
# The benchmarks of issues 6 and 17 (kactus on top of its delegates and alone, apiserver
# requests per ADD, podagent's hot-plug), 23 and 24 (the in-pod data plane: section
# `dataplane`) and issue 15 (node-local against host-local,
# apiserver writes per pod start): builds in release (with the null delegate) and prints the
# tables (see BENCHMARK.md).
# Needs root, `ip` and the CNI reference plugins in /usr/lib/cni. KACTUS_BENCH_REPS=N sets the
# repetitions per row (default 20; 200 for node_local); the other switches are listed at the
# top of benches/plugin.rs.
set -eu
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "scripts/bench.sh: run as root (it makes network namespaces)" >&2
    exit 2
fi
# The null delegate the "kactus alone" rows run (an example target: never in the image).
cargo build --release --example null-delegate
exec cargo bench --bench plugin --bench node_local "$@"
