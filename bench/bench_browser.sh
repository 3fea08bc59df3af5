#!/usr/bin/env bash
# bench_browser.sh - catch-up of a 10,000-entry timeline into a fresh page in headless Chromium
# over loopback (connect to rendered) against the same catch-up with the C client (the crdtc
# library, bench_ws --catchup, JSON and binary crdt.v1), in one
# run (bench/bench_browser.mjs says how each is timed).
#   bench/bench_browser.sh [N] [R]      (defaults 10000 and 7; BUILD=build-rel)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
runs=${2:-7}
build=${BUILD:-build-rel}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target crdtd bench_ws >/dev/null
(cd tests/browser && npm ci --no-audit --no-fund >/dev/null)
node bench/bench_browser.mjs "$build/gateway/crdtd" "$build/bench/bench_ws" "$n" "$runs"
