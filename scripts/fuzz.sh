#!/usr/bin/env bash
# fuzz.sh [SECONDS] - builds the libFuzzer harnesses with clang and runs each for SECONDS (default
# 30), starting from a corpus of valid encodings made by tests/fuzz/make_corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
secs=${1:-30}
dir=build-fuzz
CC=clang cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DCRDTD_FUZZ=ON >/dev/null
cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" --target fuzzers
for f in "$dir"/tests/fuzz/fuzz_*; do
  name=$(basename "$f")
  corpus="$dir/corpus/$name"
  mkdir -p "$corpus"
  "$dir"/tests/fuzz/make_corpus "$name" "$corpus"
  echo "fuzz: $name for ${secs}s"
  "$f" -max_total_time="$secs" -max_len=4096 -timeout=10 -print_final_stats=1 "$corpus" \
    2>"$dir/$name.log" || { tail -50 "$dir/$name.log"; echo "fuzz: $name FAILED"; exit 1; }
  grep -E "stat::number_of_executed_units" "$dir/$name.log" || true
done
echo "fuzz: all harnesses ran clean"
