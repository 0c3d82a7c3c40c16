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

// ---- field names: camelCase outside, snake_case inside -------------------------------------

// Free-form maps whose keys are the user's own (or area names): never renamed.
const OPAQUE = new Set(['meta', 'permissions'])

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

function storeAndKey(answer) {
  return { store: output(answer.store), defaultKey: createdKey(answer.defaultKey) }
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

  constructor(nativeEngine, actor) {
    this.#native = nativeEngine
    this.#actor = actor ?? 'node'
  }

  /** Opens (or creates) a database file; `actor` names who made changes in the audit trail. */
  static open(path, { actor } = {}) {
    if (typeof path !== 'string' || path === '') throw invalid(['path: expected a file path'])
    return new Engine(call(() => native.Engine.open(path)), actor)
  }

  static memory({ actor } = {}) {
    return new Engine(call(() => native.Engine.memory()), actor)
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
    return output(this.#call('updateStore', { storeId, patch: input(changes) }))
  }
  async updateStoreAsync(storeId, changes) {
    return output(await this.#callAsync('updateStore', { storeId, patch: input(changes) }))
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
  regenerateKey(storeId, keyId) {
    return createdKey(this.#call('regenerateKey', { storeId, actor: this.#actor, keyId }))
  }
  async regenerateKeyAsync(storeId, keyId) {
    return createdKey(await this.#callAsync('regenerateKey', { storeId, actor: this.#actor, keyId }))
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

  // ---- verify (SPEC §4, §5) -----------------------------------------------------------------

  /**
   * Decides one request: `{ area, action, ip, path }` (all optional; area and action together).
   * A refusal is a Decision with `allowed === false`, never an exception.
   */
  verify(credential, { area, action, ip, path } = {}) {
    try {
      return this.#native.verify(credential, area, action, ip, path)
    } catch (err) {
      throw typed(err)
    }
  }

  // ---- request log (seed 004) ---------------------------------------------------------------

  /** Records the request a decision answered (buffered; never blocks). */
  recordRequest(decision, { method, path, status, ip, latencyUs } = {}) {
    try {
      this.#native.recordRequest(decision, method, path, status, ip, latencyUs)
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

  // ---- store entities (SPEC §7): the HTTP API's JSON, as is ---------------------------------

  create(storeId, area, data, { environment } = {}) {
    return this.#call('createEntity', { ...entityArgs(storeId, area, environment), input: data })
  }
  createAsync(storeId, area, data, { environment } = {}) {
    return this.#callAsync('createEntity', { ...entityArgs(storeId, area, environment), input: data })
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
}

/** The proxies whose `X-Forwarded-For` is believed (CIDRs or addresses), parsed once. */
function trustedProxies(list = []) {
  return call(() => new native.TrustedProxies(list))
}

module.exports = {
  Engine,
  Decision: native.Decision,
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
  express,
  version: native.version(),
}
