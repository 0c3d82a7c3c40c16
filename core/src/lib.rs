//! Latchkey: the engine behind a commerce platform's "API keys" settings page.
//!
//! One [`Engine`] owns a redb database and an in-memory index of every live key. It issues keys
//! in three formats (only SHA-256 digests are stored), scopes them with [`PermissionSet`]s,
//! and answers each request with a [`Decision`] from [`Engine::verify`], which never touches
//! the database.
//!
//! ```
//! use latchkey::{Actor, Engine, NewKey, NewStore, PermissionSet, VerifyRequest};
//! use latchkey::{Action, Area, Permission};
//!
//! let engine = Engine::memory()?;
//! let admin = Actor::admin("docs");
//! let (store, _default_key) = engine.create_store(&admin, NewStore::named("My Shop"))?;
//! let perms = PermissionSet::from_input(&serde_json::json!({"Orders": ["View"]})).unwrap();
//! let created = engine.create_key(store.id.as_str(), &admin, NewKey::new("ERP", perms))?;
//!
//! let credential = created.credential();
//! let decision = engine.verify(&VerifyRequest {
//!     credential: Some(&credential),
//!     permission: Some(Permission::new(Area::Orders, Action::View)),
//!     ip: None,
//!     path: "/api/v1/orders",
//! });
//! assert!(decision.allowed());
//! # Ok::<(), latchkey::Error>(())
//! ```

mod audit;
mod client;
mod clock;
mod engine;
mod entities;
mod error;
mod expiry;
mod ids;
mod index;
mod input;
mod keys;
mod limiter;
mod limits;
mod logs;
mod memo;
mod money;
pub mod ops;
mod permissions;
mod portal;
mod rates;
mod secret;
mod storage;
mod stores;
mod usage;
mod verify;
mod webhooks;

pub use audit::{Actor, AuditAction, AuditEvent, REASON_LEAKED};
pub use client::{client_ip, parse_ip, parse_ip_argument};
pub use clock::{Clock, FakeClock, SystemClock};
pub use engine::{
    CACHE_MB, DEFAULT_CACHE_BYTES, DIGEST_MEMO_ENV, Engine, EngineOptions, Identified, Stopped,
};
pub use entities::{
    Created, DEFAULT_PAGE, ENTITY_COUNT_MAX, ENTITY_DESCRIPTION_MAX_CHARS, ENTITY_NAME_MAX_CHARS,
    ENTITY_NOTE_MAX_CHARS, IDEMPOTENCY_KEY_MAX, IDEMPOTENCY_TTL, MAX_PAGE, ORDER_MAX_ITEMS,
    ORDER_MAX_QUANTITY, OutboxEvent, Page, PageJson, SALE_PACKAGES_MAX, Scope,
    check_idempotency_key,
};
pub use error::{Error, Result};
pub use expiry::EXPIRY_NOTICE;
pub use ids::StoreId;
pub use input::{Patch, parse_cidrs};
pub use keys::{
    CreatedKey, Finding, Key, KeyFormat, KeyKind, KeyPatch, Leak, LeakCheck, LeakShape, LeakStatus,
    MAX_ALLOWLIST_ENTRIES, MAX_DESCRIPTION_CHARS, MAX_KEY_NAME_CHARS, MAX_KEY_OVERLAP,
    MAX_META_BYTES, NewKey, UNREADABLE_CREDENTIAL, credential_from_headers, find_leaks, is_token,
    leak_shape, redact, regeneration_overlap,
};
pub use limiter::{Limiter, LimiterOptions};
pub use limits::{
    Algorithm, DEFAULT_LIMIT_ENV, IpScope, MAX_PER_MINUTE, MAX_WINDOW_SECONDS, MIN_PER_MINUTE,
    RateLimit, RateOptions,
};
pub use logs::{LOG_BUFFER, LOG_FLUSH_AT, LogEntry, LogQuery, MAX_LOG_READ};
pub use money::{MAX_AMOUNT, Money};
pub use permissions::{Action, Area, CURRENT_KEY_PATH, Permission, PermissionSet};
pub use portal::{
    EndPortalSessions, MAX_PORTAL_TTL_SECONDS, NewPortalSession, PORTAL_PERMISSION,
    PORTAL_TTL_SECONDS, PortalCustomer, PortalSession, PortalSessionInfo,
};
pub use secret::{Digest, Secret, hex_lower};
pub use stores::{
    MAX_ENVIRONMENTS, MAX_KEY_TTL_DAYS, MAX_LOG_RETENTION_DAYS,
    MAX_NAME_CHARS as MAX_STORE_NAME_CHARS, MAX_SCOPED_KEYS_LIMIT, NewStore, Plan, Store,
    StorePatch, StoreSettings, Tier,
};
pub use usage::{DEFAULT_USAGE_PERIOD, KeyUsage, MAX_USAGE_PERIOD, Usage, UsageQuery};
pub use verify::{
    Decision, DenyCode, KeyIdentity, LimitHeader, LimitState, METHOD_NOT_ALLOWED, VerifyRequest,
    method_not_allowed_body, verify_arguments,
};
pub use webhooks::{
    DEFAULT_DELIVERIES, DEFAULT_SECRET_OVERLAP_SECONDS, DELIVERY_RETENTION, DeliveryPass,
    EVENTS as WEBHOOK_EVENTS, MAX_ATTEMPTS as MAX_WEBHOOK_ATTEMPTS, MAX_DELIVERIES,
    MAX_SECRET_OVERLAP_SECONDS, MAX_WEBHOOKS, RESPONSE_KEEP, RETRY_JITTER,
    TEST_EVENT as WEBHOOK_TEST_EVENT, WebhookOptions, refused_address, retry_delay,
};
