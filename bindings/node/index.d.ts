// Types of the `latchkey` package (the typed layer in index.js). The native module's own types
// are generated into native.d.ts by napi-rs.

import type { TrustedProxies } from './native'

export { TrustedProxies }

export type Area =
  | 'Packages'
  | 'Categories'
  | 'Coupons'
  | 'Sales'
  | 'GiftCards'
  | 'Orders'
  | 'Customers'
  | 'Bans'
  | 'Subscriptions'
  | 'Products'
  | 'ApiKeys'
export type Action = 'View' | 'Edit' | 'Delete'
/** The three input forms of SPEC §2: `{Orders: ['View']}`, `['Orders:View']`, or `'Orders:View Packages:Edit'`. */
export type Permissions = Partial<Record<Area, Action[]>> | string[] | string
export type Algorithm = 'fixed_window' | 'sliding_window' | 'token_bucket'

export interface RateLimit {
  limit: number
  windowSeconds?: number
  algorithm?: Algorithm
}

export interface Plan {
  tier: 'free' | 'pro'
  expiresAt: string | null
}

export interface Store {
  id: string
  name: string
  apiEnabled: boolean
  plan: Plan
  requirePro: boolean
  defaultRateLimit: RateLimit | null
  defaultKeyTtlDays: number
  maxScopedKeys: number
  permissionsEditable: boolean
  keyPrefix: string
  environments: string[]
  logRetentionDays: number
  createdAt: string
}

export interface StoreSettings {
  apiEnabled?: boolean
  plan?: { tier: 'free' | 'pro'; expiresAt?: string | Date | null }
  requirePro?: boolean
  defaultRateLimit?: RateLimit | null
  defaultKeyTtlDays?: number
  maxScopedKeys?: number
  permissionsEditable?: boolean
  keyPrefix?: string
  environments?: string[]
  logRetentionDays?: number
}

/** An API key, masked: everything but the secret. */
export interface Key {
  id: string
  storeId: string
  name: string
  description: string | null
  kind: 'default' | 'scoped'
  format: 'token' | 'hex' | 'pair'
  environment: string
  active: boolean
  masked: string
  consumerKey?: string
  permissions: Partial<Record<Area, Action[]>>
  rateLimit: RateLimit | null
  ipAllowlist: string[]
  expiresAt: string | null
  meta: Record<string, unknown>
  lastUsedAt: string | null
  lastUsedIp: string | null
  createdAt: string
  updatedAt: string
  /** Until when the secret a regeneration replaced still works (its overlap); null when none. */
  previousExpiresAt: string | null
  /** When a request last presented that replaced secret (kept across a restart to the minute). */
  previousLastUsedAt: string | null
}

/** A key as created or regenerated: the secret this once (`key`, or `consumerSecret` for a pair). */
export interface CreatedKey extends Key {
  key?: string
  consumerSecret?: string
  /** What a client presents: the key, or `consumerKey:consumerSecret`. */
  readonly credential: string
}

export interface NewKey {
  name: string
  permissions: Permissions
  format?: 'token' | 'hex' | 'pair'
  environment?: string
  description?: string | null
  rateLimit?: RateLimit | null
  ipAllowlist?: string[] | null
  /** Default: the store's key lifetime (365 days); `null` for a key that never expires. */
  expiresAt?: string | Date | null
  meta?: Record<string, unknown>
  active?: boolean
}

export interface KeyChanges {
  name?: string
  description?: string | null
  active?: boolean
  permissions?: Permissions
  rateLimit?: RateLimit | null
  ipAllowlist?: string[] | null
  expiresAt?: string | Date | null
  meta?: Record<string, unknown>
  /** Ends a regeneration's overlap early: null stops the old secret now; a time may only shorten it. */
  previousExpiresAt?: string | Date | null
}

/** A credential found in text by `checkLeaks`; it holds no secret. */
export interface LeakFinding {
  /** 1-based line of the text. */
  line: number
  /** `hex` findings are reported only when they name a key (most 64-hex strings are digests). */
  shape: 'token' | 'pair_secret' | 'hex'
  /** As key lists show it: `lk_ab12cd34_…Xy9Z`, `cs_…9f3a`, `…9f3a`. */
  masked: string
  status: 'not_live' | 'live' | 'revoked' | 'overlap_ended' | 'secret_replaced' | 'not_stopped'
  /** The key it named, when it was live. */
  keyId: string | null
  storeId: string | null
  /** An old secret of the key, in its regeneration's overlap. */
  replaced: boolean
  /** When the credential was last presented (to the minute), before this check: whether the leak may have been used. */
  lastUsedAt: string | null
  /** From where (the key's current secret only). */
  lastUsedIp: string | null
  /** Why a live credential could not be stopped (`status` `not_stopped`). */
  error: string | null
}

export interface AuditEvent {
  seq: number
  at: string
  action:
    | 'key_created'
    | 'key_updated'
    | 'key_regenerated'
    | 'key_revoked'
    | 'store_updated'
    | 'webhook_created'
    | 'webhook_updated'
    | 'webhook_deleted'
    | 'webhook_secret_rotated'
    | 'portal_sessions_ended'
  storeId: string
  /** The key the event is about; `null` for a store's or a webhook's event. */
  keyId: string | null
  /** The webhook endpoint a `webhook_*` event is about (absent on other events). */
  webhookId?: string
  actor: { type: string; id: string }
  /** The fields an update changed. */
  changes: string[]
  /** Why, when known: `leaked` for a key stopped by `checkLeaks(…, { stop: true })` (absent otherwise). */
  reason?: 'leaked'
}

export interface LogEntry {
  at: string
  storeId: string
  keyId: string | null
  method: string
  path: string
  status: number
  ip: string | null
  code: string
  latencyUs: number
}

export interface KeyUsage {
  /** `null` for credentials that named the store but matched none of its keys. */
  keyId: string | null
  requests: number
  /** Answered with a status of 400 or more. */
  errors: number
  /** Refused by verify (any code but OK). */
  denied: number
  lastAt: string
  averageLatencyUs: number
}

export interface Usage {
  since: string
  until: string
  requests: number
  /** By status class: `{ '2xx': 10, '4xx': 1 }`. */
  byStatus: Record<string, number>
  /** By verify decision code: `{ OK: 10, RATE_LIMITED: 1 }`. */
  byCode: Record<string, number>
  /** Busiest first. */
  keys: KeyUsage[]
}

export interface LogQuery {
  keyId?: string
  status?: number
  since?: string | Date
  until?: string | Date
  /** 1–1000, default 100. */
  limit?: number
}

/** The limit that governs a requester (the `X-RateLimit-*` figures). */
export interface LimitState {
  limit: number
  remaining: number
  /** Unix seconds at which the budget is fully restored. */
  resetAt: number
  /** Whole seconds to wait, on `RATE_LIMITED`. */
  retryAfter: number | null
}

/** The answer to one request; a refusal is a Decision with `allowed === false`. */
export declare class Decision {
  private constructor()
  readonly allowed: boolean
  /** `OK`, or the deny code of SPEC §4 (`MISSING`, `INVALID`, …, `RATE_LIMITED`). */
  readonly code: string
  /** The HTTP status to answer with: 200, 401, 403 or 429. */
  readonly status: number
  /** `OK`, or the refusal's message (`Missing permission Orders:Edit`). */
  readonly message: string
  /** The key the credential identified (allowed decisions, and refusals from EXPIRED on). */
  readonly keyId: string | null
  readonly storeId: string | null
  readonly environment: string | null
  /** The limit that governs the requester, or `null` when none applied. */
  readonly limit: LimitState | null
  /** `X-RateLimit-Limit`, `-Remaining`, `-Reset` when a limit applied; `Retry-After` on 429. */
  readonly headers: Record<string, string>
  /** The server's body for this refusal (`{success: false, data: null, message, errors, code}`). */
  refusalBody(): { success: false; data: null; message: string; errors: string[]; code: string }
  toJSON(): object
}

export interface VerifyOptions {
  area?: Area | string
  action?: Action | string
  ip?: string
  path?: string
}

export interface RecordOptions {
  method: string
  path: string
  status: number
  ip?: string
  latencyUs?: number
}

export interface EntityOptions {
  environment?: string
}

export interface CreateOptions extends EntityOptions {
  /** Makes the create at most once per key (24 hours, per store and environment). */
  idempotencyKey?: string
}

/** A store entity in the HTTP API's JSON shape. */
export type Entity = Record<string, any>

/** An entity as a create answered it. */
export type CreatedEntity = Entity & {
  /**
   * True when an earlier create with the same idempotency key made it and this call changed
   * nothing (the HTTP API's `Idempotent-Replayed: true`). Not enumerated: not in the entity's
   * JSON or a spread of it.
   */
  readonly replayed: boolean
}

export interface Page {
  items: Entity[]
  nextCursor: string | null
}

export interface PortalSessionOptions extends EntityOptions {
  /** Seconds the session lasts (60 to 86,400; default 900). */
  ttlSeconds?: number
}

export interface PortalSession {
  /** `cps_…`: shown this once; only its SHA-256 digest is stored. */
  token: string
  expiresAt: string
}

/** A live portal session as the store's managers see it. */
export interface PortalSessionInfo {
  /** `ps_…`: names the session (ending it takes this), opens nothing. */
  id: string
  environment: string
  customerId: string
  expiresAt: string
}

export interface PortalCustomer {
  storeId: string
  environment: string
  customerId: string
}

export interface EngineOpenOptions {
  /** Who made changes, in the audit trail (default `node`). */
  actor?: string
  /** Let webhooks target loopback, private and link-local addresses (refused by default). */
  allowPrivateWebhooks?: boolean
  /** The database's page cache in MiB: a whole number from 1 to 1048576 (default 64). */
  cacheMb?: number
  /** The limit on one webhook delivery attempt in milliseconds, name lookup included: a whole
   * number from 1 to 300000 (default 10000). */
  webhookTimeoutMs?: number
}

export type WebhookEvent =
  | 'order.created'
  | 'subscription.created'
  | 'api_key.created'
  | 'api_key.updated'
  | 'api_key.regenerated'
  | 'api_key.revoked'
  | 'api_key.expiring'

export interface WebhookEndpoint {
  id: string
  url: string
  events: WebhookEvent[]
  active: boolean
  /** Why the engine disabled the endpoint (a `410 Gone`), or null. */
  disabledReason: string | null
  createdAt: string
  /** Until when the secret replaced by the last rotation also signs deliveries, or null. */
  previousSecretExpiresAt: string | null
}

/** The create (or rotate) answer: the endpoint and its signing secret (`whsec_…`), this once. */
export interface CreatedWebhook extends WebhookEndpoint {
  secret: string
}

export interface WebhookAttempt {
  at: string
  statusCode: number | null
  /** The first 1,024 bytes of the response body. */
  body: string
  error: string | null
  durationMs: number
}

export interface WebhookDelivery {
  id: string
  webhookId: string
  eventId: string
  eventType: string
  state: 'pending' | 'succeeded' | 'failed'
  attempts: WebhookAttempt[]
  nextAttemptAt: string | null
  createdAt: string
  payload: Record<string, any>
}

export interface WebhookTestResult {
  statusCode: number | null
  body: string
  error: string | null
  durationMs: number
  deliveryId: string
}

export declare class Engine {
  /** Made by `Engine.open` or `Engine.memory`; anything else passed here is a TypeError. */
  private constructor(nativeEngine: unknown, actor?: string)
  /** Opens (or creates) a database file; `actor` names who made changes in the audit trail. */
  static open(path: string, options?: EngineOpenOptions): Engine
  static memory(options?: EngineOpenOptions): Engine

  createStore(name: string, settings?: StoreSettings): { store: Store; defaultKey: CreatedKey }
  createStoreAsync(name: string, settings?: StoreSettings): Promise<{ store: Store; defaultKey: CreatedKey }>
  getStore(storeId: string): Store
  listStores(): Store[]
  updateStore(storeId: string, changes: StoreSettings & { name?: string }): Store
  updateStoreAsync(storeId: string, changes: StoreSettings & { name?: string }): Promise<Store>

  createKey(storeId: string, options: NewKey): CreatedKey
  createKeyAsync(storeId: string, options: NewKey): Promise<CreatedKey>
  getKey(storeId: string, keyId: string): Key
  listKeys(storeId: string): Key[]
  updateKey(storeId: string, keyId: string, changes: KeyChanges): Key
  updateKeyAsync(storeId: string, keyId: string, changes: KeyChanges): Promise<Key>
  /** A new secret, this once. The old one stops at once, or keeps working for `overlapSeconds` (0 to 604,800; default 0) so clients can switch over. */
  regenerateKey(storeId: string, keyId: string, options?: { overlapSeconds?: number }): CreatedKey
  regenerateKeyAsync(storeId: string, keyId: string, options?: { overlapSeconds?: number }): Promise<CreatedKey>
  revokeKey(storeId: string, keyId: string): void
  revokeKeyAsync(storeId: string, keyId: string): Promise<void>
  audit(storeId: string, options?: { limit?: number }): AuditEvent[]
  /** The credentials in `text`, checked against the keys; `stop` stops the live ones. */
  checkLeaks(text: string, options?: { stop?: boolean }): LeakFinding[]
  checkLeaksAsync(text: string, options?: { stop?: boolean }): Promise<LeakFinding[]>

  /** Decides one request; a refusal is a Decision with `allowed === false`, never an exception. */
  verify(credential: string | null | undefined, options?: VerifyOptions): Decision

  recordRequest(decision: Decision, options: RecordOptions): void
  logs(storeId: string, query?: LogQuery): LogEntry[]
  logsAsync(storeId: string, query?: LogQuery): Promise<LogEntry[]>
  /** Requests per key in a period (default: the day before `until`, which defaults to now). */
  usage(storeId: string, period?: { since?: Date | string; until?: Date | string }): Usage
  usageAsync(storeId: string, period?: { since?: Date | string; until?: Date | string }): Promise<Usage>
  flush(): void
  /** Writes what is buffered and releases the database file; later calls throw `CLOSED`. */
  close(): void
  flushAsync(): Promise<void>

  createWebhook(storeId: string, endpoint: { url: string; events: WebhookEvent[]; active?: boolean }): CreatedWebhook
  createWebhookAsync(
    storeId: string,
    endpoint: { url: string; events: WebhookEvent[]; active?: boolean },
  ): Promise<CreatedWebhook>
  listWebhooks(storeId: string): WebhookEndpoint[]
  getWebhook(storeId: string, webhookId: string): WebhookEndpoint
  updateWebhook(
    storeId: string,
    webhookId: string,
    changes: { url?: string; events?: WebhookEvent[]; active?: boolean },
  ): WebhookEndpoint
  updateWebhookAsync(
    storeId: string,
    webhookId: string,
    changes: { url?: string; events?: WebhookEvent[]; active?: boolean },
  ): Promise<WebhookEndpoint>
  /** A new signing secret, this once; the old one also signs for `overlapSeconds` (0 to 604,800; default a day). */
  rotateWebhookSecret(storeId: string, webhookId: string, options?: { overlapSeconds?: number }): CreatedWebhook
  rotateWebhookSecretAsync(storeId: string, webhookId: string, options?: { overlapSeconds?: number }): Promise<CreatedWebhook>
  deleteWebhook(storeId: string, webhookId: string): void
  deleteWebhookAsync(storeId: string, webhookId: string): Promise<void>
  webhookDeliveries(storeId: string, webhookId: string, options?: { limit?: number }): WebhookDelivery[]
  /** Sends a finished delivery once more, now (no retries after it); 409 `CONFLICT` while it is pending or the endpoint is disabled. */
  retryWebhookDelivery(storeId: string, webhookId: string, deliveryId: string): WebhookDelivery
  /** Sends a signed `webhook.test` event now, off the event loop. */
  testWebhookAsync(storeId: string, webhookId: string): Promise<WebhookTestResult>
  /** One delivery pass off the event loop. */
  deliverWebhooksAsync(): Promise<{ queued: number; attempted: number; nextDueMs: number | null }>
  /** Delivers in a background thread from now on (once per engine). */
  startWebhookWorker(): void

  /**
   * Creates an entity. With `idempotencyKey` (1-255 visible ASCII characters, a UUID say) it is
   * made at most once per key in the store and environment for 24 hours: a retry returns what
   * the first call made, as it is now, and makes nothing (`replayed` is then true); the key with
   * another area or body throws `CONFLICT`.
   */
  create(storeId: string, area: Area | string, data: Entity, options?: CreateOptions): CreatedEntity
  createAsync(storeId: string, area: Area | string, data: Entity, options?: CreateOptions): Promise<CreatedEntity>
  get(storeId: string, area: Area | string, id: string, options?: EntityOptions): Entity
  list(storeId: string, area: Area | string, options?: EntityOptions & { limit?: number; cursor?: string }): Page
  update(storeId: string, area: Area | string, id: string, data: Entity, options?: EntityOptions): Entity
  updateAsync(storeId: string, area: Area | string, id: string, data: Entity, options?: EntityOptions): Promise<Entity>
  delete(storeId: string, area: Area | string, id: string, options?: EntityOptions): void
  deleteAsync(storeId: string, area: Area | string, id: string, options?: EntityOptions): Promise<void>

  /** Opens a session for one customer (default 15 minutes, 60 s to a day); the token is shown this once. */
  createPortalSession(storeId: string, customerId: string, options?: PortalSessionOptions): PortalSession
  createPortalSessionAsync(storeId: string, customerId: string, options?: PortalSessionOptions): Promise<PortalSession>
  /** Whose portal a token opens, or `null` (an unknown, malformed or expired token alike). */
  portalCustomer(token: string): PortalCustomer | null
  /** A page of the token's customer's orders or subscriptions, or `null` as `portalCustomer`. */
  portalList(token: string, area: 'Orders' | 'Subscriptions' | string, options?: { limit?: number; cursor?: string }): Page | null
  /** The store's live sessions, soonest to expire first; never their tokens. */
  portalSessions(storeId: string): PortalSessionInfo[]
  /** Ends one live session before it expires (audited; NOT_FOUND when none has the id); the ids ended. */
  endPortalSession(storeId: string, sessionId: string): string[]
  endPortalSessionAsync(storeId: string, sessionId: string): Promise<string[]>
  /** Ends every live session of one customer (audited when any was live); the ids ended. */
  endCustomerPortalSessions(storeId: string, customerId: string): string[]
  endCustomerPortalSessionsAsync(storeId: string, customerId: string): Promise<string[]>
}

export declare class LatchkeyError extends Error {
  /** Stable: VALIDATION, NOT_FOUND, CONFLICT, FORBIDDEN, PLAN_REQUIRED, NOT_ALLOWED, STORAGE… */
  readonly code: string
  /** Every problem found (one entry per bad field for VALIDATION). */
  readonly problems: string[]
}
export declare class ValidationError extends LatchkeyError {}
export declare class NotFoundError extends LatchkeyError {}
export declare class ConflictError extends LatchkeyError {}
export declare class ForbiddenError extends LatchkeyError {}
export declare class PlanRequiredError extends LatchkeyError {}
export declare class NotAllowedError extends LatchkeyError {}
export declare class StorageError extends LatchkeyError {}

export interface ExpressOptions {
  area?: Area | string
  action?: Action | string
  areaFor?: (req: any) => Area | string | null | undefined
  trustedProxies?: string[]
}

/** Express middleware answering refusals exactly as the Latchkey server does. */
export declare function express(engine: Engine, options?: ExpressOptions): (req: any, res: any, next: (err?: unknown) => void) => void
export declare function trustedProxies(cidrs?: string[]): TrustedProxies
/** Each header is its value or every line of it; a header sent twice answers `INVALID`. */
export declare function credentialFromHeaders(
  xApiKey?: string | string[] | null,
  authorization?: string | string[] | null,
): string | null
export declare function actionForMethod(method: string): Action | null
export declare function areaForPath(path: string): Area | null
/**
 * `text` with every Latchkey credential in it masked as key lists show it (`lk_ab12cd34_…Xy9Z`,
 * `cs_…9f3a`), for log lines, error reports and tickets. With `hex`, every 64-hex word too (a
 * hex key looks like any SHA-256 digest). Needs no engine.
 */
export declare function redact(text: string, options?: { hex?: boolean }): string
export declare const version: string
