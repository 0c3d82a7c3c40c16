#!/usr/bin/env bash
# Loads `/healthz` and an authenticated `GET /api/v1/packages` on the same server, in one run,
# and prints both request rates and their ratio (target: the authenticated route keeps at least
# 80 % of the /healthz rate). Usage: bench/http.sh [seconds] [connections] [rounds]
# Environment: PACKAGES (packages in the listed store, default 20), LATCHKEY_BIN (see below).
#
# The two loads alternate for a number of rounds (default 3) and the ratio reported is that of
# the medians: on two shared cores one load's rate swings by 10-20 % from run to run, and a
# single pair mostly measured that swing. Every round's figures are printed.
#
# The keyed route is driven with 500 keys in rotation (token bucket, 10,000/min each, the most
# a key may have), so every request does the full verify and limiter work and succeeds; the
# per-IP route scopes are switched off (--no-ip-scopes) because all load comes from one address.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN="${1:-10}"
CONNECTIONS="${2:-64}"
ROUNDS="${3:-3}"

if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y wrk >/dev/null; else sudo apt-get install -y wrk >/dev/null; fi
fi
command -v jq >/dev/null || { if [ "$(id -u)" = 0 ]; then apt-get install -y jq >/dev/null; else sudo apt-get install -y jq >/dev/null; fi; }
# LATCHKEY_BIN: a binary built elsewhere (to compare two builds); else this tree's, built now.
BIN="${LATCHKEY_BIN:-target/release/latchkey}"
[ -n "${LATCHKEY_BIN:-}" ] || cargo build --release -q -p latchkey-server

WORK=$(mktemp -d)
SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
"$BIN" serve --db "$WORK/bench.redb" --listen 127.0.0.1:0 --jwt-secret "$SECRET" --no-ip-scopes \
  2>"$WORK/server.log" >/dev/null &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do
  grep -q "listening on" "$WORK/server.log" 2>/dev/null && break
  sleep 0.1
done
BASE=$(sed -n 's/^latchkey: listening on //p' "$WORK/server.log")
ADMIN=$("$BIN" admin-token --jwt-secret "$SECRET")
auth=(-H "Authorization: Bearer $ADMIN" -H "content-type: application/json")

STORE_REPLY=$(curl -sf "${auth[@]}" -d '{"name":"Bench","max_scoped_keys":500}' "$BASE/api/stores")
STORE=$(jq -r .data.store.id <<<"$STORE_REPLY")
DEFAULT_KEY=$(jq -r .data.default_key.key <<<"$STORE_REPLY")
for i in $(seq "${PACKAGES:-20}"); do
  curl -sf -H "X-Api-Key: $DEFAULT_KEY" -d "{\"name\":\"Package $i\",\"price\":{\"amount\":$((i * 100)),\"currency\":\"USD\"}}" \
    "$BASE/api/v1/packages" >/dev/null
done
{
  echo 'local keys = {'
  for i in $(seq 500); do
    curl -sf "${auth[@]}" \
      -d '{"name":"bench","permissions":{"Packages":["View"]},"rate_limit":{"limit":10000,"algorithm":"token_bucket"}}' \
      "$BASE/api/stores/$STORE/api-keys" | jq -r '"  \"" + .data.key + "\","'
  done
  echo '}'
  cat <<'LUA'
-- Formatted once, so per request the client only picks the next one: formatting in
-- request() cost the client ~1 us a request, on the same two cores as the server.
local requests = {}
for n, key in ipairs(keys) do
  requests[n] = wrk.format("GET", "/api/v1/packages?limit=20", { ["X-Api-Key"] = key })
end
local i = 0
request = function()
  i = i + 1
  return requests[(i % #requests) + 1]
end
LUA
} >"$WORK/keys.lua"

rate() { sed -n 's/^Requests\/sec: *//p' "$1"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# A short load of each first, not counted: the first seconds of a fresh server (page faults,
# caches filling) ran well below the later rounds.
wrk -t2 -c"$CONNECTIONS" -d2s "$BASE/healthz" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d2s -s "$WORK/keys.lua" "$BASE/api/v1/packages" >/dev/null
NON2XX=0
echo "wrk -t2 -c$CONNECTIONS -d${SECONDS_PER_RUN}s, same server, $ROUNDS rounds"
for round in $(seq "$ROUNDS"); do
  wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" "$BASE/healthz" >"$WORK/healthz.txt"
  wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s "$WORK/keys.lua" "$BASE/api/v1/packages" >"$WORK/keyed.txt"
  rate "$WORK/healthz.txt" >>"$WORK/healthz.rates"
  rate "$WORK/keyed.txt" >>"$WORK/keyed.rates"
  N=$(sed -n 's/^ *Non-2xx or 3xx responses: *//p' "$WORK/keyed.txt")
  NON2XX=$((NON2XX + ${N:-0}))
  echo "round $round: /healthz $(rate "$WORK/healthz.txt") req/s, keyed $(rate "$WORK/keyed.txt") req/s"
done
HEALTHZ=$(median <"$WORK/healthz.rates")
KEYED=$(median <"$WORK/keyed.rates")
DROPPED=$(curl -sf "$BASE/metrics" | sed -n 's/^latchkey_request_log_dropped_total //p')
echo "/healthz (median):                          ${HEALTHZ} req/s"
echo "GET /api/v1/packages with a key (median):   ${KEYED} req/s (non-2xx: ${NON2XX}; request-log entries dropped: ${DROPPED:-?})"
awk -v a="$KEYED" -v b="$HEALTHZ" 'BEGIN { printf "ratio of the medians: %.1f %%\n", 100 * a / b }'
