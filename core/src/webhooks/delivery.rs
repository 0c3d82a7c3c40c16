//! Delivery: outbox events to every subscribed endpoint, signed, retried with backoff, every
//! attempt recorded (SPEC §8).
//!
//! Two tables hold the work. [`DELIVERIES`] has one record per (event, endpoint) with its
//! attempts; [`DUE`] orders the pending ones by when they are next due. A pass
//! 1. fans out the outbox events past the `webhook_cursor` into deliveries, in the same
//!    transaction that moves the cursor, so each event is fanned out exactly once; then
//! 2. sends every due delivery (several at a time) and commits the outcomes.
//!
//! A delivery leaves [`DUE`] only in the transaction that records its outcome, so one in
//! flight when the process dies is sent again after a restart: delivery is at least once, and
//! every attempt carries the event's id as `webhook-id` so receivers can drop repeats.
//!
//! Retry schedule: retry *n* (n = 1…7) is due 5 s × 4ⁿ⁻¹ after the failed attempt — 5 s, 20 s,
//! 80 s, 5 min 20 s, 21 min 20 s, 1 h 25 min, 5 h 41 min — each stretched or shrunk by a random
//! ±20 % so endpoints that failed together do not retry together. Eight attempts in all
//! (about 7.6 hours); a 2xx ends it, `410 Gone` ends it and disables the endpoint, anything else
//! (another status, a timeout, a refused address) is retried.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::{Endpoint, WEBHOOKS, WebhookOptions, guard};
use crate::clock::Clock;
use crate::engine::Inner;
use crate::entities::{OUTBOX, OutboxEvent};
use crate::error::{Error, Result};
use crate::ids::StoreId;
use crate::secret::fill_random;
use crate::storage;

/// (store, webhook id, delivery sequence) → delivery. One endpoint's deliveries are a range.
pub(crate) const DELIVERIES: TableDefinition<(&str, &str, u64), &[u8]> =
    TableDefinition::new("webhook_deliveries");
/// (due time in unix ms, delivery sequence) → `[store, webhook id]` of a pending delivery.
pub(crate) const DUE: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("webhook_due");

/// The last outbox sequence already fanned out.
const CURSOR_KEY: &str = "webhook_cursor";
const DELIVERY_SEQ_KEY: &str = "webhook_delivery_seq";

/// Attempts per delivery, the first included.
pub const MAX_ATTEMPTS: usize = 8;
const FIRST_RETRY: Duration = Duration::from_secs(5);
const BACKOFF_FACTOR: u32 = 4;
/// Each delay is multiplied by a random factor in 1 ± this.
pub const RETRY_JITTER: f64 = 0.2;
/// Bytes of a response body kept in an attempt (and returned by a test dispatch).
pub const RESPONSE_KEEP: usize = 1_024;
/// Finished deliveries older than this are deleted by the worker.
pub const DELIVERY_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
const FAN_OUT_BATCH: usize = 256;
const SEND_BATCH: usize = 64;
/// Deliveries sent at the same time within a pass.
const SENDERS: usize = 8;
/// The event type of a test dispatch.
pub const TEST_EVENT: &str = "webhook.test";

/// The nominal delay before retry `n` (1-based), before jitter: 5 s × 4ⁿ⁻¹.
pub fn retry_delay(n: u32) -> Duration {
    FIRST_RETRY.saturating_mul(BACKOFF_FACTOR.saturating_pow(n.saturating_sub(1)))
}

fn jittered(delay: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    // Without randomness the nominal delay is still a correct schedule.
    let unit = match fill_random(&mut bytes) {
        Ok(()) => (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    };
    delay.mul_f64(1.0 - RETRY_JITTER + 2.0 * RETRY_JITTER * unit)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Pending,
    Succeeded,
    Failed,
}

/// One request to an endpoint, or the reason none was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Attempt {
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
    status_code: Option<u16>,
    /// The first [`RESPONSE_KEEP`] bytes of the response body.
    body: String,
    error: Option<String>,
    duration_ms: u64,
}

impl Attempt {
    fn succeeded(&self) -> bool {
        matches!(self.status_code, Some(200..=299))
    }

    fn output(&self) -> Value {
        json!({
            "at": self.at.format(&Rfc3339).ok(),
            "status_code": self.status_code,
            "body": self.body,
            "error": self.error,
            "duration_ms": self.duration_ms,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Delivery {
    v: u32,
    seq: u64,
    store_id: StoreId,
    webhook_id: String,
    event_id: String,
    event_type: String,
    /// Exactly the bytes sent on every attempt (the signature covers them).
    payload: String,
    state: State,
    attempts: Vec<Attempt>,
    /// While pending: when the next attempt is due (unix ms), its key in [`DUE`].
    due_ms: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// Queued again by hand ([`Inner::redeliver`]): one attempt, with no retries after it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    resend: bool,
}

impl Delivery {
    const VERSION: u32 = 1;

    fn key(&self) -> (&str, &str, u64) {
        (self.store_id.as_str(), &self.webhook_id, self.seq)
    }

    fn output(&self) -> Value {
        let next = self
            .due_ms
            .and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            })
            .and_then(|at| at.format(&Rfc3339).ok());
        json!({
            "id": delivery_id(self.seq),
            "webhook_id": self.webhook_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "state": self.state,
            "attempts": self.attempts.iter().map(Attempt::output).collect::<Vec<_>>(),
            "next_attempt_at": next,
            "created_at": self.created_at.format(&Rfc3339).ok(),
            "payload": serde_json::from_str::<Value>(&self.payload).unwrap_or(Value::Null),
        })
    }
}

/// What one delivery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryPass {
    /// Deliveries created from new outbox events.
    pub queued: usize,
    /// Deliveries sent (or settled without sending) in this pass.
    pub attempted: usize,
    /// When the earliest pending delivery is due (unix ms), if any.
    pub next_due_ms: Option<i64>,
}

/// The delivery state an engine keeps in memory.
#[derive(Debug)]
pub(crate) struct Runtime {
    pub options: WebhookOptions,
    /// Held through a pass, so two passes never send the same delivery at once.
    pass: Mutex<()>,
    /// The worker thread, woken when a commit writes outbox events.
    waker: Mutex<Option<std::thread::Thread>>,
    pub worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// When a pass last looked for expiring keys (unix seconds; see `crate::expiry`).
    pub expiry_scan: std::sync::atomic::AtomicI64,
}

impl Runtime {
    pub fn new(options: WebhookOptions) -> Self {
        Self {
            options,
            pass: Mutex::new(()),
            waker: Mutex::new(None),
            worker: Mutex::new(None),
            expiry_scan: std::sync::atomic::AtomicI64::new(i64::MIN),
        }
    }

    /// Nudges the worker (if one runs) to look at the outbox now rather than at its next poll.
    pub fn wake(&self) {
        if let Some(worker) = self.waker.lock().as_ref() {
            worker.unpark();
        }
    }
}

fn delivery_id(seq: u64) -> String {
    format!("whd_{seq:016}")
}

/// The sequence number a `whd_…` id names.
fn delivery_seq(id: &str) -> Option<u64> {
    id.strip_prefix("whd_")
        .filter(|digits| digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
}

fn now_ms(inner: &Inner) -> i64 {
    inner.clock.now_nanos().div_euclid(1_000_000)
}

fn event_payload(event: &OutboxEvent) -> String {
    json!({
        "id": event.id,
        "type": event.event_type,
        "created_at": event.created_at.format(&Rfc3339).ok(),
        "data": event.data,
    })
    .to_string()
}

fn due_ref(store_id: &str, webhook_id: &str) -> Result<Vec<u8>> {
    storage::encode(&(store_id, webhook_id))
}

/// A pending delivery read for sending, with its endpoint as it was at that moment.
struct Job {
    due_key: (i64, u64),
    delivery: Option<Delivery>,
    endpoint: Option<Endpoint>,
}

impl Job {
    fn sendable(&self) -> Option<(&Delivery, &Endpoint)> {
        match (&self.delivery, &self.endpoint) {
            (Some(delivery), Some(endpoint)) if endpoint.active => Some((delivery, endpoint)),
            _ => None,
        }
    }
}

impl Inner {
    /// One pass: queue deliveries for new outbox events, then send every due one.
    pub(crate) fn deliver_webhooks(&self) -> Result<DeliveryPass> {
        let _pass = self.webhooks.pass.lock();
        // Best effort: a failed scan is tried again an hour later; deliveries go on.
        let _ = self.notify_expiring_keys_when_due();
        let queued = self.fan_out()?;
        let attempted = self.send_due()?;
        let next_due_ms = {
            let tx = storage::read(&self.db)?;
            let due = tx.open_table(DUE)?;
            due.first()?.map(|(key, _)| key.value().0)
        };
        Ok(DeliveryPass {
            queued,
            attempted,
            next_due_ms,
        })
    }

    fn fan_out(&self) -> Result<usize> {
        let mut queued = 0;
        loop {
            let pending = {
                let tx = storage::read(&self.db)?;
                let cursor = storage::read_meta_u64(&tx, CURSOR_KEY)?;
                let outbox = tx.open_table(OUTBOX)?;
                outbox.last()?.is_some_and(|(seq, _)| seq.value() > cursor)
            };
            if !pending {
                return Ok(queued);
            }
            let _writer = self.writer.lock();
            let tx = storage::write(&self.db)?;
            let cursor = storage::meta_u64(&tx, CURSOR_KEY)?;
            let events: Vec<OutboxEvent> = {
                let outbox = tx.open_table(OUTBOX)?;
                let mut events = Vec::new();
                for item in outbox
                    .range(cursor.saturating_add(1)..)?
                    .take(FAN_OUT_BATCH)
                {
                    let (_, value) = item?;
                    events.push(storage::decode(value.value(), 1, "outbox event")?);
                }
                events
            };
            let Some(last) = events.last().map(|e| e.seq) else {
                return Ok(queued);
            };
            let now = self.clock.now();
            let due_ms = now_ms(self);
            let mut endpoints: HashMap<StoreId, Vec<Endpoint>> = HashMap::new();
            for event in &events {
                let store_endpoints = match endpoints.entry(event.store_id) {
                    Entry::Occupied(found) => found.into_mut(),
                    Entry::Vacant(slot) => {
                        slot.insert(super::load_endpoints(&tx, event.store_id.as_str())?)
                    }
                };
                let subscribed = store_endpoints.iter().filter(|e| {
                    e.active && e.since_seq < event.seq && e.events.contains(&event.event_type)
                });
                let payload = event_payload(event);
                for endpoint in subscribed {
                    let seq = storage::next_counter(&tx, DELIVERY_SEQ_KEY)?;
                    let delivery = Delivery {
                        v: Delivery::VERSION,
                        seq,
                        store_id: event.store_id,
                        webhook_id: endpoint.id.clone(),
                        event_id: event.id.clone(),
                        event_type: event.event_type.clone(),
                        payload: payload.clone(),
                        state: State::Pending,
                        attempts: Vec::new(),
                        due_ms: Some(due_ms),
                        created_at: now,
                        resend: false,
                    };
                    tx.open_table(DELIVERIES)?
                        .insert(delivery.key(), storage::encode(&delivery)?.as_slice())?;
                    tx.open_table(DUE)?.insert(
                        (due_ms, seq),
                        due_ref(event.store_id.as_str(), &endpoint.id)?.as_slice(),
                    )?;
                    queued += 1;
                }
            }
            storage::set_meta_u64(&tx, CURSOR_KEY, last)?;
            tx.commit()?;
            if events.len() < FAN_OUT_BATCH {
                return Ok(queued);
            }
        }
    }

    fn send_due(&self) -> Result<usize> {
        let now = now_ms(self);
        let mut attempted = 0;
        loop {
            let jobs = self.due_jobs(now)?;
            if jobs.is_empty() {
                return Ok(attempted);
            }
            let timestamp = self.clock.now_secs();
            let sent = send_all(&self.webhooks.options, &jobs, timestamp);
            attempted += jobs.len();
            let full = jobs.len() == SEND_BATCH;
            self.record_outcomes(jobs, sent)?;
            // Every recorded job left `DUE` or moved past `now`, so the next batch is new work.
            if !full {
                return Ok(attempted);
            }
        }
    }

    fn due_jobs(&self, now: i64) -> Result<Vec<Job>> {
        let tx = storage::read(&self.db)?;
        let due = tx.open_table(DUE)?;
        let deliveries = tx.open_table(DELIVERIES)?;
        let webhooks = tx.open_table(WEBHOOKS)?;
        let mut jobs = Vec::new();
        for item in due.range((i64::MIN, 0)..=(now, u64::MAX))?.take(SEND_BATCH) {
            let (key, value) = item?;
            let due_key = key.value();
            let (store, webhook): (String, String) = serde_json::from_slice(value.value())
                .map_err(|e| crate::error::Error::Corrupt(format!("webhook queue entry: {e}")))?;
            let delivery = match deliveries.get((store.as_str(), webhook.as_str(), due_key.1))? {
                Some(bytes) => Some(storage::decode(
                    bytes.value(),
                    Delivery::VERSION,
                    "webhook delivery",
                )?),
                None => None,
            };
            let endpoint = match webhooks.get((store.as_str(), webhook.as_str()))? {
                Some(bytes) => Some(storage::decode(
                    bytes.value(),
                    Endpoint::VERSION,
                    "webhook",
                )?),
                None => None,
            };
            jobs.push(Job {
                due_key,
                delivery,
                endpoint,
            });
        }
        Ok(jobs)
    }

    fn record_outcomes(&self, jobs: Vec<Job>, sent: Vec<Option<Attempt>>) -> Result<()> {
        let _writer = self.writer.lock();
        let now = self.clock.now();
        let now_ms = now_ms(self);
        let tx = storage::write(&self.db)?;
        {
            let mut due = tx.open_table(DUE)?;
            let mut deliveries = tx.open_table(DELIVERIES)?;
            let mut webhooks = tx.open_table(WEBHOOKS)?;
            for (job, attempt) in jobs.into_iter().zip(sent) {
                due.remove(job.due_key)?;
                let (Some(read), Some(_)) = (job.delivery, job.endpoint) else {
                    continue;
                };
                // Re-read both: the endpoint may have been deleted or changed while sending.
                let Some(bytes) = deliveries.get(read.key())? else {
                    continue;
                };
                let mut delivery: Delivery =
                    storage::decode(bytes.value(), Delivery::VERSION, "webhook delivery")?;
                drop(bytes);
                let skipped = attempt.is_none();
                let attempt = attempt.unwrap_or_else(|| Attempt {
                    at: now,
                    status_code: None,
                    body: String::new(),
                    error: Some("not sent: the endpoint is disabled".into()),
                    duration_ms: 0,
                });
                let gone = attempt.status_code == Some(410);
                let succeeded = attempt.succeeded();
                let resent = std::mem::take(&mut delivery.resend);
                delivery.attempts.push(attempt);
                delivery.due_ms = None;
                delivery.state = if succeeded {
                    State::Succeeded
                } else if gone || skipped || resent || delivery.attempts.len() >= MAX_ATTEMPTS {
                    State::Failed
                } else {
                    let retry = u32::try_from(delivery.attempts.len()).unwrap_or(u32::MAX);
                    let delay = jittered(retry_delay(retry));
                    let at =
                        now_ms.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
                    delivery.due_ms = Some(at);
                    due.insert(
                        (at, delivery.seq),
                        due_ref(delivery.store_id.as_str(), &delivery.webhook_id)?.as_slice(),
                    )?;
                    State::Pending
                };
                if gone {
                    let key = (delivery.store_id.as_str(), delivery.webhook_id.as_str());
                    let current = match webhooks.get(key)? {
                        Some(bytes) => Some(storage::decode::<Endpoint>(
                            bytes.value(),
                            Endpoint::VERSION,
                            "webhook",
                        )?),
                        None => None,
                    };
                    if let Some(mut current) = current {
                        current.active = false;
                        current.disabled_reason = Some(format!(
                            "the endpoint answered 410 Gone at {}",
                            now.format(&Rfc3339).unwrap_or_default()
                        ));
                        webhooks.insert(key, storage::encode(&current)?.as_slice())?;
                    }
                }
                deliveries.insert(delivery.key(), storage::encode(&delivery)?.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Sends a sample `webhook.test` event to an endpoint now (active or not) and records it.
    pub(super) fn send_test(&self, endpoint: &Endpoint) -> Result<Value> {
        let mut id = [0u8; 12];
        fill_random(&mut id)?;
        let event_id = format!(
            "evt_test_{}",
            id.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let now = self.clock.now();
        let payload = json!({
            "id": event_id,
            "type": TEST_EVENT,
            "created_at": now.format(&Rfc3339).ok(),
            "data": {
                "message": "A test event from Latchkey",
                "store_id": endpoint.store_id,
                "webhook_id": endpoint.id,
            },
        })
        .to_string();
        let attempt = send(
            &self.webhooks.options,
            endpoint,
            &event_id,
            self.clock.now_secs(),
            &payload,
            now,
        );
        let _writer = self.writer.lock();
        let tx = storage::write(&self.db)?;
        let seq = storage::next_counter(&tx, DELIVERY_SEQ_KEY)?;
        let result = json!({
            "status_code": attempt.status_code,
            "body": attempt.body,
            "error": attempt.error,
            "duration_ms": attempt.duration_ms,
            "delivery_id": delivery_id(seq),
        });
        let delivery = Delivery {
            v: Delivery::VERSION,
            seq,
            store_id: endpoint.store_id,
            webhook_id: endpoint.id.clone(),
            event_id,
            event_type: TEST_EVENT.into(),
            payload,
            state: if attempt.succeeded() {
                State::Succeeded
            } else {
                State::Failed
            },
            attempts: vec![attempt],
            due_ms: None,
            created_at: now,
            resend: false,
        };
        // The endpoint may have been deleted while the request was out: then keep no record.
        if tx
            .open_table(WEBHOOKS)?
            .get((endpoint.store_id.as_str(), endpoint.id.as_str()))?
            .is_some()
        {
            tx.open_table(DELIVERIES)?
                .insert(delivery.key(), storage::encode(&delivery)?.as_slice())?;
            tx.commit()?;
        }
        Ok(result)
    }

    /// An endpoint's deliveries, newest first, at most `limit`.
    /// Queues a finished delivery for one more attempt, due now, with the payload and event id
    /// it had (receivers de-duplicate by `webhook-id`): for a receiver that was down past the
    /// retry schedule, or fixed after refusing. A pending delivery is refused (it is already
    /// going to be sent), as is one of a disabled endpoint (it would not be sent).
    pub(crate) fn redeliver(&self, store_id: &str, webhook_id: &str, id: &str) -> Result<Value> {
        let not_found = || Error::not_found("webhook delivery", id);
        let seq = delivery_seq(id).ok_or_else(not_found)?;
        let _writer = self.writer.lock();
        let tx = storage::write(&self.db)?;
        let endpoint = super::load_endpoint(&tx.open_table(WEBHOOKS)?, store_id, webhook_id)?;
        let output = {
            let mut deliveries = tx.open_table(DELIVERIES)?;
            let key = (store_id, webhook_id, seq);
            let mut delivery: Delivery = match deliveries.get(key)? {
                Some(bytes) => {
                    storage::decode(bytes.value(), Delivery::VERSION, "webhook delivery")?
                }
                None => return Err(not_found()),
            };
            if delivery.state == State::Pending {
                return Err(Error::Conflict(
                    "the delivery is pending: its next attempt is already scheduled".into(),
                ));
            }
            if !endpoint.active {
                return Err(Error::Conflict(
                    "the endpoint is disabled: enable it to resend".into(),
                ));
            }
            let due_ms = now_ms(self);
            delivery.state = State::Pending;
            delivery.due_ms = Some(due_ms);
            delivery.resend = true;
            tx.open_table(DUE)?
                .insert((due_ms, seq), due_ref(store_id, webhook_id)?.as_slice())?;
            deliveries.insert(key, storage::encode(&delivery)?.as_slice())?;
            delivery.output()
        };
        tx.commit()?;
        self.webhooks.wake();
        Ok(output)
    }

    pub(crate) fn list_deliveries(
        &self,
        store_id: &str,
        webhook_id: &str,
        limit: usize,
    ) -> Result<Vec<Value>> {
        let tx = storage::read(&self.db)?;
        let table = tx.open_table(DELIVERIES)?;
        let mut out = Vec::new();
        for item in table
            .range((store_id, webhook_id, 0)..=(store_id, webhook_id, u64::MAX))?
            .rev()
            .take(limit)
        {
            let (_, value) = item?;
            let delivery: Delivery =
                storage::decode(value.value(), Delivery::VERSION, "webhook delivery")?;
            out.push(delivery.output());
        }
        Ok(out)
    }

    /// Removes an endpoint's deliveries and their queue entries (inside the caller's commit).
    pub(crate) fn forget_deliveries(
        tx: &redb::WriteTransaction,
        store_id: &str,
        webhook_id: &str,
    ) -> Result<()> {
        let mut deliveries = tx.open_table(DELIVERIES)?;
        let mut due = tx.open_table(DUE)?;
        let range = (store_id, webhook_id, 0)..=(store_id, webhook_id, u64::MAX);
        let mut keys = Vec::new();
        for item in deliveries.range(range.clone())? {
            let (key, value) = item?;
            let delivery: Delivery =
                storage::decode(value.value(), Delivery::VERSION, "webhook delivery")?;
            keys.push((key.value().2, delivery.due_ms));
        }
        for (seq, due_ms) in keys {
            if let Some(due_ms) = due_ms {
                due.remove((due_ms, seq))?;
            }
            deliveries.remove((store_id, webhook_id, seq))?;
        }
        Ok(())
    }

    /// Deletes finished deliveries created before `cutoff`; returns how many.
    pub(crate) fn prune_deliveries(&self, cutoff: OffsetDateTime) -> Result<usize> {
        let old: Vec<(String, String, u64)> = {
            let tx = storage::read(&self.db)?;
            let table = tx.open_table(DELIVERIES)?;
            let mut old = Vec::new();
            for item in table.iter()? {
                let (key, value) = item?;
                let delivery: Delivery =
                    storage::decode(value.value(), Delivery::VERSION, "webhook delivery")?;
                if delivery.state != State::Pending && delivery.created_at < cutoff {
                    let (store, webhook, seq) = key.value();
                    old.push((store.to_owned(), webhook.to_owned(), seq));
                }
            }
            old
        };
        if old.is_empty() {
            return Ok(0);
        }
        let _writer = self.writer.lock();
        let tx = storage::write(&self.db)?;
        {
            let mut table = tx.open_table(DELIVERIES)?;
            for (store, webhook, seq) in &old {
                table.remove((store.as_str(), webhook.as_str(), *seq))?;
            }
        }
        tx.commit()?;
        Ok(old.len())
    }
}

/// Sends every sendable job, up to [`SENDERS`] at a time; `None` for those not sent.
fn send_all(options: &WebhookOptions, jobs: &[Job], timestamp: i64) -> Vec<Option<Attempt>> {
    let results: Vec<Mutex<Option<Attempt>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(job) = jobs.get(i) else { break };
            if let Some((delivery, endpoint)) = job.sendable() {
                let attempt = send(
                    options,
                    endpoint,
                    &delivery.event_id,
                    timestamp,
                    &delivery.payload,
                    OffsetDateTime::now_utc(),
                );
                *results[i].lock() = Some(attempt);
            }
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..SENDERS.min(jobs.len()) {
            // If no thread can be started, the calling thread below still does all the work.
            let _ = std::thread::Builder::new()
                .name("latchkey-webhook".into())
                .spawn_scoped(scope, work);
        }
        work();
    });
    results.into_iter().map(Mutex::into_inner).collect()
}

/// One signed POST of `payload` to the endpoint, through the SSRF guard.
fn send(
    options: &WebhookOptions,
    endpoint: &Endpoint,
    event_id: &str,
    timestamp: i64,
    payload: &str,
    at: OffsetDateTime,
) -> Attempt {
    let started = Instant::now();
    let outcome = post(options, endpoint, event_id, timestamp, payload);
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match outcome {
        Ok((status, body)) => Attempt {
            at,
            status_code: Some(status),
            body,
            error: None,
            duration_ms,
        },
        Err(error) => Attempt {
            at,
            status_code: None,
            body: String::new(),
            error: Some(error),
            duration_ms,
        },
    }
}

fn post(
    options: &WebhookOptions,
    endpoint: &Endpoint,
    event_id: &str,
    timestamp: i64,
    payload: &str,
) -> std::result::Result<(u16, String), String> {
    let url = guard::parse_url(&endpoint.url)?;
    let addresses = guard::resolve(&url, options.allow_private, options.timeout)
        .map_err(|blocked| blocked.to_string())?;
    let signature = endpoint
        .signature(event_id, timestamp, payload.as_bytes())
        .map_err(|e| e.to_string())?;
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(options.timeout))
        .max_idle_connections(0)
        .user_agent(concat!("Latchkey-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = ureq::Agent::with_parts(config, DefaultConnector::new(), Pinned(addresses));
    let mut response = agent
        .post(url.as_str())
        .header("content-type", "application/json")
        .header("webhook-id", event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .send(payload.as_bytes())
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let mut body = Vec::with_capacity(RESPONSE_KEEP);
    // The status is the outcome; a body that breaks off or runs long is kept as far as read.
    let _ = response
        .body_mut()
        .as_reader()
        .take(RESPONSE_KEEP as u64)
        .read_to_end(&mut body);
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Connects only to the addresses the guard checked: no second lookup for DNS to answer
/// differently.
#[derive(Debug)]
struct Pinned(Vec<SocketAddr>);

impl Resolver for Pinned {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> std::result::Result<ResolvedSocketAddrs, ureq::Error> {
        let mut out = self.empty();
        for address in self.0.iter().take(16) {
            out.push(*address);
        }
        if out.is_empty() {
            Err(ureq::Error::HostNotFound)
        } else {
            Ok(out)
        }
    }
}

/// How often the worker deletes finished deliveries past [`DELIVERY_RETENTION`].
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Inner {
    pub(crate) fn start_webhook_worker(self: &std::sync::Arc<Self>) -> Result<()> {
        let mut slot = self.webhooks.worker.lock();
        if slot.is_some() {
            return Ok(());
        }
        let inner = self.clone();
        let handle = std::thread::Builder::new()
            .name("latchkey-webhooks".into())
            .spawn(move || inner.run_webhook_worker())
            .map_err(|e| {
                crate::error::Error::Storage(format!("cannot start the webhook worker: {e}"))
            })?;
        *self.webhooks.waker.lock() = Some(handle.thread().clone());
        *slot = Some(handle);
        Ok(())
    }

    fn run_webhook_worker(&self) {
        let mut pruned_at: Option<Instant> = None;
        while !self.stopping() {
            // A failed pass (storage trouble) changes nothing durable; the next one retries.
            let next_due = self
                .deliver_webhooks()
                .ok()
                .and_then(|pass| pass.next_due_ms);
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                let _ = self.prune_deliveries(self.clock.now() - DELIVERY_RETENTION);
                pruned_at = Some(Instant::now());
            }
            let mut wait = self.webhooks.options.poll_interval;
            if let Some(due) = next_due {
                let until = u64::try_from(due.saturating_sub(now_ms(self))).unwrap_or(0);
                wait = wait.min(Duration::from_millis(until));
            }
            if self.stopping() {
                break;
            }
            std::thread::park_timeout(wait);
        }
    }
}
