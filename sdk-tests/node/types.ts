// Compiled (not run) by `tsc -p sdk-tests/node` in the test command: the package's declarations
// describe the API as used here, and reject what the API rejects.
import * as latchkey from 'latchkey'
import type { CreatedKey, Decision, Key, LogEntry, Page, Store } from 'latchkey'

async function usage(): Promise<void> {
  const eng = latchkey.Engine.memory({ actor: 'types' })
  const { store, defaultKey }: { store: Store; defaultKey: CreatedKey } = eng.createStore('Typed', {
    defaultRateLimit: { limit: 100, algorithm: 'sliding_window' },
  })
  const scoped: CreatedKey = await eng.createKeyAsync(store.id, {
    name: 'erp',
    permissions: { Orders: ['View', 'Edit'] },
    expiresAt: null,
    ipAllowlist: ['10.0.0.0/8'],
  })
  const credential: string = scoped.credential
  const decision: Decision = eng.verify(credential, { area: 'Orders', action: 'View', ip: '10.0.0.1' })
  const allowed: boolean = decision.allowed
  const status: number = decision.status
  const headers: Record<string, string> = decision.headers
  const keys: Key[] = eng.listKeys(store.id)
  eng.recordRequest(decision, { method: 'GET', path: '/api/v1/orders', status })
  const log: LogEntry[] = await eng.logsAsync(store.id, { keyId: scoped.id, since: new Date(0) })
  const page: Page = eng.list(store.id, 'Orders', { limit: 10 })
  const made: latchkey.CreatedEntity = await eng.createAsync(store.id, 'Packages', { name: 'Gold' }, { idempotencyKey: 'gold-1' })
  const replayed: boolean = made.replayed
  try {
    eng.revokeKey(store.id, defaultKey.id)
  } catch (err) {
    if (err instanceof latchkey.LatchkeyError) {
      const code: string = err.code
      const problems: string[] = err.problems
      void [code, problems]
    }
  }
  const middleware = latchkey.express(eng, { area: 'Orders', trustedProxies: ['127.0.0.1/32'] })
  // @ts-expect-error an action is one of View / Edit / Delete or a string, never a number
  eng.verify(credential, { action: 7 })
  // @ts-expect-error an engine comes from Engine.open or Engine.memory, not a constructor
  new latchkey.Engine('shop.redb')
  // @ts-expect-error a new key needs a name
  eng.createKey(store.id, { permissions: ['Orders:View'] })
  // @ts-expect-error the algorithm is one of three
  eng.updateStore(store.id, { defaultRateLimit: { limit: 1, algorithm: 'leaky' } })
  const hook: latchkey.CreatedWebhook = eng.createWebhook(store.id, { url: 'https://hooks.example.com/x', events: ['order.created'] })
  const secret: string = hook.secret
  const sent: latchkey.WebhookTestResult = await eng.testWebhookAsync(store.id, hook.id)
  const attempts: number = eng.webhookDeliveries(store.id, hook.id, { limit: 5 })[0].attempts.length
  const rolled: string = eng.rotateWebhookSecret(store.id, hook.id, { overlapSeconds: 3600 }).secret
  const regenerated = eng.regenerateKey(store.id, keys[0].id, { overlapSeconds: 3600 })
  const overlapEnds: string | null = regenerated.previousExpiresAt
  const oldSecretUsed: string | null = regenerated.previousLastUsedAt
  // @ts-expect-error events are the five SPEC §8 names
  eng.createWebhook(store.id, { url: 'https://hooks.example.com/x', events: ['order.paid'] })
  // @ts-expect-error listed endpoints carry no secret
  void eng.listWebhooks(store.id)[0].secret
  const session: latchkey.PortalSession = eng.createPortalSession(store.id, 'cus_1', { ttlSeconds: 600 })
  const customer: latchkey.PortalCustomer | null = eng.portalCustomer(session.token)
  const orders: Page | null = eng.portalList(session.token, 'Orders', { limit: 5 })
  // @ts-expect-error the lifetime is a number of seconds
  eng.createPortalSession(store.id, 'cus_1', { ttlSeconds: '10m' })
  const live: latchkey.PortalSessionInfo[] = eng.portalSessions(store.id)
  const ended: string[] = eng.endPortalSession(store.id, live[0].id)
  const endedAll: Promise<string[]> = eng.endCustomerPortalSessionsAsync(store.id, live[0].customerId)
  // @ts-expect-error a listed session carries no token
  void live[0].token
  const findings: latchkey.LeakFinding[] = eng.checkLeaks('API_KEY=lk_…', { stop: false })
  const stopped: Promise<latchkey.LeakFinding[]> = eng.checkLeaksAsync('API_KEY=lk_…', { stop: true })
  const named: string | null = findings[0].keyId
  // @ts-expect-error a finding never carries the credential it found
  void findings[0].credential
  // @ts-expect-error `stop` is a boolean
  eng.checkLeaks('text', { stop: 'yes' })
  const scrubbed: string = latchkey.redact('GET /api/v1/orders/lk_…', { hex: true })
  // @ts-expect-error `hex` is a boolean
  latchkey.redact('text', { hex: 'yes' })
  void [scrubbed, replayed, allowed, headers, keys, log, page, middleware, latchkey.version, secret, sent, attempts, customer, orders, rolled, overlapEnds, oldSecretUsed, ended, endedAll, stopped, named]
  eng.close()
}

void usage
