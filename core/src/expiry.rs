//! Notices of keys about to expire: an `api_key.expiring` webhook event for each live key
//! whose `expires_at` falls within [`EXPIRY_NOTICE`], once per expiry, so an integrator hears
//! about it before requests start failing with `EXPIRED` (seeds 002 and 004: keys expire
//! after a year by default, and should be rotated).

use std::sync::atomic::Ordering;

use redb::ReadableTable;
use serde::Deserialize;
use time::{Duration, OffsetDateTime};

use crate::clock::Clock;
use crate::engine::{Engine, Inner, write_key};
use crate::entities::{Scope, write_outbox};
use crate::error::{Error, Result};
use crate::keys::KeyRecord;
use crate::storage::{self, KEYS};

/// How long before its expiry a key's `api_key.expiring` event is written.
pub const EXPIRY_NOTICE: Duration = Duration::days(7);
/// The delivery passes look for expiring keys at most this often (a scan reads every key).
const SCAN_EVERY_SECS: i64 = 3600;

/// What the scan reads of a key record; the rest of its JSON is skipped, not decoded (a full
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
    /// Whether this key is owed a notice: active, not revoked, expiring in `(now, horizon]`,
    /// and not yet announced for that expiry.
    fn due(&self, now: OffsetDateTime, horizon: OffsetDateTime) -> bool {
        self.revoked_at.is_none()
            && self.active
            && self.expires_at.is_some_and(|at| at > now && at <= horizon)
            && self.expiry_notice_for != self.expires_at
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

impl Engine {
    /// Writes an `api_key.expiring` event for every active key that expires within
    /// [`EXPIRY_NOTICE`] and has had no notice for that expiry yet; returns how many. Webhook
    /// delivery passes run it by themselves, at most once an hour.
    pub fn notify_expiring_keys(&self) -> Result<usize> {
        self.inner().notify_expiring_keys()
    }
}

impl Inner {
    /// [`Engine::notify_expiring_keys`] when an hour has passed since the last scan.
    pub(crate) fn notify_expiring_keys_hourly(&self) -> Result<usize> {
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
        // Most scans find nothing: read first, and write only when a notice is due.
        let found: Vec<(String, String)> = {
            let tx = storage::read(&self.db)?;
            let mut found = Vec::new();
            for item in tx.open_table(KEYS)?.iter()? {
                let (key, value) = item?;
                let view: Expiry = serde_json::from_slice(value.value())
                    .map_err(|e| Error::Corrupt(format!("key record: {e}")))?;
                if view.v > KeyRecord::VERSION {
                    return Err(Error::Corrupt(format!(
                        "key record version {} is newer than this release reads",
                        view.v
                    )));
                }
                if view.due(now, horizon) {
                    let (store, id) = key.value();
                    found.push((store.to_owned(), id.to_owned()));
                }
            }
            found
        };
        if found.is_empty() {
            return Ok(0);
        }
        let _writer = self.writer.lock();
        let tx = storage::write(&self.db)?;
        let mut written = 0;
        for (store, id) in &found {
            // Read again under the writer: the key may have changed since the scan.
            let record = tx
                .open_table(KEYS)?
                .get((store.as_str(), id.as_str()))?
                .map(|bytes| storage::decode::<KeyRecord>(bytes.value(), KeyRecord::VERSION, "key"))
                .transpose()?;
            let Some(mut record) = record.filter(|r| Expiry::of(r).due(now, horizon)) else {
                continue;
            };
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
