#!/usr/bin/env bash
# Compares two builds of the server by the CPU each spends per request, which moves far less
# from run to run than a request rate does on two cores shared with the client.
# Usage: bench/http_ab.sh BIN_A BIN_B [rounds] [seconds]   (e.g. a copy of target/release/latchkey
# saved before a change, and the build after it). Environment: PACKAGES (default 20).
#
# Starts both servers as bench/http.sh does, then for each round loads /healthz and the keyed
# GET /api/v1/packages on A, then on B, with `wrk -t2 -c64`, and prints each server's CPU
# (user + system, from /proc/PID/stat) divided by the requests served, the part of it spent by
# the request log's writer thread, the whole machine's busy CPU (every process, the kernel's
# softirq work included, from /proc/stat) divided by the same requests, and the request rate.
# With both cores busy the rate is the machine's CPU over the machine's CPU a request, so that
# figure is what a change to the server must lower, wherever (server, kernel, `wrk`) it lands.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/http_ab.sh BIN_A BIN_B [rounds] [seconds]" >&2; exit 2; }
ROUNDS="${3:-3}"
SECONDS_PER_RUN="${4:-5}"
. bench/lib.sh
bench_tools

WORK=$(mktemp -d)
trap 'kill "$(cat "$WORK/a/pid" 2>/dev/null)" "$(cat "$WORK/b/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir "$WORK/a" "$WORK/b"
bench_server "$1" "$WORK/a"
bench_server "$2" "$WORK/b"
TICKS=$(getconf CLK_TCK)

# Fields 14 and 15 of /proc/PID/stat: user and system time in clock ticks. (The command name
# in field 2 has no spaces here.)
# Summed over the stat files given (none: 0).
stat_ticks() { awk '{ t += $14 + $15 } END { print t + 0 }' /dev/null "$@"; }
cpu_ticks() { stat_ticks "/proc/$1/stat"; }
# The same for the request log's writer (the engine's maintenance thread, `latchkey-usage`):
# the keyed route's only work off the request's own thread, and a cost of its own to watch.
writer_ticks() {
  local task stats=()
  for task in /proc/"$1"/task/*; do
    if [ "$(cat "$task/comm" 2>/dev/null)" = latchkey-usage ]; then stats+=("$task/stat"); fi
  done
  stat_ticks "${stats[@]}"
}

# The first line of /proc/stat: the machine's time in clock ticks; busy is all but idle and
# iowait (fields 5 and 6), steal excluded too (field 9: time the hypervisor gave elsewhere).
busy_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }

load() { # load DIR ROUTE(healthz|keyed) LABEL
  local dir=$1 pid before after wbefore wafter mbefore mafter requests rate
  pid=$(cat "$dir/pid")
  before=$(cpu_ticks "$pid")
  wbefore=$(writer_ticks "$pid")
  mbefore=$(busy_ticks)
  bench_load "$dir" "$2" "$SECONDS_PER_RUN" >"$dir/wrk.txt"
  mafter=$(busy_ticks)
  after=$(cpu_ticks "$pid")
  wafter=$(writer_ticks "$pid")
  requests=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$dir/wrk.txt")
  rate=$(sed -n 's/^Requests\/sec: *//p' "$dir/wrk.txt")
  awk -v t=$((after - before)) -v w=$((wafter - wbefore)) -v m=$((mafter - mbefore)) -v hz="$TICKS" -v n="$requests" -v r="$rate" -v s="$3" -v route="$2" \
    'BEGIN { printf "%s %-8s %6.2f us of server CPU a request (log writer %.2f), machine %.2f us, %s req/s\n", s, route, t / hz * 1e6 / n, w / hz * 1e6 / n, m / hz * 1e6 / n, r }'
}

for dir in a b; do bench_warm "$WORK/$dir"; done
for round in $(seq "$ROUNDS"); do
  echo "round $round"
  for route in healthz keyed; do
    load "$WORK/a" "$route" A
    load "$WORK/b" "$route" B
  done
done
