'use strict'
// The Latchkey console: a client of the management API (`/api/…`) signed in with a management
// token. Every rule lives in the server; this page only shows what it answers, including each
// validation problem. Text from the server is always set as text (never as HTML), and a secret
// is shown in one dialog and removed from the page when that dialog closes.

const TOKEN = 'latchkey.token'
const state = { token: sessionStorage.getItem(TOKEN), meta: null }

// ---- small DOM helpers --------------------------------------------------------------------

/** Builds an element: `h('button', {class: 'primary', onclick}, 'Save')`. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag)
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value == null) continue
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value)
    else if (name === 'class') el.className = value
    else if (name in el && typeof value !== 'string') el[name] = value
    else el.setAttribute(name, value === true ? '' : value)
  }
  for (const child of children.flat()) {
    if (child == null || child === false) continue
    el.append(child instanceof Node ? child : String(child))
  }
  return el
}

const $ = (id) => document.getElementById(id)
let fieldCount = 0
const fieldId = (name) => `f-${name}-${++fieldCount}`

/** A labelled input: returns [label, control]. */
function field(labelText, control) {
  control.id ||= fieldId(control.name || 'x')
  return [h('label', { for: control.id }, labelText), control]
}

function notice(text) {
  $('notice').textContent = text
  clearTimeout(notice.timer)
  notice.timer = setTimeout(() => ($('notice').textContent = ''), 6000)
}

/** Shows an API error (message and every problem) in `box`. */
function showError(box, err) {
  box.replaceChildren(h('strong', {}, err.message), err.problems?.length ? h('ul', {}, err.problems.map((p) => h('li', {}, p))) : null)
  box.setAttribute('role', 'alert')
}

const when = (iso) => (iso ? new Date(iso).toLocaleString() : '—')

const DAY_MS = 24 * 3600 * 1000

/** A key's expiry, flagged once its api_key.expiring notice has gone out (the server's
 * `expiry_notice_seconds`, a week) or past. */
function expiryCell(iso) {
  if (!iso) return 'Never'
  const left = Date.parse(iso) - Date.now()
  const days = Math.ceil(left / DAY_MS)
  const flag = left <= 0
    ? h('span', { class: 'badge off' }, 'Expired')
    : left <= state.meta.expiry_notice_seconds * 1000
      ? h('span', { class: 'badge warn' }, days === 1 ? 'Expires within a day' : `Expires in ${days} days`)
      : null
  return [when(iso), flag ? h('small', {}, flag) : null]
}

// ---- the API --------------------------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${state.token}` }
  if (body !== undefined) headers['Content-Type'] = 'application/json'
  let response
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  } catch {
    throw Object.assign(new Error('The server cannot be reached'), { problems: [] })
  }
  const payload = await response.json().catch(() => null)
  if (!response.ok || !payload?.success) {
    const err = Object.assign(new Error(payload?.message || `HTTP ${response.status}`), {
      status: response.status,
      code: payload?.code,
      problems: (payload?.errors || []).filter((p) => p !== payload?.message),
    })
    // A token that worked before and is refused now (expired, revoked secret): sign out.
    if (response.status === 401 && state.meta) signOut(`Signed out: ${err.message}`)
    throw err
  }
  return payload.data
}

// ---- dialogs --------------------------------------------------------------------------------

function openDialog(title, ...content) {
  const dialog = h('dialog', { 'aria-labelledby': 'dialog-title' }, h('h2', { id: 'dialog-title' }, title), ...content)
  dialog.addEventListener('close', () => dialog.remove())
  document.body.append(dialog)
  dialog.showModal()
  return dialog
}

/** Asks before something that cannot be undone; resolves true on confirm. */
function confirmDialog(title, text, label, extra = []) {
  return new Promise((resolve) => {
    let answer = false
    const dialog = openDialog(
      title,
      h('p', {}, text),
      ...extra,
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'danger', onclick: () => { answer = true; dialog.close() } }, label),
        h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel')),
    )
    dialog.addEventListener('close', () => resolve(answer))
  })
}

/**
 * Shows a secret once. Closing the dialog removes the secret from the page; there is no way to
 * show it again (the server keeps only its hash, or, for webhook secrets, never returns it).
 */
function showSecret(title, label, secret, extra = []) {
  const value = h('output', { class: 'secret', id: 'secret-value', 'aria-label': label }, secret)
  const copied = h('span', { role: 'status' })
  const dialog = openDialog(
    title,
    h('p', { class: 'warning' }, 'This is the only time it is shown. Copy it now and keep it somewhere safe: Latchkey cannot show it again.'),
    h('p', {}, h('strong', {}, label)),
    value,
    ...extra,
    h('div', { class: 'actions' },
      h('button', {
        type: 'button',
        class: 'primary',
        onclick: async () => {
          try {
            await navigator.clipboard.writeText(secret)
            copied.textContent = 'Copied.'
          } catch {
            getSelection().selectAllChildren(value)
            copied.textContent = 'Selected: press Ctrl+C to copy.'
          }
        },
      }, 'Copy'),
      h('button', { type: 'button', onclick: () => forget() }, "I've saved it"),
      copied),
  )
  // Cleared before the dialog closes, and on any other way out (Escape): the 'close' event
  // comes a moment after close() returns.
  function forget() {
    value.textContent = ''
    secret = ''
    dialog.close()
    dialog.remove()
  }
  dialog.addEventListener('close', forget)
}

// ---- routing --------------------------------------------------------------------------------

const TABS = [
  ['keys', 'API keys'],
  ['webhooks', 'Webhooks'],
  ['portal', 'Portal sessions'],
  ['logs', 'Request log'],
  ['audit', 'Audit trail'],
  ['settings', 'Settings'],
]

function signOut(message) {
  state.token = null
  state.meta = null
  sessionStorage.removeItem(TOKEN)
  location.hash = ''
  render().then(() => message && showError($('signin-error'), { message, problems: [] }))
}

// Renders started; a render that finds a newer one started stops drawing.
let renders = 0

async function render() {
  const mine = ++renders
  const main = $('main')
  $('sign-out').hidden = !state.token
  if (!state.token) {
    $('nav').replaceChildren()
    return signIn(main)
  }
  if (!state.meta) {
    try {
      state.meta = await api('GET', '/api/meta')
    } catch (err) {
      return
    }
  }
  if (mine !== renders) return
  const [, section, storeId, tab] = location.hash.match(/^#\/(stores|leaks)?\/?([^/]*)\/?([^/]*)/) || []
  const leaks = section === 'leaks'
  $('nav').replaceChildren(
    h('a', { href: '#/stores', 'aria-current': storeId || leaks ? false : 'page' }, 'Stores'),
    h('a', { href: '#/leaks', 'aria-current': leaks ? 'page' : false }, 'Leak check'))
  // Each render draws into its own view, which the next render detaches: a slower earlier
  // render still waiting on the API (the store list after signing in, say) then draws into a
  // detached node instead of over the page the user has moved on to.
  const view = h('div', {}, h('p', { class: 'sub' }, 'Loading…'))
  main.replaceChildren(view)
  try {
    if (leaks) leaksPage(view)
    else if (section && storeId) await storePage(view, decodeURIComponent(storeId), tab || 'keys')
    else await storesPage(view)
  } catch (err) {
    if (!state.token) return
    const box = h('div', { class: 'error' })
    showError(box, err)
    view.replaceChildren(h('h1', {}, 'Something went wrong'), box, h('p', {}, h('a', { href: '#/stores' }, 'Back to stores')))
  }
}

window.addEventListener('hashchange', () => render().then(() => $('main').focus()))
document.addEventListener('DOMContentLoaded', () => {
  $('sign-out').addEventListener('click', () => signOut())
  render()
})

// ---- sign in --------------------------------------------------------------------------------

function signIn(main) {
  const token = h('textarea', { name: 'token', required: true, autocomplete: 'off', spellcheck: 'false', rows: 4 })
  const error = h('div', { class: 'error', id: 'signin-error' })
  const form = h('form', { class: 'card', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in'),
    h('p', { class: 'sub' }, 'Paste a management token: the one `latchkey serve --dev` prints, or one from `latchkey admin-token`. It is kept for this browser tab only.'),
    ...field('Management token', token),
    error,
    h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Sign in')))
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    state.token = token.value.trim()
    try {
      state.meta = await api('GET', '/api/meta')
      sessionStorage.setItem(TOKEN, state.token)
      token.value = ''
      location.hash = '#/stores'
      await render()
    } catch (err) {
      state.token = null
      showError(error, err)
    }
  })
  main.replaceChildren(form)
  token.focus()
}

// ---- stores ---------------------------------------------------------------------------------

async function storesPage(main) {
  const stores = await api('GET', '/api/stores')
  const name = h('input', { type: 'text', name: 'name', required: true, maxlength: 100 })
  const error = h('div', { class: 'error' })
  const form = h('form', { class: 'card' }, h('h2', {}, 'Create a store'), h('div', { class: 'row' }, h('div', {}, ...field('Store name', name)), h('button', { class: 'primary', type: 'submit' }, 'Create store')), error)
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    try {
      const created = await api('POST', '/api/stores', { name: name.value })
      showSecret('Store created', 'Default key (full access)', created.default_key.key ?? created.default_key.consumer_secret)
      await storesPage(main)
    } catch (err) {
      showError(error, err)
    }
  })
  const list = stores.length
    ? h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'Store ID', 'Plan', 'REST API', 'Created'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, stores.map((s) => h('tr', {},
        h('td', {}, h('a', { href: `#/stores/${encodeURIComponent(s.id)}/keys` }, s.name)),
        h('td', {}, h('code', {}, s.id)),
        h('td', {}, s.plan.tier),
        h('td', {}, h('span', { class: `badge ${s.api_enabled ? 'on' : 'off'}` }, s.api_enabled ? 'Enabled' : 'Disabled')),
        h('td', {}, when(s.created_at))))))
    : h('p', { class: 'empty' }, 'No stores yet. Create the first one below.')
  main.replaceChildren(h('h1', {}, 'Stores'), h('p', { class: 'sub' }, 'Every store has its own keys, webhooks, request log and settings.'), list, form)
}

async function storePage(main, storeId, tab) {
  const store = await api('GET', `/api/stores/${encodeURIComponent(storeId)}`)
  const base = `#/stores/${encodeURIComponent(store.id)}`
  const tabs = h('nav', { class: 'tabs', 'aria-label': 'Store' },
    TABS.map(([slug, label]) => h('a', { href: `${base}/${slug}`, 'aria-current': slug === tab ? 'page' : false }, label)))
  const body = h('section', { 'aria-labelledby': 'tab-title' })
  main.replaceChildren(h('h1', {}, store.name), h('p', { class: 'sub' }, 'Store ', h('code', {}, store.id)), tabs, body)
  const pages = { keys: keysTab, webhooks: webhooksTab, portal: portalTab, logs: logsTab, audit: auditTab, settings: settingsTab }
  await (pages[tab] || keysTab)(body, store)
}

// ---- leak check ------------------------------------------------------------------------------

const LEAK_STATUS = {
  live: ['off', 'Live'],
  not_live: ['on', 'Not live'],
  revoked: ['on', 'Revoked'],
  overlap_ended: ['on', 'Old secret stopped'],
  secret_replaced: ['on', 'New secret issued (not shown)'],
  not_stopped: ['off', 'Live: not stopped'],
  out_of_scope: ['warn', "Live, another store's"],
}

/** Pasted text (a ticket, a chat message, a file) checked for credentials; the live ones of
 * the stores this token covers may then be stopped. Only masked forms come back. */
function leaksPage(main) {
  const text = h('textarea', { name: 'text', rows: 8, required: true, autocomplete: 'off', spellcheck: 'false' })
  const error = h('div', { class: 'error' })
  const results = h('div', { id: 'leak-results', 'aria-live': 'polite' })
  const check = async (stop) => {
    const findings = await api('POST', '/api/leaks', { text: text.value, stop })
    error.replaceChildren()
    error.removeAttribute('role')
    const live = findings.filter((f) => f.status === 'live').length
    const stopButton = h('button', { type: 'button', class: 'danger' }, `Stop ${live === 1 ? 'the live credential' : `all ${live} live credentials`}`)
    stopButton.addEventListener('click', async () => {
      const sure = await confirmDialog('Stop leaked credentials',
        'Each live key found is revoked; an old secret still in its overlap stops (the key keeps its new one); a store\'s default key, which cannot be revoked, gets a new secret that is not shown: regenerate it to use it again.',
        'Stop them')
      if (!sure) return
      try {
        await check(true)
        notice('Leaked credentials stopped.')
      } catch (err) {
        showError(error, err)
      }
    })
    results.replaceChildren(h('div', {},
      findings.length
        ? h('table', {},
          h('thead', {}, h('tr', {}, ['Line', 'Credential', 'Kind', 'Status', 'Key', 'Last used'].map((c) => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, findings.map((f) => h('tr', {},
            h('td', {}, String(f.line)),
            h('td', {}, h('code', {}, f.masked)),
            h('td', {}, f.shape.replace('_', ' ')),
            h('td', {}, h('span', { class: `badge ${LEAK_STATUS[f.status][0]}` }, LEAK_STATUS[f.status][1]), f.error ? h('small', {}, ` ${f.error}`) : null),
            h('td', {}, f.key_id
              ? h('a', { href: `#/stores/${encodeURIComponent(f.store_id)}/keys` }, h('code', {}, f.key_id), f.replaced ? ' (old secret)' : '')
              : '—'),
            h('td', {}, f.key_id ? [f.last_used_at ? when(f.last_used_at) : 'Never', f.last_used_ip ? h('small', {}, ` from ${f.last_used_ip}`) : null] : '—')))))
        : h('p', { class: 'empty' }, 'No credentials found.'),
      live ? h('p', {}, stopButton) : null))
  }
  const form = h('form', { class: 'card' },
    ...field('Text to check', text),
    error,
    h('p', {}, h('button', { class: 'primary', type: 'submit' }, 'Check')))
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    try {
      await check(false)
    } catch (err) {
      showError(error, err)
    }
  })
  main.replaceChildren(
    h('h1', {}, 'Leak check'),
    h('p', { class: 'sub' }, 'Paste text where a key may have leaked: a support ticket, a chat message, a file. Tokens and pair secrets are found by their form, hex keys when they name a key; each is shown masked with the key it names and whether it still works. Nothing is stored.'),
    form, results)
  text.focus()
}

// ---- permissions matrix ---------------------------------------------------------------------

/** Areas × View/Edit/Delete, a checkbox only where the area offers the action. */
function matrix(selected = {}, disabled = false) {
  const actions = ['View', 'Edit', 'Delete']
  const table = h('table', { class: 'matrix' },
    h('caption', { class: 'sr-only' }, 'Permissions'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Area'), actions.map((a) => h('th', { scope: 'col' }, a)))),
    h('tbody', {}, state.meta.areas.map((area) => h('tr', {},
      h('th', { scope: 'row' }, area.name),
      actions.map((action) => h('td', {}, area.actions.includes(action)
        ? h('input', {
          type: 'checkbox',
          'data-area': area.name,
          'data-action': action,
          'aria-label': `${area.name}: ${action}`,
          checked: (selected[area.name] || []).includes(action),
          disabled,
        })
        : h('span', { class: 'na' }, h('span', { 'aria-hidden': 'true' }, '—'), h('span', { class: 'sr-only' }, `${area.name} has no ${action}`))))))))
  table.value = () => {
    const out = {}
    for (const box of table.querySelectorAll('input:checked')) (out[box.dataset.area] ||= []).push(box.dataset.action)
    return out
  }
  return table
}

const permissionSummary = (perms) =>
  Object.entries(perms).map(([area, actions]) => `${area}: ${actions.join(', ')}`).join(' · ') || 'none'

// ---- keys -----------------------------------------------------------------------------------

// The periods the key list counts requests over; the server allows at most 31 days.
const USAGE_PERIODS = [[1, '24 h'], [7, '7 days'], [30, '30 days']]
let usageDays = 1

async function keysTab(body, store) {
  const since = new Date(Date.now() - usageDays * 86_400_000).toISOString()
  const [keys, usage] = await Promise.all([
    api('GET', `/api/stores/${store.id}/api-keys`),
    api('GET', `/api/stores/${store.id}/usage?since=${encodeURIComponent(since)}`),
  ])
  const used = new Map(usage.keys.map((k) => [k.key_id, k]))
  const refresh = () => keysTab(body, store)
  const period = h('select', {
    name: 'usage_period',
    onchange: () => {
      usageDays = Number(period.value)
      refresh()
    },
  }, USAGE_PERIODS.map(([days, label]) => h('option', { value: days, selected: days === usageDays }, label)))
  const periodLabel = USAGE_PERIODS.find(([days]) => days === usageDays)[1]
  const create = h('button', { class: 'primary', type: 'button', onclick: () => createKeyDialog(store, refresh) }, 'Create API key')
  const rows = keys.map((key) => {
    const reveal = key.consumer_key
      ? h('button', {
        type: 'button',
        class: 'link',
        'aria-expanded': 'false',
        onclick: (event) => {
          const shown = event.target.getAttribute('aria-expanded') === 'true'
          event.target.setAttribute('aria-expanded', String(!shown))
          event.target.textContent = shown ? 'Show consumer key' : 'Hide consumer key'
          consumer.hidden = shown
        },
      }, 'Show consumer key')
      : null
    const consumer = h('code', { hidden: true }, key.consumer_key || '')
    return h('tr', { 'data-key-id': key.id },
      h('td', {}, h('strong', {}, key.name), key.description ? h('small', {}, key.description) : null),
      h('td', {}, h('code', {}, key.masked), reveal ? h('small', {}, reveal, ' ', consumer) : null,
        key.previous_expires_at ? h('small', {}, `Previous secret works until ${when(key.previous_expires_at)}; `,
          key.previous_last_used_at ? `last used ${when(key.previous_last_used_at)}` : 'not used since', ' ',
          h('button', {
            type: 'button',
            class: 'link',
            'aria-label': `Stop the previous secret of ${key.name}`,
            onclick: async () => {
              if (!(await confirmDialog('Stop the previous secret?', `The secret "${key.name}" had before its regeneration stops working now; the current one is unaffected.`, 'Stop it'))) return
              try {
                await api('PATCH', `/api/stores/${store.id}/api-keys/${key.id}`, { previous_expires_at: null })
                await refresh()
              } catch (err) {
                notice(`Not stopped: ${err.message}`)
              }
            },
          }, 'Stop now')) : null),
      h('td', {}, key.environment, h('small', {}, key.format)),
      h('td', {}, permissionSummary(key.permissions)),
      h('td', {}, h('span', { class: `badge ${key.active ? 'on' : 'off'}` }, key.active ? 'Activated' : 'Deactivated'), key.kind === 'default' ? h('small', {}, 'default key') : null),
      h('td', {}, expiryCell(key.expires_at)),
      h('td', {}, when(key.last_used_at), key.last_used_ip ? h('small', {}, key.last_used_ip) : null),
      requestsCell(used.get(key.id)),
      h('td', {}, h('div', { class: 'actions' },
        h('button', { type: 'button', onclick: () => editKeyDialog(store, key, refresh), 'aria-label': `Edit ${key.name}` }, 'Edit'),
        h('button', {
          type: 'button',
          'aria-label': `Regenerate ${key.name}`,
          onclick: async () => {
            // An overlap lets the clients using the key switch to the new secret without a
            // refused request; the server allows up to a week.
            const overlap = h('select', { name: 'overlap_seconds' },
              [[0, 'At once'], [3600, 'In 1 hour'], [86400, 'In 24 hours'], [604800, 'In 7 days']]
                .map(([seconds, label]) => h('option', { value: seconds }, label)))
            const asked = await confirmDialog('Regenerate key?', `"${key.name}" gets a new secret.`, 'Regenerate',
              [h('p', {}, ...field('The current secret stops working', overlap))])
            if (!asked) return
            try {
              const created = await api('POST', `/api/stores/${store.id}/api-keys/${key.id}/regenerate`, { overlap_seconds: Number(overlap.value) })
              showSecret('Key regenerated', created.consumer_secret ? 'Consumer secret' : 'API key', created.key ?? created.consumer_secret)
              await refresh()
            } catch (err) {
              notice(`Not regenerated: ${err.message}`)
            }
          },
        }, 'Regenerate'),
        key.kind === 'default' ? null : h('button', {
          type: 'button',
          class: 'danger',
          'aria-label': `Delete ${key.name}`,
          onclick: async () => {
            if (!(await confirmDialog('Delete key?', `"${key.name}" stops working at once. This cannot be undone.`, 'Delete key'))) return
            try {
              await api('DELETE', `/api/stores/${store.id}/api-keys/${key.id}`)
              await refresh()
              notice(`Deleted "${key.name}".`)
            } catch (err) {
              notice(`Not deleted: ${err.message}`)
            }
          },
        }, 'Delete'))))
  })
  body.replaceChildren(
    h('div', { class: 'row' }, h('h2', { id: 'tab-title' }, 'API keys'), create),
    h('div', { class: 'row' },
      h('p', { class: 'sub' }, `${keys.length - 1} of ${store.max_scoped_keys} scoped keys used.`),
      h('label', {}, 'Requests in the last ', period)),
    h('table', {},
      h('thead', {}, h('tr', {}, ['Name', 'Key', 'Environment', 'Permissions', 'Status', 'Expires', 'Last used', `Requests (${periodLabel})`, 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows)))
}

/** A key's requests in the usage period, with its errors (status 400 or more) under them. */
function requestsCell(usage) {
  const errors = usage?.errors ?? 0
  return h('td', {}, String(usage?.requests ?? 0),
    errors ? h('small', {}, `${errors} error${errors === 1 ? '' : 's'}`) : null)
}

function createKeyDialog(store, refresh) {
  const name = h('input', { type: 'text', name: 'name', required: true, maxlength: 100 })
  const description = h('input', { type: 'text', name: 'description', maxlength: 500 })
  const format = h('select', { name: 'format' }, state.meta.formats.map((f) => h('option', { value: f }, f)))
  const environment = h('select', { name: 'environment' }, store.environments.map((e) => h('option', { value: e }, e)))
  const perms = matrix()
  const ttl = store.default_key_ttl_days
  const expiry = h('select', { name: 'expiry' },
    h('option', { value: 'default' }, ttl ? `Store default (${ttl} days)` : 'Store default (never)'),
    h('option', { value: 'never' }, 'Never'),
    h('option', { value: 'date' }, 'On a date'))
  const expiresOn = h('input', { type: 'date', name: 'expires_on', disabled: true })
  expiry.addEventListener('change', () => (expiresOn.disabled = expiry.value !== 'date'))
  const limit = h('input', { type: 'number', name: 'limit', min: 1, max: 10000, placeholder: 'store default' })
  const windowSeconds = h('input', { type: 'number', name: 'window', min: 1, value: 60 })
  const algorithm = h('select', { name: 'algorithm' }, state.meta.algorithms.map((a) => h('option', { value: a }, a)))
  const ips = h('textarea', { name: 'ip_allowlist', rows: 3, placeholder: '203.0.113.0/24\n2001:db8::/32' })
  const error = h('div', { class: 'error' })
  const form = h('form', { method: 'dialog' },
    ...field('Name', name),
    ...field('Description', description),
    h('div', { class: 'row' }, h('div', {}, ...field('Format', format)), h('div', {}, ...field('Environment', environment))),
    h('fieldset', {}, h('legend', {}, 'Permissions'), perms),
    h('div', { class: 'row' }, h('div', {}, ...field('Expires', expiry)), h('div', {}, ...field('Expiry date', expiresOn))),
    h('fieldset', {}, h('legend', {}, 'Rate limit (empty: the store default)'),
      h('div', { class: 'row' }, h('div', {}, ...field('Requests', limit)), h('div', {}, ...field('Per seconds', windowSeconds)), h('div', {}, ...field('Algorithm', algorithm)))),
    ...field('IP allowlist (one address or CIDR per line; empty: any)', ips),
    error,
    h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Create key'), h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel')))
  const dialog = openDialog('Create API key', form)
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const input = {
      name: name.value,
      description: description.value || null,
      format: format.value,
      environment: environment.value,
      permissions: perms.value(),
      ip_allowlist: ips.value.split('\n').map((l) => l.trim()).filter(Boolean),
    }
    if (expiry.value === 'never') input.expires_at = null
    if (expiry.value === 'date') input.expires_at = expiresOn.value ? new Date(`${expiresOn.value}T23:59:59Z`).toISOString() : 'missing date'
    if (limit.value) input.rate_limit = { limit: Number(limit.value), window_seconds: Number(windowSeconds.value), algorithm: algorithm.value }
    try {
      const created = await api('POST', `/api/stores/${store.id}/api-keys`, input)
      dialog.close()
      const pair = Boolean(created.consumer_secret)
      showSecret('API key created', pair ? 'Consumer secret' : 'API key', created.key ?? created.consumer_secret,
        pair ? [h('p', {}, 'Consumer key: ', h('code', {}, created.consumer_key))] : [])
      await refresh()
    } catch (err) {
      showError(error, err)
    }
  })
  name.focus()
}

function editKeyDialog(store, key, refresh) {
  const description = h('input', { type: 'text', name: 'description', value: key.description || '' })
  const active = h('input', { type: 'checkbox', name: 'active', checked: key.active })
  const editable = store.permissions_editable && key.kind !== 'default'
  const perms = matrix(key.permissions, !editable)
  const error = h('div', { class: 'error' })
  const form = h('form', { method: 'dialog' },
    ...field('Description', description),
    h('label', { class: 'inline' }, active, 'Activated (a deactivated key is refused with 403)'),
    h('fieldset', {}, h('legend', {}, 'Permissions'), perms,
      editable ? null : h('p', { class: 'sub' }, key.kind === 'default' ? 'The default key always has full access.' : "This store's permissions are fixed once a key is created (Settings → Permissions editable).")),
    error,
    h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Save'), h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel')))
  const dialog = openDialog(`Edit "${key.name}"`, form)
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const patch = { description: description.value || null, active: active.checked }
    if (editable) patch.permissions = perms.value()
    try {
      await api('PATCH', `/api/stores/${store.id}/api-keys/${key.id}`, patch)
      dialog.close()
      await refresh()
      notice(`Saved "${key.name}".`)
    } catch (err) {
      showError(error, err)
    }
  })
  description.focus()
}

// ---- webhooks -------------------------------------------------------------------------------

async function webhooksTab(body, store) {
  const hooks = await api('GET', `/api/stores/${store.id}/webhooks`)
  const refresh = () => webhooksTab(body, store)
  const output = h('pre', { class: 'terminal', id: 'webhook-output', 'aria-live': 'polite', 'aria-label': 'Webhook test output' }, 'Send a test to see the response here.')
  const deliveries = h('div', { id: 'deliveries' })
  const url = h('input', { type: 'url', name: 'url', required: true, placeholder: 'https://your-server.com/webhook', size: 50 })
  const events = h('fieldset', {}, h('legend', {}, 'Events'),
    state.meta.webhook_events.map((e) => h('label', { class: 'inline' }, h('input', { type: 'checkbox', value: e }), e)))
  const error = h('div', { class: 'error' })
  const form = h('form', { class: 'card' }, h('h2', {}, 'Add webhook'), ...field('Webhook URL', url), events, error, h('button', { class: 'primary', type: 'submit' }, 'Save webhook'))
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const chosen = [...events.querySelectorAll('input:checked')].map((b) => b.value)
    try {
      const created = await api('POST', `/api/stores/${store.id}/webhooks`, { url: url.value, events: chosen })
      showSecret('Webhook created', 'Signing secret', created.secret, [h('p', {}, 'Verify each delivery\'s webhook-signature header with it (Standard Webhooks).')])
      await refresh()
    } catch (err) {
      showError(error, err)
    }
  })
  const rows = hooks.map((hook) => h('tr', {},
    h('td', {}, h('code', {}, hook.url), h('small', {}, hook.id)),
    h('td', {}, hook.events.join(', ')),
    h('td', {}, h('span', { class: `badge ${hook.active ? 'on' : 'off'}` }, hook.active ? 'Active' : 'Disabled'), hook.disabled_reason ? h('small', {}, hook.disabled_reason) : null,
      Date.parse(hook.previous_secret_expires_at) > Date.now() ? h('small', {}, `previous secret also signs until ${when(hook.previous_secret_expires_at)}`) : null),
    h('td', {}, h('div', { class: 'actions' },
      h('button', {
        type: 'button',
        'aria-label': `Send test to ${hook.url}`,
        onclick: async (event) => {
          event.target.disabled = true
          output.replaceChildren(`$ POST ${hook.url}\n…`)
          try {
            const r = await api('POST', `/api/stores/${store.id}/webhooks/${hook.id}/test`)
            output.replaceChildren(
              `$ POST ${hook.url}\n`,
              `status: ${r.status_code ?? '—'}\n`,
              `duration: ${r.duration_ms} ms\n`,
              r.error ? h('span', { class: 'err' }, `error: ${r.error}\n`) : '',
              r.body ? `\n${r.body}` : '')
          } catch (err) {
            output.replaceChildren(h('span', { class: 'err' }, `error: ${err.message}`))
          } finally {
            event.target.disabled = false
          }
        },
      }, 'Send test'),
      h('button', { type: 'button', onclick: () => showDeliveries(deliveries, store, hook) }, 'Deliveries'),
      h('button', {
        type: 'button',
        'aria-label': `Rotate secret of ${hook.url}`,
        onclick: async () => {
          const why = `${hook.url} gets a new signing secret. For the next 24 hours every delivery is signed with the current secret as well, so the receiver can switch over without rejecting any.`
          if (!(await confirmDialog('Rotate signing secret?', why, 'Rotate secret'))) return
          try {
            const rotated = await api('POST', `/api/stores/${store.id}/webhooks/${hook.id}/rotate-secret`, {})
            showSecret('Signing secret rotated', 'New signing secret', rotated.secret, [
              h('p', {}, `The previous secret also signs deliveries until ${when(rotated.previous_secret_expires_at)}.`)])
            await refresh()
          } catch (err) {
            notice(err.message)
          }
        },
      }, 'Rotate secret'),
      h('button', {
        type: 'button',
        onclick: async () => {
          try {
            await api('PATCH', `/api/stores/${store.id}/webhooks/${hook.id}`, { active: !hook.active })
            await refresh()
          } catch (err) {
            notice(err.message)
          }
        },
      }, hook.active ? 'Disable' : 'Enable'),
      h('button', {
        type: 'button',
        class: 'danger',
        'aria-label': `Delete webhook ${hook.url}`,
        onclick: async () => {
          if (!(await confirmDialog('Delete webhook?', `${hook.url} stops receiving events; its delivery history is deleted.`, 'Delete webhook'))) return
          try {
            await api('DELETE', `/api/stores/${store.id}/webhooks/${hook.id}`)
            await refresh()
            notice('Webhook deleted.')
          } catch (err) {
            notice(err.message)
          }
        },
      }, 'Delete')))))
  body.replaceChildren(
    h('h2', { id: 'tab-title' }, 'Webhooks'),
    hooks.length
      ? h('table', {}, h('thead', {}, h('tr', {}, ['URL', 'Events', 'Status', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}, rows))
      : h('p', { class: 'empty' }, 'No webhooks yet. Add one below to be told about orders and key changes.'),
    h('h2', {}, 'Test output'),
    output,
    deliveries,
    form)
}

async function showDeliveries(box, store, hook) {
  const list = await api('GET', `/api/stores/${store.id}/webhooks/${hook.id}/deliveries?limit=20`)
  box.replaceChildren(
    h('h2', {}, `Deliveries to ${hook.url}`),
    list.length
      ? h('table', {},
        h('thead', {}, h('tr', {}, ['Event', 'State', 'Attempts', 'Last answer', 'Next attempt', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, list.map((d) => {
          const last = d.attempts[d.attempts.length - 1]
          // A finished delivery may be sent once more (the same event id, one attempt).
          const resend = d.state === 'pending' ? null : h('button', {
            type: 'button',
            'aria-label': `Resend delivery ${d.id}`,
            onclick: async () => {
              try {
                await api('POST', `/api/stores/${store.id}/webhooks/${hook.id}/deliveries/${d.id}/retry`)
                notice(`Resending ${d.event_type}.`)
                await showDeliveries(box, store, hook)
              } catch (err) {
                notice(`Not resent: ${err.message}`)
              }
            },
          }, 'Resend')
          return h('tr', {},
            h('td', {}, d.event_type, h('small', {}, d.event_id)),
            h('td', {}, d.state),
            h('td', {}, d.attempts.length),
            h('td', {}, last ? (last.status_code ?? last.error) : '—'),
            h('td', {}, when(d.next_attempt_at)),
            h('td', {}, resend))
        })))
      : h('p', { class: 'empty' }, 'Nothing delivered yet.'))
}

// ---- request log ----------------------------------------------------------------------------

async function logsTab(body, store, query = {}) {
  const keys = await api('GET', `/api/stores/${store.id}/api-keys`)
  const params = new URLSearchParams(Object.entries(query).filter(([, v]) => v))
  const entries = await api('GET', `/api/stores/${store.id}/logs?${params}`)
  const names = Object.fromEntries(keys.map((k) => [k.id, k.name]))
  const key = h('select', { name: 'key_id' }, h('option', { value: '' }, 'All keys'), keys.map((k) => h('option', { value: k.id, selected: query.key_id === k.id }, k.name)))
  const status = h('input', { type: 'number', name: 'status', min: 100, max: 599, value: query.status || '' })
  const since = h('input', { type: 'datetime-local', name: 'since' })
  const error = h('div', { class: 'error' })
  const form = h('form', { class: 'card', 'aria-label': 'Filters' },
    h('div', { class: 'row' },
      h('div', {}, ...field('Key', key)),
      h('div', {}, ...field('Status', status)),
      h('div', {}, ...field('Since', since)),
      h('button', { type: 'submit', class: 'primary' }, 'Apply filters')),
    error)
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    try {
      await logsTab(body, store, {
        key_id: key.value,
        status: status.value,
        since: since.value ? new Date(since.value).toISOString() : '',
      })
    } catch (err) {
      showError(error, err)
    }
  })
  body.replaceChildren(
    h('h2', { id: 'tab-title' }, 'Request log'),
    form,
    entries.length
      ? h('table', {},
        h('thead', {}, h('tr', {}, ['Time', 'Key', 'Request', 'Status', 'Decision', 'IP', 'Latency'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, entries.map((e) => h('tr', {},
          h('td', {}, when(e.at)),
          h('td', {}, names[e.key_id] || e.key_id || '—'),
          h('td', {}, h('code', {}, `${e.method} ${e.path}`)),
          h('td', {}, e.status),
          h('td', {}, e.code),
          h('td', {}, e.ip || '—'),
          h('td', {}, `${(e.latency_us / 1000).toFixed(1)} ms`)))))
      : h('p', { class: 'empty' }, 'No requests match. Requests made with this store\'s keys appear here within a few seconds.'))
}

// ---- customer portal sessions ---------------------------------------------------------------

/** Live sessions (never their tokens), each endable, or all of one customer's at once. */
async function portalTab(body, store) {
  const sessions = await api('GET', `/api/stores/${store.id}/portal-sessions`)
  const refresh = () => portalTab(body, store)
  const end = async (title, text, path, done) => {
    if (!(await confirmDialog(title, text, title.replace(/\?$/, '')))) return
    try {
      const { ended } = await api('DELETE', path)
      await refresh()
      notice(done(ended.length))
    } catch (err) {
      notice(err.message)
    }
  }
  const sessionsPath = `/api/stores/${store.id}/portal-sessions`
  const rows = sessions.map((s) => h('tr', {},
    h('td', {}, h('code', {}, s.customer_id)),
    h('td', {}, s.environment),
    h('td', {}, when(s.expires_at)),
    h('td', {}, h('div', { class: 'actions' },
      h('button', {
        type: 'button',
        class: 'danger',
        'aria-label': `End portal session ${s.id}`,
        onclick: () => end('End session?', `Its link stops working at once for customer ${s.customer_id}.`,
          `${sessionsPath}/${encodeURIComponent(s.id)}`, () => 'Portal session ended.'),
      }, 'End'),
      h('button', {
        type: 'button',
        'aria-label': `End all portal sessions of ${s.customer_id}`,
        onclick: () => end('End all sessions?', `Every live portal link of customer ${s.customer_id} stops working at once.`,
          `${sessionsPath}?customer_id=${encodeURIComponent(s.customer_id)}`, (n) => `${n} portal session${n === 1 ? '' : 's'} ended.`),
      }, 'End all of customer')))))
  body.replaceChildren(
    h('h2', { id: 'tab-title' }, 'Portal sessions'),
    h('p', { class: 'sub' }, 'Links a key with Customers:View opened for customers to see their own orders and subscriptions. They expire by themselves; end one early if its link was shared.'),
    sessions.length
      ? h('table', {}, h('thead', {}, h('tr', {}, ['Customer', 'Environment', 'Expires', 'Actions'].map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}, rows))
      : h('p', { class: 'empty' }, 'No live portal sessions.'))
}

// ---- audit trail ----------------------------------------------------------------------------

async function auditTab(body, store) {
  const [events, keys] = await Promise.all([api('GET', `/api/stores/${store.id}/audit?limit=200`), api('GET', `/api/stores/${store.id}/api-keys`)])
  const names = Object.fromEntries(keys.map((k) => [k.id, k.name]))
  body.replaceChildren(
    h('h2', { id: 'tab-title' }, 'Audit trail'),
    events.length
      ? h('table', {},
        h('thead', {}, h('tr', {}, ['Time', 'Change', 'Subject', 'By', 'Details'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, events.map((e) => h('tr', {},
          h('td', {}, when(e.at)),
          h('td', {}, e.action.replaceAll('_', ' ')),
          // A store's own events name no key: its settings, or one of its webhook endpoints.
          h('td', {}, e.key_id !== null ? names[e.key_id] || h('code', {}, e.key_id)
            : e.webhook_id ? h('span', {}, 'webhook ', h('code', {}, e.webhook_id))
              : e.action === 'portal_sessions_ended' ? 'portal sessions' : 'store settings'),
          h('td', {}, `${e.actor.type} ${e.actor.id}`),
          h('td', {}, [...e.changes, ...(e.reason ? [`reason: ${e.reason}`] : [])].join(', ') || '—')))))
      : h('p', { class: 'empty' }, 'No changes yet.'))
}

// ---- settings -------------------------------------------------------------------------------

async function settingsTab(body, store) {
  const name = h('input', { type: 'text', name: 'name', value: store.name, required: true })
  const apiEnabled = h('input', { type: 'checkbox', name: 'api_enabled', checked: store.api_enabled })
  const tier = h('select', { name: 'tier' }, ['free', 'pro'].map((t) => h('option', { value: t, selected: store.plan.tier === t }, t)))
  const requirePro = h('input', { type: 'checkbox', name: 'require_pro', checked: store.require_pro })
  const rl = store.default_rate_limit
  const limit = h('input', { type: 'number', name: 'limit', min: 1, max: 10000, value: rl?.limit ?? '', placeholder: 'server default' })
  const windowSeconds = h('input', { type: 'number', name: 'window', min: 1, value: rl?.window_seconds ?? 60 })
  const algorithm = h('select', { name: 'algorithm' }, state.meta.algorithms.map((a) => h('option', { value: a, selected: rl?.algorithm === a }, a)))
  const maxKeys = h('input', { type: 'number', name: 'max_scoped_keys', min: 0, value: store.max_scoped_keys })
  const ttl = h('input', { type: 'number', name: 'ttl', min: 1, value: store.default_key_ttl_days ?? '', placeholder: 'never' })
  const editable = h('input', { type: 'checkbox', name: 'permissions_editable', checked: store.permissions_editable })
  const environments = h('input', { type: 'text', name: 'environments', value: store.environments.join(', ') })
  const retention = h('input', { type: 'number', name: 'log_retention_days', min: 1, value: store.log_retention_days })
  const error = h('div', { class: 'error' })
  const form = h('form', { class: 'card' },
    ...field('Store name', name),
    h('label', { class: 'inline' }, apiEnabled, 'REST API enabled (off: every key of this store is refused with 403)'),
    h('div', { class: 'row' }, h('div', {}, ...field('Plan', tier)), h('label', { class: 'inline' }, requirePro, 'The API requires an active Pro plan')),
    h('fieldset', {}, h('legend', {}, 'Default rate limit for keys without their own (empty: the server default)'),
      h('div', { class: 'row' }, h('div', {}, ...field('Requests', limit)), h('div', {}, ...field('Per seconds', windowSeconds)), h('div', {}, ...field('Algorithm', algorithm)))),
    h('div', { class: 'row' },
      h('div', {}, ...field('Scoped keys allowed', maxKeys)),
      h('div', {}, ...field('New keys expire after (days; empty: never)', ttl)),
      h('div', {}, ...field('Keep request log (days)', retention))),
    h('label', { class: 'inline' }, editable, 'Permissions editable after a key is created'),
    ...field('Environments (comma-separated)', environments),
    error,
    h('button', { class: 'primary', type: 'submit' }, 'Save settings'))
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const patch = {
      name: name.value,
      api_enabled: apiEnabled.checked,
      plan: { tier: tier.value },
      require_pro: requirePro.checked,
      default_rate_limit: limit.value ? { limit: Number(limit.value), window_seconds: Number(windowSeconds.value), algorithm: algorithm.value } : null,
      max_scoped_keys: Number(maxKeys.value),
      default_key_ttl_days: ttl.value ? Number(ttl.value) : null,
      permissions_editable: editable.checked,
      environments: environments.value.split(',').map((e) => e.trim()).filter(Boolean),
      log_retention_days: Number(retention.value),
    }
    try {
      await api('PATCH', `/api/stores/${store.id}`, patch)
      notice('Settings saved.')
      await render()
    } catch (err) {
      showError(error, err)
    }
  })
  body.replaceChildren(h('h2', { id: 'tab-title' }, 'Settings'), form)
}
