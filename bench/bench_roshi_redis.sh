#!/bin/sh
# bench_roshi_redis.sh - the roshi API on one Redis, one run each: roshi-server (the baseline)
# against crdtd --store redis:// --roshi-listen on the same redis-server (with crdt.so, no
# persistence, FLUSHALL between them), under bench/bench_roshi.lua (inserts of TUPLES tuples,
# then newest-LIMIT selects), wrk -c64 for DURATION seconds each.
#
#   ROSHI_SRC=/path/to/roshi bench/bench_roshi_redis.sh     (from the repository root, after the build)
#   env: DURATION=5 KEYS=1000 TUPLES=10 LIMIT=50; FOLLOW=no runs crdtd with --redis-follow no
#   (a gateway that serves no WebSocket session and no peer: docs/scale-out.md); uses loopback
#   ports 17701-17703
set -eu
W=$(cd "$(dirname "$0")/.." && pwd)
B=$W/build
DURATION=${DURATION:-5}
export KEYS="${KEYS:-1000}" TUPLES="${TUPLES:-10}" LIMIT="${LIMIT:-50}"
ROSHI_BIN=$("$W/bench/roshi-server.sh" "$B/roshi-server")
T=$(mktemp -d)
PIDS=
trap 'for p in $PIDS; do kill $p 2>/dev/null || true; done; redis-cli -p 17701 shutdown nosave >/dev/null 2>&1 || true; rm -rf $T' EXIT
redis-server --bind 127.0.0.1 --port 17701 --dir "$T" --save '' --appendonly no \
    --loadmodule "$B/redis-module/crdt.so" node-id 301 --daemonize yes --logfile "$T/redis.log"
sleep 0.5
run() { # label port
    for mode in insert select; do
        MODE=$mode wrk -t1 -c64 -d"${DURATION}s" -s "$W/bench/bench_roshi.lua" \
            "http://127.0.0.1:$2" 2>&1 | grep '^RESULT' | sed "s/^RESULT /$1 /"
    done
}
"$ROSHI_BIN" -redis.instances=127.0.0.1:17701 -http.address=127.0.0.1:17702 -max.size=1000 \
    >"$T/roshi.log" 2>&1 &
PIDS="$PIDS $!"
sleep 1
run roshi-server 17702
kill $PIDS; PIDS=
redis-cli -p 17701 flushall >/dev/null
"$B/gateway/crdtd" --store redis://127.0.0.1:17701 --listen 127.0.0.1:0 \
    --roshi-listen 127.0.0.1:17703 --redis-follow "${FOLLOW:-yes}" >"$T/crdtd.out" 2>"$T/crdtd.err" &
PIDS="$PIDS $!"
sleep 1
run crdtd-redis 17703
