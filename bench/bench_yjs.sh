#!/usr/bin/env bash
# bench_yjs.sh - crdtd against y-websocket's server (@y/websocket-server with yjs, from npm), on
# this machine in one run: one writer's small appends (one timeline add a write) fanned out to
# SUBS subscribers of one document, by one C client for both (bench/bench_yjs.c: epoll, raw
# sockets; crdt.v1.bin frames to crdtd, y-protocols sync/update messages to y-websocket).
# For each of RUNS rounds, alternating which server goes first, each server is started afresh
# for a paced measurement (10,000 deliveries/s: 10,000 / SUBS writes a second; latency, and bytes
# per delivery over the same writes) and again for a maximum-rate one (deliveries/s, server CPU
# per delivery). Prints medians and the ratios crdtd / y-websocket.
#   bench/bench_yjs.sh [RUNS] [SUBS]   (defaults 3 and 1000; SECS=3, PACED_SECS=5, SHAPE=map,
#                                        BUILD=build-rel)
# The npm packages (bench/yjs/package-lock.json) are installed here, with npm ci, when the bench
# runs; nothing in CI needs them.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
subs=${2:-1000}
secs=${SECS:-3}
paced_secs=${PACED_SECS:-5}
shape=${SHAPE:-map}
build=${BUILD:-build-rel}
rate=$(awk -v s="$subs" 'BEGIN {print 10000 / s}')

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "bench_yjs: node and npm are needed for y-websocket (apt-get install nodejs npm): not measured" >&2
  exit 2
fi
if ! (cd bench/yjs && npm ci --no-audit --no-fund --loglevel=error >/dev/null); then
  echo "bench_yjs: could not install @y/websocket-server and yjs with npm ci (bench/yjs/package-lock.json):" \
    "y-websocket NOT measured, no figures" >&2
  exit 2
fi
ywss=bench/yjs/node_modules/@y/websocket-server/src/server.js
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j 2 --target crdtd bench_yjs >/dev/null
# the Yjs updates bench_yjs.c writes must be the ones yjs makes for the same writes
"$build/bench/bench_yjs" --print-yjs 20000 2415919105 "$shape" |
  node bench/yjs/check_updates.mjs 2415919105 "$shape"
ulimit -n $((subs * 2 + 256))
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$tmp"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start SERVER (crdtd|yjs): sets pid and port
start() {
  if [ "$1" = crdtd ]; then
    "$build/gateway/crdtd" --no-persist --listen 127.0.0.1:0 >"$tmp/server.out" 2>&1 &
    pid=$!
    for ((t = 0; t < 100; t++)); do
      port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$tmp/server.out" | grep -o '[0-9]*$' || true)
      [ -n "$port" ] && return 0
      sleep 0.1
    done
  else
    port=$(free_port)
    HOST=127.0.0.1 PORT=$port node "$ywss" >"$tmp/server.out" 2>&1 &
    pid=$!
    for ((t = 0; t < 100; t++)); do
      grep -q "running at" "$tmp/server.out" && return 0
      sleep 0.1
    done
  fi
  echo "bench_yjs: $1 did not start:" >&2
  cat "$tmp/server.out" >&2
  exit 1
}
stop() {
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=
}

# measure SERVER MODE(paced|max) -> appends "name value" lines to $tmp/SERVER.MODE
measure() {
  local args=(--subs "$subs" --shape "$shape")
  if [ "$2" = paced ]; then args+=(--secs "$paced_secs" --rate "$rate"); else args+=(--secs "$secs"); fi
  start "$1"
  if ! "$build/bench/bench_yjs" "$1" "$port" "${args[@]}" --pid "$pid" >"$tmp/out"; then
    echo "bench_yjs: the $1 $2 run failed; the server said:" >&2
    tail -5 "$tmp/server.out" >&2
    exit 1
  fi
  stop
  # y-websocket logs an update it cannot apply (and broadcasts nothing): bench_yjs.c's are checked
  if grep -qi error "$tmp/server.out"; then
    echo "bench_yjs: $1 logged an error:" >&2
    head -5 "$tmp/server.out" >&2
    exit 1
  fi
  cat "$tmp/out" >>"$tmp/$1.$2"
  printf 'run %d  %-5s %-5s %9.0f deliveries/s  p50 %7.2f ms  p99 %7.2f ms  %6.2f B/delivery  %6.2f us server, %5.2f us client CPU/delivery\n' \
    "$run" "$1" "$2" "$(awk '/^deliveries_s/ {print $2}' "$tmp/out")" "$(awk '/^p50_ms/ {print $2}' "$tmp/out")" \
    "$(awk '/^p99_ms/ {print $2}' "$tmp/out")" "$(awk '/^bytes_per_delivery/ {print $2}' "$tmp/out")" \
    "$(awk '/^server_cpu_us/ {print $2}' "$tmp/out")" "$(awk '/^client_cpu_us/ {print $2}' "$tmp/out")"
}

echo "fan-out to $subs subscribers of one document, small appends ($shape shape on Yjs), $runs rounds"
for ((run = 1; run <= runs; run++)); do
  if ((run % 2)); then order=(crdtd yjs); else order=(yjs crdtd); fi
  for s in "${order[@]}"; do measure "$s" paced; done
  for s in "${order[@]}"; do measure "$s" max; done
done

med() { awk -v k="$2" '$1 == k {print $2}' "$tmp/$1" | sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }
echo
echo "medians of $runs runs ($(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)):"
printf '  %-34s %12s %12s %8s\n' "" crdtd y-websocket ratio
row() { # label file key [inverse: ratio yjs/crdtd]
  local a b
  a=$(med "crdtd.$2" "$3")
  b=$(med "yjs.$2" "$3")
  printf '  %-34s %12.2f %12.2f %7.2fx\n' "$1" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN {print (b > 0 ? a / b : 0)}')"
}
row "deliveries/s, max rate" max deliveries_s
row "server CPU us/delivery, max rate" max server_cpu_us
row "p50 ms at 10,000 deliveries/s" paced p50_ms
row "p99 ms at 10,000 deliveries/s" paced p99_ms
row "bytes/delivery (same writes)" paced bytes_per_delivery
row "p99 ms at max rate" max p99_ms
row "client CPU us/delivery, max rate" max client_cpu_us
echo "targets (issue 17): deliveries/s >= 3x, bytes/delivery <= 1x, p99 at 10,000/s below y-websocket's"
