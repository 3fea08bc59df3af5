#!/bin/sh
# roshi-server.sh - builds soundcloud/roshi's roshi-server from a source tree, for bench_roshi.sh.
#
#   ROSHI_SRC=/path/to/roshi bench/roshi-server.sh [CACHE_DIR]   (default build/roshi-server)
#
# ROSHI_SRC is a checkout (or an export) of github.com/soundcloud/roshi: clone that public
# repository into a directory of your choice and point ROSHI_SRC at it. Nothing of roshi is kept
# in this repository. The build needs Go (Debian: apt-get install -y golang-go) and no network:
# roshi vendors its dependencies (_vendor/src, which roshi-server's own Makefile puts first on
# GOPATH; older trees have Godeps/_workspace or vendor/), so it builds in GOPATH mode
# (GO111MODULE=off, GOPROXY=off) with the source copied to $CACHE_DIR/gopath/src/github.com/
# soundcloud/roshi. Debian bookworm's Go 1.19 builds roshi's master in a few seconds.
#
# Prints the path of the binary on stdout and exits 0. Exits 2 with a message on stderr when it
# cannot build: no ROSHI_SRC, no Go, or not a roshi tree (the caller skips roshi-server then);
# 1 when the build itself fails. A build is reused while the source's .go files are unchanged.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${1:-$HERE/../build/roshi-server}

skip() { echo "roshi-server: $*" >&2; exit 2; }
[ -n "${ROSHI_SRC:-}" ] ||
    skip "not built: set ROSHI_SRC to a checkout of github.com/soundcloud/roshi"
[ -f "$ROSHI_SRC/roshi-server/main.go" ] ||
    skip "not built: $ROSHI_SRC is not a roshi source tree (no roshi-server/main.go)"
command -v go >/dev/null 2>&1 ||
    skip "not built: no Go toolchain (apt-get install -y golang-go)"

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
SRC=$(cd "$ROSHI_SRC" && pwd)
BIN=$CACHE/bin/roshi-server
# the identity of the source: every .go file's path and content
stamp=$(cd "$SRC" && find . -name '*.go' -type f -not -path './.git/*' | LC_ALL=C sort |
        while read -r f; do echo "$f"; cat "$f"; done | sha256sum | cut -c1-16)
if [ -x "$BIN" ] && [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$BIN"
    exit 0
fi

GOPATH_DIR=$CACHE/gopath
TREE=$GOPATH_DIR/src/github.com/soundcloud/roshi
rm -rf "$TREE" "$CACHE/stamp"
mkdir -p "$TREE" "$CACHE/bin"
(cd "$SRC" && tar --exclude=./.git -cf - .) | (cd "$TREE" && tar -xf -)

# vendored dependencies: the first layout found goes in front of our GOPATH (vendor/ needs
# nothing: the go tool reads it by itself in GOPATH mode)
gopath=$GOPATH_DIR
for v in _vendor Godeps/_workspace; do
    if [ -d "$TREE/$v/src" ]; then
        gopath=$TREE/$v:$GOPATH_DIR
        break
    fi
done

echo "roshi-server: building $(go version | cut -d' ' -f3) GOPATH mode from $SRC" >&2
if ! (cd "$TREE/roshi-server" &&
      env GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0 GOPATH="$gopath" \
          GOCACHE="$CACHE/gocache" go build -o "$BIN" . >&2); then
    echo "roshi-server: the build failed (see above)" >&2
    exit 1
fi
echo "$stamp" >"$CACHE/stamp"
echo "$BIN"
