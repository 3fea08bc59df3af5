# bench_lib.sh - shell helpers of the HTTP benchmarks, sourced by bench_http*.sh

# The median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# crdtd_up BIN PREFIX FLAGS... - starts BIN on a free loopback port with FLAGS, its stdout and
# stderr in PREFIX.out and PREFIX.err; sets PID and PORT once the port is printed (at most 20 s).
crdtd_up() {
    _bin=$1 _pre=$2
    shift 2
    "$_bin" --listen 127.0.0.1:0 "$@" >"$_pre.out" 2>"$_pre.err" &
    PID=$!
    PORT=
    _i=0
    while [ -z "$PORT" ]; do
        _i=$((_i + 1))
        [ $_i -gt 400 ] && { echo "crdtd ($_bin) did not start:"; cat "$_pre.err"; exit 1; }
        sleep 0.05
        PORT=$(sed -n 's/.*listening on http:\/\/[^:]*:\([0-9][0-9]*\)$/\1/p' "$_pre.out" | head -1)
    done
}
