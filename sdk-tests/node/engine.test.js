'use strict'
// The Node package beyond the scenarios: typed errors, Promise forms off the event loop,
// secrets shown once, request logs, entities, argument validation.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawnSync } = require('node:child_process')
const latchkey = require('latchkey')

function shop() {
  const eng = latchkey.Engine.memory()
  const { store, defaultKey } = eng.createStore('Node Shop')
  return { eng, store, defaultKey }
}

test('errors are typed and carry a stable code and every problem', () => {
  const { eng, store } = shop()
  assert.throws(
    () => eng.createKey(store.id, { name: '', permissions: { Nope: ['View'] }, ipAllowlist: ['10.0.0.0/33'] }),
    (err) =>
      err instanceof latchkey.ValidationError &&
      err instanceof latchkey.LatchkeyError &&
      err.code === 'VALIDATION' &&
      err.problems.length === 3,
  )
  assert.throws(() => eng.getKey(store.id, 'key_nope'), (err) => err instanceof latchkey.NotFoundError && err.code === 'NOT_FOUND')
  assert.throws(() => eng.getStore('nope'), { code: 'NOT_FOUND' })
  assert.throws(() => eng.verify('x', { area: 'Nope', action: 'Fly', ip: 'not-an-ip' }), (err) => err.problems.length === 3)
  assert.throws(() => eng.verify('x', { area: 'Orders' }), { code: 'VALIDATION' })
  assert.throws(() => eng.logs(store.id, { status: 99, limit: 0 }), (err) => err.problems.length === 2)
  assert.throws(() => eng.logs(store.id, { colour: 'red' }), { code: 'VALIDATION' })
  assert.throws(() => latchkey.trustedProxies(['10.0.0.0/33', 'nope']), (err) => err.problems.length === 2)
  assert.throws(() => latchkey.Engine.open(''), { code: 'VALIDATION' })
  // The natural first guess says what to call instead.
  assert.throws(() => new latchkey.Engine('shop.redb'), { name: 'TypeError', message: /Engine\.open\(path\) or Engine\.memory\(\)/ })
  // The default key cannot be revoked.
  const { defaultKey } = shop()
  assert.throws(() => eng.revokeKey(store.id, defaultKey.id))
})

test('a refusal is a decision, not an exception', () => {
  const { eng, store } = shop()
  const created = eng.createKey(store.id, { name: 'ERP', permissions: { Orders: ['View'] } })
  const ok = eng.verify(created.key, { area: 'Orders', action: 'View', ip: '127.0.0.1', path: '/api/v1/orders' })
  assert.equal(ok.allowed, true)
  assert.equal(ok.code, 'OK')
  assert.equal(ok.keyId, created.id)
  assert.equal(ok.storeId, store.id)
  assert.equal(ok.environment, 'live')
  assert.ok(ok.headers['X-RateLimit-Limit'])
  const forbidden = eng.verify(created.key, { area: 'Orders', action: 'Edit' })
  assert.equal(forbidden.status, 403)
  assert.equal(forbidden.message, 'Missing permission Orders:Edit')
  assert.deepEqual(forbidden.refusalBody(), {
    success: false,
    data: null,
    message: 'Missing permission Orders:Edit',
    errors: ['Missing permission Orders:Edit'],
    code: 'FORBIDDEN',
  })
  assert.equal(eng.verify(undefined).code, 'MISSING')
  assert.equal(eng.verify(created.key.slice(0, -1) + (created.key.endsWith('x') ? 'y' : 'x')).code, 'INVALID')
})

test('the secret is shown once: never in lists, reads or errors', () => {
  const { eng, store } = shop()
  const created = eng.createKey(store.id, { name: 'pair', format: 'pair', permissions: ['Orders:View'], meta: { erp_id: 7 } })
  assert.match(created.consumerSecret, /^cs_/)
  assert.equal(created.credential, `${created.consumerKey}:${created.consumerSecret}`)
  assert.deepEqual(created.meta, { erp_id: 7 }, 'meta keys are the user’s own, never renamed')
  const shown = JSON.stringify([eng.listKeys(store.id), eng.getKey(store.id, created.id), eng.audit(store.id)])
  assert.ok(!shown.includes(created.consumerSecret))
  const regenerated = eng.regenerateKey(store.id, created.id)
  assert.notEqual(regenerated.consumerSecret, created.consumerSecret)
  assert.equal(eng.verify(created.credential).code, 'INVALID')
  assert.equal(eng.verify(regenerated.credential).allowed, true)
})

test('Promise forms run off the event loop: a timer keeps firing during commits', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'latchkey-node-'))
  const eng = latchkey.Engine.open(path.join(dir, 'shop.redb'))
  const { store } = await eng.createStoreAsync('Durable')
  let ticks = 0
  const timer = setInterval(() => ticks++, 1)
  const started = Date.now()
  const created = []
  // Durable commits (fsync each) on the thread pool, 8 at a time.
  for (let round = 0; round < 5; round++) {
    created.push(
      ...(await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          eng.createStoreAsync(`S${round}-${i}`).then(({ store: s }) => eng.updateStoreAsync(s.id, { maxScopedKeys: 9 })),
        ),
      )),
    )
  }
  const key = await eng.createKeyAsync(store.id, { name: 'async', permissions: { Orders: ['View'] } })
  clearInterval(timer)
  const elapsed = Date.now() - started
  assert.equal(created.length, 40)
  assert.equal(eng.verify(key.key).allowed, true)
  // The loop stayed free: the 1 ms timer fired on a good share of the elapsed milliseconds.
  assert.ok(ticks >= Math.min(10, elapsed / 4), `ticks ${ticks} in ${elapsed} ms`)
  await assert.rejects(eng.revokeKeyAsync(store.id, 'key_nope'), { code: 'NOT_FOUND' })
  await assert.rejects(eng.createKeyAsync(store.id, { name: '' }), (err) => err instanceof latchkey.ValidationError)
  // Another process opening the file (this one holds its lock) finds everything.
  assert.throws(() => latchkey.Engine.open(path.join(dir, 'shop.redb')), { code: 'STORAGE', message: /already open/ })
  const script = `const l = require('latchkey'); process.stdout.write(String(l.Engine.open(${JSON.stringify(
    path.join(dir, 'shop.redb'),
  )}).listStores().length))`
  eng.close()
  const child = spawnSync(process.execPath, ['-e', script], { cwd: __dirname, encoding: 'utf8' })
  assert.equal(child.stdout, '41', child.stderr)
  assert.throws(() => eng.listStores(), { code: 'CLOSED' })
})

test('request log: recorded decisions are readable with filters', async () => {
  const { eng, store } = shop()
  const key = eng.createKey(store.id, { name: 'logged', permissions: { Orders: ['View'] } })
  const ok = eng.verify(key.key, { area: 'Orders', action: 'View', path: '/api/v1/orders' })
  eng.recordRequest(ok, { method: 'GET', path: '/api/v1/orders?secret=1', status: 200, ip: '203.0.113.7', latencyUs: 12 })
  const denied = eng.verify(key.key, { area: 'Orders', action: 'Edit' })
  eng.recordRequest(denied, { method: 'POST', path: '/api/v1/orders', status: 403 })
  eng.recordRequest(eng.verify('nope'), { method: 'GET', path: '/x', status: 401 })
  const log = eng.logs(store.id)
  assert.deepEqual(
    log.map((e) => [e.method, e.path, e.status, e.code, e.keyId]),
    [
      ['POST', '/api/v1/orders', 403, 'FORBIDDEN', key.id],
      ['GET', '/api/v1/orders', 200, 'OK', key.id],
    ],
  )
  assert.equal(log[1].ip, '203.0.113.7')
  assert.equal(log[1].latencyUs, 12)
  assert.equal(eng.logs(store.id, { status: 403 }).length, 1)
  assert.equal((await eng.logsAsync(store.id, { keyId: key.id, limit: 1 })).length, 1)
  assert.throws(() => eng.recordRequest(ok, { method: 'GET', path: '/', status: 1000, ip: 'x' }), (err) => err.problems.length === 2)
  assert.throws(() => eng.recordRequest(ok, { method: ' ', path: '/', status: 99 }), (err) => err.problems.length === 2)
  assert.equal(eng.logs(store.id).length, 2)
  // Usage sums the same log per key.
  const usage = await eng.usageAsync(store.id)
  assert.deepEqual([usage.requests, usage.byStatus, usage.byCode], [2, { '2xx': 1, '4xx': 1 }, { FORBIDDEN: 1, OK: 1 }])
  assert.deepEqual(usage.keys.map((k) => [k.keyId, k.requests, k.errors, k.denied, k.averageLatencyUs]), [[key.id, 2, 1, 1, 6]])
  const past = { since: new Date('2020-01-01T00:00:00Z'), until: new Date('2020-01-02T00:00:00Z') }
  assert.equal(eng.usage(store.id, past).requests, 0)
  assert.throws(() => eng.usage(store.id, { since: past.until, until: past.since }), { code: 'VALIDATION' })
  // Long and non-ASCII text crosses whole (read past the native side's stack buffers).
  const long = '/api/v1/orders/é' + 'x'.repeat(300)
  eng.recordRequest(ok, { method: 'GET', path: long, status: 200, ip: '2001:db8::1' })
  const [newest] = eng.logs(store.id, { limit: 1 })
  assert.deepEqual([newest.path, newest.ip, newest.latencyUs], [long, '2001:db8::1', 0])
  assert.throws(() => eng.recordRequest(ok, { method: 'GET', path: '/', status: 200, ip: 7 }), { code: 'VALIDATION' })
  // A status past 32 bits is refused, not wrapped round to 200.
  assert.throws(() => eng.recordRequest(ok, { method: 'GET', path: '/', status: 2 ** 32 + 200 }), { code: 'VALIDATION' })
  assert.equal(eng.logs(store.id).length, 3)
})

test('store entities keep the HTTP API shape and validate every field', async () => {
  const { eng, store } = shop()
  const pkg = eng.create(store.id, 'Packages', { name: 'Gold', price: { amount: 1000, currency: 'EUR' } })
  assert.equal(eng.get(store.id, 'Packages', pkg.id).name, 'Gold')
  const updated = await eng.updateAsync(store.id, 'Packages', pkg.id, { name: 'Platinum' })
  assert.equal(updated.name, 'Platinum')
  assert.equal(eng.list(store.id, 'Packages').items.length, 1)
  assert.equal(eng.list(store.id, 'Packages', { environment: 'test' }).items.length, 0)
  assert.throws(() => eng.create(store.id, 'Packages', { name: '', price: 'free', colour: 1 }), (err) => err.problems.length >= 3)
  assert.throws(() => eng.create(store.id, 'Nope', {}), { code: 'VALIDATION' })
  await eng.deleteAsync(store.id, 'Packages', pkg.id)
  assert.throws(() => eng.get(store.id, 'Packages', pkg.id), { code: 'NOT_FOUND' })
})

test('portal sessions show one customer their own orders, and nothing else', async () => {
  const { eng, store } = shop()
  const pkg = eng.create(store.id, 'Packages', { name: 'VIP', price: { amount: 999, currency: 'USD' } })
  const ann = eng.create(store.id, 'Customers', { email: 'ann@example.com', name: 'Ann' })
  const bob = eng.create(store.id, 'Customers', { email: 'bob@example.com', name: 'Bob' })
  for (const customer of [ann, bob, ann]) {
    eng.create(store.id, 'Orders', { customer_id: customer.id, items: [{ package_id: pkg.id, quantity: 1 }] })
  }
  const session = await eng.createPortalSessionAsync(store.id, ann.id, { ttlSeconds: 600 })
  assert.match(session.token, /^cps_/)
  assert.ok(Date.parse(session.expiresAt) > Date.now())
  assert.deepEqual(eng.portalCustomer(session.token), { storeId: store.id, environment: 'live', customerId: ann.id })
  const first = eng.portalList(session.token, 'Orders', { limit: 1 })
  assert.deepEqual(first.items.map((o) => o.customer_id), [ann.id])
  const rest = eng.portalList(session.token, 'Orders', { cursor: first.nextCursor })
  assert.deepEqual([rest.items.map((o) => o.customer_id), rest.nextCursor], [[ann.id], null])
  assert.deepEqual(eng.portalList(session.token, 'Subscriptions').items, [])
  for (const token of ['cps_nope', '', `${session.token}x`]) {
    assert.equal(eng.portalCustomer(token), null)
    assert.equal(eng.portalList(token, 'Orders'), null)
  }
  assert.throws(() => eng.portalList(session.token, 'Packages'), { code: 'NOT_ALLOWED' })
  assert.throws(() => eng.createPortalSession(store.id, ann.id, { ttlSeconds: 5 }), (err) =>
    err.code === 'VALIDATION' && err.problems.join() === 'ttl_seconds: must be from 60 to 86400')
  assert.throws(() => eng.createPortalSession(store.id, ann.id, { environment: 'test' }), { code: 'NOT_FOUND' })
  assert.throws(() => eng.createPortalSession(store.id, 42), (err) => err.problems.join() === 'customer_id: expected a string')
  // The store's managers see live sessions without their tokens, and end them.
  const other = eng.createPortalSession(store.id, ann.id)
  const listed = eng.portalSessions(store.id)
  assert.deepEqual(listed.map((s) => s.customerId), [ann.id, ann.id])
  assert.ok(!JSON.stringify(listed).includes(session.token))
  assert.deepEqual(eng.endPortalSession(store.id, listed[0].id), [listed[0].id])
  assert.throws(() => eng.endPortalSession(store.id, listed[0].id), { code: 'NOT_FOUND' })
  assert.deepEqual(await eng.endCustomerPortalSessionsAsync(store.id, ann.id), [listed[1].id])
  assert.equal(eng.portalCustomer(session.token), null)
  assert.equal(eng.portalCustomer(other.token), null)
  assert.deepEqual(eng.endCustomerPortalSessions(store.id, bob.id), [])
  assert.equal(eng.audit(store.id, { limit: 1 })[0].action, 'portal_sessions_ended')
  assert.throws(() => eng.endPortalSession(store.id, 7), (err) => err.problems.join() === 'sessionId: expected a string')
})

test('helpers mirror the server: credentials, actions, areas, client address', () => {
  assert.equal(latchkey.credentialFromHeaders(undefined, 'Bearer abc'), 'abc')
  assert.equal(latchkey.credentialFromHeaders('k1', 'Bearer abc'), 'k1')
  assert.equal(latchkey.credentialFromHeaders(undefined, 'Basic ' + Buffer.from('ck_1:cs_2').toString('base64')), 'ck_1:cs_2')
  assert.equal(latchkey.actionForMethod('DELETE'), 'Delete')
  assert.equal(latchkey.actionForMethod('OPTIONS'), null)
  assert.equal(latchkey.areaForPath('/api/v1/gift-cards/gc_1'), 'GiftCards')
  assert.equal(latchkey.areaForPath('/healthz'), null)
  const proxies = latchkey.trustedProxies(['10.0.0.0/8'])
  assert.equal(proxies.clientIp('10.0.0.1', '6.6.6.6, 10.0.0.2'), '6.6.6.6')
  assert.equal(proxies.clientIp('203.0.113.9', '6.6.6.6'), '203.0.113.9')
  assert.equal(proxies.clientIp('::ffff:203.0.113.9'), '203.0.113.9')
})

test('decisions name the right key however keys alternate, and arguments are checked', () => {
  const { eng, store, defaultKey } = shop()
  const other = eng.createStore('Other Shop')
  const a = eng.createKey(store.id, { name: 'a', permissions: ['Orders:View'], environment: 'test' })
  const b = other.defaultKey
  const seen = [a, b, a, a, null, b, defaultKey].map((key) => {
    const d = eng.verify(key ? key.credential : 'lk_live_nope', { area: 'Orders', action: 'View' })
    return [d.keyId, d.storeId, d.environment]
  })
  assert.deepEqual(seen, [
    [a.id, store.id, 'test'],
    [b.id, other.store.id, 'live'],
    [a.id, store.id, 'test'],
    [a.id, store.id, 'test'],
    [null, null, null],
    [b.id, other.store.id, 'live'],
    [defaultKey.id, store.id, 'live'],
  ])
  // Names are read as the core reads them; exact names take the table, others the check.
  assert.equal(eng.verify(a.credential, { area: 'orders', action: 'view' }).allowed, true)
  assert.equal(eng.verify(a.credential, { area: 'Orders', action: 'Delete' }).message, 'Missing permission Orders:Delete')
  assert.throws(() => eng.verify(a.credential, { area: '__proto__', action: 'toString' }), (err) => err.problems.length === 2)
  assert.throws(() => eng.verify(42, { area: 7, ip: '1.2.3.4' }), (err) => err.problems.length === 2)
  assert.throws(() => eng.verify(a.credential, { ip: 7 }), { code: 'VALIDATION' })
  assert.throws(() => eng.verify(a.credential, { ip: '999.1.1.1' }), (err) => err.problems[0].startsWith('ip:'))
  // A path that is not a string is refused, with or without a client address.
  for (const ip of [undefined, '1.2.3.4']) {
    assert.throws(() => eng.verify(a.credential, { ip, path: 7 }), (err) => err.problems.join() === 'path: expected a string')
    assert.throws(() => eng.verify(a.credential, { ip, path: {} }), { code: 'VALIDATION' })
    assert.equal(eng.verify(a.credential, { ip, path: null }).allowed, true)
  }
  // Credentials longer than the native stack buffer are read whole, and refused as invalid.
  assert.equal(eng.verify('x'.repeat(5000)).code, 'INVALID')
  assert.equal(eng.verify(a.credential + 'x'.repeat(300)).code, 'INVALID')
  const limited = eng.verify(a.credential, { area: 'Orders', action: 'View' })
  assert.equal(limited.limit.limit, 60, 'the server default: 60 a minute')
  assert.equal(limited.limit.retryAfter, null)
  assert.deepEqual(JSON.parse(JSON.stringify(limited)).keyId, a.id)
  assert.throws(() => limited.refusalBody(), TypeError)
  assert.throws(() => eng.recordRequest({ storeId: store.id }, { method: 'GET', path: '/', status: 200 }), { code: 'VALIDATION' })
  eng.close()
  assert.throws(() => eng.verify(a.credential), { code: 'CLOSED' })
  assert.throws(() => eng.recordRequest(limited, { method: 'GET', path: '/', status: 200 }), { code: 'CLOSED' })
})

test('redact masks credentials in text without an engine; bad arguments are named', () => {
  const eng = latchkey.Engine.memory()
  const { defaultKey } = eng.createStore('Logs')
  const key = defaultKey.key
  const digest = '0123456789abcdef'.repeat(4)
  const line = `GET /api/v1/orders/${key} 404 sha256=${digest}`
  const masked = `${key.slice(0, key.lastIndexOf('_') + 1)}…${key.slice(-4)}`
  assert.equal(latchkey.redact(line), `GET /api/v1/orders/${masked} 404 sha256=${digest}`)
  assert.equal(latchkey.redact(line, { hex: true }), `GET /api/v1/orders/${masked} 404 sha256=…cdef`)
  assert.equal(latchkey.redact('nothing here'), 'nothing here')
  assert.throws(
    () => latchkey.redact(42, { hex: 'yes', colour: 'red' }),
    (err) =>
      err instanceof latchkey.ValidationError &&
      ['text:', 'colour:', 'hex:'].every((name) => err.problems.some((p) => p.startsWith(name))),
  )
  eng.close()
})

test('checkLeaks finds pasted credentials, names their keys and stops them; bad arguments are named', async () => {
  const eng = latchkey.Engine.memory()
  const { store } = eng.createStore('Leaky')
  const pair = eng.createKey(store.id, { name: 'p', permissions: 'orders:read', format: 'pair' })
  const text = `WC_KEY=${pair.consumerKey}\nWC_SECRET=${pair.consumerSecret}\n`
  const [found] = eng.checkLeaks(text)
  assert.deepEqual(found, {
    line: 2,
    shape: 'pair_secret',
    masked: `cs_…${pair.consumerSecret.slice(-4)}`,
    status: 'live',
    keyId: pair.id,
    storeId: store.id,
    replaced: false,
    lastUsedAt: null,
    lastUsedIp: null,
    error: null,
  })
  assert.ok(!JSON.stringify(found).includes(pair.consumerSecret))
  const [stopped] = await eng.checkLeaksAsync(text, { stop: true })
  assert.equal(stopped.status, 'revoked')
  assert.equal(eng.verify(pair.credential).code, 'INVALID')
  assert.throws(
    () => eng.checkLeaks(42, { stop: 'yes' }),
    (err) =>
      err instanceof latchkey.ValidationError &&
      err.problems.some((p) => p.startsWith('text:')) &&
      err.problems.some((p) => p.startsWith('stop:')),
  )
  eng.close()
})
