'use strict'
// latchkey.express with a real Express app on a loopback port, driven by real HTTP requests
// (fetch): the statuses, wrapper bodies and rate-limit headers are the server's.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const expressApp = require('express')
const latchkey = require('latchkey')

/** Starts `app` on a free loopback port; returns its base URL and a stop function. */
async function serve(app) {
  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s))
  })
  const { port } = server.address()
  return { base: `http://127.0.0.1:${port}`, stop: () => new Promise((resolve) => server.close(resolve)) }
}

/** The request log is written when a response finishes, which may follow the client's read. */
async function logOf(eng, storeId, count) {
  for (let i = 0; i < 200; i += 1) {
    const entries = eng.logs(storeId)
    if (entries.length >= count) return entries
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  return eng.logs(storeId)
}

function ordersApp(eng, options) {
  const app = expressApp()
  app.get('/healthz', (req, res) => res.json({ ok: true }))
  app.use('/api/v1', latchkey.express(eng, options))
  app.get('/api/v1/orders', (req, res) => res.json({ keyId: req.latchkey.keyId }))
  app.post('/api/v1/orders', (req, res) => res.status(201).json({ created: true }))
  app.get('/api/v1/coupons', (req, res) => res.json({ coupons: [] }))
  return app
}

test('the middleware answers like the server: statuses, bodies, headers, log', async (t) => {
  const eng = latchkey.Engine.memory()
  const { store } = eng.createStore('Express')
  const key = eng.createKey(store.id, {
    name: 'erp',
    permissions: { Orders: ['View'] },
    rateLimit: { limit: 3, algorithm: 'fixed_window' },
  })
  const { base, stop } = await serve(ordersApp(eng))
  t.after(stop)

  const health = await fetch(`${base}/healthz`)
  assert.equal(health.status, 200, 'routes outside the middleware are untouched')

  const ok = await fetch(`${base}/api/v1/orders?page=1`, { headers: { 'X-Api-Key': key.key } })
  assert.equal(ok.status, 200)
  assert.deepEqual(await ok.json(), { keyId: key.id })
  assert.equal(ok.headers.get('x-ratelimit-limit'), '3')
  assert.equal(ok.headers.get('x-ratelimit-remaining'), '2')
  assert.ok(Number(ok.headers.get('x-ratelimit-reset')) > Date.now() / 1000 - 1)

  const missing = await fetch(`${base}/api/v1/orders`)
  assert.equal(missing.status, 401)
  assert.deepEqual(await missing.json(), {
    success: false,
    data: null,
    message: 'API key required',
    errors: ['API key required'],
    code: 'MISSING',
  })

  const invalid = await fetch(`${base}/api/v1/orders`, { headers: { 'x-api-key': key.key.slice(0, -1) + (key.key.endsWith('x') ? 'y' : 'x') } })
  assert.equal(invalid.status, 401)
  assert.equal((await invalid.json()).message, 'Invalid API key')

  const garbled = await fetch(`${base}/api/v1/orders`, { headers: { Authorization: 'Basic %%%' } })
  assert.equal(garbled.status, 401, 'a malformed Authorization header is a 401, never a 500')

  // The area comes from the path, the action from the method.
  const forbidden = await fetch(`${base}/api/v1/orders`, { method: 'POST', headers: { 'X-Api-Key': key.key } })
  assert.equal(forbidden.status, 403)
  assert.equal((await forbidden.json()).message, 'Missing permission Orders:Edit')
  const otherArea = await fetch(`${base}/api/v1/coupons`, { headers: { 'X-Api-Key': key.key } })
  assert.equal(otherArea.status, 403)
  assert.equal((await otherArea.json()).message, 'Missing permission Coupons:View')

  // Refusals charged nothing: the Bearer request and one more use up the limit of 3.
  const bearer = await fetch(`${base}/api/v1/orders`, { headers: { Authorization: `Bearer ${key.key}` } })
  assert.equal(bearer.status, 200)
  assert.equal(bearer.headers.get('x-ratelimit-remaining'), '1')
  assert.equal((await fetch(`${base}/api/v1/orders`, { headers: { 'X-Api-Key': key.key } })).status, 200)
  const limited = await fetch(`${base}/api/v1/orders`, { headers: { 'X-Api-Key': key.key } })
  assert.equal(limited.status, 429)
  assert.equal((await limited.json()).code, 'RATE_LIMITED')
  assert.ok(Number(limited.headers.get('retry-after')) >= 1)
  assert.equal(limited.headers.get('x-ratelimit-remaining'), '0')

  // Every request that named a live key is in its store's log, newest first, with the final
  // status and without the query string.
  const log = await logOf(eng, store.id, 6)
  assert.deepEqual(
    log.map((e) => [e.method, e.path, e.status, e.code]),
    [
      ['GET', '/api/v1/orders', 429, 'RATE_LIMITED'],
      ['GET', '/api/v1/orders', 200, 'OK'],
      ['GET', '/api/v1/orders', 200, 'OK'],
      ['GET', '/api/v1/coupons', 403, 'FORBIDDEN'],
      ['POST', '/api/v1/orders', 403, 'FORBIDDEN'],
      ['GET', '/api/v1/orders', 200, 'OK'],
    ],
  )
  assert.ok(log.every((e) => e.keyId === key.id && e.ip === '127.0.0.1' && e.latencyUs >= 0))
})

test('a fixed area and action, and X-Forwarded-For believed only from trusted proxies', async (t) => {
  const eng = latchkey.Engine.memory()
  const { store } = eng.createStore('Proxied')
  const key = eng.createKey(store.id, { name: 'pos', permissions: ['Orders:View'], ipAllowlist: ['6.6.6.0/24'] })

  const direct = await serve(ordersApp(eng, { area: 'Orders', action: 'View' }))
  t.after(direct.stop)
  const spoofed = await fetch(`${direct.base}/api/v1/coupons`, {
    headers: { 'X-Api-Key': key.key, 'X-Forwarded-For': '6.6.6.6' },
  })
  assert.equal(spoofed.status, 403, 'an untrusted peer cannot choose its address')
  assert.equal((await spoofed.json()).message, 'IP address not allowed')

  const proxied = await serve(ordersApp(eng, { trustedProxies: ['127.0.0.0/8'] }))
  t.after(proxied.stop)
  const viaProxy = await fetch(`${proxied.base}/api/v1/orders`, {
    headers: { 'X-Api-Key': key.key, 'X-Forwarded-For': '6.6.6.6, 127.0.0.1' },
  })
  assert.equal(viaProxy.status, 200)
  const log = await logOf(eng, store.id, 2)
  assert.deepEqual(
    log.map((e) => [e.ip, e.status]),
    [
      ['6.6.6.6', 200],
      ['127.0.0.1', 403],
    ],
  )
})

test('areaFor chooses the area; an area the key may not reach is refused', async (t) => {
  const eng = latchkey.Engine.memory()
  const { store, defaultKey } = eng.createStore('Custom')
  const scoped = eng.createKey(store.id, { name: 'coupons', permissions: ['Coupons:View'] })
  const app = expressApp()
  app.use(latchkey.express(eng, { areaFor: (req) => (req.path.startsWith('/promo') ? 'Coupons' : 'Orders') }))
  app.get('/promo', (req, res) => res.json({ store: req.latchkey.storeId }))
  app.get('/sales', (req, res) => res.json({}))
  const { base, stop } = await serve(app)
  t.after(stop)
  const promo = await fetch(`${base}/promo`, { headers: { 'X-Api-Key': scoped.key } })
  assert.equal(promo.status, 200)
  assert.deepEqual(await promo.json(), { store: store.id })
  assert.equal((await fetch(`${base}/sales`, { headers: { 'X-Api-Key': scoped.key } })).status, 403)
  assert.equal((await fetch(`${base}/sales`, { headers: { 'X-Api-Key': defaultKey.key } })).status, 200)
})

test('options are validated when the middleware is made', () => {
  const eng = latchkey.Engine.memory()
  assert.throws(
    () => latchkey.express(eng, { area: 7, colour: 'red', trustedProxies: 'x' }),
    (err) => err instanceof latchkey.ValidationError && err.problems.length === 3,
  )
  assert.throws(() => latchkey.express({}, {}), { code: 'VALIDATION' })
  assert.throws(() => latchkey.express(eng, { trustedProxies: ['10.0.0.0/99'] }), { code: 'VALIDATION' })
})

/** Sends `lines` as the request's header lines, repeats kept (fetch would join them). */
function rawGet(base, path, lines) {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const socket = require('node:net').connect(Number(port), hostname, () => {
      const head = lines.map(([name, value]) => `${name}: ${value}\r\n`).join('')
      socket.end(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: close\r\n${head}\r\n`)
    })
    let reply = ''
    socket.on('data', (chunk) => (reply += chunk))
    socket.on('end', () => resolve(Number(reply.split(' ')[1])))
    socket.on('error', reject)
  })
}

test('every header line counts, as on the server', async (t) => {
  const eng = latchkey.Engine.memory()
  const { store } = eng.createStore('Lines')
  const key = eng.createKey(store.id, { name: 'pos', permissions: ['Orders:View'], ipAllowlist: ['6.6.6.0/24'] })
  const proxied = await serve(ordersApp(eng, { trustedProxies: ['127.0.0.0/8'] }))
  t.after(proxied.stop)
  const get = (lines) => rawGet(proxied.base, '/api/v1/orders', lines)
  assert.equal(await get([['X-Api-Key', key.key], ['X-Forwarded-For', '6.6.6.6']]), 200)
  // The client's line first, the proxy's own line after it: the proxy's decides.
  assert.equal(await get([['X-Api-Key', key.key], ['X-Forwarded-For', '6.6.6.6'], ['X-Forwarded-For', '9.9.9.9']]), 403)
  // A credential header sent twice is ambiguous, even with the same valid key on both lines.
  assert.equal(await get([['X-Api-Key', key.key], ['X-Api-Key', key.key], ['X-Forwarded-For', '6.6.6.6']]), 401)
  // Header names match whatever their case, each line on its own.
  assert.equal(await get([['x-api-key', key.key], ['X-API-KEY', key.key], ['X-Forwarded-For', '6.6.6.6']]), 401)
  assert.equal(await get([['X-API-KEY', key.key], ['X-Forwarded-For', '6.6.6.6']]), 200)
  const bearer = `Bearer ${key.key}`
  assert.equal(await get([['Authorization', bearer], ['Authorization', bearer], ['X-Forwarded-For', '6.6.6.6']]), 401)
  assert.equal(await get([['Authorization', bearer], ['X-Forwarded-For', '6.6.6.6']]), 200)
  assert.equal(latchkey.credentialFromHeaders(['k1', 'k1']), latchkey.credentialFromHeaders(undefined, ['a', 'b']))
  assert.equal(latchkey.credentialFromHeaders(['k1'], ['a', 'b']), 'k1')
})

test('the area is derived from the path as Express routes it, whatever its case', async (t) => {
  const eng = latchkey.Engine.memory()
  const { store } = eng.createStore('Case')
  const coupons = eng.createKey(store.id, { name: 'coupons', permissions: ['Coupons:View'] })
  const app = ordersApp(eng)
  app.get('/api/v1/orders/:id', (req, res) => res.json({ id: req.params.id }))
  const router = expressApp.Router()
  router.get('/api/v1/orders-export', (req, res) => res.json({ export: true }))
  app.use(router)
  const { base, stop } = await serve(app)
  t.after(stop)
  const status = (path) => rawGet(base, path, [['X-Api-Key', coupons.key]])
  // Each of these reaches an orders handler in Express (case-insensitive routing).
  for (const path of ['/api/v1/orders', '/API/V1/ORDERS', '/api/v1/Orders/', '/Api/v1/orders/5']) {
    assert.equal(await status(path), 403, path)
  }
  assert.equal(await status('/API/V1/COUPONS'), 200)
  // A route of no area stays authenticated only, in any case.
  assert.equal(await status('/API/V1/ORDERS-EXPORT'), 200)
})

test('a method that implies no action is answered 405 on an area path, as the server does', async (t) => {
  const eng = latchkey.Engine.memory()
  const { store } = eng.createStore('Methods')
  const coupons = eng.createKey(store.id, { name: 'coupons', permissions: ['Coupons:View'] })
  const app = expressApp()
  app.use('/api/v1', latchkey.express(eng))
  app.all('/api/v1/orders', (req, res) => res.json({ leaked: true }))
  app.all('/api/v1/me', (req, res) => res.json({ key: req.latchkey.keyId }))
  const { base, stop } = await serve(app)
  t.after(stop)
  for (const method of ['OPTIONS', 'PROPFIND', 'SEARCH']) {
    const res = await new Promise((resolve, reject) => {
      const req = require('node:http').request(`${base}/api/v1/orders`, { method, headers: { 'X-Api-Key': coupons.key } }, (r) => {
        let body = ''
        r.on('data', (c) => (body += c))
        r.on('end', () => resolve({ status: r.statusCode, body, headers: r.headers }))
      })
      req.on('error', reject)
      req.end()
    })
    assert.equal(res.status, 405, method)
    assert.deepEqual(JSON.parse(res.body), { success: false, data: null, message: 'Method not allowed', errors: [], code: 'METHOD_NOT_ALLOWED' })
    assert.ok('x-ratelimit-limit' in res.headers, 'the key was verified and charged')
  }
  // Without a key it is the key that is refused first, as on the server.
  assert.equal((await fetch(`${base}/api/v1/orders`, { method: 'OPTIONS' })).status, 401)
  // A path of no area passes any method (authenticated only, as documented).
  assert.equal((await fetch(`${base}/api/v1/me`, { method: 'OPTIONS', headers: { 'X-Api-Key': coupons.key } })).status, 200)
})

test('the area comes from the path Express routed by: absolute-form targets, fragments', async (t) => {
  const eng = latchkey.Engine.memory()
  const { store } = eng.createStore('Targets')
  const coupons = eng.createKey(store.id, { name: 'coupons', permissions: ['Coupons:View'] })
  const app = ordersApp(eng)
  app.get('/api/v1/orders/:id', (req, res) => res.json({ id: req.params.id }))
  const { base, stop } = await serve(app)
  t.after(stop)
  const targets = ['http://shop.example/api/v1/orders', 'http://shop.example:80/API/v1/orders?a=1', '/api/v1/orders#x', '/api/v1/orders/..']
  for (const target of targets) {
    assert.equal(await rawGet(base, target, [['X-Api-Key', coupons.key]]), 403, target)
  }
  assert.equal(await rawGet(base, 'http://shop.example/api/v1/coupons', [['X-Api-Key', coupons.key]]), 200)
  // The log names the path, not the whole target.
  const log = await logOf(eng, store.id, targets.length + 1)
  assert.deepEqual(new Set(log.map((e) => e.path)), new Set(['/api/v1/orders', '/API/v1/orders', '/api/v1/orders/..', '/api/v1/coupons']))
})
