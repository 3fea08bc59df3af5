#!/usr/bin/env bash
# test.sh - installs what is missing, builds, and runs every test.
#   scripts/test.sh             Release-with-debug-info build in build/, ctest (TAP programs)
#   SANITIZE=1 scripts/test.sh  ASan+UBSan build in build-asan/, the same programs under prove
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh

jobs=$(nproc 2>/dev/null || echo 2)
# Test programs make their temporary directories (data dirs of the crdtd nodes they start) under
# $TMPDIR: keep them inside the build tree, away from whatever else cleans /tmp.
tmp_root() { mkdir -p "$1/tmp" && export TMPDIR="$PWD/$1/tmp"; }
if [ "${SANITIZE:-0}" = 1 ]; then
  dir=build-asan
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DCRDTD_SANITIZE=ON -DCRDTD_WERROR=ON >/dev/null
  cmake --build "$dir" -j "$jobs"
  tmp_root "$dir"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  prove --exec '' --timer -j "$jobs" "$dir"/tests/test_*
else
  dir=build
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCRDTD_WERROR=ON >/dev/null
  cmake --build "$dir" -j "$jobs"
  tmp_root "$dir"
  ctest --test-dir "$dir" --output-on-failure -j "$jobs"
  # libcrdt in WebAssembly against the native build above: crdt.wasm, then the JavaScript tests
  # (the client's run against the crdtd built above, started by the tests on free ports)
  scripts/build-wasm.sh build-wasm
  command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "test: node and npm are needed for the JavaScript tests (scripts/setup-debian.sh)" >&2; exit 1; }
  (cd gateway/client/js && npm ci --no-audit --no-fund >/dev/null &&
   CRDT_WASM="$PWD/../../../build-wasm/crdt.wasm" CRDT_WASM_VECTORS="$PWD/../../../$dir/tests/wasm_vectors" \
   CRDTD_BIN="$PWD/../../../$dir/gateway/crdtd" \
     node --test test/*.test.js)
fi
