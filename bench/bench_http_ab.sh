#!/bin/sh
# bench_http_ab.sh - bench_http.sh for two crdtd builds, alternating in one run: the ratio of a
# change against its base on the same machine at the same time.
#
#   bench/bench_http_ab.sh BASE_CRDTD NEW_CRDTD      env: ROUNDS=3 (+ bench_http.sh's env)
#
# Each round runs one bench_http.sh pass (everysec and no-persist, inserts and selects) with the
# base binary, then one with the new; prints the medians over rounds and new / base of req/s.
set -eu
BASE=$1
NEW=$2
ROUNDS=${ROUNDS:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/bench_lib.sh"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT INT TERM
r=0
while [ $r -lt "$ROUNDS" ]; do
    for which in base new; do
        bin=$BASE
        [ $which = new ] && bin=$NEW
        RUNS=1 "$HERE/bench_http.sh" "$bin" | grep ' RESULT ' | sed "s/^/$which /" | tee -a "$TMP/all"
    done
    r=$((r + 1))
done
field() { grep "^$1 $2 RESULT mode=$3 " "$TMP/all" | sed -n "s/.* $4=\([0-9.]*\).*/\1/p" | median; }
echo
echo "medians of $ROUNDS alternating rounds:"
printf '%-10s %-7s %10s %10s %7s %9s %9s\n' policy op "base req/s" "new req/s" "new/base" \
    "base p99" "new p99"
for label in everysec memory; do
    for mode in insert select; do
        b=$(field base $label $mode rps)
        n=$(field new $label $mode rps)
        awk -v l=$label -v m=$mode -v b="$b" -v n="$n" -v bp="$(field base $label $mode p99_ms)" \
            -v np="$(field new $label $mode p99_ms)" \
            'BEGIN { printf "%-10s %-7s %10.0f %10.0f %7.2f %9s %9s\n", l, m, b, n, n / b, bp, np }'
    done
done
