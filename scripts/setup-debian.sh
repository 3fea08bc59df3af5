#!/usr/bin/env bash
# setup-debian.sh - installs what crdtd needs to build, run and test on Debian bookworm.
# Installs only what is missing; uses sudo when not root. Safe to run again.
set -euo pipefail

pkgs=(build-essential cmake pkg-config perl git
      libjansson-dev libhiredis-dev libwebsockets-dev libssl-dev libcurl4-openssl-dev
      redis-server redis-tools faketime openssl
      clang libclang-rt-14-dev
      lld wasi-libc libclang-rt-14-dev-wasm32
      chromium)
# Node and npm for the JavaScript client: Debian's packages, unless a node with its npm is there
# already (a nodesource nodejs bundles npm and conflicts with Debian's npm package).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  pkgs+=(nodejs npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "setup: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The redis-server package starts a system instance on 6379; our tests start their own servers on
# free ports, so it is not needed (and may not be startable in a container): ignore its state.
