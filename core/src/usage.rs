//! Key usage over a period, from the request log (seeds 003 and 004: "monitor API usage",
//! "view API logs"): how many requests each key made, how many were refused or failed, when
//! it was last seen and how fast it was answered. One pass over the period's log rows; the
//! store's log retention bounds how far back it reaches.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::clock::Clock;
use crate::engine::{Engine, ReadStores};
use crate::error::{Problems, Result};
use crate::logs::{CHUNK_SPAN, LOGS, RawEntry, nanos, read_row};
use crate::storage;

/// The period a usage summary covers by default: the last day.
pub const DEFAULT_USAGE_PERIOD: Duration = Duration::days(1);

/// The longest period one summary covers: a month, the default log retention and then some.
/// A summary decodes every entry of its period (about 160 ns each), so a store keeping a year
/// of a busy log asks month by month rather than holding a reader for minutes.
pub const MAX_USAGE_PERIOD: Duration = Duration::days(31);

/// The period of a usage summary: `until` (default now) back to `since` (default a day
/// before `until`), at most [`MAX_USAGE_PERIOD`] long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageQuery {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

impl UsageQuery {
    /// From a JSON object (binding arguments): `since`, `until` (RFC 3339, or null for the
    /// default), every problem named.
    pub fn from_json(value: &Value) -> Result<Self> {
        use crate::input::{Fields, timestamp};
        let mut fields = Fields::new(value, "usage query")?;
        let since = fields.patch("since", timestamp).into_update().flatten();
        let until = fields.patch("until", timestamp).into_update().flatten();
        fields.finish().finish()?;
        Ok(Self { since, until })
    }
}

/// What one key (or, with `key_id` null, credentials that matched no key of the store) did
/// in the period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyUsage {
    pub key_id: Option<String>,
    pub requests: u64,
    /// Answered with a status of 400 or more (refusals included).
    pub errors: u64,
    /// Refused by verify (any code but `OK`).
    pub denied: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub last_at: OffsetDateTime,
    pub average_latency_us: u64,
}

/// A store's usage in a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    #[serde(with = "time::serde::rfc3339")]
    pub since: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
    pub requests: u64,
    /// Requests by status class: `"2xx"`, `"4xx"`, …
    pub by_status: BTreeMap<String, u64>,
    /// Requests by verify decision code: `"OK"`, `"RATE_LIMITED"`, …
    pub by_code: BTreeMap<String, u64>,
    /// Busiest first (then by key id).
    pub keys: Vec<KeyUsage>,
}

#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    denied: u64,
    last_at: i64,
    latency_us: u128,
}

impl Tally {
    fn add(&mut self, entry: &RawEntry<'_>) {
        self.requests += 1;
        self.errors += u64::from(entry.status >= 400);
        self.denied += u64::from(entry.code != "OK");
        self.last_at = self.last_at.max(entry.at);
        self.latency_us += u128::from(entry.latency_us);
    }
}

impl Engine {
    /// How each key of the store was used in the period, from its request log (entries still
    /// buffered are written first, as for [`Engine::logs`]).
    pub fn usage(&self, store_id: &str, query: &UsageQuery) -> Result<Usage> {
        let until = query.until.unwrap_or_else(|| self.inner().clock.now());
        let since = query.since.unwrap_or(until - DEFAULT_USAGE_PERIOD);
        let mut problems = Problems::new();
        if until < since {
            problems.push("until: must not be before since");
        } else if until - since > MAX_USAGE_PERIOD {
            problems.push(format!(
                "since: the period may be at most {} days",
                MAX_USAGE_PERIOD.whole_days()
            ));
        }
        problems.finish()?;
        self.inner().flush_logs()?;
        let tx = storage::read(&self.inner().db)?;
        let store = tx.store(store_id)?;
        let sid = store.id.as_str();
        let (from, to) = (nanos(since), nanos(until));
        // Requests without a key (none are recorded now, but a log may hold them) apart, so
        // a key's tally is found by the stored id without copying it.
        let mut keys: HashMap<String, Tally> = HashMap::new();
        let mut keyless: Option<Tally> = None;
        // Status classes 1xx to 5xx by their digit (a stored status is 100–599).
        let mut classes = [0u64; 6];
        let mut by_code: BTreeMap<String, u64> = BTreeMap::new();
        let mut requests = 0;
        // A row is keyed by its newest entry: rows keyed before `from` hold nothing in the
        // period, and one keyed up to a chunk's span after `to` may still hold entries in it.
        let last = (sid, to.saturating_add(CHUNK_SPAN), u64::MAX);
        for item in tx.open_table(LOGS)?.range((sid, from, 0)..=last)? {
            let (key, value) = item?;
            let (_, newest, _) = key.value();
            for entry in read_row(value.value(), newest)? {
                if !(from..=to).contains(&entry.at) {
                    continue;
                }
                requests += 1;
                classes[usize::from(entry.status / 100).min(5)] += 1;
                match entry.key_id.as_deref() {
                    None => keyless.get_or_insert_default().add(&entry),
                    Some(id) => {
                        if let Some(tally) = keys.get_mut(id) {
                            tally.add(&entry);
                        } else {
                            let mut tally = Tally::default();
                            tally.add(&entry);
                            keys.insert(id.to_owned(), tally);
                        }
                    }
                }
                match by_code.get_mut(&*entry.code) {
                    Some(count) => *count += 1,
                    None => {
                        by_code.insert(entry.code.into_owned(), 1);
                    }
                }
            }
        }
        let mut keys: Vec<KeyUsage> = keys
            .into_iter()
            .map(|(key_id, t)| (Some(key_id), t))
            .chain(keyless.map(|t| (None, t)))
            .map(|(key_id, t)| KeyUsage {
                key_id,
                requests: t.requests,
                errors: t.errors,
                denied: t.denied,
                last_at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.last_at))
                    .unwrap_or(until),
                average_latency_us: u64::try_from(t.latency_us / u128::from(t.requests.max(1)))
                    .unwrap_or(u64::MAX),
            })
            .collect();
        keys.sort_by(|a, b| (b.requests, &a.key_id).cmp(&(a.requests, &b.key_id)));
        let by_status = (1..classes.len())
            .filter(|&class| classes[class] > 0)
            .map(|class| (format!("{class}xx"), classes[class]))
            .collect();
        Ok(Usage {
            since,
            until,
            requests,
            by_status,
            by_code,
            keys,
        })
    }
}
