//! The in-memory index that verify reads instead of the database.
//!
//! Invariant: the index mirrors redb exactly for every unrevoked key. Only the engine writes
//! (under its writer lock, after a durable commit), so it updates the index in commit order;
//! verify never opens a transaction or takes a global lock: it holds the read lock of one of
//! 256 shards while it decides (plus a key's own last-use mutex, once a minute).
//!
//! Entries sit inline in the shards' tables, so with a million keys a lookup costs one cache
//! miss rather than a chain of pointer chases. A change replaces the entry under the shard's
//! write lock, so the very next lookup on any thread sees the new state. Per-store settings
//! live in atomics shared by every key of the store, so a store change is seen by all its keys
//! at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;
use hashbrown::HashTable;
use ipnet::IpNet;
use parking_lot::{Mutex, RwLock};

use crate::ids::StoreId;
use crate::keys::format::Presented;
use crate::keys::{KeyFormat, KeyRecord};
use crate::limits::RateLimit;
use crate::permissions::PermissionSet;
use crate::secret::Digest;
use crate::stores::StoreSettings;
use crate::verify::{Grant, Inline};

/// Number of index shards (a power of two, at most 256: a digest byte picks one). Enough that
/// a writer (one key change at a time) or one shard's growth rarely meets a reader; few
/// enough that every shard's lock stays in cache (32 KiB with padding).
const SHARDS: usize = 256;

/// The hash of a digest: its first 8 bytes. SHA-256 output is uniformly random and only the
/// engine inserts, so this is as good as any keyed hash and costs nothing. The shard is picked
/// by the next byte, which the table's own hash does not use.
#[inline]
fn digest_hash(digest: &[u8; 32]) -> u64 {
    let [a, b, c, d, e, f, g, h, ..] = *digest;
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

#[inline]
fn shard_of(digest: &[u8; 32]) -> usize {
    usize::from(digest[8]) & (SHARDS - 1)
}

/// What verify needs of a store, shared by all of its keys' entries. Atomics, so a store
/// change is seen by the next verify of every key without touching the entries.
#[derive(Debug)]
pub(crate) struct StoreLive {
    api_enabled: AtomicBool,
    /// From this instant (unix nanos) on, requests get `PLAN_REQUIRED`; `i64::MAX`: never.
    plan_blocked_from: AtomicI64,
    /// The store's default rate limit, packed (see [`RateLimit::pack`]).
    default_limit: AtomicU64,
    /// The store's environments, for scope checks on reads without a transaction.
    environments: RwLock<Vec<String>>,
}

impl StoreLive {
    pub(crate) fn of(settings: &StoreSettings) -> Self {
        let live = Self {
            api_enabled: AtomicBool::new(true),
            plan_blocked_from: AtomicI64::new(i64::MAX),
            default_limit: AtomicU64::new(0),
            environments: RwLock::new(Vec::new()),
        };
        live.set(settings);
        live
    }

    /// Publishes new settings (called by the engine after the commit).
    pub(crate) fn set(&self, settings: &StoreSettings) {
        let plan_blocked_from = if !settings.require_pro {
            i64::MAX
        } else if settings.plan.tier != crate::stores::Tier::Pro {
            i64::MIN
        } else {
            settings.plan.expires_at.map_or(i64::MAX, |at| {
                i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX)
            })
        };
        self.api_enabled
            .store(settings.api_enabled, Ordering::Release);
        self.plan_blocked_from
            .store(plan_blocked_from, Ordering::Release);
        self.default_limit.store(
            RateLimit::pack(settings.default_rate_limit.as_ref()),
            Ordering::Release,
        );
        settings
            .environments
            .clone_into(&mut self.environments.write());
    }

    pub(crate) fn has_environment(&self, environment: &str) -> bool {
        self.environments.read().iter().any(|e| e == environment)
    }

    #[inline]
    pub(crate) fn default_limit(&self) -> Option<RateLimit> {
        RateLimit::unpack(self.default_limit.load(Ordering::Acquire))
    }

    #[inline]
    pub(crate) fn api_enabled(&self) -> bool {
        self.api_enabled.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn plan_blocks(&self, now_nanos: i64) -> bool {
        now_nanos >= self.plan_blocked_from.load(Ordering::Acquire)
    }
}

/// When a key was last used, tracked in memory and flushed in the background.
///
/// Shared by every version of a key's entry, so a concurrent update never loses a use.
#[derive(Debug)]
pub(crate) struct Usage {
    pub store_id: StoreId,
    pub key_id: String,
    /// The minute (unix seconds / 60) of the last recorded use; `i64::MIN` if none.
    minute: AtomicI64,
    /// Unix seconds of the last recorded use.
    pub at_secs: AtomicI64,
    pub ip: Mutex<Option<IpAddr>>,
    /// True while this usage waits in the flush queue (so it is queued at most once).
    pub queued: AtomicBool,
}

impl Usage {
    /// Usage of a key last used at `last` (unix seconds and address), if ever.
    pub(crate) fn new(
        store_id: StoreId,
        key_id: String,
        last: Option<(i64, Option<IpAddr>)>,
    ) -> Self {
        let secs = last.map(|(secs, _)| secs);
        Self {
            store_id,
            key_id,
            minute: AtomicI64::new(secs.map_or(i64::MIN, |s| s.div_euclid(60))),
            at_secs: AtomicI64::new(secs.unwrap_or(i64::MIN)),
            ip: Mutex::new(last.and_then(|(_, ip)| ip)),
            queued: AtomicBool::new(false),
        }
    }

    /// Records a use at `now_secs` from `ip`. Accurate to a minute: within a minute only the
    /// first use writes anything (one atomic load for the rest). Returns true when the caller
    /// must queue this usage for flushing.
    #[inline]
    pub(crate) fn touch(&self, now_secs: i64, ip: Option<IpAddr>) -> bool {
        let minute = now_secs.div_euclid(60);
        let seen = self.minute.load(Ordering::Relaxed);
        if seen == minute {
            return false;
        }
        if self
            .minute
            .compare_exchange(seen, minute, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        *self.ip.lock() = ip;
        self.at_secs.store(now_secs, Ordering::Release);
        !self.queued.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn last_used_secs(&self) -> Option<i64> {
        let at = self.at_secs.load(Ordering::Acquire);
        (at != i64::MIN).then_some(at)
    }
}

/// Everything verify needs about one key, stored inline in the index. Replaced on change
/// (never edited in place), except for `used_minute`.
#[derive(Debug)]
pub(crate) struct KeyEntry {
    pub id: String,
    pub store_id: StoreId,
    pub store: Arc<StoreLive>,
    pub format: KeyFormat,
    pub prefix: Option<Inline<8>>,
    pub digest: Digest,
    pub consumer_key: Option<[u8; 16]>,
    pub environment: Box<str>,
    pub permissions: PermissionSet,
    pub active: bool,
    /// Unix nanos at which the key expires; `i64::MAX`: never.
    pub expires_at: i64,
    pub ip_allowlist: Box<[IpNet]>,
    /// The key's own limit; `None`: its store's default, else the server's.
    pub rate_limit: Option<RateLimit>,
    /// The key's number in the key limiter: stable across changes and regeneration, so
    /// neither resets its budget.
    pub rate_id: u64,
    pub usage: Arc<Usage>,
    /// The minute this entry last passed a use on to `usage`: a copy kept beside the rest
    /// of the entry, so a key used again within the minute does not read the separately
    /// allocated usage (a cache miss per verify when keys are many).
    used_minute: AtomicI64,
    /// What a successful decision carries, ready to copy.
    pub grant: Grant,
}

impl Clone for KeyEntry {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            store_id: self.store_id,
            store: self.store.clone(),
            format: self.format,
            prefix: self.prefix,
            digest: self.digest,
            consumer_key: self.consumer_key,
            environment: self.environment.clone(),
            permissions: self.permissions,
            active: self.active,
            expires_at: self.expires_at,
            ip_allowlist: self.ip_allowlist.clone(),
            rate_limit: self.rate_limit,
            rate_id: self.rate_id,
            usage: self.usage.clone(),
            used_minute: AtomicI64::new(self.used_minute.load(Ordering::Relaxed)),
            grant: self.grant,
        }
    }
}

impl KeyEntry {
    pub(crate) fn from_record(
        record: &KeyRecord,
        store: Arc<StoreLive>,
        usage: Arc<Usage>,
        rate_id: u64,
    ) -> Option<Self> {
        let digest = Digest::from_hex(&record.digest)?;
        let consumer_key = match &record.consumer_key {
            Some(ck) => {
                let mut bytes = [0u8; 16];
                let hex = ck.strip_prefix(crate::keys::format::CONSUMER_KEY_PREFIX)?;
                crate::secret::decode_hex(hex, &mut bytes).then_some(())?;
                Some(bytes)
            }
            None => None,
        };
        let grant = Grant {
            key_id: Inline::new(&record.id)?,
            store_id: record.store_id,
            environment: Inline::new(&record.environment)?,
            permissions: record.permissions,
            kind: record.kind,
        };
        Some(Self {
            grant,
            id: record.id.clone(),
            store_id: record.store_id,
            store,
            format: record.format,
            prefix: match &record.prefix {
                Some(prefix) => Some(Inline::new(prefix)?),
                None => None,
            },
            digest,
            consumer_key,
            environment: record.environment.as_str().into(),
            permissions: record.permissions,
            active: record.active,
            expires_at: record.expires_at.map_or(i64::MAX, |at| {
                i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX)
            }),
            ip_allowlist: record.ip_allowlist.clone().into_boxed_slice(),
            rate_limit: record.rate_limit,
            rate_id,
            usage,
            used_minute: AtomicI64::new(i64::MIN),
        })
    }

    /// Records a use at `now_secs` from `ip` (see [`Usage::touch`]); true when the caller
    /// must queue the usage for flushing.
    #[inline]
    pub(crate) fn touch(&self, now_secs: i64, ip: Option<IpAddr>) -> bool {
        let minute = now_secs.div_euclid(60);
        if self.used_minute.load(Ordering::Relaxed) == minute {
            return false;
        }
        self.used_minute.store(minute, Ordering::Relaxed);
        self.usage.touch(now_secs, ip)
    }

    /// True when the allowlist is empty or holds `ip` (IPv4-mapped IPv6 counts as IPv4).
    #[inline]
    pub(crate) fn ip_allowed(&self, ip: Option<IpAddr>) -> bool {
        if self.ip_allowlist.is_empty() {
            return true;
        }
        let Some(ip) = ip else { return false };
        let ip = ip.to_canonical();
        self.ip_allowlist.iter().any(|net| net.contains(&ip))
    }
}

/// One shard of the index: a swiss table holding its entries inline, so a lookup in a cold
/// index costs one cache miss for the entry (the control bytes of a million keys, 1–2 MiB,
/// stay in cache) instead of a chain of pointers.
type Shard = CachePadded<RwLock<HashTable<KeyEntry>>>;

/// Lookup structures for every unrevoked key.
///
/// Readers take a shard's read lock for the length of one decision: a few loads and compares,
/// never a transaction, an allocation or another index lock. Writers are the engine's writes,
/// one at a time, each holding one shard's write lock for one insert or removal.
pub(crate) struct KeyIndex {
    /// Every key by the SHA-256 of its secret (a pair's consumer secret). One map for all
    /// formats, so an unknown key, an unknown consumer key and a known one with a wrong secret
    /// all end in the same miss: nothing in the timing tells them apart (tests/timing.rs).
    by_digest: Box<[Shard]>,
    /// For management paths only (never verify): key id → digest.
    by_id: RwLock<HashMap<String, Digest>>,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex")
            .field("keys", &self.by_id.read().len())
            .finish()
    }
}

impl KeyIndex {
    pub(crate) fn new() -> Self {
        Self {
            by_digest: (0..SHARDS)
                .map(|_| CachePadded::new(RwLock::new(HashTable::new())))
                .collect(),
            by_id: RwLock::new(HashMap::new()),
        }
    }

    /// Runs `f` on the entry stored under `digest`, if any, under its shard's read lock.
    #[inline]
    fn with<R>(&self, digest: &Digest, f: impl FnOnce(Option<&KeyEntry>) -> R) -> R {
        let table = self.by_digest[shard_of(&digest.0)].read();
        f(table.find(digest_hash(&digest.0), |e| e.digest.0 == digest.0))
    }

    /// Finds the key a parsed credential names and runs `f` on it under its shard's read
    /// lock; `miss()` for an unknown key and a wrong secret alike. (Both give the answer
    /// directly rather than through an `Option`: a decision is large, and every extra move of
    /// it on the hot path costs.)
    ///
    /// Every path computes exactly one SHA-256 and one constant-time comparison.
    #[inline]
    pub(crate) fn find<R>(
        &self,
        presented: &Presented<'_>,
        f: impl FnOnce(&KeyEntry) -> R,
        miss: impl FnOnce() -> R,
    ) -> R {
        match *presented {
            Presented::Token {
                prefix,
                store,
                secret,
            } => self.lookup(
                secret,
                |entry| {
                    (entry.format == KeyFormat::Token)
                        & (entry.store_id == store)
                        & entry.prefix.as_ref().is_some_and(|p| p.matches(prefix))
                },
                f,
                miss,
            ),
            Presented::Hex(key) => {
                self.lookup(key, |entry| entry.format == KeyFormat::Hex, f, miss)
            }
            Presented::Pair {
                consumer_key,
                secret,
            } => self.lookup(
                secret,
                |entry| {
                    let same_consumer = entry.consumer_key.is_some_and(|ck| {
                        ck.iter()
                            .zip(consumer_key.iter())
                            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                            == 0
                    });
                    (entry.format == KeyFormat::Pair) & same_consumer
                },
                f,
                miss,
            ),
        }
    }

    /// The lookup every format shares: the SHA-256 of `secret`, the entry under it, and a
    /// constant-time comparison of the whole digest besides the format's own checks.
    #[inline]
    fn lookup<R>(
        &self,
        secret: &str,
        matches: impl Fn(&KeyEntry) -> bool,
        f: impl FnOnce(&KeyEntry) -> R,
        miss: impl FnOnce() -> R,
    ) -> R {
        let digest = Digest::of(secret.as_bytes());
        self.with(&digest, |entry| match entry {
            Some(entry) if entry.digest.ct_eq(&digest) & matches(entry) => f(entry),
            _ => miss(),
        })
    }

    /// Adds or replaces the entry for a key. The new lookup goes in before the old one (if its
    /// secret changed) comes out, so a concurrent verify never misses an unchanged key.
    pub(crate) fn upsert(&self, entry: KeyEntry) {
        let digest = entry.digest;
        let id = entry.id.clone();
        {
            let mut table = self.by_digest[shard_of(&digest.0)].write();
            let hash = digest_hash(&digest.0);
            match table.find_mut(hash, |e| e.digest.0 == digest.0) {
                Some(slot) => *slot = entry,
                None => {
                    table.insert_unique(hash, entry, |e| digest_hash(&e.digest.0));
                }
            }
        }
        let previous = self.by_id.write().insert(id, digest);
        // An update that kept the secret just replaced its lookup, which must stay.
        if let Some(old) = previous
            && old != digest
        {
            self.remove_digest(&old);
        }
    }

    pub(crate) fn remove(&self, key_id: &str) {
        if let Some(old) = self.by_id.write().remove(key_id) {
            self.remove_digest(&old);
        }
    }

    fn remove_digest(&self, digest: &Digest) {
        let mut table = self.by_digest[shard_of(&digest.0)].write();
        if let Ok(found) = table.find_entry(digest_hash(&digest.0), |e| e.digest.0 == digest.0) {
            found.remove();
        }
    }

    /// A copy of the entry of the key `key_id`, for management paths. The id's lock is held
    /// while the shard is read, so a concurrent regeneration is seen before or after, never
    /// half-way (lock order: ids, then a shard; no writer holds a shard while taking ids).
    pub(crate) fn by_id(&self, key_id: &str) -> Option<KeyEntry> {
        let ids = self.by_id.read();
        let digest = ids.get(key_id)?;
        self.with(digest, |entry| entry.cloned())
    }

    /// True when `key_id` is an unrevoked key.
    pub(crate) fn contains(&self, key_id: &str) -> bool {
        self.by_id.read().contains_key(key_id)
    }
}
