#!/bin/sh
# bench_http_cpu.sh - crdtd's CPU time per HTTP request, base against new, alternating rounds in
# one run: on a loaded machine requests/s follow the other load, CPU time per request much less.
#
#   bench/bench_http_cpu.sh BASE_CRDTD NEW_CRDTD    env: ROUNDS=5 DURATION=4 CONNS=16 KEYS=1000
#
# Each round and binary: a fresh crdtd (--fsync everysec, fresh data directory), bench_http.lua's
# inserts then its newest-50 selects under wrk; the crdtd process's user+system time over each
# workload (/proc/PID/stat) divided by the requests wrk completed. Prints the medians and new/base.
set -eu
BASE=$1
NEW=$2
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4}
CONNS=${CONNS:-16}
export KEYS=${KEYS:-1000}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/bench_lib.sh"
TMP=$(mktemp -d)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT INT TERM
TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

one() { # BIN LABEL
    rm -rf "$TMP/data"
    crdtd_up "$1" "$TMP/crdtd" --data-dir "$TMP/data"
    port=$PORT
    for mode in insert select; do
        t0=$(cpu_ticks $PID)
        MODE=$mode wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$HERE/bench_http.lua" \
            "http://127.0.0.1:$port" >"$TMP/wrk" 2>&1
        t1=$(cpu_ticks $PID)
        reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$TMP/wrk")
        us=$(awk -v t=$((t1 - t0)) -v r="$reqs" -v h="$TCK" 'BEGIN { printf "%.2f", t / h * 1e6 / r }')
        echo "$2 $mode us_per_req=$us requests=$reqs" | tee -a "$TMP/all"
    done
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}

r=0
while [ $r -lt "$ROUNDS" ]; do
    one "$BASE" base
    one "$NEW" new
    r=$((r + 1))
done
field() { grep "^$1 $2 " "$TMP/all" | sed -n 's/.*us_per_req=\([0-9.]*\).*/\1/p' | median; }
echo
echo "crdtd CPU us per request, medians of $ROUNDS alternating rounds ($CONNS connections):"
for mode in insert select; do
    awk -v m=$mode -v b="$(field base $mode)" -v n="$(field new $mode)" \
        'BEGIN { printf "%-7s base %7.2f  new %7.2f  new/base %.3f\n", m, b, n, n / b }'
done
