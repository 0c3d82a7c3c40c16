'use strict'
// Every shared scenario in sdk-tests/scenarios/, through the Node package (camelCase API).
const { test } = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const latchkey = require('latchkey')

const DIR = path.join(__dirname, '..', 'scenarios')
const FILES = fs.readdirSync(DIR).filter((f) => f.endsWith('.json')).sort()

// Scenario inputs use the HTTP API's snake_case; the Node API takes camelCase options.
const camel = (name) => name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase())
function camelize(value) {
  if (Array.isArray(value)) return value.map(camelize)
  if (value === null || typeof value !== 'object') return value
  return Object.fromEntries(
    Object.entries(value).map(([k, v]) => [camel(k), k === 'meta' || k === 'permissions' ? v : camelize(v)]),
  )
}

class Run {
  constructor() {
    this.eng = latchkey.Engine.memory({ actor: 'scenario' })
    this.stores = {}
    this.keys = {} // name -> [key id, credential]
    this.entities = {} // name -> entity id
    this.sessions = {} // name -> portal session token
  }

  /** `value` with every string "$name" replaced by the id of the entity saved as name. */
  resolve(value) {
    if (typeof value === 'string' && value.startsWith('$')) return this.entities[value.slice(1)]
    if (Array.isArray(value)) return value.map((v) => this.resolve(v))
    if (value === null || typeof value !== 'object') return value
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, this.resolve(v)]))
  }

  token(step) {
    return step.session === undefined ? step.token : this.sessions[step.session]
  }

  step(step) {
    const store = () => this.stores[step.store]
    switch (step.op) {
      case 'create_store': {
        const { store: s, defaultKey } = this.eng.createStore(step.name, camelize(step.settings ?? {}))
        this.stores[step.as] = s.id
        this.keys[`${step.as}.default`] = [defaultKey.id, defaultKey.credential]
        break
      }
      case 'update_store':
        this.eng.updateStore(store(), camelize(step.patch))
        break
      case 'create_key': {
        const created = this.eng.createKey(store(), camelize(step.input))
        this.keys[step.as] = [created.id, created.credential]
        break
      }
      case 'update_key':
        this.eng.updateKey(store(), this.keys[step.key][0], camelize(step.patch))
        break
      case 'regenerate_key': {
        const [keyId, old] = this.keys[step.key]
        const created = this.eng.regenerateKey(store(), keyId, { overlapSeconds: step.overlap_seconds })
        if (step.old_as) this.keys[step.old_as] = [keyId, old]
        this.keys[step.key] = [created.id, created.credential]
        break
      }
      case 'revoke_key':
        this.eng.revokeKey(store(), this.keys[step.key][0])
        break
      case 'verify':
        this.verify(step)
        break
      case 'create_entity': {
        const created = this.eng.create(store(), step.area, this.resolve(step.input), {
          environment: step.environment ?? 'live',
          idempotencyKey: step.idempotency_key,
        })
        if (step.same_as !== undefined) assert.equal(created.id, this.entities[step.same_as], JSON.stringify(step))
        assert.equal(created.replayed, step.same_as !== undefined, `replayed: ${JSON.stringify(step)}`)
        if (step.as !== undefined) this.entities[step.as] = created.id
        break
      }
      case 'create_portal_session': {
        const options = { environment: step.environment, ttlSeconds: step.ttl_seconds }
        this.sessions[step.as] = this.eng.createPortalSession(store(), this.entities[step.customer], options).token
        break
      }
      case 'portal_customer': {
        const found = this.eng.portalCustomer(this.token(step))
        assert.equal(found?.customerId ?? null, step.expect === null ? null : this.entities[step.expect], JSON.stringify(step))
        break
      }
      case 'portal_list': {
        const page = this.eng.portalList(this.token(step), step.area, { limit: step.limit })
        assert.equal(page === null ? null : page.items.length, step.expect_count, JSON.stringify(step))
        break
      }
      case 'list_entities': {
        const page = this.eng.list(store(), step.area, { environment: step.environment ?? 'live' })
        assert.equal(page.items.length, step.expect_count, JSON.stringify(step))
        break
      }
      case 'audit': {
        // The newest events, newest first: action, key (by name; null for a store event),
        // changed fields, and the scenario's actor on every one.
        // `limit` defaults to the number of events expected (an error step has none).
        const events = this.eng.audit(store(), { limit: step.limit ?? step.expect.length })
        const seen = events.map((e) => [e.action, e.keyId, e.changes, e.actor])
        const wanted = step.expect.map((w) => [
          w.action,
          w.key === null ? null : this.keys[w.key][0],
          w.changes,
          { type: 'admin', id: 'scenario' },
        ])
        assert.deepEqual(seen, wanted, JSON.stringify(step))
        break
      }
      case 'check_leaks': {
        // `lines` with each `{name}` replaced by that key's credential; each finding expected
        // as [line, shape, status, key name or null].
        const text = step.lines
          .map((line) => line.replace(/\{([a-z0-9_.]+)\}/g, (whole, name) => this.keys[name]?.[1] ?? whole))
          .join('\n')
        const findings = this.eng.checkLeaks(text, { stop: step.stop ?? false })
        const seen = findings.map((f) => [f.line, f.shape, f.status, f.keyId])
        const wanted = step.expect.map(([line, shape, status, key]) => [line, shape, status, key === null ? null : this.keys[key][0]])
        assert.deepEqual(seen, wanted, JSON.stringify(step))
        break
      }
      default:
        throw new Error(`unknown op ${step.op}`)
    }
  }

  verify(step) {
    const credential = step.key !== undefined ? this.keys[step.key][1] : step.credential
    const options = { area: step.area, action: step.action, ip: step.ip, path: step.path ?? '/' }
    let d
    for (let i = 0; i < (step.repeat ?? 1); i++) d = this.eng.verify(credential, options)
    const expect = step.expect
    for (const field of ['allowed', 'code', 'status', 'message']) {
      if (field in expect) assert.equal(d[field], expect[field], `${field} of ${JSON.stringify(step)}`)
    }
    for (const [name, value] of Object.entries(expect.headers ?? {})) {
      assert.equal(d.headers[name], value, `${name} of ${JSON.stringify(step)}`)
    }
  }
}

test('the scenarios are found', () => {
  assert.ok(FILES.length >= 4)
})

for (const file of FILES) {
  test(`scenario ${path.basename(file, '.json')}`, () => {
    const scenario = JSON.parse(fs.readFileSync(path.join(DIR, file), 'utf8'))
    const run = new Run()
    scenario.steps.forEach((step, i) => {
      if (step.expect_error === undefined) {
        run.step(step)
        return
      }
      assert.throws(
        () => run.step(step),
        (err) => {
          assert.ok(err instanceof latchkey.LatchkeyError, `${i}: ${err}`)
          assert.equal(err.code, step.expect_error, `step ${i}`)
          if (step.problems !== undefined) assert.equal(err.problems.length, step.problems, `step ${i}: ${err.problems}`)
          return true
        },
      )
    })
  })
}
