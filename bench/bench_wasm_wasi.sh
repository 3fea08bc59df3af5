#!/usr/bin/env bash
# bench_wasm_wasi.sh - libcrdt's own speed in WebAssembly, without JavaScript: bench_wasm_native.c
# (the workload of bench_wasm.sh) built twice, natively (Release) and with clang for wasm32-wasi
# (crdt.wasm's flags, -O2 -flto, sign-ext, non-trapping float-to-int, with crdt.wasm's exported
# ABI crdt_wasm.c, its allocator heap.c and memcpy.c, as crdt/wasm/CMakeLists.txt builds them;
# there the writes and merges are crdt.wasm's calls, crdt_wasm_timeline_write and
# crdt_wasm_obj_merge_encoded), and run in one script, the wasm one in Node's WASI. Both end in the same state (checked). What this shows against bench_wasm.sh: how
# much of the gap there is code generation (here) and how much the JavaScript around each call
# (the boundary, the Uint8Array per delta, V8's heap). Debian's clang, lld and wasi-libc
# (scripts/setup-debian.sh); wasi-libc's snprintf and malloc (for the kept copies) stand in for
# glibc's.
# Usage: bench/bench_wasm_wasi.sh [N] [RUNS]   (default 200000 7; BUILD=build-rel)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
runs=${2:-7}
build=${BUILD:-build-rel}
cc=$(command -v clang-14 || command -v clang)

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target bench_wasm_native >/dev/null
out="$build/bench/bench_wasm_native.wasm"
s=crdt/src
isa="-msign-ext -mnontrapping-fptoint"
# memcpy.c as machine code, without LTO (crdt/wasm/CMakeLists.txt says why)
"$cc" --target=wasm32-wasi -O2 $isa -fno-builtin -c crdt/wasm/memcpy.c -o "$out.memcpy.o"
"$cc" --target=wasm32-wasi -O2 -flto $isa -DBENCH_WASI -D_WASI_EMULATED_PROCESS_CLOCKS \
  -Icrdt/wasm -Icrdt/wasm/nojson -Icrdt/include -I"$s" bench/bench_wasm_native.c "$s"/core.c \
  "$s"/hash.c "$s"/hlc.c "$s"/bytes.c "$s"/mut.c "$s"/counter.c "$s"/lwwreg.c "$s"/lwwset.c \
  "$s"/orset.c "$s"/timeline.c crdt/wasm/nojson.c crdt/wasm/format.c crdt/wasm/heap.c \
  crdt/wasm/crdt_wasm.c \
  "$out.memcpy.o" -lwasi-emulated-process-clocks -o "$out"

declare -a keys=(apply_ops_s merge_ops_s apply_cpu_ops_s merge_cpu_ops_s apply_drop_cpu_ops_s
  apply_log_cpu_ops_s merge_log_cpu_ops_s)
declare -A nat web
for ((i = 0; i < runs; i++)); do
  a=$("$build/bench/bench_wasm_native" "$n")
  b=$(node --no-warnings bench/wasi_run.mjs "$out" "$n")
  if [ "$(awk '/state_fnv/ {print $2}' <<<"$a")" != "$(awk '/state_fnv/ {print $2}' <<<"$b")" ]; then
    echo "bench_wasm_wasi: native and wasm end in different states" >&2
    exit 1
  fi
  for k in "${keys[@]}"; do
    nat[$k]+="$(awk -v k="$k" '$1 == k {print $2}' <<<"$a") "
    web[$k]+="$(awk -v k="$k" '$1 == k {print $2}' <<<"$b") "
  done
done
median() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo "bench_wasm_native.c natively and in wasm32-wasi (Node's WASI), N=$n, medians of $runs runs"
echo "(ops per wall-clock second for apply and merge, per CPU second for the *_cpu figures):"
printf '  %-22s %12s %12s %7s\n' "" native wasi ratio
for k in "${keys[@]}"; do
  x=$(median "${nat[$k]}"); y=$(median "${web[$k]}")
  printf '  %-22s %12.0f %12.0f %6.2fx\n' "${k%_ops_s}" "$x" "$y" "$(awk -v a="$y" -v b="$x" 'BEGIN {print a / b}')"
done
