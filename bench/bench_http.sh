#!/bin/sh
# bench_http.sh - crdtd's HTTP API under wrk: timeline inserts and newest-50 selects, many
# keep-alive clients, with --fsync everysec against the same run with --no-persist.
#
#   bench/bench_http.sh [path/to/crdtd]     (default build/gateway/crdtd)
#   env: RUNS=3 DURATION=5 CONNS=64 THREADS=1 KEYS=1000
#
# Each run starts a fresh crdtd on a free loopback port (a temporary data directory), runs the
# insert workload, then the select workload against what the inserts wrote, and stops it. Prints
# every run and the medians, and the everysec / no-persist ratio of the medians.
set -eu
BIN=${1:-build/gateway/crdtd}
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
export KEYS=${KEYS:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
SCRIPT=$HERE/bench_http.lua
. "$HERE/bench_lib.sh"
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)"; exit 1; }
[ -x "$BIN" ] || { echo "no crdtd at $BIN"; exit 1; }
TMP=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM

# one_run MODE_FLAGS LABEL -> appends "LABEL insert|select rps p50 p99" lines to $TMP/results
one_run() {
    rm -rf "$TMP/data"
    crdtd_up "$BIN" "$TMP/crdtd" --data-dir "$TMP/data" $1
    port=$PORT
    for mode in insert select; do
        MODE=$mode wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s "$SCRIPT" \
            "http://127.0.0.1:$port" >"$TMP/wrk" 2>&1
        line=$(grep '^RESULT' "$TMP/wrk")
        echo "$2 $line"
        echo "$line" | sed "s/^RESULT /$2 /" >>"$TMP/results"
    done
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

: >"$TMP/results"
n=0
while [ $n -lt "$RUNS" ]; do
    one_run "--fsync everysec" everysec
    one_run "--no-persist" memory
    n=$((n + 1))
done

# medians per (label, mode) of rps, p50, p99
field() { grep "^$1 mode=$2 " "$TMP/results" | sed -n "s/.* $3=\([0-9.]*\).*/\1/p" | median; }
echo
echo "medians of $RUNS runs, $CONNS connections, $THREADS wrk thread(s), ${DURATION}s each, $KEYS keys:"
printf '%-10s %-7s %10s %9s %9s\n' policy op "req/s" "p50 ms" "p99 ms"
for label in everysec memory; do
    for mode in insert select; do
        printf '%-10s %-7s %10s %9s %9s\n' $label $mode "$(field $label $mode rps)" \
            "$(field $label $mode p50_ms)" "$(field $label $mode p99_ms)"
    done
done
for mode in insert select; do
    awk -v a="$(field everysec $mode rps)" -v b="$(field memory $mode rps)" -v m=$mode \
        'BEGIN { printf "ratio everysec / no-persist, %s: %.2f\n", m, a / b }'
done
