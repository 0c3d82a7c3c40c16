#!/usr/bin/env bash
# Loads `/healthz` and an authenticated `GET /api/v1/packages` on the same server, in one run,
# and prints both request rates and their ratio (target: the authenticated route keeps at least
# 80 % of the /healthz rate). Usage: bench/http.sh [seconds] [connections] [rounds]
# Environment: PACKAGES (packages in the listed store, default 20), LATCHKEY_BIN (see below).
#
# The two loads alternate for a number of rounds (default 9 of 5 s each) and the ratio reported
# is that of the medians: on two shared cores one load's rate swings by 10-30 % from run to run,
# and a single pair mostly measured that swing. Many short rounds rather than a few long ones,
# so the machine's slow drift lands on both loads alike; and the order within a round turns
# each round (keyed first in the even ones), so neither load always runs after the other.
# Every round's figures are printed.
#
# Both loads go through the same wrk script machinery (bench/lib.sh): a request() call that
# picks the next of 500 preformatted requests. wrk's plain mode (one buffer sent over and over)
# costs the client about 1 us less a request, on the same two cores as the server; used for
# /healthz alone it charged that difference to the keyed route. The plain /healthz rate is still
# printed each round, as a reference.
#
# The keyed route is driven with 500 keys in rotation (token bucket, 10,000/min each, the most
# a key may have), so every request does the full verify and limiter work and succeeds; the
# per-IP route scopes are switched off (--no-ip-scopes) because all load comes from one address.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-5}"
CONNECTIONS="${2:-64}"
ROUNDS="${3:-9}"

. bench/lib.sh
bench_tools
# LATCHKEY_BIN: a binary built elsewhere (to compare two builds); else this tree's, built now.
BIN="${LATCHKEY_BIN:-target/release/latchkey}"
[ -n "${LATCHKEY_BIN:-}" ] || cargo build --release -q -p latchkey-server

WORK=$(mktemp -d)
trap 'kill "$(cat "$WORK/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$WORK"' EXIT
bench_server "$BIN" "$WORK"
BASE=$(cat "$WORK/base")

rate() { sed -n 's/^Requests\/sec: *//p' "$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
bench_warm "$WORK" "$CONNECTIONS"
NON2XX=0
echo "wrk -t2 -c$CONNECTIONS -d${SECONDS_PER_RUN}s, same server, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  order="healthz keyed"
  if [ $((round % 2)) = 0 ]; then order="keyed healthz"; fi
  for route in $order; do
    bench_load "$WORK" "$route" "$SECONDS_PER_RUN" "$CONNECTIONS" >"$WORK/$route.txt"
  done
  wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "$BASE/healthz" >"$WORK/plain.txt"
  rate "$WORK/plain.txt" >>"$WORK/plain.rates"
  rate "$WORK/healthz.txt" >>"$WORK/healthz.rates"
  rate "$WORK/keyed.txt" >>"$WORK/keyed.rates"
  N=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' "$WORK/keyed.txt")
  NON2XX=$((NON2XX + ${N:-0}))
  awk -v a="$(rate "$WORK/keyed.txt")" -v b="$(rate "$WORK/healthz.txt")" 'BEGIN { print 100 * a / b }' >>"$WORK/ratios"
  echo "round $round: /healthz $(rate "$WORK/healthz.txt") req/s, keyed $(rate "$WORK/keyed.txt") req/s, $(tail -1 "$WORK/ratios" | xargs printf '%.1f') % (plain /healthz $(rate "$WORK/plain.txt"))"
done
HEALTHZ=$(median <"$WORK/healthz.rates")
KEYED=$(median <"$WORK/keyed.rates")
PLAIN=$(median <"$WORK/plain.rates")
DROPPED=$(curl -sf "$BASE/metrics" | sed -n 's/^latchkey_request_log_dropped_total //p')
echo "/healthz (median):                          ${HEALTHZ} req/s"
echo "GET /api/v1/packages with a key (median):   ${KEYED} req/s (non-2xx: ${NON2XX}; request-log entries dropped: ${DROPPED:-?})"
awk -v a="$KEYED" -v b="$HEALTHZ" 'BEGIN { printf "ratio of the medians: %.1f %%\n", 100 * a / b }'
printf 'median of the rounds'"'"' ratios: %.1f %%\n' "$(median <"$WORK/ratios")"
awk -v a="$KEYED" -v b="$PLAIN" -v p="$PLAIN" 'BEGIN { printf "(plain /healthz, no script, median %s req/s: %.1f %%)\n", p, 100 * a / b }'
