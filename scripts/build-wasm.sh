#!/usr/bin/env bash
# build-wasm.sh - builds libcrdt to WebAssembly: build-wasm/crdt.wasm (crdt/wasm/, Debian's clang,
# lld, wasi-libc and libclang-rt-14-dev-wasm32; nothing downloaded). Usage:
#   scripts/build-wasm.sh [build-dir]     (default build-wasm; CRDT_WASM_OPT="-Oz -flto" for size)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build-wasm}

missing=()
cc=$(command -v clang-14 || command -v clang || true)
[ -n "$cc" ] || missing+=("clang (package clang)")
command -v wasm-ld >/dev/null || command -v wasm-ld-14 >/dev/null || missing+=("wasm-ld (package lld)")
if [ -n "$cc" ]; then
  echo '#include <stdlib.h>' | "$cc" --target=wasm32-wasi -E -x c - >/dev/null 2>&1 ||
    missing+=("wasi-libc headers (package wasi-libc)")
  [ -f "$("$cc" --target=wasm32-wasi -print-libgcc-file-name)" ] ||
    missing+=("wasm32 compiler builtins (package libclang-rt-14-dev-wasm32)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "build-wasm: missing the WebAssembly toolchain: ${missing[*]}" >&2
  echo "build-wasm: install it with scripts/setup-debian.sh (or apt-get install lld wasi-libc libclang-rt-14-dev-wasm32)" >&2
  exit 1
fi

cmake -S crdt/wasm -B "$dir" -DCMAKE_TOOLCHAIN_FILE="$PWD/crdt/wasm/wasm32-wasi.cmake" \
  -DCMAKE_BUILD_TYPE=Release -DCRDTD_WERROR=ON ${CRDT_WASM_OPT:+"-DCRDT_WASM_OPT=$CRDT_WASM_OPT"} >/dev/null
cmake --build "$dir" -j 2
echo "build-wasm: $dir/crdt.wasm ($(wc -c <"$dir/crdt.wasm") bytes)"
