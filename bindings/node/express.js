'use strict'
// The Express middleware: verifies each request's key and answers a refusal exactly as the
// Latchkey server does (status, wrapper body, rate-limit headers); records every request that
// named a key in the store's request log with its final status.

// The legacy parser, as Express's router (through `parseurl`) parses request targets.
const { parse: legacyParse } = require('node:url')
const native = require('./native.js')
const { call, invalid } = require('./errors.js')

/**
 * `latchkey.express(engine, { area, action, areaFor, trustedProxies })`.
 *
 * - `area`: the area every request needs; else `areaFor(req)`; else the area of the request's
 *   `/api/v1/<segment>` path, as the server maps its routes (in any case, as Express routes
 *   them). With no area, the key is only authenticated (any live key of the store passes).
 * - `action`: the action every request needs; else the one the method implies (GET → View,
 *   POST/PUT/PATCH → Edit, DELETE → Delete). On an area's path, a method that implies none is
 *   answered 405 once the key is verified, as the server does.
 * - `trustedProxies`: CIDRs whose `X-Forwarded-For` is believed (default none: the socket peer).
 *
 * An allowed request continues with the decision in `req.latchkey`.
 */
function express(engine, options = {}) {
  const { area, action, areaFor, trustedProxies = [], ...rest } = options
  const problems = Object.keys(rest).map((name) => `${name}: unknown option`)
  if (area !== undefined && typeof area !== 'string') problems.push('area: expected a string')
  if (action !== undefined && typeof action !== 'string') problems.push('action: expected a string')
  if (areaFor !== undefined && typeof areaFor !== 'function') problems.push('areaFor: expected a function')
  if (!Array.isArray(trustedProxies)) problems.push('trustedProxies: expected a list of CIDRs')
  if (!engine || typeof engine.verify !== 'function') problems.push('engine: expected a latchkey Engine')
  if (problems.length) throw invalid(problems)
  const proxies = call(() => new native.TrustedProxies(trustedProxies))

  return function latchkey(req, res, next) {
    const started = process.hrtime.bigint()
    const path = pathname(req)
    let decision
    let ip
    let needed
    let act
    try {
      needed = area ?? (areaFor ? areaFor(req) : native.areaForPath(routed(path))) ?? undefined
      act = needed ? (action ?? native.actionForMethod(req.method) ?? undefined) : undefined
      const credential = native.credentialFromHeaders(lines(req, 'x-api-key'), lines(req, 'authorization'))
      ip = proxies.clientIp(req.socket?.remoteAddress, header(req, 'x-forwarded-for')) ?? undefined
      decision = engine.verify(credential, { area: act ? needed : undefined, action: act, ip, path })
    } catch (err) {
      next(err)
      return
    }
    // 'close' also covers a client that hangs up before the response finished; the log takes
    // the request once. Logging must never take the process down (e.g. an engine closed
    // while a response was in flight), so its errors are dropped.
    let recorded = false
    const record = () => {
      if (recorded) return
      recorded = true
      const latencyUs = Number((process.hrtime.bigint() - started) / 1000n)
      try {
        engine.recordRequest(decision, { method: req.method, path, status: res.statusCode, ip, latencyUs })
      } catch {}
    }
    // `on` rather than `once` (`record` runs its body once anyway), and `setHeader` rather
    // than Express's `res.set`: each cost about a microsecond more a request under load.
    res.on('finish', record)
    res.on('close', record)
    const headers = decision.headers
    for (const name in headers) res.setHeader(name, headers[name])
    if (!decision.allowed) {
      res.status(decision.status).json(decision.refusalBody())
      return
    }
    if (needed && !act) {
      // An area's path, a method that implies no action (OPTIONS, PROPFIND, …): no permission
      // could be checked, and a handler taking any method (app.all) would run unguarded. The
      // server's routes answer such a method 405 after the key is verified; so does this.
      res.status(405).json(native.methodNotAllowedBody())
      return
    }
    req.latchkey = decision
    next()
  }
}

/**
 * The request's path as Express's router matched it: its own parse of the target, so an
 * absolute-form target (`GET http://host/api/v1/orders`) or a `#fragment` yields the path
 * the handler was chosen by. (Splitting the raw URL at `?` did not: such a request reached
 * the orders handler with no area derived.) Outside Express, the same legacy parse Express
 * uses (`parseurl`, over `url.parse`).
 */
function pathname(req) {
  if (typeof req.path === 'string') return (req.baseUrl ?? '') + req.path
  return legacyParse(req.url ?? '/').pathname ?? '/'
}

/**
 * The path with its ASCII case folded, as Express matches routes: an app's router ignores
 * case unless `case sensitive routing` is set, and an `express.Router()` does by default
 * whatever the app's setting, so the case is always folded: otherwise `GET /API/V1/ORDERS`
 * would reach the orders handler with no area derived, and any key of the store would pass.
 * Folding can only ask for a permission on a path that does not route; never skip one.
 */
function routed(path) {
  return path.replace(/[A-Z]/g, (c) => c.toLowerCase())
}

function header(req, name) {
  const value = req.headers[name]
  return Array.isArray(value) ? value.join(', ') : value
}

/**
 * Every line of a header (`name` in lower case): `req.headers` keeps only the first
 * `Authorization` of several. Read from `rawHeaders` (name, value, name, value, …), not
 * `headersDistinct`, which builds an array of every header of the request on first use:
 * 4.7 µs against 0.5 µs a request (medians, alternate requests of one Express server).
 */
function lines(req, name) {
  const raw = req.rawHeaders
  if (!Array.isArray(raw)) return req.headersDistinct?.[name] ?? header(req, name)
  let found
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const given = raw[i]
    if (given.length === name.length && given.toLowerCase() === name) {
      if (found === undefined) found = raw[i + 1]
      else if (Array.isArray(found)) found.push(raw[i + 1])
      else found = [found, raw[i + 1]]
    }
  }
  return found
}

module.exports = { express }
