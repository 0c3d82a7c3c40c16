# Shared by bench/http.sh and bench/http_ab.sh: the load tools, and a server ready to load.
# Sourced from the repository root.

# wrk and jq from the distribution, when missing.
bench_tools() {
  local tool
  for tool in wrk jq; do
    command -v "$tool" >/dev/null && continue
    if [ "$(id -u)" = 0 ]; then apt-get install -y "$tool" >/dev/null; else sudo apt-get install -y "$tool" >/dev/null; fi
  done
}

# bench_server BIN DIR: starts BIN on a free loopback port with its database in DIR, creates a
# store with PACKAGES packages (default 20) and 500 keys (token bucket, 10,000/min each, the
# most a key may have), and leaves in DIR: `base` (the server's URL), `pid`, `keys.lua` (a wrk
# script that sends GET /api/v1/packages?limit=20 with the keys in rotation) and `healthz.lua`
# (GET /healthz sent by the same rotation, so the client does the same work for each). The
# per-IP route scopes are off (--no-ip-scopes): all load comes from one address.
bench_server() {
  local bin=$1 dir=$2 secret base admin reply store default_key i
  secret=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
  "$bin" serve --db "$dir/bench.redb" --listen 127.0.0.1:0 --jwt-secret "$secret" --no-ip-scopes \
    2>"$dir/server.log" >/dev/null &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do
    grep -q "listening on" "$dir/server.log" 2>/dev/null && break
    sleep 0.1
  done
  base=$(sed -n 's/^latchkey: listening on //p' "$dir/server.log")
  echo "$base" >"$dir/base"
  admin=$("$bin" admin-token --jwt-secret "$secret")
  local auth=(-H "Authorization: Bearer $admin" -H "content-type: application/json")
  reply=$(curl -sf "${auth[@]}" -d '{"name":"Bench","max_scoped_keys":500}' "$base/api/stores")
  store=$(jq -r .data.store.id <<<"$reply")
  default_key=$(jq -r .data.default_key.key <<<"$reply")
  for i in $(seq "${PACKAGES:-20}"); do
    curl -sf -H "X-Api-Key: $default_key" -d "{\"name\":\"Package $i\",\"price\":{\"amount\":$((i * 100)),\"currency\":\"USD\"}}" \
      "$base/api/v1/packages" >/dev/null
  done
  {
    echo 'local keys = {'
    for i in $(seq 500); do
      curl -sf "${auth[@]}" \
        -d '{"name":"bench","permissions":{"Packages":["View"]},"rate_limit":{"limit":10000,"algorithm":"token_bucket"}}' \
        "$base/api/stores/$store/api-keys" | jq -r '"  \"" + .data.key + "\","'
    done
    echo '}'
    rotation 'wrk.format("GET", "/api/v1/packages?limit=20", { ["X-Api-Key"] = key })'
  } >"$dir/keys.lua"
  # /healthz through the same client code: without a script wrk sends one buffer over and over,
  # and calling request() for each request costs it about 1 us of CPU on the two cores the
  # server shares, which the ratio would otherwise charge to the keyed route.
  {
    echo 'local keys = {}'
    echo 'for n = 1, 500 do keys[n] = n end'
    rotation 'wrk.format("GET", "/healthz")'
  } >"$dir/healthz.lua"
}

# rotation REQUEST: the part of a wrk script that formats REQUEST (Lua, with `key` bound) once
# for each entry of `keys` and sends them in turn.
rotation() {
  cat <<LUA
-- Formatted once, so per request the client only picks the next one: formatting in
-- request() cost the client ~1 us a request, on the same two cores as the server.
local requests = {}
for n, key in ipairs(keys) do
  requests[n] = $1
end
local i = 0
request = function()
  i = i + 1
  return requests[(i % #requests) + 1]
end
LUA
}

# bench_load DIR ROUTE SECONDS [CONNECTIONS]: one `wrk -t2` load (64 connections unless given)
# of ROUTE (healthz or keyed) on the server bench_server left in DIR; wrk's report on stdout.
bench_load() {
  local path=/healthz script=healthz.lua
  if [ "$2" = keyed ]; then path=/api/v1/packages script=keys.lua; fi
  wrk -t2 -c"${4:-64}" -d"$3s" -s "$1/$script" "$(cat "$1/base")$path"
}

# bench_warm DIR [CONNECTIONS]: a load of each route, not counted: the first seconds of a fresh
# server (page faults, caches filling) ran well below the later rounds. The keyed one for 15 s:
# the request log grows the heap (redb's page cache filling up to its 64 MiB) for about the
# first 600,000 requests, and until then the kernel zeroes fresh pages for it: 0.3-0.5 us a
# keyed request after 2 s of warm-up (perf), 0.01 us once the resident size is flat, as in a
# server that has been up for a while.
bench_warm() {
  bench_load "$1" healthz 2 "${2:-64}" >/dev/null
  bench_load "$1" keyed 15 "${2:-64}" >/dev/null
}
