#!/usr/bin/env bash
# Fuzzes every harness with AFL++ (cargo-afl, stable toolchain) for FUZZ_SECONDS each (default
# 60: the smoke run of `make test`), two at a time, then fails if any target saved a crash.
# Findings stay in target/afl/<target>/default/{crashes,hangs}; replay one with
#   cargo afl run --features afl --bin fuzz -- <target> < file   (or: target/debug/fuzz <target> < file)
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
command -v cargo-afl >/dev/null || cargo install --locked cargo-afl
cargo afl build --features afl --quiet
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1
targets=(credentials headers cidrs permissions bodies)
rm -rf target/afl && mkdir -p target/afl
run() {
  cargo afl fuzz -i "seeds/$1" -o "target/afl/$1" -V "$SECONDS_PER_TARGET" target/debug/fuzz "$1" \
    > "target/afl/$1.log" 2>&1 || { echo "fuzz $1: afl-fuzz failed"; tail -20 "target/afl/$1.log"; return 1; }
}
status=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  for t in "${targets[@]:i:2}"; do run "$t" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
done
for t in "${targets[@]}"; do
  stats="target/afl/$t/default/fuzzer_stats"
  [[ -f $stats ]] || { echo "fuzz $t: no statistics"; status=1; continue; }
  crashes=$(awk '/^saved_crashes/ {print $3}' "$stats")
  printf 'fuzz %-12s %9s execs  %6s edges  %4s corpus  %s crashes  %s hangs\n' "$t" \
    "$(awk '/^execs_done/ {print $3}' "$stats")" "$(awk '/^edges_found/ {print $3}' "$stats")" \
    "$(awk '/^corpus_count/ {print $3}' "$stats")" "$crashes" "$(awk '/^saved_hangs/ {print $3}' "$stats")"
  [[ $crashes == 0 ]] || status=1
done
exit $status
