#!/bin/sh
# bench_http_redis.sh - timeline inserts through crdtd's REST API under wrk (bench_http.lua, 64
# connections, 5 s, one run each): the embedded store (--no-persist) as the baseline, then
# --store redis:// over one redis-server with crdt.so (no persistence), following the change logs
# and not. Run from the repository root after the build: bench/bench_http_redis.sh
# Uses loopback ports 17601-17604.
set -eu
W=$(cd "$(dirname "$0")/.." && pwd); B=$W/build; T=$(mktemp -d); cd $T
trap 'rm -rf $T' EXIT
export KEYS=1000
redis-server --port 17601 --loadmodule $B/redis-module/crdt.so node-id 201 --save "" --appendonly no --daemonize yes --pidfile $T/r.pid --logfile $T/r.log
sleep 0.5
$B/gateway/crdtd --no-persist --listen 127.0.0.1:17602 >$T/e.out 2>$T/e.err & P1=$!
sleep 0.5
MODE=insert wrk -t1 -c64 -d5s -s $W/bench/bench_http.lua http://127.0.0.1:17602 | grep RESULT | sed 's/^/embedded /'
kill $P1; wait $P1 || true
$B/gateway/crdtd --store redis://127.0.0.1:17601 --listen 127.0.0.1:17603 >$T/r.out 2>$T/r.err & P2=$!
sleep 1
MODE=insert wrk -t1 -c64 -d5s -s $W/bench/bench_http.lua http://127.0.0.1:17603 | grep RESULT | sed 's/^/redis /'
kill $P2; wait $P2 || true
$B/gateway/crdtd --store redis://127.0.0.1:17601 --redis-follow no --listen 127.0.0.1:17604 >$T/r2.out 2>$T/r2.err & P3=$!
sleep 1
MODE=insert wrk -t1 -c64 -d5s -s $W/bench/bench_http.lua http://127.0.0.1:17604 | grep RESULT | sed 's/^/redis-nofollow /'
kill $P3; wait $P3 || true
redis-cli -p 17601 shutdown nosave
