#!/usr/bin/env bash
# roshi_callgrind.sh - user-space instructions per roshi request (10-tuple inserts, newest-50
# selects: bench_roshi.lua's load) of crdtd's roshi listener and of bare_lws, counted by callgrind,
# so a change to the roshi path can be measured without the noise of a shared machine. The
# kernel's work (a third to a half of each server's CPU time) is not counted: bench_roshi.sh
# measures the whole.
#
#   bench/roshi_callgrind.sh [BUILD] [SECONDS]       (defaults: build 5)
#   env KEEP=DIR: keep the callgrind files in DIR (crdtd.cg.2 the inserts, crdtd.cg.3 the selects;
#   callgrind_annotate --inclusive=no --threshold=100 FILE lists the functions)
#
# Each server runs under callgrind on a free loopback port; wrk (one thread, 8 connections) sends
# inserts for SECONDS, then selects of the keys written (KEYS=100) for SECONDS; callgrind's counts
# are dumped at the end of each phase and divided by the requests wrk made in it. Prints, per
# server and phase, requests and instructions per request, then crdtd / bare_lws per phase.
set -euo pipefail
BUILD=$(realpath "${1:-build}")
SECS=${2:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
for t in valgrind callgrind_control callgrind_annotate wrk curl; do
    command -v "$t" >/dev/null || { echo "roshi_callgrind: $t not found" >&2; exit 1; }
done
for b in gateway/crdtd bench/bare_lws; do
    [ -x "$BUILD/$b" ] || { echo "roshi_callgrind: no $BUILD/$b (build it)" >&2; exit 1; }
done
dir=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$dir"/*.cg.* "$KEEP"/; rm -rf "$dir"' EXIT

# the port a server printed in FILE ("... listening on http://127.0.0.1:PORT...")
port_of() {
    sed -n "s/^$2.*listening on http:\/\/127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p" "$1" | head -1
}

# phase NAME MODE PORT: wrk's requests of one phase, then callgrind's dump of it
phase() {
    local n
    n=$(MODE=$2 KEYS=100 TUPLES=10 LIMIT=50 wrk -t1 -c8 -d"${SECS}s" -s "$HERE/bench_roshi.lua" \
        "http://127.0.0.1:$3" | sed -n 's/^ *\([0-9][0-9]*\) requests in.*/\1/p')
    callgrind_control -d "$PID" >/dev/null 2>&1
    sleep 1
    echo "$1 $2 $n" >>"$dir/phases"
}

run() { # NAME PRINTED-NAME COMMAND...
    local name=$1 who=$2 p i
    shift 2
    valgrind --tool=callgrind --callgrind-out-file="$dir/$name.cg" "$@" >"$dir/$name.out" 2>"$dir/$name.err" &
    PID=$!
    p=
    for i in $(seq 1 300); do
        p=$(port_of "$dir/$name.out" "$who")
        [ -n "$p" ] && curl -s -o /dev/null "http://127.0.0.1:$p/" && break
        p=
        sleep 0.1
    done
    [ -n "$p" ] || { echo "roshi_callgrind: $name did not start" >&2; cat "$dir/$name.err" >&2; exit 1; }
    callgrind_control -d "$PID" >/dev/null 2>&1 # the start-up, dropped (part 1)
    sleep 1
    phase "$name" insert "$p"
    phase "$name" select "$p"
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
}

run crdtd "crdtd: roshi API" "$BUILD/gateway/crdtd" --data-dir "$dir/data" --fsync everysec \
    --listen 127.0.0.1:0 --roshi-listen 127.0.0.1:0
run bare "bare_lws:" "$BUILD/bench/bare_lws" 0

# part 2 is the inserts, part 3 the selects
total() { callgrind_annotate "$1" 2>/dev/null | sed -n 's/^ *\([0-9,]*\) .*PROGRAM TOTALS.*/\1/p' | tr -d ,; }
printf '%-8s %-7s %9s %14s\n' server op requests instr/request
k=2 prev_name=
declare -A per
while read -r name mode n; do
    [ "$name" = "$prev_name" ] 2>/dev/null || k=2
    prev_name=$name
    t=$(total "$dir/$name.cg.$k")
    per[$name.$mode]=$((t / n))
    printf '%-8s %-7s %9d %14d\n' "$name" "$mode" "$n" "${per[$name.$mode]}"
    k=$((k + 1))
done <"$dir/phases"
for mode in insert select; do
    awk -v c="${per[crdtd.$mode]}" -v b="${per[bare.$mode]}" -v m="$mode" \
        'BEGIN { printf "crdtd / bare_lws instructions per request, %s: %.2f\n", m, c / b }'
done
