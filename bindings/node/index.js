'use strict'
// Latchkey in-process for Node.js: the typed layer over the native module (native.js, built by
// napi-rs). Names are camelCase; results are plain objects with camelCase fields, except
// store entities (orders, packages, …), which keep the HTTP API's JSON shape. Every call that
// writes has a Promise form (`…Async`) that runs off the event loop; `verify` is synchronous.

const native = require('./native.js')

const {
  LatchkeyError,
  ValidationError,
  NotFoundError,
  ConflictError,
  ForbiddenError,
  PlanRequiredError,
  NotAllowedError,
  StorageError,
  typed,
  invalid,
  call,
} = require('./errors.js')
const { express } = require('./express.js')
const { Decision, permissionNumber, OUT_LEN, KEY, KEY_SLOTS } = require('./decision.js')

// ---- field names: camelCase outside, snake_case inside -------------------------------------

// Free-form maps whose keys are the user's own (or area names), and a webhook's payload as it
// was sent: never renamed.
const OPAQUE = new Set(['meta', 'permissions', 'payload'])

const toSnake = (name) => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)
const toCamel = (name) => name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase())

function rename(value, how) {
  if (Array.isArray(value)) return value.map((v) => rename(v, how))
  if (value === null || typeof value !== 'object' || value instanceof Date) return value
  const out = {}
  for (const [name, inner] of Object.entries(value)) {
    if (inner === undefined) continue
    out[how(name)] = OPAQUE.has(name) ? inner : rename(inner, how)
  }
  return out
}

/** Input for the engine: snake_case names, Dates as RFC 3339, `undefined` fields dropped. */
function input(value) {
  return JSON.parse(JSON.stringify(rename(value ?? {}, toSnake)))
}

const output = (value) => rename(value, toCamel)

/** A created or regenerated key: its fields, the secret this once, and `credential`. */
function createdKey(fields) {
  const key = output(fields)
  Object.defineProperty(key, 'credential', {
    enumerable: false,
    value: key.key ?? `${key.consumerKey}:${key.consumerSecret}`,
  })
  return key
}

/**
 * A created entity, with `replayed` (not enumerated, so not in its JSON or a spread, as a
 * key's `credential`): true when an earlier create with the same idempotency key made it.
 */
function createdEntity({ entity, replayed }) {
  Object.defineProperty(entity, 'replayed', { enumerable: false, value: replayed })
  return entity
}

function storeAndKey(answer) {
  return { store: output(answer.store), defaultKey: createdKey(answer.defaultKey) }
}

/** Checks `Engine.open`'s and `Engine.memory`'s options, with `problems` found already. */
function engineOptions(options, problems = []) {
  const { actor, allowPrivateWebhooks, cacheMb, webhookTimeoutMs, ...unknown } = options ?? {}
  problems.push(...Object.keys(unknown).map((name) => `${name}: unknown option`))
  if (actor != null && typeof actor !== 'string') problems.push('actor: expected a string')
  if (allowPrivateWebhooks != null && typeof allowPrivateWebhooks !== 'boolean') {
    problems.push('allowPrivateWebhooks: expected a boolean')
  }
  // Types here; ranges in the native module, from the core's rules.
  if (cacheMb != null && typeof cacheMb !== 'number') problems.push('cacheMb: expected a number')
  if (webhookTimeoutMs != null && typeof webhookTimeoutMs !== 'number') {
    problems.push('webhookTimeoutMs: expected a number')
  }
  if (problems.length) throw invalid(problems)
  return {
    actor,
    native: {
      allowPrivateWebhooks: allowPrivateWebhooks ?? false,
      cacheMb: cacheMb ?? undefined,
      webhookTimeoutMs: webhookTimeoutMs ?? undefined,
    },
  }
}

function entityArgs(storeId, area, environment) {
  return { storeId, area, environment: environment ?? 'live' }
}

function logQuery(query = {}) {
  const { keyId, status, since, until, limit, ...rest } = query
  const unknown = Object.keys(rest)
  if (unknown.length) throw invalid(unknown.map((name) => `${name}: unknown filter`))
  return input({ keyId, status, since, until, limit })
}

/** The engine on a database file (`Engine.open`) or in memory (`Engine.memory`). */
class Engine {
  #native
  #actor
  #verify
  #record
  #out = new Float64Array(OUT_LEN)
  /** `{keyId, storeId, environment}` of each key a decision named, by the number the native
   * verify gave it (see src/fast.rs). Allocated whole: numbers come in any order, and an
   * array written far past its end turns into a slower dictionary. */
  #keys = new Array(KEY_SLOTS).fill(null)

  constructor(nativeEngine, actor) {
    // `new Engine('shop.redb')` is the natural first guess; say what to call instead of
    // failing on a method a string does not have.
    if (!(nativeEngine instanceof native.Engine)) {
      throw new TypeError('an Engine is made by Engine.open(path) or Engine.memory()')
    }
    this.#native = nativeEngine
    this.#actor = actor ?? 'node'
    this.#verify = nativeEngine.bindVerify(this.#out)
    this.#record = nativeEngine.bindRecord()
  }

  /**
   * Opens (or creates) a database file; `actor` names who made changes in the audit trail;
   * `allowPrivateWebhooks` lets webhooks target internal addresses (refused by default);
   * `cacheMb` sizes the database's page cache (default 64); `webhookTimeoutMs` limits one
   * delivery attempt (default 10,000, at most 300,000).
   */
  static open(path, options = {}) {
    const problems = typeof path !== 'string' || path === '' ? ['path: expected a file path'] : []
    const { actor, native: opened } = engineOptions(options, problems)
    return new Engine(call(() => native.Engine.open(path, opened)), actor)
  }

  static memory(options = {}) {
    const { actor, native: opened } = engineOptions(options)
    return new Engine(call(() => native.Engine.memory(opened)), actor)
  }

  #call(op, args) {
    try {
      return this.#native.call(op, args)
    } catch (err) {
      throw typed(err)
    }
  }

  #callAsync(op, args) {
    let pending
    try {
      pending = this.#native.callAsync(op, args)
    } catch (err) {
      return Promise.reject(typed(err))
    }
    return pending.then(JSON.parse, (err) => Promise.reject(typed(err)))
  }

  // ---- stores (SPEC §6) ---------------------------------------------------------------------

  createStore(name, settings = {}) {
    return storeAndKey(this.#call('createStore', { actor: this.#actor, input: input({ ...settings, name }) }))
  }
  async createStoreAsync(name, settings = {}) {
    return storeAndKey(await this.#callAsync('createStore', { actor: this.#actor, input: input({ ...settings, name }) }))
  }
  getStore(storeId) {
    return output(this.#call('getStore', { storeId }))
  }
  listStores() {
    return output(this.#call('listStores', {}))
  }
  updateStore(storeId, changes) {
    return output(this.#call('updateStore', { storeId, actor: this.#actor, patch: input(changes) }))
  }
  async updateStoreAsync(storeId, changes) {
    return output(await this.#callAsync('updateStore', { storeId, actor: this.#actor, patch: input(changes) }))
  }

  // ---- keys (SPEC §3) -----------------------------------------------------------------------

  createKey(storeId, options) {
    return createdKey(this.#call('createKey', { storeId, actor: this.#actor, input: input(options) }))
  }
  async createKeyAsync(storeId, options) {
    return createdKey(await this.#callAsync('createKey', { storeId, actor: this.#actor, input: input(options) }))
  }
  getKey(storeId, keyId) {
    return output(this.#call('getKey', { storeId, keyId }))
  }
  listKeys(storeId) {
    return output(this.#call('listKeys', { storeId }))
  }
  updateKey(storeId, keyId, changes) {
    return output(this.#call('updateKey', { storeId, actor: this.#actor, keyId, patch: input(changes) }))
  }
  async updateKeyAsync(storeId, keyId, changes) {
    return output(await this.#callAsync('updateKey', { storeId, actor: this.#actor, keyId, patch: input(changes) }))
  }
  /** A new secret (in the result, this once); the old one stops at once, or after `overlapSeconds`. */
  regenerateKey(storeId, keyId, { overlapSeconds } = {}) {
    return createdKey(this.#call('regenerateKey', { storeId, actor: this.#actor, keyId, input: input({ overlapSeconds }) }))
  }
  async regenerateKeyAsync(storeId, keyId, { overlapSeconds } = {}) {
    return createdKey(await this.#callAsync('regenerateKey', { storeId, actor: this.#actor, keyId, input: input({ overlapSeconds }) }))
  }
  revokeKey(storeId, keyId) {
    this.#call('revokeKey', { storeId, actor: this.#actor, keyId })
  }
  async revokeKeyAsync(storeId, keyId) {
    await this.#callAsync('revokeKey', { storeId, actor: this.#actor, keyId })
  }
  audit(storeId, { limit } = {}) {
    return output(this.#call('audit', { storeId, limit }))
  }
  /**
   * The credentials in `text` (a file, a pasted snippet, a support ticket), checked against
   * the keys: each finding's `line`, `shape`, `masked` form, `status`, the `keyId` and
   * `storeId` it names and its `lastUsedAt` and `lastUsedIp`. With `{ stop: true }` the live ones are stopped (revoked; an old secret
   * has its overlap ended; a default key gets a new secret, not shown). A 64-hex string that
   * names no key is left out: most are digests.
   */
  checkLeaks(text, { stop } = {}) {
    return output(this.#call('checkLeaks', { text, stop, actor: this.#actor }))
  }
  async checkLeaksAsync(text, { stop } = {}) {
    return output(await this.#callAsync('checkLeaks', { text, stop, actor: this.#actor }))
  }

  // ---- verify (SPEC §4, §5) -----------------------------------------------------------------

  /**
   * Decides one request: `{ area, action, ip, path }` (all optional; area and action together).
   * A refusal is a Decision with `allowed === false`, never an exception.
   */
  verify(credential, options) {
    let area, action, ip, path
    if (options !== undefined && options !== null) ({ area, action, ip, path } = options)
    let permission = permissionNumber(area, action)
    if (permission === undefined && (area != null || action != null)) {
      permission = checkedPermission(credential, area, action, ip, path)
    }
    let code
    try {
      // The native function takes the address last, and only when there is one.
      code = ip == null ? this.#verify(credential, permission, path) : this.#verify(credential, permission, path, ip)
    } catch (err) {
      throw typed(err)
    }
    const number = this.#out[KEY]
    if (typeof code !== 'number') {
      // A key not reported before (under this number): [code, keyId, storeId, environment].
      this.#keys[number] = Object.freeze({ keyId: code[1], storeId: code[2], environment: code[3] })
      code = code[0]
    }
    return new Decision(code, number >= 0 ? this.#keys[number] : null, this.#out)
  }

  // ---- request log (seed 004) ---------------------------------------------------------------

  /** Records the request a decision answered (buffered; never blocks). */
  recordRequest(decision, { method, path, status, ip, latencyUs } = {}) {
    const problems = []
    if (!(decision instanceof Decision)) problems.push('decision: expected a Decision from verify')
    if (typeof method !== 'string' || method === '') problems.push('method: expected an HTTP method')
    if (typeof path !== 'string') problems.push('path: expected the request path')
    if (!Number.isInteger(status) || status < 0) problems.push('status: expected an HTTP status')
    if (latencyUs != null && !(Number.isFinite(latencyUs) && latencyUs >= 0)) problems.push('latencyUs: must be a number ≥ 0')
    if (problems.length) throw invalid(problems)
    // A decision for a credential that matched no key names no store: nothing to record.
    if (decision.storeId === null) return
    const code = Decision.codeNumber(decision)
    const latency = latencyUs ?? 0
    try {
      // The native function takes the address last, and only when there is one.
      if (ip == null) this.#record(decision.storeId, decision.keyId, code, method, path, status, latency)
      else this.#record(decision.storeId, decision.keyId, code, method, path, status, latency, ip)
    } catch (err) {
      throw typed(err)
    }
  }

  /** A store's request log, newest first: `{ keyId, status, since, until, limit }`. */
  logs(storeId, query) {
    return output(this.#call('logs', { storeId, query: logQuery(query) }))
  }
  async logsAsync(storeId, query) {
    return output(await this.#callAsync('logs', { storeId, query: logQuery(query) }))
  }

  /** Requests per key in a period (default: the day before `until`, which defaults to now). */
  usage(storeId, { since, until } = {}) {
    return output(this.#call('usage', { storeId, query: input({ since, until }) }))
  }
  async usageAsync(storeId, { since, until } = {}) {
    return output(await this.#callAsync('usage', { storeId, query: input({ since, until }) }))
  }

  /** Writes what is buffered and releases the database file; later calls throw `CLOSED`. */
  close() {
    call(() => this.#native.close())
  }

  /** Writes buffered last-use times and log entries now. */
  flush() {
    this.#call('flush', {})
  }
  async flushAsync() {
    await this.#callAsync('flush', {})
  }

  // ---- webhooks (SPEC §8) ------------------------------------------------------------------

  /** Registers an endpoint `{url, events, active?}`; the result's `secret` is shown this once. */
  createWebhook(storeId, endpoint) {
    return output(this.#call('createWebhook', { storeId, actor: this.#actor, input: input(endpoint) }))
  }
  async createWebhookAsync(storeId, endpoint) {
    return output(await this.#callAsync('createWebhook', { storeId, actor: this.#actor, input: input(endpoint) }))
  }
  listWebhooks(storeId) {
    return output(this.#call('listWebhooks', { storeId }))
  }
  getWebhook(storeId, webhookId) {
    return output(this.#call('getWebhook', { storeId, webhookId }))
  }
  updateWebhook(storeId, webhookId, changes) {
    return output(this.#call('updateWebhook', { storeId, actor: this.#actor, webhookId, patch: input(changes) }))
  }
  async updateWebhookAsync(storeId, webhookId, changes) {
    return output(await this.#callAsync('updateWebhook', { storeId, actor: this.#actor, webhookId, patch: input(changes) }))
  }
  /** A new signing secret (in the result, this once); the old one also signs for `overlapSeconds` (default a day). */
  rotateWebhookSecret(storeId, webhookId, { overlapSeconds } = {}) {
    return output(this.#call('rotateWebhookSecret', { storeId, actor: this.#actor, webhookId, input: input({ overlapSeconds }) }))
  }
  async rotateWebhookSecretAsync(storeId, webhookId, { overlapSeconds } = {}) {
    return output(await this.#callAsync('rotateWebhookSecret', { storeId, actor: this.#actor, webhookId, input: input({ overlapSeconds }) }))
  }
  deleteWebhook(storeId, webhookId) {
    this.#call('deleteWebhook', { storeId, actor: this.#actor, webhookId })
  }
  async deleteWebhookAsync(storeId, webhookId) {
    await this.#callAsync('deleteWebhook', { storeId, actor: this.#actor, webhookId })
  }
  /** Deliveries with every attempt, newest first (default 50, at most 500). */
  webhookDeliveries(storeId, webhookId, { limit } = {}) {
    return output(this.#call('webhookDeliveries', { storeId, webhookId, limit }))
  }
  /** Sends a finished delivery once more, now (no retries after it): the delivery, pending. */
  retryWebhookDelivery(storeId, webhookId, deliveryId) {
    return output(this.#call('retryWebhookDelivery', { storeId, webhookId, deliveryId }))
  }
  /** Sends a signed `webhook.test` event now (off the event loop): `{statusCode, body, error, durationMs}`. */
  async testWebhookAsync(storeId, webhookId) {
    return output(await this.#callAsync('testWebhook', { storeId, webhookId }))
  }
  /** One delivery pass off the event loop: `{queued, attempted, nextDueMs}`. */
  deliverWebhooksAsync() {
    return this.#callAsync('deliverWebhooks', {})
  }
  /** Delivers in a background thread from now on (once per engine). */
  startWebhookWorker() {
    this.#call('startWebhookWorker', {})
  }

  // ---- store entities (SPEC §7): the HTTP API's JSON, as is ---------------------------------

  create(storeId, area, data, { environment, idempotencyKey } = {}) {
    return createdEntity(this.#call('createEntity', { ...entityArgs(storeId, area, environment), input: data, idempotencyKey }))
  }
  async createAsync(storeId, area, data, { environment, idempotencyKey } = {}) {
    const args = { ...entityArgs(storeId, area, environment), input: data, idempotencyKey }
    return createdEntity(await this.#callAsync('createEntity', args))
  }
  get(storeId, area, id, { environment } = {}) {
    return this.#call('getEntity', { ...entityArgs(storeId, area, environment), id })
  }
  list(storeId, area, { environment, limit, cursor } = {}) {
    const page = this.#call('listEntities', { ...entityArgs(storeId, area, environment), limit, cursor })
    return { items: page.items, nextCursor: page.next_cursor }
  }
  update(storeId, area, id, data, { environment } = {}) {
    return this.#call('updateEntity', { ...entityArgs(storeId, area, environment), id, input: data })
  }
  updateAsync(storeId, area, id, data, { environment } = {}) {
    return this.#callAsync('updateEntity', { ...entityArgs(storeId, area, environment), id, input: data })
  }
  delete(storeId, area, id, { environment } = {}) {
    this.#call('deleteEntity', { ...entityArgs(storeId, area, environment), id })
  }
  async deleteAsync(storeId, area, id, { environment } = {}) {
    await this.#callAsync('deleteEntity', { ...entityArgs(storeId, area, environment), id })
  }

  // ---- customer portal sessions (SPEC §7, seed 001) -----------------------------------------

  /** Opens a session for one customer: `{token, expiresAt}`, the `cps_…` token this once. */
  createPortalSession(storeId, customerId, { environment, ttlSeconds } = {}) {
    return output(this.#call('createPortalSession', portalArgs(storeId, customerId, environment, ttlSeconds)))
  }
  async createPortalSessionAsync(storeId, customerId, { environment, ttlSeconds } = {}) {
    return output(await this.#callAsync('createPortalSession', portalArgs(storeId, customerId, environment, ttlSeconds)))
  }
  /** Whose portal a token opens, or `null` (an unknown, malformed or expired token alike). */
  portalCustomer(token) {
    return output(this.#call('portalCustomer', { token }))
  }
  /** A page of the token's customer's `Orders` or `Subscriptions`, or `null` as `portalCustomer`. */
  portalList(token, area, { limit, cursor } = {}) {
    const page = this.#call('portalList', { token, area, limit, cursor })
    return page === null ? null : { items: page.items, nextCursor: page.next_cursor }
  }
  /** The store's live sessions, soonest to expire first (`id`, `environment`, `customerId`,
   * `expiresAt`); never their tokens. */
  portalSessions(storeId) {
    return output(this.#call('portalSessions', { storeId }))
  }
  /** Ends one live session before it expires (audited); the ids ended. */
  endPortalSession(storeId, sessionId) {
    return this.#call('endPortalSession', { storeId, actor: this.#actor, sessionId }).ended
  }
  async endPortalSessionAsync(storeId, sessionId) {
    return (await this.#callAsync('endPortalSession', { storeId, actor: this.#actor, sessionId })).ended
  }
  /** Ends every live session of one customer (audited when any was live); the ids ended. */
  endCustomerPortalSessions(storeId, customerId) {
    return this.#call('endCustomerPortalSessions', { storeId, actor: this.#actor, customerId }).ended
  }
  async endCustomerPortalSessionsAsync(storeId, customerId) {
    return (await this.#callAsync('endCustomerPortalSessions', { storeId, actor: this.#actor, customerId })).ended
  }
}

function portalArgs(storeId, customerId, environment, ttlSeconds) {
  return { storeId, environment: environment ?? 'live', input: input({ customerId, ttlSeconds }) }
}

/**
 * `verify`'s arguments when the area or action is not an exact name: checked as the core reads
 * them (names in any case), every problem named; answers the permission number.
 */
function checkedPermission(credential, area, action, ip, path) {
  const problems = Object.entries({ credential, area, action, ip, path })
    .filter(([, value]) => value != null && typeof value !== 'string')
    .map(([name]) => `${name}: expected a string`)
  if (problems.length) throw invalid(problems)
  return call(() => native.verifyArguments(area ?? undefined, action ?? undefined, ip ?? undefined)) ?? undefined
}

/**
 * `text` with every Latchkey credential in it masked as key lists show it
 * (`lk_ab12cd34_…Xy9Z`, `cs_…9f3a`): for log lines, error reports and tickets, which must not
 * keep a key. With `{ hex: true }` every 64-hex word is masked too: a hex key looks like any
 * SHA-256 digest, so mask them all where digests are not expected. Needs no engine.
 */
function redact(text, options = {}) {
  const problems = []
  if (typeof text !== 'string') problems.push('text: expected a string')
  let hex = false
  if (options === null || typeof options !== 'object') {
    problems.push('options: expected an object')
  } else {
    const { hex: given = false, ...rest } = options
    problems.push(...Object.keys(rest).map((name) => `${name}: unknown option`))
    if (typeof given !== 'boolean') problems.push('hex: expected true or false')
    else hex = given
  }
  if (problems.length) throw invalid(problems)
  return native.redact(text, hex)
}

/** The proxies whose `X-Forwarded-For` is believed (CIDRs or addresses), parsed once. */
function trustedProxies(list = []) {
  return call(() => new native.TrustedProxies(list))
}

module.exports = {
  Engine,
  Decision,
  LatchkeyError,
  ValidationError,
  NotFoundError,
  ConflictError,
  ForbiddenError,
  PlanRequiredError,
  NotAllowedError,
  StorageError,
  trustedProxies,
  credentialFromHeaders: native.credentialFromHeaders,
  actionForMethod: native.actionForMethod,
  areaForPath: native.areaForPath,
  redact,
  express,
  version: native.version(),
}
