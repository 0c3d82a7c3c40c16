//! The engine: owns the database, the in-memory index, and every write.
//!
//! Write protocol (all key and store changes): take the writer lock, read and validate inside a
//! redb write transaction, write the records and their audit events, commit durably, then update
//! the index. Holding the writer lock through the index update keeps the index in commit order.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::audit::{Actor, AuditAction, AuditEvent};
use crate::clock::{Clock, HotClock, SystemClock};
use crate::error::{Error, Problems, Result};
use crate::ids::{StoreId, new_key_id};
use crate::index::{KeyEntry, KeyIndex, Matcher, PreviousEntry, StoreLive, Usage};
use crate::input::Patch;
use crate::keys::format::{self, Generated};
use crate::keys::{
    CreatedKey, Key, KeyFormat, KeyKind, KeyPatch, KeyRecord, MAX_KEY_OVERLAP, NewKey,
    PreviousSecret,
};
use crate::limits::RateOptions;
use crate::permissions::{Action, Area, Permission, PermissionSet};
use crate::rates::Rates;
use crate::secret::{Digest, Secret};
use crate::storage::{self, AUDIT, KEYS, STORES, StoredUsage, USAGE};
use crate::stores::{NewStore, Store, StorePatch, StoreSettings};
use crate::verify::{Decision, DenyCode, LimitState, VerifyRequest};
use crate::webhooks::WebhookOptions;

/// How an engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The source of time for expiry, plans, last use and limits.
    pub clock: Arc<dyn Clock>,
    /// How often in-memory `last_used_*` is written to the database and idle rate-limit
    /// entries are forgotten.
    pub usage_flush_interval: Duration,
    /// Request-log entries waiting that wake the writer before its next tick (default
    /// [`LOG_FLUSH_AT`](crate::LOG_FLUSH_AT), a quarter of the queue); 0 writes only at ticks
    /// and on flush. At most [`LOG_BUFFER`](crate::LOG_BUFFER).
    pub log_flush_at: usize,
    /// Rate limits: server default, per-IP scopes, brute force, exempt routes, sizing.
    pub rates: RateOptions,
    /// Webhook delivery: private targets, timeout, worker poll interval.
    pub webhooks: WebhookOptions,
    /// Memory for the database file's page cache (default [`DEFAULT_CACHE_BYTES`], at least
    /// 1 MiB). Verify never reads the database; entity and log reads do, and pages beyond
    /// the cache are read back from the operating system's file cache. redb's own default
    /// (1 GiB) is more than an embedded engine should take unasked, and filling it is most of
    /// the request-log writer's cost while it grows.
    pub cache_bytes: usize,
    /// Remember the SHA-256 of recently presented secrets per thread (default on; see
    /// `memo.rs`), so a busy key is hashed once per thread rather than once per request. It
    /// pays only while its entries stay in the CPU's caches, as in a loop of verifies; where
    /// much other work runs between two requests of a key (the HTTP server: sockets, parsing,
    /// the response) a hit waits on memory for longer than hashing takes, so the server turns
    /// it off. Off also for operators whose policy forbids keeping presented secrets in memory
    /// past their request; environment: [`DIGEST_MEMO_ENV`].
    pub digest_memo: bool,
}

/// The environment variable that turns the digest memo off (`off`/`false`/`0`) or on
/// (`on`/`true`/`1`); [`EngineOptions::from_env`] reads it.
pub const DIGEST_MEMO_ENV: &str = "LATCHKEY_DIGEST_MEMO";

/// The database page cache's default size: 64 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// The page cache sizes the front ends take in MiB (`serve --cache-mb`, the bindings'
/// `cacheMb` / `cache_mb`): from 1 MiB to 1 TiB.
pub const CACHE_MB: std::ops::RangeInclusive<u64> = 1..=1 << 20;

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            usage_flush_interval: Duration::from_secs(10),
            log_flush_at: crate::LOG_FLUSH_AT,
            rates: RateOptions::default(),
            webhooks: WebhookOptions::default(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            digest_memo: true,
        }
    }
}

impl EngineOptions {
    /// The defaults, with the settings the environment may override (see
    /// [`RateOptions::from_env`] and [`DIGEST_MEMO_ENV`]). Every problem is named at once.
    pub fn from_env() -> Result<Self> {
        Self::from_env_over(Self::default())
    }

    /// `defaults` (a front end's own, such as the server's memo off), with the settings the
    /// environment may override, as [`from_env`](Self::from_env) does; the rest of `defaults`
    /// is kept.
    pub fn from_env_over(defaults: Self) -> Result<Self> {
        let memo = std::env::var_os(DIGEST_MEMO_ENV);
        let memo = memo.as_deref().map(|v| v.to_string_lossy());
        let rates = RateOptions::from_env_over(defaults.rates.clone());
        Self::from_values(defaults, rates, memo.as_deref())
    }

    fn from_values(defaults: Self, rates: Result<RateOptions>, memo: Option<&str>) -> Result<Self> {
        let mut problems = Problems::new();
        let rates = rates.unwrap_or_else(|e| {
            match e {
                Error::Validation(found) => found.into_iter().for_each(|p| problems.push(p)),
                other => problems.push(other.to_string()),
            }
            defaults.rates.clone()
        });
        let digest_memo = match memo.map(str::trim).filter(|v| !v.is_empty()) {
            None => defaults.digest_memo,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                _ => {
                    problems.push(format!(
                        "{DIGEST_MEMO_ENV}: `{v}` is not one of on, off, true, false, 1, 0"
                    ));
                    defaults.digest_memo
                }
            },
        };
        problems.finish()?;
        Ok(Self {
            rates,
            digest_memo,
            ..defaults
        })
    }

    /// Sets [`cache_bytes`](Self::cache_bytes) from a size in MiB; `Err` says what is wrong
    /// with `mb` (outside [`CACHE_MB`]), for the caller to name.
    pub fn set_cache_mb(&mut self, mb: u64) -> std::result::Result<(), String> {
        let bytes = CACHE_MB
            .contains(&mb)
            .then(|| usize::try_from(mb << 20).ok())
            .flatten()
            .ok_or_else(|| {
                format!(
                    "must be between {} and {} (1 TiB)",
                    CACHE_MB.start(),
                    CACHE_MB.end()
                )
            })?;
        self.cache_bytes = bytes;
        Ok(())
    }

    fn check(&self) -> Result<()> {
        let mut problems = Problems::new();
        if self.usage_flush_interval.is_zero() {
            problems.push("usage_flush_interval: must be more than zero");
        }
        if self.log_flush_at > crate::LOG_BUFFER {
            problems.push(format!(
                "log_flush_at: must be at most {} (the log queue's size)",
                crate::LOG_BUFFER
            ));
        }
        for problem in self.rates.problems() {
            problems.push(format!("rates.{problem}"));
        }
        for problem in self.webhooks.problems() {
            problems.push(format!("webhooks.{problem}"));
        }
        if self.cache_bytes < 1 << 20 {
            problems.push("cache_bytes: must be at least 1 MiB");
        }
        problems.finish()
    }
}

/// The key a live credential belongs to ([`Engine::identify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub store_id: StoreId,
    pub key_id: String,
    /// The credential is a secret a regeneration replaced, still accepted in its overlap
    /// (ending the overlap stops it; the key's current secret is another).
    pub replaced: bool,
}

/// How [`Engine::stop_leaked`] stopped a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The key was revoked.
    Revoked,
    /// The credential was a replaced secret; its overlap was ended.
    OverlapEnded,
    /// The store's default key (which cannot be revoked) got a new secret, not shown.
    SecretReplaced,
}

/// A store as written to disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoreRecord {
    v: u32,
    #[serde(flatten)]
    store: Store,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl StoreRecord {
    const VERSION: u32 = 1;
}

/// The Latchkey engine. Share it between threads with an `Arc`; every method takes `&self`.
///
/// Dropping it flushes pending last-use times and closes the database.
pub struct Engine {
    inner: Arc<Inner>,
    flusher: Option<JoinHandle<()>>,
}

/// State only the engine's writes read and change, under [`Inner::writer`].
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// Unrevoked scoped keys per store (for `max_scoped_keys`): counted once when the
    /// database is opened, then changed with each creation and revocation after its commit, so
    /// creating a key does not read every key of its store.
    scoped: HashMap<StoreId, usize>,
}

pub(crate) struct Inner {
    pub(crate) db: Database,
    pub(crate) clock: HotClock,
    index: KeyIndex,
    /// Live store state, shared with key entries. Written only under `writer`. Hashed with
    /// foldhash (seeded per process) rather than SipHash: every keyed list looks its store up
    /// here, and SipHash cost that lookup twice its other work; store ids are made by admins
    /// and the engine, not chosen by the clients whose requests look them up.
    stores: RwLock<HashMap<StoreId, Arc<StoreLive>, foldhash::fast::RandomState>>,
    /// Held through every write transaction, so the index is updated in commit order; holds
    /// what the writes keep between them.
    pub(crate) writer: Mutex<Writer>,
    /// Usages whose minute rolled over since the last flush. Lock-free: verify pushes here.
    usage_queue: SegQueue<Arc<Usage>>,
    shutdown: AtomicBool,
    rates: Rates,
    /// Request log entries waiting to be written.
    pub(crate) logs: crate::logs::LogBuffer,
    /// Webhook delivery: options, the worker and its wake-up.
    pub(crate) webhooks: crate::webhooks::Runtime,
    /// Rendered entity list pages, dropped per store by every entity write.
    pub(crate) pages: crate::entities::pages::PageCache,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("stores", &self.inner.stores.read().len())
            .field("index", &self.inner.index)
            .finish()
    }
}

impl Engine {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Engine> {
        Self::open_with(path, EngineOptions::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: EngineOptions) -> Result<Engine> {
        let db = Self::builder(&options)?.create(path.as_ref())?;
        Self::start(db, options)
    }

    /// An engine on an in-memory database (tests, embedding without persistence).
    pub fn memory() -> Result<Engine> {
        Self::memory_with(EngineOptions::default())
    }

    pub fn memory_with(options: EngineOptions) -> Result<Engine> {
        let db =
            Self::builder(&options)?.create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::start(db, options)
    }

    /// An in-memory engine whose clock stands at 2026-01-01 until a test moves it.
    #[cfg(test)]
    pub(crate) fn memory_on_fake_clock() -> (Engine, crate::clock::FakeClock) {
        let clock = crate::clock::FakeClock::new(time::macros::datetime!(2026-01-01 0:00 UTC));
        let engine = Self::memory_with(EngineOptions {
            clock: Arc::new(clock.clone()),
            ..EngineOptions::default()
        })
        .expect("engine");
        (engine, clock)
    }

    /// The database's builder for `options`, checked first so bad options create nothing.
    fn builder(options: &EngineOptions) -> Result<redb::Builder> {
        options.check()?;
        let mut builder = Database::builder();
        builder.set_cache_size(options.cache_bytes);
        Ok(builder)
    }

    /// Starts on a database opened with `options` already checked.
    fn start(db: Database, options: EngineOptions) -> Result<Engine> {
        storage::prepare(&db)?;
        let inner = Arc::new(Inner {
            db,
            rates: Rates::new(options.rates, options.clock.clone()),
            logs: crate::logs::LogBuffer::new(options.log_flush_at),
            clock: HotClock::new(options.clock),
            index: KeyIndex::new(options.digest_memo),
            stores: RwLock::new(HashMap::default()),
            writer: Mutex::new(Writer::default()),
            usage_queue: SegQueue::new(),
            shutdown: AtomicBool::new(false),
            webhooks: crate::webhooks::Runtime::new(options.webhooks),
            pages: crate::entities::pages::PageCache::default(),
        });
        inner.load()?;
        let worker = inner.clone();
        let interval = options.usage_flush_interval;
        let flusher = std::thread::Builder::new()
            .name("latchkey-usage".into())
            .spawn(move || {
                // An interval past the end of `Instant` means never (before shutdown).
                let next = |now: Instant| now.checked_add(interval);
                let mut tick = next(Instant::now());
                loop {
                    // Woken early by a request when the log queue fills (see
                    // `logs::LOG_FLUSH_AT`), or by shutdown; a wake-up can also be spurious.
                    match tick.map(|t| t.checked_duration_since(Instant::now())) {
                        Some(Some(wait)) => std::thread::park_timeout(wait),
                        Some(None) => {}
                        None => std::thread::park(),
                    }
                    let stop = worker.shutdown.load(Ordering::Acquire);
                    let due = stop || tick.is_some_and(|t| Instant::now() >= t);
                    if due {
                        // A failed flush leaves the usages to the next one; last use is
                        // advisory.
                        let _ = worker.flush_usage();
                    }
                    worker.logs.rearm();
                    // A failed log write keeps nothing back: the entries are lost, not retried
                    // forever (the log is bounded, not durable per request; SPEC §11).
                    let _ = worker.flush_logs();
                    if due {
                        worker.sweep_rates();
                        tick = next(Instant::now());
                    }
                    if stop {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Storage(format!("cannot start the usage flusher: {e}")))?;
        inner.logs.set_writer(flusher.thread().clone());
        Ok(Engine {
            inner,
            flusher: Some(flusher),
        })
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    pub(crate) fn inner_arc(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// 404 unless the store exists and has the environment, from memory (no transaction).
    pub(crate) fn check_scope_live(&self, store_id: StoreId, environment: &str) -> Result<()> {
        let stores = self.inner.stores.read();
        let live = stores
            .get(&store_id)
            .ok_or_else(|| Error::not_found("store", store_id.as_str()))?;
        if live.has_environment(environment) {
            Ok(())
        } else {
            Err(Error::not_found("environment", environment))
        }
    }

    /// Whether the store's API is open for a request in `environment` now, by the store-wide
    /// checks a key's request passes too (SPEC §4): `INVALID` when the store or environment
    /// is gone, then `API_DISABLED`, then `PLAN_REQUIRED`. From memory (no transaction).
    pub(crate) fn store_open(
        &self,
        store_id: StoreId,
        environment: &str,
    ) -> std::result::Result<(), DenyCode> {
        let stores = self.inner.stores.read();
        let live = stores
            .get(&store_id)
            .filter(|live| live.has_environment(environment))
            .ok_or(DenyCode::Invalid)?;
        if !live.api_enabled() {
            Err(DenyCode::ApiDisabled)
        } else if live.plan_blocks(self.inner.clock.now_nanos()) {
            Err(DenyCode::PlanRequired)
        } else {
            Ok(())
        }
    }

    /// The engine's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        self.inner.clock.injected()
    }

    // ---- verify -------------------------------------------------------------------------

    /// Decides one request (SPEC §4). Never opens a transaction or takes a global lock: it
    /// locks one shard of the key index (which holds the key's budget) and at most one shard
    /// of the IP limiter.
    pub fn verify(&self, request: &VerifyRequest<'_>) -> Decision {
        let inner = &*self.inner;
        let rates = &inner.rates;
        let wall = inner.clock.now_nanos();
        // An IP over the brute-force limit is refused before its credential is looked at, so
        // it learns nothing more until the window passes.
        if let Some(state) = rates.blocked(request.ip, wall) {
            return Decision::deny(DenyCode::RateLimited).with_limit(Some(state));
        }
        self.decide(request, wall)
    }

    /// The decision. Every 401 (`MISSING`, `INVALID`, `EXPIRED`) is counted against the
    /// client's brute-force limit where it is made, and reports that limit; an admission is
    /// returned as built, with no check after the fact.
    #[inline]
    fn decide(&self, request: &VerifyRequest<'_>, now: i64) -> Decision {
        let inner = &*self.inner;
        let unauthenticated =
            |decision: Decision| decision.with_limit(inner.rates.failed(request.ip, now));
        let Some(credential) = request.credential.filter(|c| !c.is_empty()) else {
            return unauthenticated(Decision::deny(DenyCode::Missing));
        };
        // Malformed and bad-checksum credentials stop here, before any lookup.
        let Some(presented) = format::parse(credential) else {
            return unauthenticated(Decision::deny(DenyCode::Invalid));
        };
        // The remaining checks run while the key's index shard is locked: a few loads, compares
        // and the budget's arithmetic, so the decision copies out what it needs instead of
        // cloning the entry.
        inner.index.find(
            &presented,
            now,
            |entry| {
                let grant = entry.grant;
                if now >= entry.expires_at {
                    return unauthenticated(Decision::refuse(
                        (DenyCode::Expired, None),
                        grant,
                        None,
                    ));
                }
                let refused = if !entry.active {
                    Some((DenyCode::Inactive, None))
                } else if !entry.store.api_enabled() {
                    Some((DenyCode::ApiDisabled, None))
                } else if entry.store.plan_blocks(now) {
                    Some((DenyCode::PlanRequired, None))
                } else if !entry.ip_allowed(request.ip) {
                    Some((DenyCode::IpNotAllowed, None))
                } else {
                    request
                        .permission
                        .filter(|&needed| !entry.permissions().contains(needed))
                        .map(|needed| (DenyCode::Forbidden, Some(needed)))
                };
                // RATE_LIMITED is the last check (SPEC §4, §5): every applicable limit is charged
                // here, atomically, only once everything above has passed. A refusal above still
                // reports the limits' state, uncharged.
                let limit = inner
                    .rates
                    .key_limit(entry.rate_limit(), entry.store.default_limit());
                let charged = inner.rates.charge(
                    Some((&mut entry.rate, limit)),
                    request.ip,
                    request.path,
                    now,
                    refused.is_none(),
                );
                if let Some(refused) = refused {
                    return Decision::refuse(refused, grant, charged.state);
                }
                if !charged.allowed {
                    return Decision::refuse((DenyCode::RateLimited, None), grant, charged.state);
                }
                if entry.touch(now.div_euclid(1_000_000_000), request.ip) {
                    inner.usage_queue.push(entry.usage.clone());
                }
                Decision::allow(grant, charged.state)
            },
            || unauthenticated(Decision::deny(DenyCode::Invalid)),
        )
    }

    /// The key a credential belongs to, if it is live, and whether it is a replaced secret
    /// in its overlap: for scanners of leaked keys. Takes what [`crate::find_leaks`] finds:
    /// any credential `verify` takes, and a pair's consumer secret alone (the secret is the
    /// leak; the consumer key is public). Charges no limit and records no use.
    pub fn identify(&self, credential: &str) -> Option<Identified> {
        self.identify_kind(credential).map(|(found, _)| found)
    }

    /// [`Engine::identify`] and the key's kind, both from the index entry.
    fn identify_kind(&self, credential: &str) -> Option<(Identified, KeyKind)> {
        let index = &self.inner.index;
        let now = self.inner.clock.now_nanos();
        let found = |secret: &str| {
            let digest = Digest::of(secret.as_bytes());
            move |entry: &mut KeyEntry| {
                let found = Identified {
                    store_id: entry.store_id(),
                    key_id: entry.id().to_owned(),
                    // Found, but not under its own digest: through a replaced secret.
                    replaced: !entry.digest.ct_eq(&digest),
                };
                Some((found, entry.grant.kind))
            }
        };
        match format::parse(credential) {
            Some(presented) => index.find(&presented, now, found(presented.secret()), || None),
            None if format::is_pair_secret(credential) => {
                index.find_pair_secret(credential, now, found(credential), || None)
            }
            None => None,
        }
    }

    /// Charges the per-IP route limit of a request that carries no key (public storefront
    /// routes, sign-in). Refused when the IP is over its scope's limit or over the
    /// brute-force limit. `None` when no limit applies to `path`.
    pub fn check_ip(&self, ip: IpAddr, path: &str) -> Option<LimitState> {
        let charged = self
            .inner
            .rates
            .check_ip(ip, path, self.inner.clock.now_nanos());
        charged.state
    }

    /// Counts a failed authentication from `ip` outside verify (e.g. a bad sign-in) against
    /// the brute-force limit. Returns that limit's state (`None` when it is off).
    pub fn record_auth_failure(&self, ip: IpAddr) -> Option<LimitState> {
        self.inner
            .rates
            .failed(Some(ip), self.inner.clock.now_nanos())
    }

    /// Rate-limit entries tracked now: (keys holding a budget, i.e. charged since a sweep
    /// last found it all back; per-IP entries). The first count visits every key's entry,
    /// one index shard at a time, so it is for monitoring, not for a hot path.
    pub fn rate_limit_entries(&self) -> (usize, usize) {
        (
            self.inner.index.tracked_rates(),
            self.inner.rates.tracked_ips(),
        )
    }

    /// Forgets idle rate-limit entries now (also done in the background); returns how many
    /// entries are still tracked.
    pub fn sweep_rate_limits(&self) -> usize {
        self.inner.sweep_rates()
    }

    /// Writes pending last-use times and request-log entries now (they are otherwise written
    /// in the background).
    pub fn flush(&self) -> Result<()> {
        self.inner.flush_usage()?;
        self.inner.flush_logs()
    }

    // ---- stores -------------------------------------------------------------------------

    /// Creates a store and its default key. The default key's secret is in the result, once.
    pub fn create_store(&self, actor: &Actor, input: NewStore) -> Result<(Store, CreatedKey)> {
        self.create_store_as(actor, None, input)
    }

    /// [`Engine::create_store`] under an id chosen by the caller (the development store of
    /// `latchkey serve --dev` is `devstore`, SPEC §9): a conflict when a store has it already.
    pub fn create_store_with_id(
        &self,
        actor: &Actor,
        id: StoreId,
        input: NewStore,
    ) -> Result<(Store, CreatedKey)> {
        self.create_store_as(actor, Some(id), input)
    }

    fn create_store_as(
        &self,
        actor: &Actor,
        chosen: Option<StoreId>,
        input: NewStore,
    ) -> Result<(Store, CreatedKey)> {
        let settings = input.settings()?;
        let inner = &*self.inner;
        let _writer = inner.writer.lock();
        let now = inner.clock.now();
        let tx = storage::write(&inner.db)?;
        let id = {
            let stores = tx.open_table(STORES)?;
            match chosen {
                Some(id) if stores.get(id.as_str())?.is_some() => {
                    return Err(Error::Conflict(format!(
                        "A store with id {} exists already",
                        id.as_str()
                    )));
                }
                Some(id) => id,
                None => {
                    let mut id = StoreId::random()?;
                    // 36^8 ids: a collision is rare, but a clash must never overwrite a store.
                    while stores.get(id.as_str())?.is_some() {
                        id = StoreId::random()?;
                    }
                    id
                }
            }
        };
        let store = Store {
            id,
            settings,
            created_at: now,
        };
        let record = StoreRecord {
            v: StoreRecord::VERSION,
            store: store.clone(),
            updated_at: now,
        };
        tx.open_table(STORES)?
            .insert(id.as_str(), storage::encode(&record)?.as_slice())?;

        let mut default_key = NewKey::new("Default key", PermissionSet::all());
        default_key.description = Some("Full access; created with the store".into());
        default_key.expires_at = Patch::Null;
        let environment = store.settings.default_environment().to_owned();
        let (record, secret) = insert_new_key(
            &tx,
            &store,
            KeyKind::Default,
            default_key,
            environment,
            actor,
            now,
        )?;
        tx.commit()?;
        inner.webhooks.wake();

        let live = Arc::new(StoreLive::of(&store.settings));
        inner.stores.write().insert(id, live.clone());
        inner.install(&record, live, None, None)?;
        Ok((
            store,
            CreatedKey {
                key: inner.shown(&record),
                secret,
            },
        ))
    }

    pub fn get_store(&self, store_id: &str) -> Result<Store> {
        let tx = storage::read(&self.inner.db)?;
        let table = tx.open_table(STORES)?;
        Ok(load_store(&table, store_id)?.store)
    }

    /// Every store, ordered by id.
    pub fn list_stores(&self) -> Result<Vec<Store>> {
        let tx = storage::read(&self.inner.db)?;
        let table = tx.open_table(STORES)?;
        let mut stores = Vec::new();
        for item in table.iter()? {
            let (_, value) = item?;
            let record: StoreRecord =
                storage::decode(value.value(), StoreRecord::VERSION, "store")?;
            stores.push(record.store);
        }
        Ok(stores)
    }

    /// Changes a store's settings. Takes effect for the very next verify.
    pub fn update_store(&self, store_id: &str, actor: &Actor, patch: StorePatch) -> Result<Store> {
        let inner = &*self.inner;
        let _writer = inner.writer.lock();
        let now = inner.clock.now();
        let tx = storage::write(&inner.db)?;
        let mut record = load_store(&tx.open_table(STORES)?, store_id)?;
        let settings = patch.apply(&record.store.settings)?;
        let removed: Vec<&String> = record
            .store
            .settings
            .environments
            .iter()
            .filter(|env| !settings.environments.contains(env))
            .collect();
        if !removed.is_empty() {
            let keys = tx.open_table(KEYS)?;
            for item in storage::store_range(&keys, store_id)? {
                let (_, bytes) = item?;
                let key: KeyRecord = storage::decode(&bytes, KeyRecord::VERSION, "key")?;
                if key.revoked_at.is_none() && removed.contains(&&key.environment) {
                    return Err(Error::Conflict(format!(
                        "environment `{}` still has keys (e.g. {}); revoke them first",
                        key.environment, key.id
                    )));
                }
            }
        }
        let changes = changed_settings(&record.store.settings, &settings)?;
        record.store.settings = settings;
        record.updated_at = now;
        tx.open_table(STORES)?
            .insert(store_id, storage::encode(&record)?.as_slice())?;
        // A patch that changes nothing leaves no event (as a key update that changes nothing).
        if !changes.is_empty() {
            let subject = Subject::Store(record.store.id);
            append_audit(&tx, subject, AuditAction::StoreUpdated, actor, changes, now)?;
        }
        tx.commit()?;
        if let Some(live) = inner.stores.read().get(&record.store.id) {
            live.set(&record.store.settings);
        }
        Ok(record.store)
    }

    // ---- keys ---------------------------------------------------------------------------

    /// Stops a leaked credential, if it is live: a replaced secret has its overlap ended (the
    /// clients already on the new secret keep working); a store's default key, which cannot be
    /// revoked, gets a new secret that is not returned (whoever holds the key regenerates it
    /// again to get one; deactivating it instead would let a later activation bring the
    /// leaked secret back); any other key is revoked. Each change is audited with the reason
    /// `leaked`. `None` when it authenticates nothing; else what it is, and how it was
    /// stopped or why it could not be.
    pub fn stop_leaked(
        &self,
        credential: &str,
        actor: &Actor,
    ) -> Option<(Identified, Result<Stopped>)> {
        let (found, kind) = self.identify_kind(credential)?;
        let store = found.store_id.as_str();
        // The audit trail says why: a revocation for a leak reads differently from a routine one.
        let reason = Some(crate::audit::REASON_LEAKED);
        let stopped = if found.replaced {
            let stop = KeyPatch {
                previous_expires_at: Patch::Null,
                ..KeyPatch::default()
            };
            self.update_key_because(store, actor, &found.key_id, stop, reason)
                .map(|_| Stopped::OverlapEnded)
        } else if kind == KeyKind::Default {
            let overlap = time::Duration::ZERO;
            self.regenerate_key_because(store, actor, &found.key_id, overlap, reason)
                .map(|_| Stopped::SecretReplaced)
        } else {
            self.revoke_key_because(store, actor, &found.key_id, reason)
                .map(|()| Stopped::Revoked)
        };
        Some((found, stopped))
    }

    /// Creates one scoped key. Its secret is in the result, once.
    pub fn create_key(&self, store_id: &str, actor: &Actor, key: NewKey) -> Result<CreatedKey> {
        let mut created = self.create_keys(store_id, actor, vec![key])?;
        created
            .pop()
            .ok_or_else(|| Error::Storage("no key created".into()))
    }

    /// Creates several scoped keys in one durable commit: all of them, or none.
    pub fn create_keys(
        &self,
        store_id: &str,
        actor: &Actor,
        keys: Vec<NewKey>,
    ) -> Result<Vec<CreatedKey>> {
        let mut problems = Problems::new();
        let many = keys.len() > 1;
        for (i, key) in keys.iter().enumerate() {
            for problem in key.problems() {
                problems.push(if many {
                    format!("keys[{i}].{problem}")
                } else {
                    problem
                });
            }
        }
        problems.finish()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }

        let inner = &*self.inner;
        let mut writer = inner.writer.lock();
        let now = inner.clock.now();
        let tx = storage::write(&inner.db)?;
        let store = load_store(&tx.open_table(STORES)?, store_id)?.store;
        if store.settings.plan_blocks(now) {
            return Err(Error::PlanRequired);
        }
        let acting = inner.acting_key(store.id, actor, Action::Edit)?;
        let mut problems = Problems::new();
        let mut environments = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let at = |problem: String| {
                if many {
                    format!("keys[{i}].{problem}")
                } else {
                    problem
                }
            };
            if let Some(acting) = &acting {
                ensure_can_grant(acting, &key.permissions)?;
                if key
                    .environment
                    .as_deref()
                    .is_some_and(|env| env != acting.environment())
                {
                    return Err(Error::Forbidden(format!(
                        "a key can only create keys in its own environment ({})",
                        acting.environment()
                    )));
                }
            }
            let environment = match (&key.environment, &acting) {
                (Some(env), _) => env.clone(),
                (None, Some(acting)) => acting.environment().to_owned(),
                (None, None) => store.settings.default_environment().to_owned(),
            };
            if !store.settings.environments.contains(&environment) {
                problems.push(at(format!(
                    "environment: `{environment}` is not one of this store's environments ({})",
                    store.settings.environments.join(", ")
                )));
            }
            if let Patch::Set(at_time) = key.expires_at
                && at_time <= now
            {
                problems.push(at("expires_at: must be in the future".to_owned()));
            }
            environments.push(environment);
        }
        problems.finish()?;

        let scoped = writer.scoped.get(&store.id).copied().unwrap_or(0);
        let max = store.settings.max_scoped_keys as usize;
        if scoped + keys.len() > max {
            return Err(Error::Conflict(format!(
                "this store has {scoped} of at most {max} scoped keys; revoke one or raise max_scoped_keys"
            )));
        }

        let mut created = Vec::with_capacity(keys.len());
        for (key, environment) in keys.into_iter().zip(environments) {
            let (record, secret) =
                insert_new_key(&tx, &store, KeyKind::Scoped, key, environment, actor, now)?;
            created.push((record, secret));
        }
        tx.commit()?;
        *writer.scoped.entry(store.id).or_default() += created.len();
        inner.webhooks.wake();

        let live = inner.store_live(store.id)?;
        created
            .into_iter()
            .map(|(record, secret)| {
                inner.install(&record, live.clone(), None, None)?;
                Ok(CreatedKey {
                    key: inner.shown(&record),
                    secret,
                })
            })
            .collect()
    }

    pub fn get_key(&self, store_id: &str, key_id: &str) -> Result<Key> {
        let tx = storage::read(&self.inner.db)?;
        load_store(&tx.open_table(STORES)?, store_id)?;
        let record = load_key(&tx.open_table(KEYS)?, store_id, key_id)?;
        Ok(self.inner.shown(&record))
    }

    /// The keys `actor` may see: all of them for an administrator; for a key (self-service,
    /// seed 001), those of its own environment, as it may only manage those.
    pub fn list_keys_as(&self, store_id: &str, actor: &Actor) -> Result<Vec<Key>> {
        let keys = self.list_keys(store_id)?;
        let Actor::Key(key_id) = actor else {
            return Ok(keys);
        };
        let environment = self
            .inner
            .index
            .by_id(key_id)
            .filter(|entry| entry.store_id().as_str() == store_id)
            .map(|entry| entry.environment().to_owned())
            .ok_or_else(|| Error::Forbidden("the acting key is not valid for this store".into()))?;
        Ok(keys
            .into_iter()
            .filter(|k| k.environment == environment)
            .collect())
    }

    /// The store's unrevoked keys, oldest first, masked.
    pub fn list_keys(&self, store_id: &str) -> Result<Vec<Key>> {
        let tx = storage::read(&self.inner.db)?;
        load_store(&tx.open_table(STORES)?, store_id)?;
        let table = tx.open_table(KEYS)?;
        let mut keys = Vec::new();
        for item in storage::store_range(&table, store_id)? {
            let (_, bytes) = item?;
            let record: KeyRecord = storage::decode(&bytes, KeyRecord::VERSION, "key")?;
            if record.revoked_at.is_none() {
                keys.push(self.inner.shown(&record));
            }
        }
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    /// Changes a key. Takes effect for the very next verify.
    pub fn update_key(
        &self,
        store_id: &str,
        actor: &Actor,
        key_id: &str,
        patch: KeyPatch,
    ) -> Result<Key> {
        self.update_key_because(store_id, actor, key_id, patch, None)
    }

    /// [`Engine::update_key`], its audit event giving `reason`.
    fn update_key_because(
        &self,
        store_id: &str,
        actor: &Actor,
        key_id: &str,
        patch: KeyPatch,
        reason: Option<&str>,
    ) -> Result<Key> {
        patch.check()?;
        let inner = &*self.inner;
        let _writer = inner.writer.lock();
        let now = inner.clock.now();
        let tx = storage::write(&inner.db)?;
        let store = load_store(&tx.open_table(STORES)?, store_id)?.store;
        let mut record = load_key(&tx.open_table(KEYS)?, store_id, key_id)?;
        let acting = inner.acting_key(store.id, actor, Action::Edit)?;
        if let Some(acting) = &acting {
            ensure_can_manage(acting, &record)?;
        }
        if patch.is_empty() {
            return Ok(inner.shown(&record));
        }

        let mut changes = Vec::new();
        let mut problems = Problems::new();
        let KeyPatch {
            name,
            description,
            active,
            rate_limit,
            ip_allowlist,
            expires_at,
            permissions,
            meta,
            previous_expires_at,
        } = patch;
        if let Some(name) = name {
            record.name = name.trim().to_owned();
            changes.push("name");
        }
        if let Some(description) = description.into_update() {
            record.description = description;
            changes.push("description");
        }
        if let Some(active) = active {
            record.active = active;
            changes.push("active");
        }
        if let Some(limit) = rate_limit.into_update() {
            record.rate_limit = limit;
            changes.push("rate_limit");
        }
        if let Some(list) = ip_allowlist {
            record.ip_allowlist = list;
            changes.push("ip_allowlist");
        }
        match expires_at {
            Patch::Absent => {}
            Patch::Null => {
                record.expires_at = None;
                changes.push("expires_at");
            }
            Patch::Set(at) if at <= now => problems.push("expires_at: must be in the future"),
            Patch::Set(at) => {
                record.expires_at = Some(at);
                changes.push("expires_at");
            }
        }
        if let Some(meta) = meta {
            record.meta = meta;
            changes.push("meta");
        }
        if let Some(end) = previous_expires_at.into_update() {
            match record.end_overlap(end, now) {
                Ok(true) => changes.push("previous_expires_at"),
                Ok(false) => {}
                Err(problem) => problems.push(format!("previous_expires_at: {problem}")),
            }
        }
        if let Some(permissions) = permissions {
            if record.kind == KeyKind::Default {
                return Err(Error::Conflict(
                    "the default key always has full access".into(),
                ));
            }
            if !store.settings.permissions_editable {
                return Err(Error::Conflict(
                    "permissions are immutable in this store: revoke the key and create a new one"
                        .into(),
                ));
            }
            if let Some(acting) = &acting {
                ensure_can_grant(acting, &permissions)?;
            }
            record.permissions = permissions;
            changes.push("permissions");
        }
        problems.finish()?;
        // Only stopping an overlap that had already ended: nothing to store or announce.
        if changes.is_empty() {
            return Ok(inner.shown(&record));
        }

        record.updated_at = now;
        let changes = changes.into_iter().map(str::to_owned).collect();
        write_change(
            &tx,
            &mut record,
            AuditAction::KeyUpdated,
            actor,
            changes,
            reason,
            now,
        )?;
        tx.commit()?;
        inner.install(
            &record,
            inner.store_live(store.id)?,
            inner.index.by_id(key_id),
            None,
        )?;
        Ok(inner.shown(&record))
    }

    /// Issues a new secret for a key (same id, permissions and settings); the new one is in
    /// the result, once. The old secret stops working at once, or with an `overlap` (up to
    /// [`MAX_KEY_OVERLAP`]) keeps authenticating the key until it ends, so clients can switch
    /// over without a refused request. A regeneration during an overlap ends the earlier one.
    pub fn regenerate_key(
        &self,
        store_id: &str,
        actor: &Actor,
        key_id: &str,
        overlap: time::Duration,
    ) -> Result<CreatedKey> {
        self.regenerate_key_because(store_id, actor, key_id, overlap, None)
    }

    /// [`Engine::regenerate_key`], its audit event giving `reason`.
    fn regenerate_key_because(
        &self,
        store_id: &str,
        actor: &Actor,
        key_id: &str,
        overlap: time::Duration,
        reason: Option<&str>,
    ) -> Result<CreatedKey> {
        crate::input::overlap_within(overlap, MAX_KEY_OVERLAP)
            .map_err(|problem| Error::invalid(vec![format!("overlap_seconds: {problem}")]))?;
        let inner = &*self.inner;
        let _writer = inner.writer.lock();
        let now = inner.clock.now();
        let tx = storage::write(&inner.db)?;
        let store = load_store(&tx.open_table(STORES)?, store_id)?.store;
        if store.settings.plan_blocks(now) {
            return Err(Error::PlanRequired);
        }
        let mut record = load_key(&tx.open_table(KEYS)?, store_id, key_id)?;
        if let Some(acting) = inner.acting_key(store.id, actor, Action::Edit)? {
            ensure_can_manage(&acting, &record)?;
        }
        let generated = format::generate(record.format, &store.settings.key_prefix, store.id)?;
        let Generated {
            secret,
            digest,
            consumer_key,
            last4,
        } = generated;
        let replaced = std::mem::replace(&mut record.digest, digest.to_hex());
        // A regeneration during an overlap ends the earlier one: only the secret being
        // replaced now stays accepted.
        record.previous = (overlap > time::Duration::ZERO).then(|| PreviousSecret {
            digest: replaced,
            prefix: record.prefix.clone(),
            until: now + overlap,
        });
        record.last4 = last4;
        if record.format == KeyFormat::Token {
            record.prefix = Some(store.settings.key_prefix.clone());
        }
        // A pair keeps its consumer key (an identifier); only the secret changes.
        if record.consumer_key.is_none() {
            record.consumer_key = consumer_key;
        }
        record.updated_at = now;
        write_change(
            &tx,
            &mut record,
            AuditAction::KeyRegenerated,
            actor,
            Vec::new(),
            reason,
            now,
        )?;
        tx.commit()?;
        inner.webhooks.wake();
        inner.install(
            &record,
            inner.store_live(store.id)?,
            inner.index.by_id(key_id),
            None,
        )?;
        Ok(CreatedKey {
            key: inner.shown(&record),
            secret,
        })
    }

    /// [`Engine::regenerate_key`] with the overlap of a request body or binding options
    /// (`{overlap_seconds?}`, see [`crate::regeneration_overlap`]).
    pub fn regenerate_key_from_json(
        &self,
        store_id: &str,
        actor: &Actor,
        key_id: &str,
        input: &Value,
    ) -> Result<CreatedKey> {
        let overlap = crate::keys::regeneration_overlap(input)?;
        self.regenerate_key(store_id, actor, key_id, overlap)
    }

    /// Revokes (deletes) a scoped key. Stops working at once; the default key cannot be revoked.
    pub fn revoke_key(&self, store_id: &str, actor: &Actor, key_id: &str) -> Result<()> {
        self.revoke_key_because(store_id, actor, key_id, None)
    }

    /// [`Engine::revoke_key`], its audit event giving `reason`.
    fn revoke_key_because(
        &self,
        store_id: &str,
        actor: &Actor,
        key_id: &str,
        reason: Option<&str>,
    ) -> Result<()> {
        let inner = &*self.inner;
        let mut writer = inner.writer.lock();
        let now = inner.clock.now();
        let tx = storage::write(&inner.db)?;
        let store = load_store(&tx.open_table(STORES)?, store_id)?.store;
        let mut record = load_key(&tx.open_table(KEYS)?, store_id, key_id)?;
        if record.kind == KeyKind::Default {
            return Err(Error::Conflict(
                "the default key cannot be deleted; regenerate or deactivate it instead".into(),
            ));
        }
        if let Some(acting) = inner.acting_key(store.id, actor, Action::Delete)? {
            ensure_can_manage(&acting, &record)?;
        }
        record.revoked_at = Some(now);
        record.active = false;
        record.updated_at = now;
        record.previous = None;
        write_change(
            &tx,
            &mut record,
            AuditAction::KeyRevoked,
            actor,
            Vec::new(),
            reason,
            now,
        )?;
        tx.commit()?;
        // Only scoped keys get here (the default key is refused above).
        if let Some(scoped) = writer.scoped.get_mut(&store.id) {
            *scoped = scoped.saturating_sub(1);
        }
        inner.webhooks.wake();
        inner.index.remove(key_id);
        Ok(())
    }

    /// The store's audit events, newest first, at most `limit` (1 to [`MAX_LOG_READ`]).
    ///
    /// [`MAX_LOG_READ`]: crate::MAX_LOG_READ
    pub fn audit(&self, store_id: &str, limit: usize) -> Result<Vec<AuditEvent>> {
        let mut problems = Problems::new();
        crate::logs::check_read_limit(limit, &mut problems);
        problems.finish()?;
        let tx = storage::read(&self.inner.db)?;
        load_store(&tx.open_table(STORES)?, store_id)?;
        let table = tx.open_table(AUDIT)?;
        let mut events = Vec::new();
        for item in table
            .range((store_id, 0)..=(store_id, u64::MAX))?
            .rev()
            .take(limit)
        {
            let (_, value) = item?;
            events.push(storage::decode(
                value.value(),
                AuditEvent::VERSION,
                "audit event",
            )?);
        }
        Ok(events)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::Release);
        let webhooks = self.inner.webhooks.worker.lock().take();
        if let Some(worker) = webhooks {
            worker.thread().unpark();
            // It stops after its current pass (each attempt is bounded by the webhook timeout).
            let _ = worker.join();
        }
        if let Some(flusher) = self.flusher.take() {
            flusher.thread().unpark();
            // The flusher does a last flush and exits; joining it releases the database file.
            let _ = flusher.join();
        }
    }
}

impl Inner {
    /// Whether the engine is being dropped: background threads finish their round and exit.
    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }
}

impl Inner {
    /// Rebuilds the index from the database (at open).
    fn load(&self) -> Result<()> {
        let tx = storage::read(&self.db)?;
        let mut stores = self.stores.write();
        for item in tx.open_table(STORES)?.iter()? {
            let (_, value) = item?;
            let record: StoreRecord =
                storage::decode(value.value(), StoreRecord::VERSION, "store")?;
            stores.insert(
                record.store.id,
                Arc::new(StoreLive::of(&record.store.settings)),
            );
        }
        let usage_table = tx.open_table(USAGE)?;
        let mut writer = self.writer.lock();
        for item in tx.open_table(KEYS)?.iter()? {
            let (_, value) = item?;
            let record: KeyRecord = storage::decode(value.value(), KeyRecord::VERSION, "key")?;
            if record.revoked_at.is_some() {
                continue;
            }
            if record.kind == KeyKind::Scoped {
                *writer.scoped.entry(record.store_id).or_default() += 1;
            }
            let live = stores
                .get(&record.store_id)
                .cloned()
                .ok_or_else(|| Error::Corrupt(format!("key {} has no store", record.id)))?;
            let last = usage_table
                .get((record.store_id.as_str(), record.id.as_str()))?
                .and_then(|row| storage::decode_usage(row.value()));
            self.install(&record, live, None, last)?;
        }
        Ok(())
    }

    /// Puts a key's current record into the index. `previous` is the entry it replaces, whose
    /// usage carries over; a new key starts with `last` (from the usage table) or none.
    fn install(
        &self,
        record: &KeyRecord,
        store: Arc<StoreLive>,
        previous: Option<KeyEntry>,
        last: Option<StoredUsage>,
    ) -> Result<()> {
        let usage = match previous {
            Some(previous) => previous.usage.clone(),
            None => Arc::new(Usage::new(
                record.store_id,
                record.id.clone(),
                last.map(|last| (last.at, last.ip)),
            )),
        };
        let unreadable = || Error::Corrupt(format!("key {} has an unreadable digest", record.id));
        let entry = KeyEntry::from_record(record, store, usage).ok_or_else(unreadable)?;
        let previous = match record.previous_at(self.clock.now()) {
            Some(old) => {
                let digest = Digest::from_hex(&old.digest).ok_or_else(unreadable)?;
                // The stored use counts only if it was of this replaced secret.
                let used = last
                    .and_then(|last| last.previous)
                    .filter(|&(tag, _)| tag == digest.tag())
                    .map(|(_, secs)| secs);
                Some(PreviousEntry::new(
                    digest,
                    record.id.clone(),
                    Matcher::of(record, old.prefix.as_deref()).ok_or_else(unreadable)?,
                    record.store_id,
                    i64::try_from(old.until.unix_timestamp_nanos()).unwrap_or(i64::MAX),
                    used,
                ))
            }
            None => None,
        };
        // The replaced secret is looked up before its entry goes, so a verify with it during
        // the regeneration finds the key one way or the other.
        self.index.set_previous(&record.id, previous);
        self.index.upsert(entry);
        Ok(())
    }

    /// Forgets idle rate-limit state (keys' budgets that are all back, idle IP entries);
    /// returns how many entries are still tracked.
    fn sweep_rates(&self) -> usize {
        let wall = self.clock.now_nanos();
        self.index.prune_previous(wall);
        let now = self.rates.time(wall);
        self.index.sweep_rates(now) + self.rates.sweep_ips()
    }

    fn store_live(&self, id: StoreId) -> Result<Arc<StoreLive>> {
        self.stores
            .read()
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("store", id.as_str()))
    }

    /// For an actor that is a key: that key's entry, once checked to be usable on this store
    /// and to hold `ApiKeys:{action}`. `None` for an administrator.
    fn acting_key(
        &self,
        store: StoreId,
        actor: &Actor,
        action: Action,
    ) -> Result<Option<KeyEntry>> {
        let Actor::Key(key_id) = actor else {
            return Ok(None);
        };
        let entry = self
            .index
            .by_id(key_id)
            .filter(|entry| {
                // The acting key must be one that verify would accept right now.
                entry.store_id() == store
                    && entry.active
                    && self.clock.now_nanos() < entry.expires_at
                    && entry.store.api_enabled()
            })
            .ok_or_else(|| Error::Forbidden("the acting key is not valid for this store".into()))?;
        let needed = Permission::new(Area::ApiKeys, action);
        if !entry.permissions().contains(needed) {
            return Err(Error::Forbidden(format!("Missing permission {needed}")));
        }
        Ok(Some(entry))
    }

    /// A key as shown now, with its last use (which the index holds for every unrevoked key).
    fn shown(&self, record: &KeyRecord) -> Key {
        let mut key = record.to_key(self.clock.now());
        if let Some(entry) = self.index.by_id(&key.id) {
            key.last_used_at = entry
                .usage
                .last_used_secs()
                .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok());
            key.last_used_ip = *entry.usage.ip.lock();
        }
        if key.previous_expires_at.is_some() {
            key.previous_last_used_at = self
                .index
                .previous_use(&key.id)
                .and_then(|(_, secs)| OffsetDateTime::from_unix_timestamp(secs).ok());
        }
        key
    }

    /// Writes every queued last use in one transaction.
    fn flush_usage(&self) -> Result<()> {
        let mut batch = Vec::new();
        while let Some(usage) = self.usage_queue.pop() {
            // Cleared before reading, so a use racing with this flush queues itself again.
            usage.queued.store(false, Ordering::Release);
            batch.push(usage);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let result = self.write_usage(&batch);
        if result.is_err() {
            for usage in batch {
                if !usage.queued.swap(true, Ordering::AcqRel) {
                    self.usage_queue.push(usage);
                }
            }
        }
        result
    }

    fn write_usage(&self, batch: &[Arc<Usage>]) -> Result<()> {
        let tx = storage::write(&self.db)?;
        {
            let mut table = tx.open_table(USAGE)?;
            for usage in batch {
                // A key revoked since its use has no row to keep.
                let Some(secs) = usage.last_used_secs() else {
                    continue;
                };
                if !self.index.contains(&usage.key_id) {
                    continue;
                }
                let row = storage::encode_usage(&StoredUsage {
                    at: secs,
                    ip: *usage.ip.lock(),
                    previous: self.index.previous_use(&usage.key_id),
                });
                table.insert(
                    (usage.store_id.as_str(), usage.key_id.as_str()),
                    row.as_slice(),
                )?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Transactions a store can be read in.
pub(crate) trait ReadStores {
    fn store(&self, store_id: &str) -> Result<Store>;
}

impl ReadStores for redb::ReadTransaction {
    fn store(&self, store_id: &str) -> Result<Store> {
        Ok(load_store(&self.open_table(STORES)?, store_id)?.store)
    }
}

impl ReadStores for WriteTransaction {
    fn store(&self, store_id: &str) -> Result<Store> {
        Ok(load_store(&self.open_table(STORES)?, store_id)?.store)
    }
}

fn load_store<T>(table: &T, store_id: &str) -> Result<StoreRecord>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let value = table
        .get(store_id)?
        .ok_or_else(|| Error::not_found("store", store_id))?;
    storage::decode(value.value(), StoreRecord::VERSION, "store")
}

/// An unrevoked key of the store, or `NotFound`.
fn load_key<T>(table: &T, store_id: &str, key_id: &str) -> Result<KeyRecord>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let value = table
        .get((store_id, key_id))?
        .ok_or_else(|| Error::not_found("key", key_id))?;
    let record: KeyRecord = storage::decode(value.value(), KeyRecord::VERSION, "key")?;
    if record.revoked_at.is_some() {
        return Err(Error::not_found("key", key_id));
    }
    Ok(record)
}

/// Generates a new key, writes its record and its `KeyCreated` audit event, and returns the
/// record with the secret (to be shown once). An absent expiry takes the store's default TTL.
fn insert_new_key(
    tx: &WriteTransaction,
    store: &Store,
    kind: KeyKind,
    key: NewKey,
    environment: String,
    actor: &Actor,
    now: OffsetDateTime,
) -> Result<(KeyRecord, Secret)> {
    let ttl_days = store.settings.default_key_ttl_days;
    let Generated {
        secret,
        digest,
        consumer_key,
        last4,
    } = format::generate(key.format, &store.settings.key_prefix, store.id)?;
    let expires_at = match key.expires_at {
        Patch::Absent => ttl_days.map(|days| now + time::Duration::days(i64::from(days))),
        Patch::Null => None,
        Patch::Set(at) => Some(at),
    };
    let mut record = KeyRecord {
        v: KeyRecord::VERSION,
        id: new_key_id()?,
        store_id: store.id,
        name: key.name.trim().to_owned(),
        description: key.description,
        kind,
        format: key.format,
        environment,
        permissions: key.permissions,
        active: key.active,
        prefix: (key.format == KeyFormat::Token).then(|| store.settings.key_prefix.clone()),
        consumer_key,
        digest: digest.to_hex(),
        last4,
        rate_limit: key.rate_limit,
        ip_allowlist: key.ip_allowlist,
        expires_at,
        created_at: now,
        updated_at: now,
        meta: key.meta,
        revoked_at: None,
        expiry_notice_for: None,
        previous: None,
    };
    write_change(
        tx,
        &mut record,
        AuditAction::KeyCreated,
        actor,
        Vec::new(),
        None,
        now,
    )?;
    Ok((record, secret))
}

/// Writes a key's record and the audit event describing the change, in the same transaction:
/// every stored change to a key has its event. Creation, regeneration and revocation also
/// write their webhook event (`api_key.*`, the key as listed: never its secret) to the outbox.
fn write_change(
    tx: &WriteTransaction,
    record: &mut KeyRecord,
    action: AuditAction,
    actor: &Actor,
    changes: Vec<String>,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    // A replaced secret whose overlap has ended goes with the next change.
    if record.previous_at(now).is_none() {
        record.previous = None;
    }
    write_key(tx, record)?;
    let event = match action {
        AuditAction::KeyCreated => Some("api_key.created"),
        AuditAction::KeyUpdated => Some("api_key.updated"),
        AuditAction::KeyRegenerated => Some("api_key.regenerated"),
        AuditAction::KeyRevoked => Some("api_key.revoked"),
        AuditAction::StoreUpdated
        | AuditAction::WebhookCreated
        | AuditAction::WebhookUpdated
        | AuditAction::WebhookDeleted
        | AuditAction::WebhookSecretRotated
        | AuditAction::PortalSessionsEnded => None,
    };
    if let Some(event) = event {
        let mut data = serde_json::to_value(record.to_key(now))
            .map_err(|e| Error::Corrupt(format!("cannot encode a key event: {e}")))?;
        if action == AuditAction::KeyUpdated {
            // Which fields an update set (their new values are the key's own fields).
            data["changes"] = serde_json::json!(changes);
        }
        if let Some(reason) = reason {
            // A receiver may alert on a key stopped as leaked rather than routinely changed.
            data["reason"] = serde_json::json!(reason);
        }
        let scope = crate::entities::Scope::new(record.store_id, record.environment.clone());
        crate::entities::write_outbox(tx, &scope, now, vec![(event, data)])?;
    }
    let subject = Subject::Key(record.store_id, &record.id);
    append_audit_because(tx, subject, action, actor, changes, reason, now)
}

/// Writes a key's record, and keeps the records' indexes true to it. Every write of a key
/// record goes through here.
pub(crate) fn write_key(tx: &WriteTransaction, record: &KeyRecord) -> Result<()> {
    let mut keys = tx.open_table(KEYS)?;
    let replaced = keys.insert(
        (record.store_id.as_str(), record.id.as_str()),
        storage::encode(record)?.as_slice(),
    )?;
    let old = replaced.as_ref().map(|bytes| bytes.value());
    crate::expiry::index_key(tx, record, old)
}

/// What an audit event is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Key(StoreId, &'a str),
    Store(StoreId),
    Webhook(StoreId, &'a str),
}

/// Appends an audit event in the caller's write transaction, so it commits with the change.
pub(crate) fn append_audit(
    tx: &WriteTransaction,
    subject: Subject<'_>,
    action: AuditAction,
    actor: &Actor,
    changes: Vec<String>,
    now: OffsetDateTime,
) -> Result<()> {
    append_audit_because(tx, subject, action, actor, changes, None, now)
}

/// [`append_audit`] with the event's reason (see [`AuditEvent::reason`]).
pub(crate) fn append_audit_because(
    tx: &WriteTransaction,
    subject: Subject<'_>,
    action: AuditAction,
    actor: &Actor,
    changes: Vec<String>,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    let seq = storage::next_audit_seq(tx)?;
    let (store_id, key_id, webhook_id) = match subject {
        Subject::Key(store, key) => (store, Some(key.to_owned()), None),
        Subject::Store(store) => (store, None, None),
        Subject::Webhook(store, webhook) => (store, None, Some(webhook.to_owned())),
    };
    let event = AuditEvent {
        v: AuditEvent::VERSION,
        seq,
        at: now,
        store_id,
        key_id,
        webhook_id,
        action,
        actor: actor.clone(),
        changes,
        reason: reason.map(str::to_owned),
    };
    let mut audit = tx.open_table(AUDIT)?;
    audit.insert(
        (store_id.as_str(), seq),
        storage::encode(&event)?.as_slice(),
    )?;
    Ok(())
}

/// The names of the settings that differ, compared as they are stored (so a setting added
/// later is covered without being listed here), in alphabetical order. Names only, as for
/// keys.
fn changed_settings(before: &StoreSettings, after: &StoreSettings) -> Result<Vec<String>> {
    let as_map = |settings: &StoreSettings| match serde_json::to_value(settings) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Error::Corrupt("cannot encode store settings".into())),
    };
    let (before, after) = (as_map(before)?, as_map(after)?);
    let mut changed: Vec<String> = after
        .iter()
        .filter(|(name, value)| before.get(*name) != Some(*value))
        .map(|(name, _)| name.clone())
        .collect();
    // The map's order depends on serde_json's features, which the whole build unifies.
    changed.sort_unstable();
    Ok(changed)
}

/// A key that creates keys can never grant a permission it does not hold itself.
fn ensure_can_grant(acting: &KeyEntry, requested: &PermissionSet) -> Result<()> {
    let missing = requested.difference(&acting.permissions());
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
    Err(Error::Forbidden(format!(
        "cannot grant permissions the acting key does not hold: {}",
        names.join(", ")
    )))
}

/// A key may manage only keys of its own environment that are no more powerful than itself.
fn ensure_can_manage(acting: &KeyEntry, target: &KeyRecord) -> Result<()> {
    if target.environment != acting.environment() {
        return Err(Error::not_found("key", target.id.clone()));
    }
    ensure_can_grant(acting, &target.permissions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_sets_the_digest_memo_over_the_front_ends_default() {
        let memo = |default: bool, v: Option<&str>| {
            let defaults = EngineOptions {
                digest_memo: default,
                cache_bytes: 3 << 20,
                ..EngineOptions::default()
            };
            EngineOptions::from_values(defaults, Ok(RateOptions::default()), v)
                .map(|o| (o.digest_memo, o.cache_bytes))
        };
        for default in [true, false] {
            for (value, on) in [
                (None, default),
                (Some(" "), default),
                (Some("ON"), true),
                (Some("1"), true),
                (Some("off"), false),
                (Some(" False "), false),
                (Some("0"), false),
            ] {
                // The other defaults given are kept too.
                assert_eq!(memo(default, value).ok(), Some((on, 3 << 20)), "{value:?}");
            }
        }
        assert!(EngineOptions::default().digest_memo);
        // Every problem of the environment at once: the rate limit's and the memo's.
        let rates = Err(Error::Validation(vec!["rate problem".into()]));
        match EngineOptions::from_values(EngineOptions::default(), rates, Some("sometimes")) {
            Err(Error::Validation(problems)) => {
                assert_eq!(problems.len(), 2, "{problems:?}");
                assert_eq!(problems[0], "rate problem");
                assert!(
                    problems[1].starts_with(DIGEST_MEMO_ENV) && problems[1].contains("sometimes")
                );
            }
            other => panic!("expected both problems, got {other:?}"),
        }
    }
}
