//! Notices of keys about to expire: an `api_key.expiring` webhook event for each live key
//! whose `expires_at` falls within [`EXPIRY_NOTICE`], once per expiry, so an integrator hears
//! about it before requests start failing with `EXPIRED` (seeds 002 and 004: keys expire
//! after a year by default, and should be rotated).

use std::sync::atomic::Ordering;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use crate::clock::Clock;
use crate::engine::{Engine, Inner, write_key};
use crate::entities::{Scope, write_outbox};
use crate::error::{Error, Result};
use crate::keys::KeyRecord;
use crate::storage::{self, KEYS, unix_nanos};

/// (expiry in unix nanos, store id, key id) → nothing: the keys owed a notice, in expiry
/// order, so a scan reads the keys due within [`EXPIRY_NOTICE`] and no others. Invariant: a
/// key is here, at its `expires_at`, exactly when [`Expiry::owed`] says so of its record,
/// except that a scan drops the entries of keys that expired unannounced (their notice can
/// no longer be sent; a new expiry indexes them again). [`index_key`] keeps it so on every
/// write of a key record.
pub(crate) const KEY_EXPIRY: TableDefinition<(i64, &str, &str), ()> =
    TableDefinition::new("key_expiry");

/// How long before its expiry a key's `api_key.expiring` event is written.
pub const EXPIRY_NOTICE: Duration = Duration::days(7);
/// The delivery passes look for expiring keys at most this often. A scan reads only the
/// index's due range, but each opens a read transaction: once a minute is timely enough for
/// a notice a week ahead.
const SCAN_EVERY_SECS: i64 = 60;

/// What the index reads of a key record; the rest of its JSON is skipped, not decoded (a full
/// record costs its permissions, allowlist and strings to build).
#[derive(Deserialize)]
struct Expiry {
    v: u32,
    active: bool,
    #[serde(with = "time::serde::rfc3339::option", default)]
    expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    revoked_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    expiry_notice_for: Option<OffsetDateTime>,
}

impl Expiry {
    fn read(bytes: &[u8]) -> Result<Self> {
        let view: Expiry = serde_json::from_slice(bytes)
            .map_err(|e| Error::Corrupt(format!("key record: {e}")))?;
        if view.v > KeyRecord::VERSION {
            return Err(Error::Corrupt(format!(
                "key record version {} is newer than this release reads",
                view.v
            )));
        }
        Ok(view)
    }

    /// The expiry this key is owed a notice for, whenever that falls due: active, not
    /// revoked, and not yet announced for its expiry.
    fn owed(&self) -> Option<OffsetDateTime> {
        let owed =
            self.revoked_at.is_none() && self.active && self.expiry_notice_for != self.expires_at;
        self.expires_at.filter(|_| owed)
    }

    /// Whether this key's notice is due: owed, for an expiry in `(now, horizon]`.
    fn due(&self, now: OffsetDateTime, horizon: OffsetDateTime) -> bool {
        self.owed().is_some_and(|at| at > now && at <= horizon)
    }

    fn of(record: &KeyRecord) -> Self {
        Expiry {
            v: record.v,
            active: record.active,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            expiry_notice_for: record.expiry_notice_for,
        }
    }
}

/// Keeps [`KEY_EXPIRY`] true to a key record just written over `old` (the bytes it replaced,
/// if any), in the same transaction.
pub(crate) fn index_key(
    tx: &WriteTransaction,
    record: &KeyRecord,
    old: Option<&[u8]>,
) -> Result<()> {
    let before = old
        .map(Expiry::read)
        .transpose()?
        .and_then(|view| view.owed());
    let after = Expiry::of(record).owed();
    if before == after {
        return Ok(());
    }
    let (store, id) = (record.store_id.as_str(), record.id.as_str());
    let mut index = tx.open_table(KEY_EXPIRY)?;
    if let Some(at) = before {
        index.remove((unix_nanos(at), store, id))?;
    }
    if let Some(at) = after {
        index.insert((unix_nanos(at), store, id), ())?;
    }
    Ok(())
}

/// Indexes every stored key owed a notice (a format-version migration: databases before
/// format 4 had no index, and scans read every key).
pub(crate) fn rebuild_index(tx: &WriteTransaction) -> Result<()> {
    let keys = tx.open_table(KEYS)?;
    let mut index = tx.open_table(KEY_EXPIRY)?;
    for row in keys.iter()? {
        let (key, bytes) = row?;
        if let Some(at) = Expiry::read(bytes.value())?.owed() {
            let (store, id) = key.value();
            index.insert((unix_nanos(at), store, id), ())?;
        }
    }
    Ok(())
}

impl Engine {
    /// Writes an `api_key.expiring` event for every active key that expires within
    /// [`EXPIRY_NOTICE`] and has had no notice for that expiry yet; returns how many. Webhook
    /// delivery passes run it by themselves, at most once a minute.
    pub fn notify_expiring_keys(&self) -> Result<usize> {
        self.inner().notify_expiring_keys()
    }
}

impl Inner {
    /// [`Engine::notify_expiring_keys`] when a minute has passed since the last scan.
    pub(crate) fn notify_expiring_keys_when_due(&self) -> Result<usize> {
        let now = self.clock.now_secs();
        let last = &self.webhooks.expiry_scan;
        let previous = last.load(Ordering::Relaxed);
        if now.saturating_sub(previous) < SCAN_EVERY_SECS
            || last
                .compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(0);
        }
        self.notify_expiring_keys()
    }

    pub(crate) fn notify_expiring_keys(&self) -> Result<usize> {
        let now = self.clock.now();
        let horizon = now + EXPIRY_NOTICE;
        // Most scans find nothing: read first, and write only when the index has entries up
        // to the horizon. Those at or before `now` are keys that expired unannounced (the
        // engine was down, or the expiry was nearer than a scan): nothing is owed any more,
        // and their entries go.
        let found: Vec<(i64, String, String)> = {
            let tx = storage::read(&self.db)?;
            let index = tx.open_table(KEY_EXPIRY)?;
            let mut found = Vec::new();
            for row in index.range(..(unix_nanos(horizon).saturating_add(1), "", ""))? {
                let (key, _) = row?;
                let (at, store, id) = key.value();
                found.push((at, store.to_owned(), id.to_owned()));
            }
            found
        };
        if found.is_empty() {
            return Ok(0);
        }
        let _writer = self.writer.lock();
        let tx = storage::write(&self.db)?;
        // In expiry order: the expired entries come first.
        let (expired, due) =
            found.split_at(found.partition_point(|(at, ..)| *at <= unix_nanos(now)));
        {
            let mut index = tx.open_table(KEY_EXPIRY)?;
            for (at, store, id) in expired {
                index.remove((*at, store.as_str(), id.as_str()))?;
            }
        }
        let mut written = 0;
        for (_, store, id) in due {
            // Read again under the writer: the key may have changed since the scan.
            let record = tx
                .open_table(KEYS)?
                .get((store.as_str(), id.as_str()))?
                .map(|bytes| storage::decode::<KeyRecord>(bytes.value(), KeyRecord::VERSION, "key"))
                .transpose()?;
            let Some(mut record) = record.filter(|r| Expiry::of(r).due(now, horizon)) else {
                continue;
            };
            // No longer owed: `write_key` takes it out of the index.
            record.expiry_notice_for = record.expires_at;
            write_key(&tx, &record)?;
            let data = serde_json::to_value(record.to_key(now))
                .map_err(|e| Error::Corrupt(format!("cannot encode a key event: {e}")))?;
            let scope = Scope::new(record.store_id, record.environment.clone());
            write_outbox(&tx, &scope, now, vec![("api_key.expiring", data)])?;
            written += 1;
        }
        tx.commit()?;
        if written > 0 {
            self.webhooks.wake();
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use std::collections::BTreeSet;

    use super::*;
    use crate::clock::FakeClock;
    use crate::{Actor, KeyPatch, NewKey, NewStore};

    type Entries = BTreeSet<(i64, String, String)>;

    fn index(engine: &Engine) -> Entries {
        let tx = storage::read(&engine.inner().db).expect("read");
        let table = tx.open_table(KEY_EXPIRY).expect("index");
        let rows = table.iter().expect("iter");
        rows.map(|row| {
            let (key, _) = row.expect("row");
            let (at, store, id) = key.value();
            (at, store.to_owned(), id.to_owned())
        })
        .collect()
    }

    /// What the index should hold: every key owed a notice, from the records themselves.
    fn owed(engine: &Engine) -> Entries {
        let tx = storage::read(&engine.inner().db).expect("read");
        let table = tx.open_table(KEYS).expect("keys");
        let rows = table.iter().expect("iter");
        rows.filter_map(|row| {
            let (key, bytes) = row.expect("row");
            let at = Expiry::read(bytes.value()).expect("view").owed()?;
            let (store, id) = key.value();
            Some((unix_nanos(at), store.to_owned(), id.to_owned()))
        })
        .collect()
    }

    fn fixture() -> (Engine, FakeClock, String) {
        let (engine, clock) = Engine::memory_on_fake_clock();
        let (store, _) = engine
            .create_store(&Actor::admin("t"), NewStore::named("S"))
            .expect("store");
        (engine, clock, store.id.as_str().to_owned())
    }

    /// A key of that name expiring at `expires_at` (RFC 3339, or null for never).
    fn key(engine: &Engine, store: &str, name: &str, expires_at: serde_json::Value) -> String {
        try_key(engine, store, name, expires_at).expect("key")
    }

    fn try_key(
        engine: &Engine,
        store: &str,
        name: &str,
        expires_at: serde_json::Value,
    ) -> Result<String> {
        let body = json!({"name": name, "permissions": "*", "expires_at": expires_at});
        let new = NewKey::from_json(&body).expect("new key");
        Ok(engine.create_key(store, &Actor::admin("t"), new)?.key.id)
    }

    fn patch(engine: &Engine, store: &str, id: &str, body: serde_json::Value) {
        let patch = KeyPatch::from_json(&body).expect("patch");
        engine
            .update_key(store, &Actor::admin("t"), id, patch)
            .expect("update");
    }

    #[test]
    fn the_index_holds_exactly_the_keys_owed_a_notice_through_every_change() {
        let (engine, clock, sid) = fixture();
        let never = key(&engine, &sid, "n", json!(null));
        let a = key(&engine, &sid, "a", json!("2026-01-05T00:00:00Z"));
        let b = key(&engine, &sid, "b", json!("2026-03-01T00:00:00Z"));
        let c = key(&engine, &sid, "c", json!("2026-02-01T00:00:00Z"));
        let check = |step: &str| assert_eq!(index(&engine), owed(&engine), "after {step}");
        check("creation");
        assert_eq!(index(&engine).len(), 3);
        patch(
            &engine,
            &sid,
            &b,
            json!({"expires_at": "2026-04-01T00:00:00Z"}),
        );
        check("a new expiry");
        patch(&engine, &sid, &c, json!({"active": false}));
        check("deactivation");
        patch(&engine, &sid, &c, json!({"active": true}));
        check("reactivation");
        patch(
            &engine,
            &sid,
            &never,
            json!({"expires_at": "2026-06-01T00:00:00Z"}),
        );
        check("an expiry given");
        patch(&engine, &sid, &never, json!({"expires_at": null}));
        check("an expiry taken away");
        engine
            .revoke_key(&sid, &Actor::admin("t"), &c)
            .expect("revoke");
        check("revocation");
        engine
            .regenerate_key(&sid, &Actor::admin("t"), &b, Duration::ZERO)
            .expect("regenerate");
        check("regeneration");
        // `a` is due within the week: its notice takes it out.
        assert_eq!(engine.notify_expiring_keys().expect("scan"), 1);
        check("a notice");
        let left: Vec<String> = index(&engine).into_iter().map(|(_, _, id)| id).collect();
        assert_eq!(left, std::slice::from_ref(&b), "{a} announced");
        // `b` (April) expires unannounced while nothing scans: the next scan drops its entry.
        clock.advance(time::Duration::days(120));
        assert_eq!(engine.notify_expiring_keys().expect("scan"), 0);
        assert!(index(&engine).is_empty());
        // A write that keeps its expiry leaves it out; a new expiry puts it back.
        patch(&engine, &sid, &b, json!({"name": "b2"}));
        assert!(index(&engine).is_empty());
        patch(
            &engine,
            &sid,
            &b,
            json!({"expires_at": "2026-05-03T00:00:00Z"}),
        );
        check("a new expiry after the last");
        assert_eq!(engine.notify_expiring_keys().expect("scan"), 1);
        assert!(index(&engine).is_empty());
    }

    #[test]
    fn a_format_3_database_gets_its_keys_indexed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("v3.redb");
        let (sid, due) = {
            let engine = Engine::open(&path).expect("open");
            let (store, _) = engine
                .create_store(&Actor::admin("t"), NewStore::named("Old"))
                .expect("store");
            let sid = store.id.as_str().to_owned();
            let soon = (OffsetDateTime::now_utc() + Duration::days(3))
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format");
            let due = key(&engine, &sid, "due", json!(soon));
            key(&engine, &sid, "later", json!("2027-01-01T00:00:00Z"));
            // As format 3 left it: keys without the index, version 3.
            let tx = engine.inner().db.begin_write().expect("write");
            tx.delete_table(KEY_EXPIRY).expect("drop");
            storage::set_format_version(&tx, 3);
            tx.commit().expect("commit");
            (sid, due)
        };
        let engine = Engine::open(&path).expect("reopen");
        assert_eq!(index(&engine), owed(&engine));
        assert!(
            index(&engine)
                .iter()
                .any(|(_, store, id)| *store == sid && *id == due)
        );
        assert_eq!(engine.notify_expiring_keys().expect("scan"), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create(Option<i64>),
        Expire(usize, Option<i64>),
        Active(usize, bool),
        Revoke(usize),
        Regenerate(usize),
        Scan,
        Advance(i64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        let hours = proptest::option::of(1i64..400);
        prop_oneof![
            hours.clone().prop_map(Op::Create),
            (0usize..6, hours).prop_map(|(k, h)| Op::Expire(k, h)),
            (0usize..6, any::<bool>()).prop_map(|(k, on)| Op::Active(k, on)),
            (0usize..6).prop_map(Op::Revoke),
            (0usize..6).prop_map(Op::Regenerate),
            Just(Op::Scan),
            (1i64..200).prop_map(Op::Advance),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever happens to keys, the index holds only keys owed a notice, every key owed
        /// one for an expiry still ahead, and a scan leaves no key due.
        #[test]
        fn the_index_agrees_with_the_records_after_any_changes(ops in proptest::collection::vec(op(), 1..40)) {
            let (engine, clock, sid) = fixture();
            let admin = Actor::admin("t");
            let at = |hours: Option<i64>| {
                json!(hours.map(|h| (clock.now() + Duration::hours(h))
                    .format(&time::format_description::well_known::Rfc3339)
                    .expect("format")))
            };
            let mut keys: Vec<String> = Vec::new();
            for op in ops {
                let pick = |k: usize| keys.get(k % keys.len().max(1)).cloned();
                // Changes to revoked keys are refused; that is not what is under test.
                match op {
                    Op::Create(hours) => {
                        // Refused past the store's five scoped keys.
                        if let Ok(id) = try_key(&engine, &sid, "k", at(hours)) {
                            keys.push(id);
                        }
                    }
                    Op::Expire(k, hours) => if let Some(id) = pick(k) {
                        let patch = KeyPatch::from_json(&json!({"expires_at": at(hours)})).expect("patch");
                        let _ = engine.update_key(&sid, &admin, &id, patch);
                    },
                    Op::Active(k, on) => if let Some(id) = pick(k) {
                        let patch = KeyPatch::from_json(&json!({"active": on})).expect("patch");
                        let _ = engine.update_key(&sid, &admin, &id, patch);
                    },
                    Op::Revoke(k) => if let Some(id) = pick(k) {
                        let _ = engine.revoke_key(&sid, &admin, &id);
                    },
                    Op::Regenerate(k) => if let Some(id) = pick(k) {
                        let _ = engine.regenerate_key(&sid, &admin, &id, Duration::ZERO);
                    },
                    Op::Scan => {
                        engine.notify_expiring_keys().expect("scan");
                        let now = clock.now();
                        let tx = storage::read(&engine.inner().db).expect("read");
                        let table = tx.open_table(KEYS).expect("keys");
                        for row in table.iter().expect("iter") {
                            let (_, bytes) = row.expect("row");
                            let view = Expiry::read(bytes.value()).expect("view");
                            proptest::prop_assert!(!view.due(now, now + EXPIRY_NOTICE));
                        }
                    }
                    Op::Advance(hours) => clock.advance(Duration::hours(hours)),
                }
                let (indexed, owed) = (index(&engine), owed(&engine));
                proptest::prop_assert!(indexed.is_subset(&owed), "{indexed:?} not all owed: {owed:?}");
                let ahead = unix_nanos(clock.now());
                for entry in owed.iter().filter(|(at, _, _)| *at > ahead) {
                    proptest::prop_assert!(indexed.contains(entry), "{entry:?} owed, not indexed");
                }
            }
        }
    }
}
