'use strict'
// The /dashboard console in headless Chromium (Debian's package, driven by playwright-core)
// against the real `latchkey` binary: sign in with the token `serve --dev` prints, create a
// key, use it, find the request in the log, deactivate it and see the request fail, delete it;
// webhooks with "Send test"; the audit trail and settings. Screenshots of the main pages go
// to target/screenshots/ (`make screenshots` writes the README's, in docs/screenshots/).
const { test, before, after } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const http = require('node:http')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')
const { spawn } = require('node:child_process')
const { chromium } = require('playwright-core')

const ROOT = path.resolve(__dirname, '../..')
const BIN = process.env.LATCHKEY_BIN || path.join(ROOT, 'target/debug/latchkey')
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium'
const SHOTS = path.resolve(ROOT, process.env.SCREENSHOTS_DIR || 'target/screenshots')

let server
let base
let banner = {}
let browser
let receiver
let received = []
let dbDir

/** Starts `latchkey serve --dev` on a free port; resolves with the banner's values. */
function startServer() {
  return new Promise((resolve, reject) => {
    // A database of its own: `--dev` reuses the store it made in a database before.
    dbDir = fs.mkdtempSync(path.join(os.tmpdir(), 'latchkey-browser-'))
    const db = path.join(dbDir, 'dashboard.redb')
    server = spawn(BIN, ['serve', '--dev', '--listen', '127.0.0.1:0', '--db', db, '--allow-private-webhooks'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    server.on('error', reject)
    server.on('exit', (code) => reject(new Error(`the server exited (${code}) before listening`)))
    readline.createInterface({ input: server.stdout }).on('line', (line) => {
      const match = line.match(/^\s+(store|API key|admin token):\s+(\S+)/)
      if (match) banner[match[1]] = match[2]
    })
    readline.createInterface({ input: server.stderr }).on('line', (line) => {
      const match = line.match(/listening on (http:\/\/\S+)/)
      if (match) resolve(match[1])
    })
  })
}

before(async () => {
  base = await startServer()
  assert.ok(banner['admin token'] && banner.store, 'the --dev banner names the store and a token')
  receiver = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      received.push({ headers: req.headers, body })
      res.writeHead(200, { 'content-type': 'text/plain' }).end('received')
    })
  })
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  fs.mkdirSync(SHOTS, { recursive: true })
})

after(async () => {
  await browser?.close()
  receiver?.close()
  server?.removeAllListeners('exit')
  server?.kill('SIGTERM')
  if (server && server.exitCode === null) await new Promise((resolve) => server.once('exit', resolve))
  if (dbDir) fs.rmSync(dbDir, { recursive: true, force: true })
})

/** Every form control on the page has a label (or an aria-label), read in one evaluation. */
async function assertLabelled(page) {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll('input, select, textarea')]
      .filter((el) => el.type !== 'hidden' && !el.labels?.length && !el.getAttribute('aria-label'))
      .map((el) => el.outerHTML))
  assert.deepEqual(unlabelled, [])
}

const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true })

/** Waits (up to 10 s) until the receiver has more than `count` requests. */
async function receivedMore(count) {
  for (const deadline = Date.now() + 10_000; received.length === count && Date.now() < deadline;) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** A new page signed in to the console with the --dev admin token, on the store list. */
async function signedIn() {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } })
  await page.goto(`${base}/dashboard/`)
  await page.getByLabel('Management token').fill(banner['admin token'])
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('heading', { name: 'Stores' }).waitFor()
  return page
}

async function call(pathname, key) {
  const response = await fetch(`${base}${pathname}`, { headers: { 'X-Api-Key': key } })
  return { status: response.status, body: await response.json() }
}

test('the console walks a key from creation to deletion', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } })
  // Script errors on the page (refused requests are expected here, and shown in the page).
  const errors = []
  page.on('pageerror', (err) => errors.push(err.message))

  // Sign in: a wrong token is refused with the server's message, the printed one works.
  await page.goto(`${base}/dashboard/`)
  await page.getByLabel('Management token').fill('not-a-token')
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('alert').waitFor()
  assert.match(await page.getByRole('alert').textContent(), /token/i)
  await page.getByLabel('Management token').fill(banner['admin token'])
  await shot(page, 'sign-in')
  await page.getByRole('button', { name: 'Sign in' }).click()
  await page.getByRole('heading', { name: 'Stores' }).waitFor()
  await assertLabelled(page)
  await shot(page, 'stores')

  // The store's keys: only the default key so far.
  await page.getByRole('link', { name: 'Dev Store' }).click()
  await page.getByRole('heading', { name: 'API keys' }).waitFor()
  assert.equal(await page.locator('tbody tr').count(), 1)

  // Create a key: the matrix offers only what each area offers.
  await page.getByRole('button', { name: 'Create API key' }).click()
  const dialog = page.getByRole('dialog')
  await dialog.getByLabel('Name', { exact: true }).fill('ERP')
  await dialog.getByLabel('Description').fill('Nightly order export')
  await dialog.getByLabel('Packages: View').check()
  await dialog.getByLabel('Orders: View').check()
  assert.equal(await dialog.getByLabel('Orders: Delete').count(), 0, 'orders cannot be deleted')
  assert.equal(await dialog.getByLabel('Subscriptions: Edit').count(), 0)
  assert.match(await dialog.getByLabel('Expires').inputValue(), /default/)
  await assertLabelled(page)
  await shot(page, 'create-key')
  // A bad entry is refused with the server's problem, and nothing is created.
  await dialog.getByLabel('IP allowlist (one address or CIDR per line; empty: any)').fill('10.0.0.0/33')
  await dialog.getByRole('button', { name: 'Create key' }).click()
  await dialog.getByRole('alert').waitFor()
  assert.match(await dialog.getByRole('alert').textContent(), /ip_allowlist/)
  await dialog.getByLabel('IP allowlist (one address or CIDR per line; empty: any)').fill('')
  await dialog.getByRole('button', { name: 'Create key' }).click()

  // The secret, once, with a copy button; gone from the page when the dialog closes.
  const secretDialog = page.getByRole('dialog', { name: 'API key created' })
  await secretDialog.waitFor()
  const key = (await secretDialog.locator('#secret-value').textContent()).trim()
  assert.match(key, /^lk_/)
  assert.ok(await secretDialog.getByRole('button', { name: 'Copy' }).isVisible())
  assert.match(await secretDialog.textContent(), /only time/)
  await shot(page, 'key-created')
  await secretDialog.getByRole('button', { name: "I've saved it" }).click()
  await secretDialog.waitFor({ state: 'detached' })
  await page.getByRole('cell', { name: 'ERP Nightly order export' }).waitFor()
  assert.ok(!(await page.content()).includes(key), 'the secret left the page')
  await shot(page, 'keys')

  // Use it with a real request, and find that request in the log.
  assert.equal((await call('/api/v1/packages', key)).status, 200)
  assert.equal((await call('/api/v1/coupons', key)).status, 403)
  await page.getByRole('link', { name: 'Request log' }).click()
  await page.getByRole('heading', { name: 'Request log' }).waitFor()
  await page.getByLabel('Key').selectOption({ label: 'ERP' })
  await page.getByRole('button', { name: 'Apply filters' }).click()
  await page.getByRole('cell', { name: 'GET /api/v1/packages' }).waitFor()
  await page.getByRole('cell', { name: 'FORBIDDEN' }).waitFor()
  await assertLabelled(page)
  await shot(page, 'logs')

  // Deactivate it: the next request is refused.
  await page.getByRole('link', { name: 'API keys' }).click()
  // The list counts its two requests of the last day, one of them refused.
  const erp = page.locator('tr[data-key-id]', { hasText: 'Nightly order export' })
  await erp.waitFor()
  assert.match(await erp.locator('td').nth(7).textContent(), /^2\s*1 error$/)
  // Over 30 days, the same two: the list asks again for the longer period.
  await page.getByLabel('Requests in the last').selectOption({ label: '30 days' })
  await page.getByRole('columnheader', { name: 'Requests (30 days)' }).waitFor()
  assert.match(await erp.locator('td').nth(7).textContent(), /^2\s*1 error$/)
  await page.getByRole('button', { name: 'Edit ERP' }).click()
  const edit = page.getByRole('dialog')
  assert.ok(await edit.getByLabel('Orders: View').isDisabled(), 'permissions are fixed in this store')
  await edit.getByLabel(/Activated/).uncheck()
  await edit.getByRole('button', { name: 'Save' }).click()
  await page.getByText('Deactivated', { exact: true }).waitFor()
  const refused = await call('/api/v1/packages', key)
  assert.equal(refused.status, 403)
  assert.equal(refused.body.code, 'INACTIVE')

  // Delete it, after a confirmation: it is gone and the key no longer authenticates.
  await page.getByRole('button', { name: 'Delete ERP' }).click()
  await page.getByRole('dialog', { name: 'Delete key?' }).getByRole('button', { name: 'Delete key' }).click()
  await page.getByText('Deleted "ERP".').waitFor()
  assert.equal(await page.locator('tr[data-key-id]').count(), 1, 'only the default key is left')
  assert.equal((await call('/api/v1/packages', key)).status, 401)

  // A pair key: its consumer key (an identifier, not a secret) can be revealed in the list;
  // regenerating shows the new consumer secret once.
  await page.getByRole('button', { name: 'Create API key' }).click()
  const pairDialog = page.getByRole('dialog')
  await pairDialog.getByLabel('Name', { exact: true }).fill('POS')
  await pairDialog.getByLabel('Format').selectOption('pair')
  await pairDialog.getByLabel('Orders: View').check()
  await pairDialog.getByRole('button', { name: 'Create key' }).click()
  const pairSecret = page.getByRole('dialog', { name: 'API key created' })
  const consumerSecret = (await pairSecret.locator('#secret-value').textContent()).trim()
  assert.match(consumerSecret, /^cs_/)
  const consumerKey = (await pairSecret.locator('code').textContent()).trim()
  assert.match(consumerKey, /^ck_/)
  await pairSecret.getByRole('button', { name: "I've saved it" }).click()
  await pairSecret.waitFor({ state: 'detached' })
  const reveal = page.getByRole('button', { name: 'Show consumer key' })
  await reveal.click()
  await page.getByText(consumerKey).waitFor()
  assert.equal(await page.getByRole('button', { name: 'Hide consumer key' }).getAttribute('aria-expanded'), 'true')
  assert.ok(!(await page.content()).includes(consumerSecret))
  // With an overlap of an hour: both consumer secrets work until it ends, and the list says so.
  await page.getByRole('button', { name: 'Regenerate POS' }).click()
  const regenerate = page.getByRole('dialog', { name: 'Regenerate key?' })
  await regenerate.getByLabel('The current secret stops working').selectOption({ label: 'In 1 hour' })
  await regenerate.getByRole('button', { name: 'Regenerate' }).click()
  const regenerated = page.getByRole('dialog', { name: 'Key regenerated' })
  const newSecret = (await regenerated.locator('#secret-value').textContent()).trim()
  assert.match(newSecret, /^cs_/)
  assert.notEqual(newSecret, consumerSecret)
  await regenerated.getByRole('button', { name: "I've saved it" }).click()
  await regenerated.waitFor({ state: 'detached' })
  await page.getByText(/Previous secret works until .*; not used since/).waitFor()
  for (const secret of [newSecret, consumerSecret]) {
    const basic = Buffer.from(`${consumerKey}:${secret}`).toString('base64')
    const orders = await fetch(`${base}/api/v1/orders`, { headers: { Authorization: `Basic ${basic}` } })
    assert.equal(orders.status, 200)
  }
  // Reloaded (here by choosing another period), the list tells that the old secret is still in use.
  await page.getByLabel('Requests in the last').selectOption({ label: '7 days' })
  await page.getByText(/Previous secret works until .*; last used /).waitFor()
  // Once the clients have switched, the old secret can be stopped before the overlap ends.
  await page.getByRole('button', { name: 'Stop the previous secret of POS' }).click()
  await page.getByRole('dialog', { name: 'Stop the previous secret?' }).getByRole('button', { name: 'Stop it' }).click()
  await page.getByRole('button', { name: 'Stop the previous secret of POS' }).waitFor({ state: 'detached' })
  const oldBasic = Buffer.from(`${consumerKey}:${consumerSecret}`).toString('base64')
  assert.equal((await fetch(`${base}/api/v1/orders`, { headers: { Authorization: `Basic ${oldBasic}` } })).status, 401)

  // The audit trail tells the story.
  await page.getByRole('link', { name: 'Audit trail' }).click()
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor()
  const audit = await page.locator('tbody').textContent()
  for (const change of ['key created', 'key updated', 'key revoked']) assert.ok(audit.includes(change), change)
  await shot(page, 'audit')
  assert.deepEqual(errors, [])
  await page.close()
})

test('webhooks: create, send a test and see the answer, deliveries, delete', async () => {
  const page = await signedIn()
  await page.goto(`${base}/dashboard/#/stores/${banner.store}/webhooks`)
  await page.getByRole('heading', { name: 'Webhooks' }).waitFor()
  await page.getByText('No webhooks yet').waitFor()

  const url = `http://127.0.0.1:${receiver.address().port}/hooks`
  await page.getByLabel('Webhook URL').fill(url)
  await page.getByLabel('api_key.created').check()
  await page.getByRole('button', { name: 'Save webhook' }).click()
  const secretDialog = page.getByRole('dialog', { name: 'Webhook created' })
  const secret = (await secretDialog.locator('#secret-value').textContent()).trim()
  assert.match(secret, /^whsec_/)
  await secretDialog.getByRole('button', { name: "I've saved it" }).click()
  await secretDialog.waitFor({ state: 'detached' })
  assert.ok(!(await page.content()).includes(secret), 'the secret left the page')

  await page.getByRole('button', { name: `Send test to ${url}` }).click()
  const output = page.getByLabel('Webhook test output')
  await page.waitForFunction(() => /status: 200/.test(document.getElementById('webhook-output').textContent))
  assert.match(await output.textContent(), /received/)
  assert.equal(JSON.parse(received.at(-1).body).type, 'webhook.test')
  await page.getByRole('button', { name: 'Deliveries' }).click()
  await page.getByRole('cell', { name: /webhook\.test/ }).waitFor()
  // A finished delivery can be sent once more; the receiver gets the same event id again.
  const sentBefore = received.length
  await page.getByRole('button', { name: /^Resend delivery whd_/ }).first().click()
  await page.getByText('Resending webhook.test.').waitFor()
  await receivedMore(sentBefore)
  assert.equal(received.length, sentBefore + 1)
  assert.equal(received.at(-1).headers['webhook-id'], received.at(-2).headers['webhook-id'])

  // Rotating shows the new secret once; for the overlap both secrets sign each delivery.
  await page.getByRole('button', { name: `Rotate secret of ${url}` }).click()
  await page.getByRole('dialog', { name: 'Rotate signing secret?' }).getByRole('button', { name: 'Rotate secret' }).click()
  const rotatedDialog = page.getByRole('dialog', { name: 'Signing secret rotated' })
  const rotated = (await rotatedDialog.locator('#secret-value').textContent()).trim()
  assert.match(rotated, /^whsec_/)
  assert.notEqual(rotated, secret)
  await rotatedDialog.getByRole('button', { name: "I've saved it" }).click()
  await rotatedDialog.waitFor({ state: 'detached' })
  assert.ok(!(await page.content()).includes(rotated), 'the new secret left the page')
  await page.getByText(/previous secret also signs until/).waitFor()
  const before = received.length
  await page.getByRole('button', { name: `Send test to ${url}` }).click()
  await receivedMore(before)
  assert.equal(received.length, before + 1)
  assert.equal(received.at(-1).headers['webhook-signature'].split(' ').length, 2)
  await assertLabelled(page)
  await shot(page, 'webhooks')

  // An unreachable endpoint shows its error like a terminal would.
  const closed = http.createServer()
  await new Promise((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const deadUrl = `http://127.0.0.1:${closed.address().port}/gone`
  await new Promise((resolve) => closed.close(resolve))
  await page.getByLabel('Webhook URL').fill(deadUrl)
  await page.getByLabel('order.created').check()
  await page.getByRole('button', { name: 'Save webhook' }).click()
  await page.getByRole('dialog', { name: 'Webhook created' }).getByRole('button', { name: "I've saved it" }).click()
  await page.getByRole('button', { name: `Send test to ${deadUrl}` }).click()
  await page.waitForFunction(() => /error: /.test(document.getElementById('webhook-output').textContent))
  assert.match(await output.textContent(), /status: —/)
  await page.getByRole('button', { name: `Delete webhook ${deadUrl}` }).click()
  await page.getByRole('dialog', { name: 'Delete webhook?' }).getByRole('button', { name: 'Delete webhook' }).click()
  await page.getByRole('button', { name: `Send test to ${deadUrl}` }).waitFor({ state: 'detached' })

  await page.getByRole('button', { name: `Delete webhook ${url}` }).click()
  await page.getByRole('dialog', { name: 'Delete webhook?' }).getByRole('button', { name: 'Delete webhook' }).click()
  await page.getByText('No webhooks yet').waitFor()

  // The SSRF guard's refusal reaches the form without allow-private (here it is allowed, so
  // show a plain validation error instead: a non-HTTP URL).
  await page.getByLabel('Webhook URL').fill('ftp://example.com/x')
  await page.getByRole('button', { name: 'Save webhook' }).click()
  await page.getByRole('alert').waitFor()
  assert.match(await page.getByRole('alert').textContent(), /url/)

  // Both endpoints' creation and deletion are in the audit trail.
  await page.getByRole('link', { name: 'Audit trail' }).click()
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor()
  const trail = await page.locator('tbody').textContent()
  for (const change of ['webhook created', 'webhook secret rotated', 'webhook deleted']) assert.ok(trail.includes(change), change)
  assert.match(trail, /webhook wh_[a-z0-9]+/)
  await page.close()
})

test('portal sessions: listed without their links, ended one at a time or all of a customer', async () => {
  const post = async (pathname, body) => {
    const response = await fetch(`${base}${pathname}`, {
      method: 'POST',
      headers: { 'X-Api-Key': banner['API key'], 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    assert.equal(response.status, 201, pathname)
    return (await response.json()).data
  }
  const customer = await post('/api/v1/customers', { email: 'portal@example.com', name: 'Pat' })
  const sessions = [
    await post('/api/v1/auth/portal-sessions', { customer_id: customer.id }),
    await post('/api/v1/auth/portal-sessions', { customer_id: customer.id, ttl_seconds: 3600 }),
    await post('/api/v1/auth/portal-sessions', { customer_id: customer.id, ttl_seconds: 7200 }),
  ]
  const opens = async (token) =>
    (await fetch(`${base}/api/v1/portal/orders`, { headers: { Authorization: `Bearer ${token}` } })).status

  const page = await signedIn()
  await page.goto(`${base}/dashboard/#/stores/${banner.store}/portal`)
  await page.getByRole('heading', { name: 'Portal sessions' }).waitFor()
  const ends = page.getByRole('button', { name: /^End portal session ps_/ })
  await ends.first().waitFor()
  assert.equal(await ends.count(), 3)
  const content = await page.content()
  assert.ok(sessions.every((s) => !content.includes(s.token)), 'no session link is on the page')

  // The soonest to expire is first: the 15-minute one.
  await ends.first().click()
  await page.getByRole('dialog', { name: 'End session?' }).getByRole('button', { name: 'End session' }).click()
  await page.getByText('Portal session ended.').waitFor()
  await page.waitForFunction(() => document.querySelectorAll('tbody tr').length === 2)
  assert.deepEqual(await Promise.all(sessions.map((s) => opens(s.token))), [401, 200, 200])

  await page.getByRole('button', { name: `End all portal sessions of ${customer.id}` }).first().click()
  await page.getByRole('dialog', { name: 'End all sessions?' }).getByRole('button', { name: 'End all sessions' }).click()
  await page.getByText('2 portal sessions ended.').waitFor()
  await page.getByText('No live portal sessions.').waitFor()
  assert.deepEqual(await Promise.all(sessions.map((s) => opens(s.token))), [401, 401, 401])

  await page.getByRole('link', { name: 'Audit trail' }).click()
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor()
  const trail = await page.locator('tbody').textContent()
  assert.ok(trail.includes('portal sessions ended'), trail)
  await page.close()
})

test('settings save, permissions become editable, and keyboard users can close dialogs', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } })
  await page.goto(`${base}/dashboard/`)
  await page.getByLabel('Management token').fill(banner['admin token'])
  await page.keyboard.press('Tab')
  await page.keyboard.press('Enter')
  await page.getByRole('heading', { name: 'Stores' }).waitFor()
  await page.goto(`${base}/dashboard/#/stores/${banner.store}/settings`)
  await page.getByRole('heading', { name: 'Settings' }).waitFor()
  await page.getByLabel(/Permissions editable/).check()
  await page.getByRole('button', { name: 'Save settings' }).click()
  await page.getByText('Settings saved.').waitFor()
  await assertLabelled(page)
  await shot(page, 'settings')

  // Now a key's permissions can be changed in its edit dialog.
  await page.getByRole('link', { name: 'API keys' }).click()
  await page.getByRole('button', { name: 'Edit POS' }).click()
  const edit = page.getByRole('dialog')
  assert.equal(await edit.getByLabel('Packages: View').isEnabled(), true)
  await edit.getByLabel('Packages: View').check()
  await edit.getByRole('button', { name: 'Save' }).click()
  await page.getByRole('cell', { name: 'Orders: View · Packages: View' }).waitFor()

  // The audit trail shows the settings change, the setting it changed and who changed it.
  await page.getByRole('link', { name: 'Audit trail' }).click()
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor()
  const change = await page.locator('tbody tr', { hasText: 'store updated' }).first().textContent()
  assert.match(change, /store settings.*permissions_editable/)
  await page.getByRole('link', { name: 'API keys' }).click()
  await page.getByRole('heading', { name: 'API keys' }).waitFor()

  await page.getByRole('button', { name: 'Create API key' }).click()
  await page.getByRole('dialog').waitFor()
  await page.keyboard.press('Escape')
  assert.equal(await page.getByRole('dialog').count(), 0)
  await page.close()
})

test('the key list flags a key expiring within the week, as its api_key.expiring notice does', async () => {
  const admin = async (method, pathname, body) => {
    const response = await fetch(`${base}/api/stores/${banner.store}${pathname}`, {
      method,
      headers: { Authorization: `Bearer ${banner['admin token']}`, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    })
    assert.ok(response.ok, `${method} ${pathname}: ${response.status}`)
    return (await response.json()).data
  }
  const inHours = (hours) => new Date(Date.now() + hours * 3600 * 1000).toISOString()
  const soon = await admin('POST', '/api-keys', { name: 'Soon', permissions: 'orders:read', expires_at: inHours(3 * 24 - 1) })
  const later = await admin('POST', '/api-keys', { name: 'Later', permissions: 'orders:read', expires_at: inHours(30 * 24) })

  const page = await signedIn()
  await page.goto(`${base}/dashboard/#/stores/${banner.store}/keys`)
  await page.getByRole('heading', { name: 'API keys' }).waitFor()
  const row = (key) => page.locator(`tr[data-key-id="${key.id}"]`)
  await row(soon).waitFor()
  assert.match(await row(soon).textContent(), /Expires in 3 days/)
  assert.doesNotMatch(await row(later).textContent(), /Expires in|Expired/)
  await page.close()
  for (const key of [soon, later]) await admin('DELETE', `/api-keys/${key.id}`)
})

test('leak check: pasted text names the live key, masked, and stops it after a confirmation', async () => {
  const response = await fetch(`${base}/api/stores/${banner.store}/api-keys`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${banner['admin token']}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Pasted', permissions: 'packages:read' }),
  })
  const leaked = (await response.json()).data
  assert.equal((await call('/api/v1/packages', leaked.key)).status, 200)

  const page = await signedIn()
  await page.getByRole('link', { name: 'Leak check' }).click()
  await page.getByRole('heading', { name: 'Leak check' }).waitFor()
  await assertLabelled(page)
  await page.getByLabel('Text to check').fill(`Hi, my integration fails with\nX-Api-Key: ${leaked.key}\nthanks`)
  await page.getByRole('button', { name: 'Check' }).click()
  const results = page.locator('#leak-results')
  await results.getByText('Live', { exact: true }).waitFor()
  const shown = await results.textContent()
  assert.match(shown, new RegExp(leaked.id))
  assert.ok(shown.includes(`…${leaked.key.slice(-4)}`) && !shown.includes(leaked.key), 'masked, never whole')
  assert.match(shown, /^Line.*2/s)

  await page.getByRole('button', { name: 'Stop the live credential' }).click()
  await page.getByRole('button', { name: 'Stop them' }).click()
  await results.getByText('Revoked', { exact: true }).waitFor()
  await shot(page, 'leaks')
  assert.doesNotMatch(await results.textContent(), /null|undefined/)
  assert.equal((await call('/api/v1/packages', leaked.key)).status, 401)
  // The audit trail says why the key went.
  await page.goto(`${base}/dashboard/#/stores/${banner.store}/audit`)
  await page.getByRole('heading', { name: 'Audit trail' }).waitFor()
  assert.match(await page.locator('tbody tr').first().textContent(), new RegExp(`key revoked${leaked.id}.*reason: leaked`))
  await page.close()
})
