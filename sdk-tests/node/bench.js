'use strict'
// One run, two peers (issue #7):
//
// - `engine.verify` on a hot key: a token key, Orders:View, with a client IP and a path, so
//   the key's limit and the IP's route scope are both checked on every call; and the same
//   without IP and path (the key's limit only);
// - rate-limiter-flexible's `RateLimiterMemory.consume`, awaited, over 10,000 keys.
//
// Usage (from the repository root, after `make node`):  node sdk-tests/node/bench.js
// Targets: verify ≤ 300 ns per call and ≥ 3 × faster than `consume`. Prints ns per call (best
// of 5 repeats) and the ratio. The key's budget (10,000 a minute) runs out within the first
// repeat; from then on verify answers RATE_LIMITED, which runs every check of SPEC §4 and the
// limiter's decision (a refusal charges nothing), so the figure is the full decision either
// way. The codes seen are printed.

const { RateLimiterMemory } = require('rate-limiter-flexible')
const latchkey = require('latchkey')

const REPEATS = 5

function bestNs(run, calls) {
  let best = Infinity
  for (let r = 0; r < REPEATS; r += 1) {
    const started = process.hrtime.bigint()
    run(calls)
    best = Math.min(best, Number(process.hrtime.bigint() - started) / calls)
  }
  return best
}

async function bestNsAsync(run, calls) {
  let best = Infinity
  for (let r = 0; r < REPEATS; r += 1) {
    const started = process.hrtime.bigint()
    await run(calls)
    best = Math.min(best, Number(process.hrtime.bigint() - started) / calls)
  }
  return best
}

function benchVerify() {
  const eng = latchkey.Engine.memory()
  const { store } = eng.createStore('Bench')
  const key = eng.createKey(store.id, {
    name: 'hot',
    permissions: { Orders: ['View'] },
    rateLimit: { limit: 10000, algorithm: 'token_bucket' },
  }).credential
  const full = { area: 'Orders', action: 'View', ip: '203.0.113.7', path: '/api/v1/orders' }
  const keyOnly = { area: 'Orders', action: 'View' }
  if (!eng.verify(key, full).allowed) throw new Error('the first call must be allowed')
  const codes = new Map()
  const loop = (options) => (calls) => {
    let last
    for (let i = 0; i < calls; i += 1) last = eng.verify(key, options)
    codes.set(last.code, (codes.get(last.code) ?? 0) + 1)
  }
  loop(full)(200_000) // warm up the JIT
  const withIp = bestNs(loop(full), 1_000_000)
  const keyLimitOnly = bestNs(loop(keyOnly), 1_000_000)
  eng.close()
  return { withIp, keyLimitOnly, codes: Object.fromEntries(codes) }
}

async function benchConsume() {
  const limiter = new RateLimiterMemory({ points: 1_000_000_000, duration: 60 })
  const keys = Array.from({ length: 10_000 }, (_, i) => `key-${i}`)
  const loop = async (calls) => {
    for (let i = 0; i < calls; i += 1) await limiter.consume(keys[i % keys.length])
  }
  await loop(100_000) // warm up
  return bestNsAsync(loop, 300_000)
}

async function main() {
  const verify = benchVerify()
  const consume = await benchConsume()
  const ratio = consume / verify.withIp
  const row = (name, ns, note = '') => console.log(`${name.padEnd(52)} ${ns.toFixed(1).padStart(9)} ns/call ${note}`)
  console.log(`node ${process.version}, latchkey ${latchkey.version}, best of ${REPEATS} repeats`)
  row('engine.verify (hot key, Orders:View, IP + path)', verify.withIp, verify.withIp <= 300 ? '(≤ 300: met)' : '(≤ 300: NOT met)')
  row('engine.verify (hot key, Orders:View, key limit only)', verify.keyLimitOnly)
  row('RateLimiterMemory.consume (awaited, 10,000 keys)', consume)
  console.log(`ratio consume / verify: ${ratio.toFixed(1)}x ${ratio >= 3 ? '(≥ 3: met)' : '(≥ 3: NOT met)'}`)
  console.log(`verify codes at the end of each repeat: ${JSON.stringify(verify.codes)}`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
