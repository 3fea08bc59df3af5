#!/bin/sh
# bench_roshi.sh - crdtd's roshi listener against roshi-server (over its own redis-server) and
# against bare_lws (libwebsockets answering the same requests without doing anything: the
# transport's ceiling), side by side in one run, under the same wrk load (bench/bench_roshi.lua):
# inserts of 10 tuples over a key space, then newest-50 selects of one key each.
#
#   ROSHI_SRC=/path/to/roshi bench/bench_roshi.sh
#   env: RUNS=3 DURATION=5 CONNS=64 THREADS=1 KEYS=1000 TUPLES=10 LIMIT=50 MAX_SIZE=1000
#        PERSIST=everysec|none   crdtd --fsync everysec and redis appendfsync everysec (default),
#                                or crdtd --no-persist and redis without AOF or RDB
#        BUILD=build             where crdtd and bare_lws are built (cmake), and roshi-server's
#                                cache (BUILD/roshi-server, see bench/roshi-server.sh)
#        ROSHI_SRC=DIR           a checkout of github.com/soundcloud/roshi; without it (or without
#                                Go) roshi-server is absent: the bench says so and compares
#                                crdtd with bare_lws only
#        ROSHI_FLAGS="..."       extra roshi-server flags (its defaults otherwise, -max.size=MAX_SIZE)
#        PERF=FILE               record crdtd's profile (perf record -g) into FILE during the middle
#                                of its first insert run; then: perf report -i FILE --stdio
#
# Needs wrk (apt-get install -y wrk), curl, and for roshi-server redis-server, redis-cli and Go
# (apt-get install -y golang-go). Everything listens on 127.0.0.1 (free ports), every server is
# started fresh for each (server, round), only one runs at a time, and every process is stopped
# at exit. Each round runs every server, in an order rotated per round; for each: the insert
# workload, a check select of one key (entries and bytes), then the select workload over the
# keys the inserts wrote. Prints every run, the medians, and the ratios of the medians:
# crdtd / roshi-server (issue 13's target >= 3) and crdtd / bare_lws (target >= 0.7), and
# each server's CPU time per request (its processes' user + system time; wrk's too, with GNU time).
# A run that got any non-2xx response (a server refusing the load would look fast) is flagged
# and makes the exit status 1.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${BUILD:-$HERE/../build}
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-64}
THREADS=${THREADS:-1}
export KEYS="${KEYS:-1000}" TUPLES="${TUPLES:-10}" LIMIT="${LIMIT:-50}"
MAX_SIZE=${MAX_SIZE:-1000}
PERSIST=${PERSIST:-everysec}
PERF=${PERF:-}
CRDTD=$BUILD/gateway/crdtd
BARE=$BUILD/bench/bare_lws
SCRIPT=$HERE/bench_roshi.lua

command -v wrk >/dev/null || { echo "wrk not found (apt-get install -y wrk)"; exit 1; }
command -v curl >/dev/null || { echo "curl not found"; exit 1; }
[ -x "$CRDTD" ] || { echo "no crdtd at $CRDTD (build it, or set BUILD)"; exit 1; }
[ -x "$BARE" ] || { echo "no bare_lws at $BARE (built with libwebsockets: cmake --build)"; exit 1; }
case $PERSIST in
everysec) CRDTD_PERSIST="--fsync everysec"; REDIS_PERSIST="--appendonly yes --appendfsync everysec" ;;
none) CRDTD_PERSIST="--no-persist"; REDIS_PERSIST="--appendonly no" ;;
*) echo "PERSIST is everysec or none"; exit 1 ;;
esac

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench_roshi.XXXXXX")
TMP=$(cd "$TMP" && pwd) # absolute: redis-server changes into its --dir before opening its log
SERVER_PIDS=
stop_servers() {
    for p in $SERVER_PIDS; do kill "$p" 2>/dev/null || true; done
    for p in $SERVER_PIDS; do
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.05; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    SERVER_PIDS=
}
cleanup() { stop_servers; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' HUP INT PIPE TERM

# roshi-server: built (or reused) from ROSHI_SRC, over a redis-server of its own
ROSHI_BIN=
rc=0
ROSHI_BIN=$("$HERE/roshi-server.sh" "$BUILD/roshi-server" 2>"$TMP/roshi-build") || rc=$?
if [ $rc -ne 0 ]; then
    ROSHI_BIN=
    ROSHI_ABSENT=$(tail -1 "$TMP/roshi-build")
    [ $rc -eq 1 ] && cat "$TMP/roshi-build"
elif ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
    ROSHI_BIN=
    ROSHI_ABSENT="roshi-server: not run: no redis-server / redis-cli (apt-get install -y redis-server)"
fi
SERVERS="crdtd bare"
if [ -n "$ROSHI_BIN" ]; then
    SERVERS="crdtd roshi bare"
else
    echo "*** $ROSHI_ABSENT"
    echo "*** roshi-server is ABSENT from this run: only crdtd / bare_lws is measured"
fi

# a free loopback port (the kernel's choice; a start that loses the race is retried)
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        awk 'BEGIN { srand(); print 20000 + int(rand() * 40000) }'
    fi
}

# wait_until CMD...: runs CMD every 50 ms until it succeeds, for at most 5 s
wait_until() {
    i=0
    until "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ $i -gt 100 ] && return 1
        sleep 0.05
    done
}
crdtd_ready() { grep -q "roshi API listening on http://[^:]*:[0-9][0-9]*$" "$TMP/crdtd.out"; }
redis_ready() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }
http_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$2")" = 200 ]; }
bare_ready() { grep -q "listening on http://[^:]*:[0-9][0-9]* " "$TMP/bare.out"; }

# start_SERVER: starts it fresh, sets PORT (its roshi API) and adds its processes to SERVER_PIDS
start_crdtd() {
    # the last round's output goes first: the readiness check could read it before the new
    # process's redirection truncates the file, and then find no port (wrk: "invalid URL")
    rm -rf "$TMP/crdtd-data" "$TMP/crdtd.out"
    # shellcheck disable=SC2086
    "$CRDTD" --listen 127.0.0.1:0 --roshi-listen 127.0.0.1:0 --data-dir "$TMP/crdtd-data" \
        --timeline-max-size "$MAX_SIZE" $CRDTD_PERSIST >"$TMP/crdtd.out" 2>"$TMP/crdtd.err" &
    SERVER_PIDS="$SERVER_PIDS $!"
    CRDTD_PID=$!
    wait_until crdtd_ready || { cat "$TMP/crdtd.err"; echo "crdtd did not start"; exit 1; }
    PORT=$(sed -n 's/.*roshi API listening on http:\/\/[^:]*:\([0-9]*\)$/\1/p' "$TMP/crdtd.out")
}
start_roshi() {
    tries=0
    while :; do
        tries=$((tries + 1))
        rm -rf "$TMP/redis" && mkdir -p "$TMP/redis"
        rport=$(free_port)
        # shellcheck disable=SC2086
        redis-server --bind 127.0.0.1 --port "$rport" --dir "$TMP/redis" --save '' \
            $REDIS_PERSIST --daemonize no --logfile "$TMP/redis.log" &
        SERVER_PIDS="$SERVER_PIDS $!"
        if wait_until redis_ready "$rport"; then
            PORT=$(free_port)
            # shellcheck disable=SC2086
            "$ROSHI_BIN" -redis.instances="127.0.0.1:$rport" -http.address="127.0.0.1:$PORT" \
                -max.size="$MAX_SIZE" ${ROSHI_FLAGS:-} >"$TMP/roshi.log" 2>&1 &
            SERVER_PIDS="$SERVER_PIDS $!"
            wait_until http_ready "$PORT" /metrics && return 0
        fi
        stop_servers
        [ $tries -ge 3 ] && { tail -5 "$TMP/redis.log" "$TMP/roshi.log"; echo "roshi-server did not start"; exit 1; }
    done
}
start_bare() {
    rm -f "$TMP/bare.out"
    "$BARE" 0 "$LIMIT" >"$TMP/bare.out" 2>"$TMP/bare.err" &
    SERVER_PIDS="$SERVER_PIDS $!"
    wait_until bare_ready || { cat "$TMP/bare.err"; echo "bare_lws did not start"; exit 1; }
    PORT=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$TMP/bare.out")
}

# CPU ticks (user + system) of the running servers' processes so far
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_ticks() {
    total=0
    for p in $SERVER_PIDS; do
        t=$(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        total=$((total + ${t:-0}))
    done
    echo "$total"
}
# wrk's own CPU time, where GNU time is installed
WRK_TIME=
[ -x /usr/bin/time ] && WRK_TIME="/usr/bin/time -f %U,%S -o $TMP/wrk.time"

# check_select NAME: one newest-LIMIT select of the first key; prints and records what came back
KEY0=$(printf 'tl%07d' 0 | base64)
check_select() {
    curl -s -o "$TMP/check" -w '%{http_code}' -X GET "http://127.0.0.1:$PORT/?limit=$LIMIT" \
        -H 'Content-Type: application/json' -d "[\"$KEY0\"]" >"$TMP/check.code" || true
    entries=$(grep -o '"member"' "$TMP/check" | wc -l)
    bytes=$(wc -c <"$TMP/check")
    echo "  check: select of 1 key after the inserts: HTTP $(cat "$TMP/check.code"), $entries entries, $bytes bytes"
    echo "$1 $entries $bytes" >>"$TMP/checks"
}

# measure NAME ROUND: the insert then the select workload against the server on PORT
measure() {
    for mode in insert select; do
        perf_pid=
        if [ -n "$PERF" ] && [ "$1" = crdtd ] && [ "$mode" = insert ] && [ "$2" = 1 ]; then
            secs=$((DURATION > 2 ? DURATION - 2 : 1))
            (sleep 1; perf record -q -g -o "$PERF" -p "$CRDTD_PID" -- sleep "$secs" \
                >"$TMP/perf.log" 2>&1) &
            perf_pid=$!
        fi
        t0=$(cpu_ticks)
        MODE=$mode $WRK_TIME wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" -s "$SCRIPT" \
            "http://127.0.0.1:$PORT" >"$TMP/wrk" 2>&1 || true
        t1=$(cpu_ticks)
        if [ -n "$perf_pid" ]; then
            wait "$perf_pid" || echo "  perf record failed: $(cat "$TMP/perf.log")"
        fi
        line=$(grep '^RESULT' "$TMP/wrk" || true)
        if [ -z "$line" ]; then
            cat "$TMP/wrk"
            echo "wrk gave no result (port $PORT)"
            if [ "$1" = crdtd ]; then
                kill -0 "$CRDTD_PID" 2>/dev/null && echo "crdtd $CRDTD_PID is running" ||
                    echo "crdtd $CRDTD_PID is gone"
                cat "$TMP/crdtd.out"; tail -20 "$TMP/crdtd.err"
            fi
            exit 1
        fi
        # CPU time per request: the server's processes (roshi-server with its redis-server), wrk
        reqs=$(echo "$line" | sed -n 's/.* requests=\([0-9]*\).*/\1/p')
        cpu=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v n="${reqs:-0}" \
            'BEGIN { if (n > 0) printf "%.2f", d * 1e6 / hz / n; else print 0 }')
        wcpu=0
        if [ -n "$WRK_TIME" ] && [ -s "$TMP/wrk.time" ]; then
            wcpu=$(awk -F, -v n="${reqs:-0}" 'END { if (n > 0) printf "%.2f", ($1 + $2) * 1e6 / n; else print 0 }' "$TMP/wrk.time")
        fi
        printf 'round %s %-6s %s cpu_us=%s wrk_cpu_us=%s\n' "$2" "$1" "${line#RESULT }" "$cpu" "$wcpu"
        echo "$line cpu_us=$cpu wrk_cpu_us=$wcpu" | sed "s/^RESULT /$1 /" >>"$TMP/results"
        case $line in
        *" non2xx=0 sockerr=0"*) ;;
        *) echo "  *** $1 $mode: responses that are not 2xx, or socket errors: this run does not count"
           echo "$1 $mode" >>"$TMP/invalid" ;;
        esac
        if [ $mode = insert ]; then check_select "$1"; fi
    done
}

: >"$TMP/results"
: >"$TMP/checks"
: >"$TMP/invalid"
nservers=$(echo "$SERVERS" | wc -w)
echo "bench_roshi: $RUNS round(s) of [$SERVERS], wrk -t$THREADS -c$CONNS -d${DURATION}s," \
    "$TUPLES-tuple inserts and newest-$LIMIT selects over $KEYS keys, max size $MAX_SIZE," \
    "persistence $PERSIST"
r=1
while [ "$r" -le "$RUNS" ]; do
    # rotate the order each round so that no server always runs first or last
    order=$(echo "$SERVERS" | awk -v k=$(((r - 1) % nservers)) \
        '{ for (i = 0; i < NF; i++) printf "%s ", $((i + k) % NF + 1) }')
    for s in $order; do
        "start_$s"
        measure "$s" "$r"
        stop_servers
    done
    r=$((r + 1))
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
field() { grep "^$1 mode=$2 " "$TMP/results" | sed -n "s/.* $3=\([0-9.]*\).*/\1/p" | median; }
name() { case $1 in crdtd) echo "crdtd (roshi listener)" ;; roshi) echo roshi-server ;; bare) echo bare_lws ;; esac; }
echo
echo "medians of $RUNS round(s), $CONNS connections, $THREADS wrk thread(s), ${DURATION}s each:"
printf '%-24s %-7s %10s %9s %9s %14s %11s %11s\n' server op "req/s" "p50 ms" "p99 ms" "tuples/s" \
    "cpu us/req" "wrk us/req"
for s in $SERVERS; do
    for mode in insert select; do
        rps=$(field "$s" $mode rps)
        per=$([ $mode = insert ] && echo "$TUPLES" || echo 1)
        printf '%-24s %-7s %10s %9s %9s %14s %11s %11s\n' "$(name "$s")" $mode "$rps" \
            "$(field "$s" $mode p50_ms)" "$(field "$s" $mode p99_ms)" \
            "$([ $mode = insert ] && awk -v r="$rps" -v t="$per" 'BEGIN { printf "%.0f", r * t }' || echo -)" \
            "$(field "$s" $mode cpu_us)" "$(field "$s" $mode wrk_cpu_us)"
    done
done
for s in $SERVERS; do
    awk -v s="$s" -v n="$(name "$s")" '$1 == s { e = $2; b = $3 }
        END { printf "%-24s check select: %s entries, %s bytes; ", n, e, b }' "$TMP/checks"
    awk -v s="$s" '$1 == s { for (i = 2; i <= NF; i++) if ($i ~ /^(non2xx|sockerr)=/) {
            split($i, kv, "="); t[kv[1]] += kv[2] } }
        END { printf "non-2xx responses %d, socket errors %d (all runs)\n", t["non2xx"], t["sockerr"] }' \
        "$TMP/results"
done
ratio() { # ratio LABEL A B TARGET
    awk -v a="$2" -v b="$3" -v t="$4" -v l="$1" 'BEGIN {
        if (b + 0 == 0) { printf "%s: no figure\n", l; exit }
        printf "%-36s %6.2f   (target >= %s: %s)\n", l, a / b, t, (a / b >= t) ? "met" : "NOT met" }'
}
echo
for mode in insert select; do
    c=$(field crdtd $mode rps)
    if [ -n "$ROSHI_BIN" ]; then
        ratio "crdtd / roshi-server, $mode" "$c" "$(field roshi $mode rps)" 3
    else
        echo "crdtd / roshi-server, $mode:         roshi-server ABSENT (${ROSHI_ABSENT#roshi-server: })"
    fi
    ratio "crdtd / bare_lws, $mode" "$c" "$(field bare $mode rps)" 0.7
done
echo
echo "CPU per request (the servers' user + system time over their requests; less moved by the"
echo "machine's other load than requests/s): the share of crdtd's cost that is bare_lws's"
for mode in insert select; do
    awk -v b="$(field bare $mode cpu_us)" -v c="$(field crdtd $mode cpu_us)" -v m="$mode" 'BEGIN {
        if (c + 0 > 0) printf "bare_lws / crdtd CPU per request, %-7s %6.2f   (%s / %s us)\n", m, b / c, b, c }'
done
if [ -s "$TMP/invalid" ]; then
    echo
    echo "*** INVALID: runs with non-2xx responses or socket errors: $(sort -u "$TMP/invalid" | tr '\n' ' ')"
    exit 1
fi
