//! The in-memory index that verify reads instead of the database.
//!
//! Invariant: the index mirrors redb exactly for every unrevoked key. Only the engine writes
//! (under its writer lock, after a durable commit), so it updates the index in commit order;
//! verify never opens a transaction or takes a global lock: it holds the lock of one of 256
//! shards while it decides (plus a key's own last-use mutex, once a minute).
//!
//! A key's own rate-limit state is held in its entry, under the same shard lock (SPEC §5's
//! lock striping): a verify finds the key and charges its budget with one lookup and one lock,
//! and the budget follows the key through updates and regeneration.
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
use ipnet::IpNet;
use parking_lot::{Mutex, RwLock};

use crate::ids::StoreId;
use crate::keys::format::Presented;
use crate::keys::{KeyFormat, KeyRecord};
use crate::limiter::HeldState;
use crate::limits::RateLimit;
use crate::permissions::PermissionSet;
use crate::secret::Digest;
use crate::stores::StoreSettings;
use crate::verify::{Grant, Inline, Serial};

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

/// How a credential must look, besides its secret, to name a key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Matcher {
    /// A token: the store's prefix at the time of issue (and the store id, in the grant).
    Token(Option<Inline<8>>),
    Hex,
    /// A consumer key/secret pair: the consumer key's 16 bytes.
    Pair(Option<[u8; 16]>),
}

impl Matcher {
    /// The match of `record`'s format, for a token issued under `prefix`; `None` when the
    /// record's prefix or consumer key is unreadable.
    pub(crate) fn of(record: &KeyRecord, prefix: Option<&str>) -> Option<Self> {
        Some(match record.format {
            KeyFormat::Token => Matcher::Token(match prefix {
                Some(prefix) => Some(Inline::new(prefix)?),
                None => None,
            }),
            KeyFormat::Hex => Matcher::Hex,
            KeyFormat::Pair => Matcher::Pair(match &record.consumer_key {
                Some(ck) => {
                    let mut bytes = [0u8; 16];
                    let hex = ck.strip_prefix(crate::keys::format::CONSUMER_KEY_PREFIX)?;
                    crate::secret::decode_hex(hex, &mut bytes).then_some(())?;
                    Some(bytes)
                }
                None => None,
            }),
        })
    }
}

/// A regenerated key's replaced secret, accepted as the key until `until` (unix nanos): the
/// overlap the regeneration asked for, so clients can switch over without a failed request.
#[derive(Debug)]
pub(crate) struct PreviousEntry {
    pub digest: Digest,
    pub key_id: String,
    pub matcher: Matcher,
    pub store: StoreId,
    pub until: i64,
    /// When a request last presented it (unix seconds; `i64::MIN`: not yet): whether clients
    /// still use the old secret. Written to the usage table with the key's own last use, and
    /// read back at start.
    pub last_used: AtomicI64,
}

impl PreviousEntry {
    pub(crate) fn new(
        digest: Digest,
        key_id: String,
        matcher: Matcher,
        store: StoreId,
        until: i64,
        last_used: Option<i64>,
    ) -> Self {
        Self {
            digest,
            key_id,
            matcher,
            store,
            until,
            last_used: AtomicI64::new(last_used.unwrap_or(i64::MIN)),
        }
    }
}

/// Everything verify needs about one key, stored inline in the index. Replaced on change
/// (never edited in place), except for `rate` and `used_minute`, which the replacement
/// inherits.
///
/// Laid out by hand in four cache lines, two aligned pairs, in the order a verify reads them
/// (the offsets are checked below). The first pair holds everything the checks read: the
/// digest, the format's match and the slot's occupancy in the first line (so a lookup's first
/// load answers "is this the key?"), the expiry, store, limit, allowlist and the grant's store
/// and permissions in the second. The second pair holds what is read last: the strings the
/// decision copies out and the budget it charges. A cold verify thus waits on the first
/// pair and finds the second already on its way. Nothing is held twice, so a million keys
/// take 256 MB of entries.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub(crate) struct KeyEntry {
    pub digest: Digest,
    pub matcher: Matcher,
    /// The minute (unix seconds / 60, saturated) this entry last passed a use on to `usage`:
    /// kept beside the rest of the entry, so a key used again within the minute does not
    /// read the separately allocated usage (a cache miss per verify when keys are many).
    used_minute: i32,
    /// Also where an empty slot is told apart: `Option<KeyEntry>` keeps its `None` in the
    /// field with the most spare values, the first of equals (this `bool` and the grant's
    /// `KeyKind`; [`HeldState`]'s tag is one byte for this), so occupancy is read from the
    /// digest's line. Only speed depends on it (seen in the disassembly: `cmpb $0x2, 0x3c`).
    pub active: bool,
    /// Unix nanos at which the key expires; `i64::MAX`: never.
    pub expires_at: i64,
    pub store: Arc<StoreLive>,
    /// The key's own limit, packed (see [`RateLimit::pack`]); unset: its store's default,
    /// else the server's.
    own_limit: u64,
    pub ip_allowlist: Box<[IpNet]>,
    pub usage: Arc<Usage>,
    /// What a successful decision carries, ready to copy: also the key's id, store,
    /// environment and permissions (the store and permissions first: the checks read them).
    pub grant: Grant,
    /// The budget of the key's own limit (its limit, else its store's or the server's).
    pub rate: HeldState,
}

// The layout described above (64-bit targets).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<KeyEntry>() == 256);
    assert!(offset_of!(KeyEntry, active) < 64 && offset_of!(KeyEntry, matcher) < 64);
    assert!(offset_of!(KeyEntry, grant) + offset_of!(Grant, permissions) + 8 <= 128);
    assert!(offset_of!(KeyEntry, rate) >= 128);
    // The serial sits in what was the grant's padding.
    assert!(size_of::<crate::verify::Grant>() == 80);
};

impl KeyEntry {
    pub(crate) fn from_record(
        record: &KeyRecord,
        store: Arc<StoreLive>,
        usage: Arc<Usage>,
    ) -> Option<Self> {
        let digest = Digest::from_hex(&record.digest)?;
        let matcher = Matcher::of(record, record.prefix.as_deref())?;
        let grant = Grant {
            key_id: Inline::new(&record.id)?,
            store_id: record.store_id,
            environment: Inline::new(&record.environment)?,
            permissions: record.permissions,
            kind: record.kind,
            serial: Serial::next(),
        };
        Some(Self {
            digest,
            expires_at: record.expires_at.map_or(i64::MAX, |at| {
                i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX)
            }),
            store,
            own_limit: RateLimit::pack(record.rate_limit.as_ref()),
            used_minute: i32::MIN,
            active: record.active,
            rate: HeldState::Fresh,
            grant,
            matcher,
            ip_allowlist: record.ip_allowlist.clone().into_boxed_slice(),
            usage,
        })
    }

    /// The key's own limit; `None`: its store's default, else the server's.
    #[inline]
    pub(crate) fn rate_limit(&self) -> Option<RateLimit> {
        RateLimit::unpack(self.own_limit)
    }

    pub(crate) fn id(&self) -> &str {
        self.grant.key_id.as_str()
    }

    pub(crate) fn store_id(&self) -> StoreId {
        self.grant.store_id
    }

    pub(crate) fn environment(&self) -> &str {
        self.grant.environment.as_str()
    }

    #[inline]
    pub(crate) fn permissions(&self) -> PermissionSet {
        self.grant.permissions
    }

    /// Takes over what the entry it replaces kept in memory only: the key's budget and the
    /// minute of its last use.
    fn inherit(&mut self, old: &KeyEntry) {
        self.rate = old.rate;
        self.used_minute = old.used_minute;
    }

    /// Records a use at `now_secs` from `ip` (see [`Usage::touch`]); true when the caller
    /// must queue the usage for flushing.
    #[inline]
    pub(crate) fn touch(&mut self, now_secs: i64, ip: Option<IpAddr>) -> bool {
        let minute = i32::try_from(now_secs.div_euclid(60)).unwrap_or(i32::MAX);
        if self.used_minute == minute {
            return false;
        }
        self.used_minute = minute;
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

/// One shard of the index: its entries inline in an open-addressing table (see [`Slots`]). A
/// mutex rather than a read-write lock: a verify charges the key's budget in its entry, and a
/// mutex costs a reader no more.
type Shard = CachePadded<Mutex<Slots<KeyEntry>>>;

/// Lookup structures for every unrevoked key.
///
/// A verify holds one shard's lock for the length of one decision: a few loads, compares and
/// the budget's arithmetic, never a transaction, an allocation or another index lock (the IP
/// limiter's shard may be locked inside it). Writers are the engine's writes, one at a time,
/// each holding at most two shards (old and new secret of a regeneration) for one change.
pub(crate) struct KeyIndex {
    /// Every key by the SHA-256 of its secret (a pair's consumer secret). One map for all
    /// formats, so an unknown key, an unknown consumer key and a known one with a wrong secret
    /// all end in the same miss: nothing in the timing tells them apart (tests/timing.rs).
    by_digest: Box<[Shard]>,
    /// For management paths only (never verify): key id → digest.
    by_id: RwLock<HashMap<String, Digest>>,
    /// Replaced secrets in their overlap, by digest. Read only when the main lookup misses
    /// and one exists, so a verify of a current secret never touches it. Lock order: this,
    /// then ids, then a shard; no writer holds ids or a shard while taking it.
    previous: RwLock<HashMap<[u8; 32], PreviousEntry>>,
    any_previous: AtomicBool,
    /// Digests come from the per-thread memo (`EngineOptions::digest_memo`).
    memo: bool,
}

impl std::fmt::Debug for KeyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyIndex")
            .field("keys", &self.by_id.read().len())
            .finish()
    }
}

impl KeyIndex {
    pub(crate) fn new(memo: bool) -> Self {
        Self {
            memo,
            by_digest: (0..SHARDS)
                .map(|_| CachePadded::new(Mutex::new(Slots::default())))
                .collect(),
            by_id: RwLock::new(HashMap::new()),
            previous: RwLock::new(HashMap::new()),
            any_previous: AtomicBool::new(false),
        }
    }

    /// Runs `f` on the entry stored under `digest`, if any, under its shard's lock.
    #[inline]
    fn with<R>(&self, digest: &Digest, f: impl FnOnce(Option<&mut KeyEntry>) -> R) -> R {
        let mut table = self.by_digest[shard_of(&digest.0)].lock();
        f(table.find_mut(&digest.0))
    }

    /// Finds the key a parsed credential names and runs `f` on it under its shard's lock;
    /// `miss()` for an unknown key and a wrong secret alike. (Both give the answer directly
    /// rather than through an `Option`: a decision is large, and every extra move of it on the
    /// hot path costs.)
    ///
    /// Every path computes exactly one SHA-256 and one constant-time comparison. A replaced
    /// secret still in its overlap at `now` (unix nanos) finds its key's current entry.
    #[inline]
    pub(crate) fn find<R>(
        &self,
        presented: &Presented<'_>,
        now: i64,
        f: impl FnOnce(&mut KeyEntry) -> R,
        miss: impl FnOnce() -> R,
    ) -> R {
        match *presented {
            Presented::Token {
                prefix,
                store,
                secret,
            } => self.lookup(
                secret,
                now,
                |matcher, key_store| {
                    matches!(matcher, Matcher::Token(Some(p)) if p.matches(prefix))
                        & (key_store == store)
                },
                f,
                miss,
            ),
            Presented::Hex(key) => self.lookup(
                key,
                now,
                |matcher, _| matches!(matcher, Matcher::Hex),
                f,
                miss,
            ),
            Presented::Pair {
                consumer_key,
                secret,
            } => self.lookup(
                secret,
                now,
                |matcher, _| match matcher {
                    Matcher::Pair(Some(ck)) => {
                        ck.iter()
                            .zip(consumer_key.iter())
                            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                            == 0
                    }
                    _ => false,
                },
                f,
                miss,
            ),
        }
    }

    /// The key whose consumer secret is `secret` (`cs_…`), whatever its consumer key: for
    /// scanners, which find a leaked secret without it (the consumer key is public).
    pub(crate) fn find_pair_secret<R>(
        &self,
        secret: &str,
        now: i64,
        f: impl FnOnce(&mut KeyEntry) -> R,
        miss: impl FnOnce() -> R,
    ) -> R {
        self.lookup(
            secret,
            now,
            |matcher, _| matches!(matcher, Matcher::Pair(_)),
            f,
            miss,
        )
    }

    /// The lookup every format shares: the SHA-256 of `secret`, the entry under it, and a
    /// constant-time comparison of the whole digest besides the format's own checks.
    #[inline]
    fn lookup<R, F: FnOnce(&mut KeyEntry) -> R>(
        &self,
        secret: &str,
        now: i64,
        matches: impl Fn(Matcher, StoreId) -> bool,
        f: F,
        miss: impl FnOnce() -> R,
    ) -> R {
        let digest = if self.memo {
            crate::memo::digest(secret.as_bytes())
        } else {
            Digest::of(secret.as_bytes())
        };
        let hit = |entry: &KeyEntry| {
            entry.digest.ct_eq(&digest) & matches(entry.matcher, entry.grant.store_id)
        };
        // While no key is in an overlap (the usual state), a miss is a miss: the answer is
        // returned as built. Carrying `f` back out of the lock for the replaced-secret lookup
        // costs the hit path 1–2 ns (`verify/hot`), so only an overlap pays it.
        if !self.any_previous.load(Ordering::Acquire) {
            return self.with(&digest, |entry| match entry {
                Some(entry) if hit(entry) => f(entry),
                _ => miss(),
            });
        }
        let found = self.with(&digest, |entry| match entry {
            Some(entry) if hit(entry) => Ok(f(entry)),
            _ => Err(f),
        });
        match found {
            Ok(decided) => decided,
            Err(f) => self.lookup_previous(&digest, now, matches, f, miss),
        }
    }

    /// A miss of the main lookup while some key is in an overlap: the key whose replaced
    /// secret has `digest`, while its overlap lasts. (The map
    /// compares digests, not secrets, so its comparison's timing tells nothing useful.)
    #[cold]
    #[inline(never)]
    fn lookup_previous<R>(
        &self,
        digest: &Digest,
        now: i64,
        matches: impl Fn(Matcher, StoreId) -> bool,
        f: impl FnOnce(&mut KeyEntry) -> R,
        miss: impl FnOnce() -> R,
    ) -> R {
        let previous = self.previous.read();
        let Some(old) = previous
            .get(&digest.0)
            .filter(|old| now < old.until && matches(old.matcher, old.store))
        else {
            return miss();
        };
        old.last_used
            .fetch_max(now.div_euclid(1_000_000_000), Ordering::Relaxed);
        let ids = self.by_id.read();
        match ids.get(&old.key_id) {
            Some(current) => self.with(current, |entry| match entry {
                Some(entry) => f(entry),
                None => miss(),
            }),
            None => miss(),
        }
    }

    /// Sets (or, with `None`, clears) the replaced secret a key accepts during an overlap.
    /// At most one per key: a new one ends the earlier one's overlap.
    pub(crate) fn set_previous(&self, key_id: &str, entry: Option<PreviousEntry>) {
        if entry.is_none() && !self.any_previous.load(Ordering::Acquire) {
            return;
        }
        let mut previous = self.previous.write();
        let mut kept_use = i64::MIN;
        previous.retain(|digest, old| {
            let other = old.key_id != key_id;
            // Reinstalling the same replaced secret (any change to the key) keeps its last use.
            if !other && entry.as_ref().is_some_and(|new| new.digest.0 == *digest) {
                kept_use = old.last_used.load(Ordering::Relaxed);
            }
            other
        });
        if let Some(entry) = entry {
            entry.last_used.fetch_max(kept_use, Ordering::Relaxed);
            previous.insert(entry.digest.0, entry);
        }
        self.any_previous
            .store(!previous.is_empty(), Ordering::Release);
    }

    /// When a request last presented the replaced secret `key_id` accepts (unix seconds),
    /// with the first 8 bytes of that secret's digest (what the usage table keeps it under).
    pub(crate) fn previous_use(&self, key_id: &str) -> Option<([u8; 8], i64)> {
        if !self.any_previous.load(Ordering::Acquire) {
            return None;
        }
        let previous = self.previous.read();
        let old = previous.values().find(|old| old.key_id == key_id)?;
        let secs = old.last_used.load(Ordering::Relaxed);
        (secs != i64::MIN).then(|| (old.digest.tag(), secs))
    }

    /// Drops the replaced secrets whose overlap has ended by `now` (unix nanos).
    pub(crate) fn prune_previous(&self, now: i64) {
        if !self.any_previous.load(Ordering::Acquire) {
            return;
        }
        let mut previous = self.previous.write();
        previous.retain(|_, old| now < old.until);
        self.any_previous
            .store(!previous.is_empty(), Ordering::Release);
    }

    /// Adds or replaces the entry for a key; a replacement inherits the budget and last use
    /// of the entry it replaces. When the secret changed, the old lookup goes out and the new
    /// one comes in under both shards' locks: a concurrent verify sees the key before or after
    /// the change, never both or neither, and no charge made meanwhile is lost.
    ///
    /// Lock order: ids, then shards in ascending order (so two writers cannot deadlock, and a
    /// verify holds only one shard).
    pub(crate) fn upsert(&self, mut entry: KeyEntry) {
        let digest = entry.digest;
        let mut ids = self.by_id.write();
        let previous = ids.insert(entry.id().to_owned(), digest);
        let new = shard_of(&digest.0);
        match previous {
            Some(old) if old != digest && shard_of(&old.0) != new => {
                let old_shard = shard_of(&old.0);
                let (mut low, mut high) = (
                    self.by_digest[old_shard.min(new)].lock(),
                    self.by_digest[old_shard.max(new)].lock(),
                );
                let (old_table, new_table) = if old_shard < new {
                    (&mut *low, &mut *high)
                } else {
                    (&mut *high, &mut *low)
                };
                if let Some(replaced) = old_table.remove(&old.0) {
                    entry.inherit(&replaced);
                }
                new_table.insert_unique(entry);
            }
            Some(old) => {
                let mut table = self.by_digest[new].lock();
                if let Some(replaced) = table.remove(&old.0) {
                    entry.inherit(&replaced);
                }
                table.insert_unique(entry);
            }
            None => self.by_digest[new].lock().insert_unique(entry),
        }
    }

    /// Forgets a key, with any replaced secret it still accepted.
    pub(crate) fn remove(&self, key_id: &str) {
        {
            let mut ids = self.by_id.write();
            if let Some(old) = ids.remove(key_id) {
                self.by_digest[shard_of(&old.0)].lock().remove(&old.0);
            }
        }
        self.set_previous(key_id, None);
    }

    /// Forgets the budgets that are all back at limiter time `now` (so forgetting them changes
    /// nothing); returns how many keys still hold one. Locks one shard at a time.
    pub(crate) fn sweep_rates(&self, now: i64) -> usize {
        self.count_rates(|rate| rate.sweep(now))
    }

    /// How many keys hold a budget: charged since a sweep last found it all back.
    pub(crate) fn tracked_rates(&self) -> usize {
        self.count_rates(|rate| *rate != HeldState::Fresh)
    }

    fn count_rates(&self, mut counts: impl FnMut(&mut HeldState) -> bool) -> usize {
        self.by_digest
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .iter_mut()
                    .map(|entry| usize::from(counts(&mut entry.rate)))
                    .sum::<usize>()
            })
            .sum()
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

/// A shard's entries, each at the slot its digest's hash names or the first free slot after
/// it (linear probing), with no control bytes. A lookup in a cold index starts with the
/// entry's own lines (the digest in the first, the occupancy tag beside it), all at addresses
/// known from the hash, where a swiss table reads its control bytes first and only then the
/// entry: two dependent cache misses once a million keys' entries have pushed the control
/// bytes out of cache (`verify/1m_keys`, medians of nine interleaved A/B rounds: 566 ns
/// before, 456 ns after). At most three quarters full, so a lookup reads one or two slots,
/// adjacent in memory.
///
/// Invariant: an entry sits at its home slot or after it with no free slot in between (a run
/// of occupied slots, wrapping at the end); removal shifts the rest of the run back instead
/// of leaving tombstones, which keeps it.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    slots: Box<[Option<T>]>,
    len: usize,
}

/// What [`Slots`] places by: a SHA-256 digest (uniformly random, so its first bytes are the
/// hash).
pub(crate) trait Placed {
    fn digest(&self) -> &[u8; 32];
}

impl Placed for KeyEntry {
    #[inline]
    fn digest(&self) -> &[u8; 32] {
        &self.digest.0
    }
}

// A slot is an entry: the empty case lives in a niche of the entry.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Option<KeyEntry>>() == 256);

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            slots: Box::new([]),
            len: 0,
        }
    }
}

impl<T: Placed> Slots<T> {
    #[inline]
    fn home(&self, digest: &[u8; 32]) -> usize {
        // Truncation intended: the low bits pick the slot.
        #[allow(clippy::cast_possible_truncation)]
        let hash = digest_hash(digest) as usize;
        hash & (self.slots.len() - 1)
    }

    /// The slot holding the entry placed by `digest`.
    #[inline]
    fn position(&self, digest: &[u8; 32]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(digest);
        // Ends: the table is never full, so a free slot comes.
        loop {
            match &self.slots[i] {
                None => return None,
                Some(entry) if entry.digest() == digest => return Some(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    #[inline]
    pub(crate) fn find_mut(&mut self, digest: &[u8; 32]) -> Option<&mut T> {
        let i = self.position(digest)?;
        self.slots[i].as_mut()
    }

    /// Adds an entry whose digest is not in the table.
    pub(crate) fn insert_unique(&mut self, entry: T) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(entry.digest());
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        self.slots[i] = Some(entry);
        self.len += 1;
    }

    pub(crate) fn remove(&mut self, digest: &[u8; 32]) -> Option<T> {
        let mut hole = self.position(digest)?;
        let removed = self.slots[hole].take();
        self.len -= 1;
        // Backward shift: each later entry of the run whose home is not cyclically in
        // (hole, its slot] moves into the hole, so none is left behind a free slot.
        let mask = self.slots.len() - 1;
        let mut next = (hole + 1) & mask;
        while let Some(entry) = &self.slots[next] {
            let home = self.home(entry.digest());
            let stays = if hole <= next {
                hole < home && home <= next
            } else {
                hole < home || home <= next
            };
            if !stays {
                self.slots[hole] = self.slots[next].take();
                hole = next;
            }
            next = (next + 1) & mask;
        }
        removed
    }

    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(
            &mut self.slots,
            std::iter::repeat_with(|| None).take(capacity).collect(),
        );
        self.len = 0;
        for entry in old.into_vec().into_iter().flatten() {
            self.insert_unique(entry);
        }
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().flatten()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::{Placed, Slots};

    #[derive(Debug, PartialEq)]
    struct Item([u8; 32], u32);

    impl Placed for Item {
        fn digest(&self) -> &[u8; 32] {
            &self.0
        }
    }

    /// A digest whose hash is `home` (few distinct homes, so runs collide, wrap and shift)
    /// and whose identity is `id`.
    fn digest(home: u8, id: u16) -> [u8; 32] {
        let mut d = [0u8; 32];
        d[0] = home;
        d[8..10].copy_from_slice(&id.to_le_bytes());
        d
    }

    proptest! {
        /// Any sequence of inserts and removals leaves exactly the model's entries findable,
        /// with their values, including across growth and runs that wrap past the end.
        #[test]
        fn slots_agree_with_a_map(ops in proptest::collection::vec((any::<bool>(), 0u8..40, 0u16..64), 1..400)) {
            let mut slots = Slots::default();
            let mut model = HashMap::new();
            for (n, (insert, home, id)) in ops.into_iter().enumerate() {
                let d = digest(home, id);
                if insert && !model.contains_key(&d) {
                    let value = u32::try_from(n).unwrap();
                    slots.insert_unique(Item(d, value));
                    model.insert(d, value);
                } else {
                    prop_assert_eq!(slots.remove(&d).map(|item| item.1), model.remove(&d));
                }
                prop_assert_eq!(slots.len(), model.len());
            }
            for (d, value) in &model {
                prop_assert_eq!(slots.find_mut(d).map(|item| item.1), Some(*value));
            }
            prop_assert_eq!(slots.iter_mut().count(), model.len());
            for home in 0..40 {
                for id in 0..64 {
                    let d = digest(home, id);
                    prop_assert_eq!(slots.find_mut(&d).is_some(), model.contains_key(&d));
                }
            }
        }
    }
}
