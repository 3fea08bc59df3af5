#!/bin/sh
# bench_redis_primaries.sh - timeline inserts through one crdtd (--store redis://) over a Redis
# Cluster of 1, 2 and 3 primaries (no replicas, no persistence, slots split evenly with
# CLUSTER ADDSLOTSRANGE), wrk -c64 with bench/bench_http.lua for DURATION seconds, one run each.
#
#   bench/bench_redis_primaries.sh      (from the repository root, after the build)
#   env: DURATION=5 KEYS=1000; uses loopback ports 17801-17804 (and their bus ports +10000)
set -eu
W=$(cd "$(dirname "$0")/.." && pwd)
B=$W/build
DURATION=${DURATION:-5}
export KEYS=${KEYS:-1000}
T=$(mktemp -d)
CP=
cleanup() {
    [ -n "$CP" ] && kill $CP 2>/dev/null || true
    for p in 17801 17802 17803; do redis-cli -p $p shutdown nosave >/dev/null 2>&1 || true; done
    rm -rf "$T"
}
trap cleanup EXIT
for n in 1 2 3; do
    seeds=
    i=0
    for p in $(seq 17801 $((17800 + n))); do
        mkdir -p "$T/$n-$p"
        (cd "$T/$n-$p" && redis-server --bind 127.0.0.1 --port $p --cluster-enabled yes \
            --cluster-config-file nodes.conf --save '' --appendonly no \
            --loadmodule "$B/redis-module/crdt.so" node-id $p --daemonize yes --logfile log)
        seeds="$seeds${seeds:+,}127.0.0.1:$p"
    done
    sleep 0.5
    i=0
    for p in $(seq 17801 $((17800 + n))); do
        lo=$((16384 * i / n)); hi=$((16384 * (i + 1) / n - 1))
        redis-cli -p $p cluster addslotsrange $lo $hi >/dev/null
        [ $p != 17801 ] && redis-cli -p $p cluster meet 127.0.0.1 17801 >/dev/null
        i=$((i + 1))
    done
    for p in $(seq 17801 $((17800 + n))); do
        until redis-cli -p $p cluster info | grep -q cluster_state:ok; do sleep 0.1; done
    done
    sleep 1
    "$B/gateway/crdtd" --store "redis://$seeds" --listen 127.0.0.1:17804 >"$T/c.out" 2>"$T/c.err" &
    CP=$!
    sleep 1
    MODE=insert wrk -t1 -c64 -d"${DURATION}s" -s "$W/bench/bench_http.lua" http://127.0.0.1:17804 \
        | grep '^RESULT' | sed "s/^RESULT /primaries=$n /"
    kill $CP; wait $CP 2>/dev/null || true; CP=
    for p in $(seq 17801 $((17800 + n))); do redis-cli -p $p shutdown nosave >/dev/null 2>&1 || true; done
    sleep 0.5
done
