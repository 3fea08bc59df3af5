#!/usr/bin/env bash
# run.sh - installs what is missing, builds, and runs crdtd on its embedded store.
# Defaults: data in ./crdtd-data, HTTP on 127.0.0.1:7379. Extra arguments go to crdtd
# (see `build/gateway/crdtd --help`), e.g. scripts/run.sh --roshi-listen 127.0.0.1:6302
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCRDTD_WERROR=ON >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)"
exec build/gateway/crdtd --data-dir ./crdtd-data --listen 127.0.0.1:7379 "$@"
