'use strict'
// Webhooks from Node: deliveries to a real receiver on loopback, their Standard Webhooks
// signature checked here with node:crypto, test dispatch, and the SSRF guard.
const { test } = require('node:test')
const assert = require('node:assert/strict')
const crypto = require('node:crypto')
const http = require('node:http')
const latchkey = require('latchkey')

async function receiver(status = 200) {
  const requests = []
  const server = http.createServer((req, res) => {
    const chunks = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      requests.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
      res.writeHead(status, { 'content-type': 'text/plain' }).end('ok')
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${server.address().port}/hooks`
  return { url, requests, close: () => new Promise((resolve) => server.close(resolve)) }
}

/** The receiver's check, per the Standard Webhooks specification. */
function verified(secret, { headers, body }) {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64')
  const signed = `${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`
  const expected = crypto.createHmac('sha256', key).update(signed).digest('base64')
  return headers['webhook-signature'].split(' ').includes(`v1,${expected}`)
}

test('key events are delivered signed, once, without the key secret', async () => {
  const r = await receiver()
  try {
    const eng = latchkey.Engine.memory({ allowPrivateWebhooks: true })
    const { store } = eng.createStore('Hooks')
    const hook = eng.createWebhook(store.id, { url: r.url, events: ['api_key.created', 'api_key.revoked'] })
    assert.match(hook.secret, /^whsec_/)
    const key = eng.createKey(store.id, { name: 'ERP', permissions: { Orders: ['View'] } })
    eng.revokeKey(store.id, key.id)
    const pass = await eng.deliverWebhooksAsync()
    assert.deepEqual(pass, { queued: 2, attempted: 2, nextDueMs: null })
    assert.equal(r.requests.length, 2)
    for (const request of r.requests) {
      assert.ok(verified(hook.secret, request))
      assert.ok(!verified(hook.secret, { ...request, body: request.body.replace('api_key', 'api_kex') }))
      const payload = JSON.parse(request.body)
      assert.equal(payload.id, request.headers['webhook-id'])
      assert.equal(payload.data.id, key.id)
      assert.ok(!request.body.includes(key.key))
    }
    const deliveries = eng.webhookDeliveries(store.id, hook.id)
    assert.deepEqual(
      deliveries.map((d) => [d.state, d.attempts[0].statusCode]),
      [
        ['succeeded', 200],
        ['succeeded', 200],
      ],
    )
    // The payload is the JSON that was sent, not renamed.
    assert.ok('created_at' in deliveries[0].payload)
    assert.ok(!JSON.stringify(eng.listWebhooks(store.id)).includes('whsec_'))
  } finally {
    await r.close()
  }
})

test('a test dispatch reports what the endpoint answered', async () => {
  const r = await receiver(418)
  try {
    const eng = latchkey.Engine.memory({ allowPrivateWebhooks: true, actor: 'deploy-bot' })
    const { store } = eng.createStore('Hooks')
    const hook = await eng.createWebhookAsync(store.id, { url: r.url, events: ['order.created'] })
    const result = await eng.testWebhookAsync(store.id, hook.id)
    assert.equal(result.statusCode, 418)
    assert.equal(result.body, 'ok')
    assert.equal(result.error, null)
    assert.match(result.deliveryId, /^whd_/)
    assert.equal(JSON.parse(r.requests[0].body).type, 'webhook.test')
    // The test dispatch is a finished delivery (418): it can be sent once more, by hand.
    const resent = eng.retryWebhookDelivery(store.id, hook.id, result.deliveryId)
    assert.equal(resent.state, 'pending')
    assert.throws(() => eng.retryWebhookDelivery(store.id, hook.id, result.deliveryId), { code: 'CONFLICT' })
    assert.equal((await eng.deliverWebhooksAsync()).attempted, 1)
    assert.equal(r.requests.length, 2)
    assert.equal(r.requests[1].headers['webhook-id'], r.requests[0].headers['webhook-id'])
    assert.equal(eng.webhookDeliveries(store.id, hook.id)[0].attempts.length, 2)
    const off = eng.updateWebhook(store.id, hook.id, { active: false })
    assert.equal(off.active, false)
    // A rotation shows the new secret once; the old one signs for the overlap as well.
    const rotated = await eng.rotateWebhookSecretAsync(store.id, hook.id, { overlapSeconds: 60 })
    assert.match(rotated.secret, /^whsec_/)
    assert.notEqual(rotated.secret, hook.secret)
    assert.ok(Date.parse(rotated.previousSecretExpiresAt) > Date.now())
    assert.equal(eng.getWebhook(store.id, hook.id).secret, undefined)
    assert.throws(() => eng.rotateWebhookSecret(store.id, hook.id, { overlapSeconds: -1 }), { code: 'VALIDATION' })
    eng.deleteWebhook(store.id, hook.id)
    assert.throws(() => eng.getWebhook(store.id, hook.id), { code: 'NOT_FOUND' })
    // The endpoint's life is in the audit trail, by the engine's actor (a test send is not).
    const trail = eng.audit(store.id, { limit: 4 }).map((e) => [e.action, e.webhookId, e.keyId, e.actor.id, e.changes])
    assert.deepEqual(trail, [
      ['webhook_deleted', hook.id, null, 'deploy-bot', []],
      ['webhook_secret_rotated', hook.id, null, 'deploy-bot', []],
      ['webhook_updated', hook.id, null, 'deploy-bot', ['active']],
      ['webhook_created', hook.id, null, 'deploy-bot', []],
    ])
  } finally {
    await r.close()
  }
})

test('internal targets are refused unless the engine allows them', () => {
  const eng = latchkey.Engine.memory()
  const { store } = eng.createStore('Hooks')
  for (const url of ['http://127.0.0.1:9/', 'http://0x7f000001/', 'http://[::ffff:10.0.0.1]/', 'http://localhost/']) {
    assert.throws(
      () => eng.createWebhook(store.id, { url, events: ['order.created'] }),
      (err) => err instanceof latchkey.ValidationError && err.problems.some((p) => p.startsWith('url: refused')),
      url,
    )
  }
  assert.deepEqual(eng.listWebhooks(store.id), [])
  assert.throws(() => latchkey.Engine.memory({ allowPrivateWebhooks: 'yes' }), { code: 'VALIDATION' })
  assert.throws(() => latchkey.Engine.memory({ colour: 'red' }), { code: 'VALIDATION' })
})

test('webhookTimeoutMs limits an attempt; engine options are checked, every problem named', async () => {
  // Answers after 2 s: past a 200 ms limit, well within the default 10 s.
  const server = http.createServer((req, res) => {
    req.resume()
    setTimeout(() => res.end('late'), 2000).unref()
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    const eng = latchkey.Engine.memory({ allowPrivateWebhooks: true, webhookTimeoutMs: 200, cacheMb: 8 })
    const { store } = eng.createStore('Hooks')
    const url = `http://127.0.0.1:${server.address().port}/slow`
    const hook = eng.createWebhook(store.id, { url, events: ['order.created'] })
    const result = await eng.testWebhookAsync(store.id, hook.id)
    assert.equal(result.statusCode, null)
    assert.ok(result.error, 'a timed-out attempt reports an error')
    assert.ok(result.durationMs < 1500, `${result.durationMs} ms`)
    eng.close()
  } finally {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }
  assert.throws(
    () => latchkey.Engine.memory({ cacheMb: 0, webhookTimeoutMs: 300_001 }),
    (err) =>
      err instanceof latchkey.ValidationError &&
      err.problems.length === 2 &&
      err.problems[0].startsWith('cacheMb: must be between 1 and 1048576') &&
      err.problems[1].startsWith('webhookTimeoutMs: must be a whole number from 1 to 300000'),
  )
  for (const bad of [{ cacheMb: 1.5 }, { cacheMb: -1 }, { cacheMb: Infinity }, { webhookTimeoutMs: 0 }, { webhookTimeoutMs: 0.5 }]) {
    assert.throws(() => latchkey.Engine.memory(bad), { code: 'VALIDATION' }, JSON.stringify(bad))
  }
  assert.throws(
    () => latchkey.Engine.open('', { cacheMb: '64', webhookTimeoutMs: null }),
    (err) => err.problems.length === 2 && err.problems[1] === 'cacheMb: expected a number',
  )
})
