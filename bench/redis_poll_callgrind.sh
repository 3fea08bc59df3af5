#!/usr/bin/env bash
# redis_poll_callgrind.sh - instructions per CRDT.LOG.POLL and per CRDT.LOG.READ of crdt.so's change
# logs, counted by callgrind on one redis-server (no cluster, no replicas), so the cost of a
# follower's reads is measured without the noise of a shared machine.
#
#   bench/redis_poll_callgrind.sh [path/to/crdt.so] [polls]
#
# 20,000 CRDT.TLADD over 1,000 keys (so about 1,000 logs of 20 entries), then, under callgrind:
#   idle  POLL of every log at its end ($ read once before), as a gateway's follower sends it when
#         nothing changed: `polls` times;
#   read  CRDT.LOG.READ <log> 0 100 of every log (each returns its 20 entries): `polls` times 1,000;
#   tail  POLL of every log at its end after one more write to each of 100 keys: `polls` times
#         (the same 100 logs answer each time: their positions are not moved on).
# Each phase's instructions are the difference of two runs (with and without the phase: the
# writes and the reads of the positions are in both).
set -euo pipefail
MOD=$(realpath "${1:-build/redis-module/crdt.so}")
POLLS=${2:-50}
for t in redis-server redis-cli valgrind callgrind_annotate awk; do
    command -v "$t" >/dev/null || { echo "redis_poll_callgrind: $t not found" >&2; exit 1; }
done
[ -r "$MOD" ] || { echo "redis_poll_callgrind: no module at $MOD (build crdt_module)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

# RESP of one command from its arguments
resp() {
    printf '*%d\r\n' $#
    for a in "$@"; do printf '$%d\r\n%s\r\n' ${#a} "$a"; done
}
awk 'BEGIN {
    srand(1)
    for (i = 0; i < 20000; i++) {
        key = "tl:" (i % 1000); score = 1600000000 + i; member = "item:" int(rand() * 150000)
        printf "*4\r\n$10\r\nCRDT.TLADD\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n",
               length(key), key, length(score ""), score, length(member), member
    }
}' >"$dir/writes.resp"
awk 'BEGIN {
    for (i = 0; i < 100; i++) {
        key = "tl:" i; member = "new:" i
        printf "*4\r\n$10\r\nCRDT.TLADD\r\n$%d\r\n%s\r\n$10\r\n1700000000\r\n$%d\r\n%s\r\n",
               length(key), key, length(member), member
    }
}' >"$dir/more.resp"

# A port nothing listens on. run is called in $(...): each subshell starts from the parent's
# RANDOM state, so it is reseeded from its own PID, or every run would pick the same port.
free_port() {
    local p
    RANDOM=$BASHPID
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 30000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    echo "redis_poll_callgrind: no free port" >&2
    exit 1
}

pipe() { # port file
    case "$(redis-cli -p "$1" --pipe <"$2")" in
    *"errors: 0,"*) ;;
    *) echo "redis_poll_callgrind: commands failed ($2)" >&2; exit 1 ;;
    esac
}

# run NAME PHASE: instructions of the whole server run (PHASE: none, idle, read, more, tail;
# more is tail without its polls)
run() {
    local name=$1 phase=$2 port
    port=$(free_port)
    mkdir -p "$dir/$name"
    (cd "$dir/$name" && exec valgrind --tool=callgrind --callgrind-out-file="$dir/$name.cg" \
        redis-server --port "$port" --bind 127.0.0.1 --save "" \
        --loadmodule "$MOD" node-id 1 --logfile r.log >"$dir/$name/vg.log" 2>&1) &
    local pid=$!
    for _ in $(seq 600); do
        [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
        sleep 0.2
    done
    pipe "$port" "$dir/writes.resp"
    redis-cli -p "$port" crdt.log.list >"$dir/$name/logs"
    # positions at the end (then, for tail, the writes: every poll finds the 100 logs written)
    while read -r l; do
        printf '%s %s ' "$l" "$(redis-cli -p "$port" crdt.log.read "$l" '$' 1 | head -1)"
    done <"$dir/$name/logs" >"$dir/$name/args"
    case $phase in more | tail) pipe "$port" "$dir/more.resp" ;; esac
    : >"$dir/$name/cmds.resp"
    case $phase in
    idle | tail)
        # shellcheck disable=SC2046 # the log/position pairs are separate words
        for _ in $(seq "$POLLS"); do resp CRDT.LOG.POLL 100000 $(cat "$dir/$name/args"); done \
            >"$dir/$name/cmds.resp"
        ;;
    read)
        for _ in $(seq "$POLLS"); do
            while read -r l; do resp CRDT.LOG.READ "$l" 0 100; done <"$dir/$name/logs"
        done >"$dir/$name/cmds.resp"
        ;;
    esac
    [ -s "$dir/$name/cmds.resp" ] && pipe "$port" "$dir/$name/cmds.resp"
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" || true
    callgrind_annotate "$dir/$name.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

base=$(run base none)
idle=$(run idle idle)
read=$(run read read)
more=$(run more more)
tail=$(run tail tail)
nlogs=$(wc -l <"$dir/base/logs")
awk -v b="$base" -v i="$idle" -v r="$read" -v m="$more" -v t="$tail" -v p="$POLLS" -v n="$nlogs" 'BEGIN {
    printf "redis_poll_callgrind: %d logs of about 20 entries, %d rounds (server instructions)\n", n, p
    printf "  POLL, every log at its end       %10.0f per poll, %6.0f per log\n", (i - b) / p, (i - b) / p / n
    printf "  POLL, 100 logs with one new entry %9.0f per poll\n", (t - m) / p
    printf "  READ <log> 0 100 (20 entries)     %9.0f per read\n", (r - b) / p / n
}'
