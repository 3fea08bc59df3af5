#!/usr/bin/env bash
# redis_log_callgrind.sh - instructions per CRDT.TLADD with the change log and without, counted by
# callgrind on a cluster-enabled redis-server (one node serving every slot, no replicas), so the
# cost of the log's append path is measured without the noise of a shared machine.
#
#   bench/redis_log_callgrind.sh [path/to/crdt.so] [writes]
#   env KEYS (default 1000): keys written; KEYS=10 with 60000 writes keeps the logs trimming
#
# The writes are bench_redis's stream (1,000 keys tl:<k>, scores 1600000000 + i/4 + jitter,
# members item:<0..149999>), sent by redis-cli --pipe. Each deployment runs once under callgrind;
# an idle run (start, slots, shutdown) is subtracted. Prints instructions per write of each and the
# ratio without/with (the instruction-count side of bench_redis's "log on vs off").
set -euo pipefail
MOD=$(realpath "${1:-build-redis-rel/redis-module/crdt.so}")
OPS=${2:-200000}
for t in redis-server redis-cli valgrind callgrind_annotate awk; do
    command -v "$t" >/dev/null || { echo "redis_log_callgrind: $t not found" >&2; exit 1; }
done
[ -r "$MOD" ] || { echo "redis_log_callgrind: no module at $MOD (build crdt_module)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

awk -v n="$OPS" -v nk="${KEYS:-1000}" 'BEGIN {
    srand(1)
    for (i = 0; i < n; i++) {
        key = "tl:" int(rand() * nk)
        score = 1600000000 + int(i / 4) + int(rand() * 1000)
        member = "item:" int(rand() * 150000)
        printf "*4\r\n$10\r\nCRDT.TLADD\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n",
               length(key), key, length(score ""), score, length(member), member
    }
}' >"$dir/writes.resp"

# A port nothing listens on. run is called in $(...): each subshell starts from the parent's
# RANDOM state, so it is reseeded from its own PID, or every run would pick the same port.
free_port() {
    local p
    RANDOM=$BASHPID
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 30000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    echo "redis_log_callgrind: no free port" >&2
    exit 1
}

# run NAME "module args" FILE|-: instructions of the whole server run
run() {
    local name=$1 margs=$2 file=$3 port
    port=$(free_port)
    mkdir -p "$dir/$name"
    # shellcheck disable=SC2086 # margs are separate words
    (cd "$dir/$name" && exec valgrind --tool=callgrind --callgrind-out-file="$dir/$name.cg" \
        redis-server --port "$port" --bind 127.0.0.1 --save "" --cluster-enabled yes \
        --loadmodule "$MOD" node-id 1 timeline-max-size 10000 $margs --logfile r.log \
        >"$dir/$name/vg.log" 2>&1) &
    local pid=$!
    for _ in $(seq 600); do
        [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
        sleep 0.2
    done
    if [ "$(redis-cli -p "$port" cluster addslotsrange 0 16383 2>&1)" != OK ]; then
        echo "redis_log_callgrind: $name: server did not start" >&2
        tail -n 5 "$dir/$name/r.log" "$dir/$name/vg.log" >&2 || true
        exit 1
    fi
    for _ in $(seq 300); do
        case "$(redis-cli -p "$port" cluster info 2>/dev/null)" in *cluster_state:ok*) break ;; esac
        sleep 0.2
    done
    if [ "$file" != - ]; then
        case "$(redis-cli -p "$port" --pipe <"$file")" in
        *"errors: 0,"*) ;;
        *) echo "redis_log_callgrind: writes failed on $name" >&2; exit 1 ;;
        esac
    fi
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" || true
    callgrind_annotate "$dir/$name.cg" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}

idle=$(run idle "" -)
off=$(run off "log no" "$dir/writes.resp")
on=$(run on "" "$dir/writes.resp")
awk -v i="$idle" -v a="$off" -v b="$on" -v n="$OPS" 'BEGIN {
    off = (a - i) / n; on = (b - i) / n
    printf "redis_log_callgrind: %d CRDT.TLADD, instructions per write (server, idle run subtracted)\n", n
    printf "  log off %8.0f\n  log on  %8.0f   the log: +%.0f per write\n", off, on, on - off
    printf "  ratio off/on %.2f (the instruction-count side of bench_redis log on vs off)\n", off / on
}'
