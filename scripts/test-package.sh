#!/usr/bin/env bash
# test-package.sh - builds the .deb (cpack), installs it with dpkg -i, starts the installed crdtd
# on a free loopback port, writes and reads through it, loads the installed crdt.so into a
# redis-server, checks the systemd unit, then removes the package. Prints TAP. Needs root (or
# sudo) for dpkg. Run after scripts/test.sh (it packages what build/ holds).
set -u
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
n=0 failed=0
check() { n=$((n+1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=$((failed+1)); fi; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/crdtd-pkg.XXXXXX")
pid=""
rpid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null
  [ -n "$rpid" ] && kill "$rpid" 2>/dev/null
  $SUDO dpkg -r crdtd >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT

(cd build && cpack -G DEB >"$tmp/cpack.log" 2>&1)
check $? "cpack builds a .deb"
deb=$(ls -t build/crdtd_*.deb 2>/dev/null | head -1)
test -n "$deb" && dpkg-deb --info "$deb" >"$tmp/info" 2>&1
check $? "the .deb is readable: $deb"
grep -q "Depends:.*libwebsockets" "$tmp/info"
check $? "its dependencies were computed (libwebsockets among them)"
$SUDO dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1
rc=$?
check $rc "dpkg -i installs it"
[ $rc = 0 ] || sed 's/^/# /' "$tmp/dpkg.log"
for f in /usr/bin/crdtd /usr/bin/crdtc /lib/systemd/system/crdtd.service /usr/include/crdt.h; do
  test -e "$f"
  check $? "installed $f"
done
mod=$(dpkg -L crdtd | grep '/redis/modules/crdt.so$' | head -1)
test -n "$mod"
check $? "installed crdt.so ($mod)"
dpkg -L crdtd | grep -q '/libcrdt\.so\.[0-9]*$' && dpkg -L crdtd | grep -q '/libcrdt\.a$' 
check $? "installed libcrdt, shared and static"
if command -v systemd-analyze >/dev/null 2>&1; then
  systemd-analyze verify /lib/systemd/system/crdtd.service >"$tmp/verify" 2>&1
  check $? "systemd-analyze verify accepts crdtd.service"
  [ -s "$tmp/verify" ] && sed 's/^/# /' "$tmp/verify"
fi

# port 0: the kernel picks a free one and crdtd prints it
/usr/bin/crdtd --data-dir "$tmp/data" --listen 127.0.0.1:0 >"$tmp/crdtd.log" 2>&1 &
pid=$!
up=1 port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's|.*listening on http://127.0.0.1:\([0-9]*\).*|\1|p' "$tmp/crdtd.log" | head -1)
  if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then up=0; break; fi
  sleep 0.1
done
check $up "the installed crdtd serves /healthz"
[ $up = 0 ] || tail -5 "$tmp/crdtd.log" | sed 's/^/# /'
curl -sf -X POST "http://127.0.0.1:$port/v1/keys/feed:1" \
  -d '{"type":"timeline","op":"add","member":"post:1","score":1700000000}' >"$tmp/post" 2>&1
check $? "a write through the installed crdtd"
curl -sf "http://127.0.0.1:$port/v1/keys/feed:1" >"$tmp/get" 2>&1 && grep -q '"member":"post:1"' "$tmp/get"
check $? "and it reads back"
# the web app: installed into /usr/share/crdtd/web, found there by the installed crdtd and served at /
for f in index.html app.js sw.js client.js crdt-wasm.js crdt.wasm files.json; do
  test -f "/usr/share/crdtd/web/$f"
  check $? "installed /usr/share/crdtd/web/$f"
done
grep -q "serving the files of /usr/share/crdtd/web at /" "$tmp/crdtd.log"
check $? "the installed crdtd serves the installed web app"
curl -sf "http://127.0.0.1:$port/" >"$tmp/index" 2>&1 && grep -q "crdtd feed" "$tmp/index"
check $? "the demo at /"
ctype=$(curl -sf -o /dev/null -w '%{content_type}' "http://127.0.0.1:$port/crdt.wasm")
test "$ctype" = "application/wasm"
check $? "crdt.wasm served as application/wasm ($ctype)"
kill -TERM "$pid"
st=1
for _ in $(seq 1 100); do
  if ! kill -0 "$pid" 2>/dev/null; then st=0; break; fi
  sleep 0.1
done
check $st "SIGTERM stops it"
pid=""

if command -v redis-server >/dev/null 2>&1 && [ -n "$mod" ]; then
  # a unix socket: no port to find free
  redis-server --port 0 --unixsocket "$tmp/redis.sock" --save "" --appendonly no --dir "$tmp" \
    --loadmodule "$mod" node-id 1 >"$tmp/redis.log" 2>&1 &
  rpid=$!
  ok=1
  for _ in $(seq 1 100); do
    if redis-cli -s "$tmp/redis.sock" ping >/dev/null 2>&1; then ok=0; break; fi
    sleep 0.1
  done
  [ $ok = 0 ] && redis-cli -s "$tmp/redis.sock" CRDT.TLADD feed 5 post:1 >/dev/null 2>&1 &&
    redis-cli -s "$tmp/redis.sock" CRDT.TLRANGE feed 0 10 2>/dev/null | grep -q "post:1"
  rc=$?
  check $rc "the installed crdt.so loads into redis-server and serves CRDT.* commands"
  [ $rc = 0 ] || tail -5 "$tmp/redis.log" | sed 's/^/# /'
  kill "$rpid" 2>/dev/null
  rpid=""
fi

$SUDO dpkg -r crdtd >"$tmp/remove.log" 2>&1
check $? "dpkg -r removes it"
test ! -e /usr/bin/crdtd
check $? "and its files are gone"
echo "1..$n"
[ $failed = 0 ]
