'use strict'
// The verify decision as the typed layer builds it from the numbers the native verify answers
// with (see src/fast.rs). Names, statuses and messages come from the core: the code table is
// read once at load, a FORBIDDEN's message and every refusal body are asked of the core.

const native = require('./native.js')
const { call } = require('./errors.js')

/** `[name, status, message]` by code number: 0 = allowed, then SPEC §4's codes in order. */
const CODES = native.decisionCodes()
const FORBIDDEN = CODES.findIndex(([name]) => name === 'FORBIDDEN')

/** `{area: {action: number}}` for the exact names; anything else takes the checked path. */
const PERMISSIONS = Object.create(null)
for (const [area, actions] of Object.entries(native.permissionNumbers())) {
  // No prototype: `__proto__` or `toString` as an area or action name finds nothing here.
  PERMISSIONS[area] = Object.assign(Object.create(null), actions)
}

/** Slots of the Float64Array the native verify writes (the order of `Slot` in src/fast.rs). */
const LIMIT = 0
const REMAINING = 1
const RESET = 2
const RETRY_AFTER = 3
const MISSING = 4
const KEY = 5
const OUT_LEN = 6

/** How many numbers the native verify gives key identities (see src/fast.rs). */
const KEY_SLOTS = native.keySlots()

const messages = new Map()

/** The answer to one request. A refusal is a Decision with `allowed === false`. */
class Decision {
  #code
  #key
  #limit
  #remaining
  #reset
  #retryAfter
  #missing

  /** Built by `Engine.verify` only. */
  constructor(code, key, out) {
    this.#code = code
    this.#key = key
    this.#limit = out[LIMIT]
    this.#remaining = out[REMAINING]
    this.#reset = out[RESET]
    this.#retryAfter = out[RETRY_AFTER]
    this.#missing = out[MISSING]
  }

  get allowed() {
    return this.#code === 0
  }

  /** `OK`, or the deny code of SPEC §4 (`MISSING`, `INVALID`, …, `RATE_LIMITED`). */
  get code() {
    return CODES[this.#code][0]
  }

  /** The HTTP status to answer with: 200, 401, 403 or 429. */
  get status() {
    return CODES[this.#code][1]
  }

  /** `OK`, or the refusal's message (`Missing permission Orders:Edit` names the permission). */
  get message() {
    if (this.#code !== FORBIDDEN || this.#missing < 0) return CODES[this.#code][2]
    let message = messages.get(this.#missing)
    if (message === undefined) {
      message = call(() => native.decisionMessage(this.#code, this.#missing))
      messages.set(this.#missing, message)
    }
    return message
  }

  /** The key the credential identified (allowed decisions, and refusals from EXPIRED on). */
  get keyId() {
    return this.#key === null ? null : this.#key.keyId
  }

  get storeId() {
    return this.#key === null ? null : this.#key.storeId
  }

  get environment() {
    return this.#key === null ? null : this.#key.environment
  }

  /** The limit that governs the requester, or `null` when none applied. */
  get limit() {
    if (this.#limit < 0) return null
    return {
      limit: this.#limit,
      remaining: this.#remaining,
      resetAt: this.#reset,
      retryAfter: this.#retryAfter > 0 ? this.#retryAfter : null,
    }
  }

  /** `X-RateLimit-Limit`, `-Remaining`, `-Reset` when a limit applied; `Retry-After` on 429. */
  get headers() {
    if (this.#limit < 0) return {}
    const headers = {
      'X-RateLimit-Limit': String(this.#limit),
      'X-RateLimit-Remaining': String(this.#remaining),
      'X-RateLimit-Reset': String(this.#reset),
    }
    if (this.#retryAfter > 0) headers['Retry-After'] = String(this.#retryAfter)
    return headers
  }

  /** The server's body for this refusal (`{success: false, data: null, message, errors, code}`). */
  refusalBody() {
    if (this.#code === 0) throw new TypeError('an allowed decision has no refusal body')
    return call(() => native.refusalBody(this.#code, this.#missing < 0 ? undefined : this.#missing))
  }

  /** The number `Engine.recordRequest` passes back to the core. */
  static codeNumber(decision) {
    return decision.#code
  }

  toJSON() {
    return {
      allowed: this.allowed,
      code: this.code,
      status: this.status,
      message: this.message,
      keyId: this.keyId,
      storeId: this.storeId,
      environment: this.environment,
      limit: this.limit,
    }
  }

  [Symbol.for('nodejs.util.inspect.custom')]() {
    return `Decision ${JSON.stringify(this.toJSON())}`
  }
}

/** The permission number for an exact area and action name; `undefined` otherwise. */
let lastArea
let lastAction
let lastNumber
function permissionNumber(area, action) {
  // Callers repeat the same (usually constant) names: compare before looking them up.
  if (area === lastArea && action === lastAction) return lastNumber
  const actions = PERMISSIONS[area]
  const number = actions === undefined ? undefined : actions[action]
  if (number !== undefined) {
    lastArea = area
    lastAction = action
    lastNumber = number
  }
  return number
}

module.exports = { Decision, permissionNumber, OUT_LEN, KEY, KEY_SLOTS }
