#!/usr/bin/env bash
# bench_wasm.sh - libcrdt in WebAssembly (Node) against native libcrdt, one workload, one run:
# timeline apply (N adds into a timeline bounded to 1,000, each returning its encoded delta) and
# merge (those N deltas joined into a fresh timeline), medians of R alternating runs, the ratio
# wasm/native, by the wall clock and per second of each process's CPU time; and the size of what a page loads (crdt.wasm + crdt-wasm.js, gzip -9).
# Two ways of keeping the N deltas, each the same on both sides: as N objects (apply, merge: N
# Uint8Arrays in the JavaScript heap, N malloc'd blocks natively; the garbage collector's work on
# N small objects is a cost that N blocks of malloc do not have), and appended to one growing byte
# buffer (apply-log, merge-log: what a client that appends what it sends to a send buffer or a log
# keeps; both logs are checked to be the same bytes). apply-drop: each delta dropped once made.
#   bench/bench_wasm.sh [N] [R]      (defaults 200000 and 7; BUILD=build-rel, WASM_BUILD=build-wasm)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
runs=${2:-7}
build=${BUILD:-build-rel}
wasm_build=${WASM_BUILD:-build-wasm}

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target bench_wasm_native >/dev/null
scripts/build-wasm.sh "$wasm_build" >/dev/null
wasm="$wasm_build/crdt.wasm"

declare -a na nm wa wm nac nmc wac wmc nd wd nla nlm wla wlm nlac nlmc wlac wlmc nk wk
for ((i = 0; i < runs; i++)); do
  nat=$("$build/bench/bench_wasm_native" "$n")
  web=$(node bench/bench_wasm.mjs "$wasm" "$n")
  nf=$(awk '/state_fnv/ {print $2}' <<<"$nat")
  wf=$(awk '/state_fnv/ {print $2}' <<<"$web")
  if [ "$nf" != "$wf" ]; then
    echo "bench_wasm: native and wasm end in different states ($nf, $wf): not the same workload" >&2
    exit 1
  fi
  na+=("$(awk '/^apply_ops_s/ {print $2}' <<<"$nat")")
  nm+=("$(awk '/^merge_ops_s/ {print $2}' <<<"$nat")")
  wa+=("$(awk '/^apply_ops_s/ {print $2}' <<<"$web")")
  wm+=("$(awk '/^merge_ops_s/ {print $2}' <<<"$web")")
  nac+=("$(awk '/apply_cpu_ops_s/ {print $2}' <<<"$nat")")
  nmc+=("$(awk '/merge_cpu_ops_s/ {print $2}' <<<"$nat")")
  wac+=("$(awk '/apply_cpu_ops_s/ {print $2}' <<<"$web")")
  wmc+=("$(awk '/merge_cpu_ops_s/ {print $2}' <<<"$web")")
  nd+=("$(awk '/apply_drop_cpu_ops_s/ {print $2}' <<<"$nat")")
  nk+=("$(awk '/keep_cpu_ns/ {print $2}' <<<"$nat")")
  wk+=("$(awk '/keep_cpu_ns/ {print $2}' <<<"$web")")
  wd+=("$(awk '/apply_drop_cpu_ops_s/ {print $2}' <<<"$web")")
  if [ "$(awk '/log_fnv/ {print $2}' <<<"$nat")" != "$(awk '/log_fnv/ {print $2}' <<<"$web")" ]; then
    echo "bench_wasm: native and wasm logged different deltas" >&2
    exit 1
  fi
  for v in la:apply_log_ops_s lm:merge_log_ops_s lac:apply_log_cpu_ops_s lmc:merge_log_cpu_ops_s; do
    declare -n nv="n${v%%:*}" wv="w${v%%:*}"
    nv+=("$(awk -v k="${v#*:}" '$1 == k {print $2}' <<<"$nat")")
    wv+=("$(awk -v k="${v#*:}" '$1 == k {print $2}' <<<"$web")")
    unset -n nv wv
  done
  if [ "$(awk '/drop_bytes/ {print $2}' <<<"$nat")" != "$(awk '/drop_bytes/ {print $2}' <<<"$web")" ]; then
    echo "bench_wasm: the dropped deltas differ in length between native and wasm" >&2
    exit 1
  fi
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
mna=$(median "${na[@]}"); mnm=$(median "${nm[@]}"); mwa=$(median "${wa[@]}"); mwm=$(median "${wm[@]}")
echo "timeline workload: N=$n adds (max size 1000), medians of $runs runs, same final state ($nf)"
printf '  %-8s %14s %14s %8s\n' "" "native ops/s" "wasm ops/s" "ratio"
printf '  %-8s %14.0f %14.0f %7.2fx\n' apply "$mna" "$mwa" "$(awk -v a="$mwa" -v b="$mna" 'BEGIN {print a / b}')"
printf '  %-8s %14.0f %14.0f %7.2fx\n' merge "$mnm" "$mwm" "$(awk -v a="$mwm" -v b="$mnm" 'BEGIN {print a / b}')"
mnac=$(median "${nac[@]}"); mnmc=$(median "${nmc[@]}"); mwac=$(median "${wac[@]}"); mwmc=$(median "${wmc[@]}")
echo "per second of process CPU time (what a loaded machine skews least):"
printf '  %-8s %14.0f %14.0f %7.2fx\n' apply "$mnac" "$mwac" "$(awk -v a="$mwac" -v b="$mnac" 'BEGIN {print a / b}')"
printf '  %-8s %14.0f %14.0f %7.2fx\n' merge "$mnmc" "$mwmc" "$(awk -v a="$mwmc" -v b="$mnmc" 'BEGIN {print a / b}')"
mnd=$(median "${nd[@]}"); mwd=$(median "${wd[@]}")
printf '  %-8s %14.0f %14.0f %7.2fx   (apply again, each delta dropped once made: no heap of N deltas)\n' \
  "apply-drop" "$mnd" "$mwd" "$(awk -v a="$mwd" -v b="$mnd" 'BEGIN {print a / b}')"
echo "the deltas appended to one byte buffer (apply-log, merge-log), same bytes on both sides:"
for v in la:apply-log lm:merge-log; do
  declare -n nv="n${v%%:*}" wv="w${v%%:*}" nc="n${v%%:*}c" wc="w${v%%:*}c"
  a=$(median "${nv[@]}"); b=$(median "${wv[@]}"); c=$(median "${nc[@]}"); d=$(median "${wc[@]}")
  printf '  %-10s %12.0f %12.0f %7.2fx   per CPU second %12.0f %12.0f %7.2fx\n' "${v#*:}" "$a" "$b" \
    "$(awk -v a="$b" -v b="$a" 'BEGIN {print a / b}')" "$c" "$d" "$(awk -v a="$d" -v b="$c" 'BEGIN {print a / b}')"
  unset -n nv wv nc wc
done
ratios() { local -n a=$1 b=$2; for ((i = 0; i < ${#a[@]}; i++)); do awk -v x="${a[i]}" -v y="${b[i]}" 'BEGIN {printf " %.2f", x / y}'; done; }
echo "  single runs, apply:$(ratios wa na)"
echo "  single runs, merge:$(ratios wm nm)"
echo "  single runs, apply, CPU:$(ratios wac nac)"
echo "  single runs, merge, CPU:$(ratios wmc nmc)"
echo "  single runs, apply-drop, CPU:$(ratios wd nd)"
echo "  single runs, apply-log:$(ratios wla nla)  CPU:$(ratios wlac nlac)"
echo "  single runs, merge-log:$(ratios wlm nlm)  CPU:$(ratios wlmc nlmc)"
# The kept variant's floor: what holding one delta costs each side with no libcrdt at all, against
# the whole budget 0.5x leaves the wasm side per apply (twice native's CPU time per op).
mnk=$(median "${nk[@]}"); mwk=$(median "${wk[@]}")
awk -v k="$mwk" -v nk="$mnk" -v a="$mnac" 'BEGIN {
  printf "apply'"'"'s floor, kept deltas: one kept 30-byte copy costs %.0f ns of CPU in Node (a Uint8Array, as\n", k
  printf "  _outBytes makes it), %.0f ns natively (malloc + memcpy); native apply is %.0f ns per op, so\n", nk, 1e9 / a
  printf "  0.5x leaves the wasm side %.0f ns per op, %.0f%% of it taken by the copy alone\n", 2e9 / a, 100 * k / (2e9 / a) }'

js=gateway/client/js/crdt-wasm.js
wz=$(gzip -9c "$wasm" | wc -c)
jz=$(gzip -9c "$js" | wc -c)
echo "page load (gzip -9): crdt.wasm $(wc -c <"$wasm") -> $wz bytes, crdt-wasm.js $(wc -c <"$js") -> $jz bytes," \
  "total $(((wz + jz + 1023) / 1024)) KiB (target <= 60; Automerge's wasm ~630 KB, sql.js ~340 KB)"
