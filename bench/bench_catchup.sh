#!/usr/bin/env bash
# bench_catchup.sh [N] [RUNS] - catch-up of an N-entry timeline (default 10,000) into a fresh
# client over loopback: the JavaScript client (Node, crdt.wasm, binary crdt.v1: Client.open to the
# newest 50 entries read) against the C client (crdtc over JSON crdt.v1 and over crdt.v1.bin:
# connect to the same read), alternating, RUNS times (default 7), against one crdtd --no-persist
# --timeline-max-size 0. Prints each run, the medians and the ratios to the C client over JSON.
# Needs build/ (crdtd, bench_ws) and build-wasm/crdt.wasm (BUILD=, CRDT_WASM= to change them).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
runs=${2:-7}
build=${BUILD:-build}
export CRDT_WASM=${CRDT_WASM:-$PWD/build-wasm/crdt.wasm}
for f in "$build/gateway/crdtd" "$build/bench/bench_ws" "$CRDT_WASM"; do
  [ -e "$f" ] || { echo "bench_catchup: $f is missing (cmake --build $build; scripts/build-wasm.sh)" >&2; exit 1; }
done
log=$(mktemp)
"$build/gateway/crdtd" --listen 127.0.0.1:0 --no-persist --timeline-max-size 0 --ws-max-message 64M >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q 'listening on' "$log" && break; sleep 0.1; done
port=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$log" | head -1)
[ -n "$port" ] || { cat "$log" >&2; exit 1; }
url="ws://127.0.0.1:$port/"
key="bench:catchup"
node bench/bench_catchup.mjs seed "$url" "$key" "$n"

js=() cj=() cb=()
for r in $(seq "$runs"); do
  # alternate the order, so neither side always runs right after the other
  if [ $((r % 2)) = 1 ]; then order="js cj cb"; else order="cb cj js"; fi
  for who in $order; do
    case $who in
      js) out=$(node bench/bench_catchup.mjs page "$url" "$key"); js+=("${out% *}") ;;
      cj) out=$("$build/bench/bench_ws" --catchup "$port" "$key"); cj+=("${out% *}") ;;
      cb) out=$("$build/bench/bench_ws" --catchup "$port" "$key" --binary); cb+=("${out% *}") ;;
    esac
    [ "${out#* }" = "$n" ] || { echo "bench_catchup: $who got ${out#* } entries, not $n" >&2; exit 1; }
    echo "run $r  $who  ${out% *} ms"
  done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mj=$(median "${js[@]}"); mc=$(median "${cj[@]}"); mb=$(median "${cb[@]}")
echo
echo "catch-up of $n entries, medians of $runs runs:"
echo "  JavaScript client (binary, wasm)  $mj ms"
echo "  C client, JSON crdt.v1            $mc ms"
echo "  C client, crdt.v1.bin             $mb ms"
awk -v j="$mj" -v c="$mc" -v b="$mb" 'BEGIN { printf "ratio JS / C-JSON %.2f, JS / C-binary %.2f, C-binary / C-JSON %.2f\n", j / c, j / b, b / c }'
