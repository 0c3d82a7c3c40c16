#!/usr/bin/env bash
# Instructions one request costs through app() in process, for /healthz and the keyed list of
# 20 packages: callgrind counts of `route_cost` (server/examples) serving N and 2N requests,
# the difference divided by N, so setup is left out. Counts are the same from run to run,
# which request rates and timings on two shared cores are not; they weigh a change to the
# request path before bench/http.sh measures it. Usage: bench/route_ir.sh [N] (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
if ! command -v valgrind >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y valgrind >/dev/null; else sudo apt-get install -y valgrind >/dev/null; fi
fi
cargo build --release -q -p latchkey-server --example route_cost
BIN=target/release/examples/route_cost
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
count() { # count ROUTE REQUESTS: the instructions callgrind collected
  valgrind --tool=callgrind --callgrind-out-file="$WORK/out" "$BIN" "$1" "$2" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for route in healthz keyed; do
  one=$(count "$route" "$N")
  two=$(count "$route" $((2 * N)))
  echo "$route: $(((two - one) / N)) instructions a request"
done
