'use strict'
// One run, two peers (issue #7):
//
// - `engine.verify` on hot keys: token keys, Orders:View, a path, each charged its own limit,
//   every timed call an admission;
// - rate-limiter-flexible's `RateLimiterMemory.consume`, awaited, over 10,000 keys.
//
// Usage (from the repository root, after `make node`):  node sdk-tests/node/bench.js
// Targets: verify ≤ 300 ns per call and ≥ 3 × faster than `consume`. Prints ns per call (best
// of 5 repeats) and the ratio.
//
// A key may have at most 10,000 requests a minute, and a run makes millions of calls in a few
// seconds, so the calls go round 1,000 keys (all in cache, as one hot key is), each within its
// budget. No client address is passed (an in-process caller), so no per-IP limit applies: one
// address would be refused after its first thousand. A refused call fails the run.

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
  eng.updateStore(store.id, { maxScopedKeys: 1000 })
  const keys = Array.from({ length: 1000 }, (_, i) =>
    eng.createKey(store.id, {
      name: `hot ${i}`,
      permissions: { Orders: ['View'] },
      rateLimit: { limit: 10000, algorithm: 'token_bucket' },
    }).credential,
  )
  const options = { area: 'Orders', action: 'View', path: '/api/v1/orders' }
  let refused = 0
  const loop = (calls) => {
    for (let i = 0; i < calls; i += 1) {
      if (!eng.verify(keys[i % keys.length], options).allowed) refused += 1
    }
  }
  loop(100_000) // warm up the JIT
  const ns = bestNs(loop, 1_000_000)
  eng.close()
  // 5.1 million calls over 1,000 keys: 5,100 each, within 10,000 a minute.
  if (refused !== 0) throw new Error(`every call must be admitted; ${refused} were refused`)
  return ns
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
  const ratio = consume / verify
  const row = (name, ns, note = '') => console.log(`${name.padEnd(52)} ${ns.toFixed(1).padStart(9)} ns/call ${note}`)
  console.log(`node ${process.version}, latchkey ${latchkey.version}, best of ${REPEATS} repeats`)
  row('engine.verify (hot keys, Orders:View, admitted)', verify, verify <= 300 ? '(≤ 300: met)' : '(≤ 300: NOT met)')
  row('RateLimiterMemory.consume (awaited, 10,000 keys)', consume)
  console.log(`ratio consume / verify: ${ratio.toFixed(1)}x ${ratio >= 3 ? '(≥ 3: met)' : '(≥ 3: NOT met)'}`)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
