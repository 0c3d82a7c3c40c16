//! Webhooks (SPEC §8): endpoints per store, and the delivery of outbox events to them.
//!
//! The signing secret (`whsec_…`, Standard Webhooks) is returned by the create call only. It is
//! stored as is, because signing each delivery needs it; no read, list, error or `Debug`
//! output shows it.
//!
//! - [`guard`]: which targets may be contacted (the SSRF guard), at registration and dispatch.
//! - [`sign`]: the Standard Webhooks signature.
//! - [`delivery`]: outbox → deliveries → signed POSTs, retries, the worker.

mod delivery;
mod guard;
mod sign;

use std::time::Duration;

use base64::Engine as _;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Host;

pub(crate) use delivery::{DELIVERIES, DUE, Runtime};
pub use delivery::{
    DELIVERY_RETENTION, DeliveryPass, MAX_ATTEMPTS, RESPONSE_KEEP, RETRY_JITTER, TEST_EVENT,
    retry_delay,
};
pub use guard::refused_address;

use crate::audit::{Actor, AuditAction};
use crate::clock::Clock;
use crate::engine::{Engine, Inner, ReadStores, Subject, append_audit};
use crate::error::{Error, Result};
use crate::ids::StoreId;
use crate::input::{Fields, boolean, overlap_seconds, string, string_list};
use crate::secret::{Secret, fill_random};
use crate::storage;

/// (store, webhook id) → endpoint.
pub(crate) const WEBHOOKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("webhooks");

/// The events an endpoint can subscribe to.
pub const EVENTS: [&str; 7] = [
    "order.created",
    "subscription.created",
    "api_key.created",
    "api_key.updated",
    "api_key.regenerated",
    "api_key.revoked",
    "api_key.expiring",
];

/// Endpoints a store may register.
pub const MAX_WEBHOOKS: usize = 20;
/// How long registration waits for a name lookup before accepting the name (it is checked
/// again at every dispatch).
const REGISTRATION_LOOKUP: Duration = Duration::from_secs(2);
/// Deliveries listed by default, and at most.
pub const DEFAULT_DELIVERIES: usize = 50;
pub const MAX_DELIVERIES: usize = 500;
/// How long a rotated-out signing secret keeps signing deliveries by default (a day), and at
/// most (a week), so receivers can switch to the new one without dropping events.
pub const DEFAULT_SECRET_OVERLAP_SECONDS: i64 = 24 * 3600;
pub const MAX_SECRET_OVERLAP_SECONDS: i64 = 7 * 24 * 3600;

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Allow targets on loopback, private, link-local and other internal addresses
    /// (`latchkey serve --allow-private-webhooks`). Off by default: see [`refused_address`].
    pub allow_private: bool,
    /// The limit on one attempt, from name lookup to the last byte of the response: more than
    /// zero and at most [`WebhookOptions::MAX_TIMEOUT`].
    pub timeout: Duration,
    /// How often a running worker looks for due deliveries when no commit wakes it.
    pub poll_interval: Duration,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            allow_private: false,
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        }
    }
}

impl WebhookOptions {
    /// The longest [`timeout`](Self::timeout) accepted: five minutes. A receiver that takes
    /// longer is down as far as its sender can tell, and the HTTP client adds the timeout to
    /// the current instant, which a timeout near `u64::MAX` seconds overflows (a panic).
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

    /// What is wrong with `timeout`, if anything (named by the caller: a flag, an option).
    pub fn timeout_problem(timeout: Duration) -> Option<String> {
        (timeout.is_zero() || timeout > Self::MAX_TIMEOUT).then(|| {
            format!(
                "must be more than zero and at most {} seconds",
                Self::MAX_TIMEOUT.as_secs()
            )
        })
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(problem) = Self::timeout_problem(self.timeout) {
            problems.push(format!("timeout: {problem}"));
        }
        if self.poll_interval.is_zero() {
            problems.push("poll_interval: must be more than zero".to_owned());
        }
        problems
    }
}

/// The signing secret as stored. Written to the record (signing needs it in clear) but
/// redacted from `Debug`, and never part of [`Endpoint::output`].
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
struct SigningSecret(String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

/// The secret an endpoint had before its last rotation: it signs deliveries too (a second
/// signature in the same header, as Standard Webhooks allows) until `until`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PreviousSecret {
    secret: SigningSecret,
    #[serde(with = "time::serde::rfc3339")]
    until: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Endpoint {
    v: u32,
    id: String,
    store_id: StoreId,
    url: String,
    events: Vec<String>,
    active: bool,
    /// Why the engine disabled the endpoint (a `410 Gone`); cleared when it is enabled again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    secret: SigningSecret,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// The outbox position when the endpoint was created: it receives only later events.
    #[serde(default)]
    since_seq: u64,
    /// Absent in records written before secrets could be rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<PreviousSecret>,
}

impl Endpoint {
    const VERSION: u32 = 1;

    /// The endpoint as shown at `now` (a previous secret whose overlap has ended is not).
    fn output(&self, now: OffsetDateTime) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "active": self.active,
            "disabled_reason": self.disabled_reason,
            "created_at": self.created_at.format(&Rfc3339).ok(),
            "previous_secret_expires_at": self
                .previous
                .as_ref()
                .filter(|p| p.until > now)
                .and_then(|p| p.until.format(&Rfc3339).ok()),
        })
    }

    /// The `webhook-signature` header of a delivery sent at `timestamp`: the current secret's
    /// signature, then the previous secret's while it lasts (space-separated; a receiver
    /// accepts the delivery when any one of them verifies).
    fn signature(&self, event_id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
        let mut header = sign::signature(&self.secret.0, event_id, timestamp, body)?;
        if let Some(previous) = &self.previous
            && timestamp < previous.until.unix_timestamp()
        {
            header.push(' ');
            header.push_str(&sign::signature(
                &previous.secret.0,
                event_id,
                timestamp,
                body,
            )?);
        }
        Ok(header)
    }
}

/// A store's endpoints, in id order.
fn load_endpoints(tx: &WriteTransaction, store_id: &str) -> Result<Vec<Endpoint>> {
    let table = tx.open_table(WEBHOOKS)?;
    let mut endpoints = Vec::new();
    for item in table.range((store_id, "")..(store_id, "~"))? {
        let (_, value) = item?;
        endpoints.push(storage::decode(
            value.value(),
            Endpoint::VERSION,
            "webhook",
        )?);
    }
    Ok(endpoints)
}

fn load_endpoint<T>(table: &T, store_id: &str, webhook_id: &str) -> Result<Endpoint>
where
    T: ReadableTable<(&'static str, &'static str), &'static [u8]>,
{
    let bytes = table
        .get((store_id, webhook_id))?
        .ok_or_else(|| Error::not_found("webhook", webhook_id))?;
    storage::decode(bytes.value(), Endpoint::VERSION, "webhook")
}

/// An `http`/`https` URL with a host, no credentials, no fragment; normalised.
fn url(value: &Value) -> Result<url::Url, String> {
    guard::parse_url(&string(value)?)
}

fn events(value: &Value) -> Result<Vec<String>, String> {
    let list = string_list(value)?;
    if list.is_empty() {
        return Err(format!("must list at least one of {}", EVENTS.join(", ")));
    }
    let unknown: Vec<&String> = list
        .iter()
        .filter(|e| !EVENTS.contains(&e.as_str()))
        .collect();
    if !unknown.is_empty() {
        let names: Vec<&str> = unknown.iter().map(|e| e.as_str()).collect();
        return Err(format!(
            "unknown {} (expected {})",
            names.join(", "),
            EVENTS.join(", ")
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for event in list {
        if !out.contains(&event) {
            out.push(event);
        }
    }
    Ok(out)
}

fn new_secret() -> Result<Secret> {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes)?;
    Ok(Secret::new(format!(
        "{}{}",
        sign::SECRET_PREFIX,
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )))
}

impl Inner {
    /// Whether a registration may use this URL: its host as written, and every address it
    /// resolves to now. A name that does not resolve yet is accepted (dispatch checks again).
    fn check_target(&self, url: &url::Url) -> Result<(), String> {
        if self.webhooks.options.allow_private {
            return Ok(());
        }
        let advice = "(internal targets need the server started with --allow-private-webhooks)";
        if let Some(why) = guard::refused_host(url) {
            return Err(format!("refused: {why} {advice}"));
        }
        if let Some(Host::Domain(_)) = url.host() {
            match guard::resolve(url, false, REGISTRATION_LOOKUP) {
                Err(guard::Blocked::Refused(why)) => {
                    return Err(format!("refused: {why} {advice}"));
                }
                Err(guard::Blocked::Unresolved(_)) | Ok(_) => {}
            }
        }
        Ok(())
    }
}

impl Engine {
    /// Registers an endpoint `{url, events, active?}`; the result carries `secret`, once.
    ///
    /// Unless the engine allows private targets, a URL whose host is, or now resolves to, an
    /// internal address is refused (see [`refused_address`]). This may wait briefly for a name
    /// lookup, so call it off any event loop.
    pub fn create_webhook(&self, store_id: &str, actor: &Actor, input: &Value) -> Result<Value> {
        let inner = self.inner();
        let mut f = Fields::new(input, "webhook")?;
        let url = f.required("url", url);
        let events = f.required("events", events);
        let active = f.optional("active", boolean);
        let mut problems = f.finish();
        if let Some(url) = &url
            && let Err(why) = inner.check_target(url)
        {
            problems.push(format!("url: {why}"));
        }
        problems.finish()?;
        let (Some(url), Some(events)) = (url, events) else {
            return Err(Error::invalid(vec!["url and events are required".into()]));
        };
        let _writer = inner.writer.lock();
        let tx = storage::write(&inner.db)?;
        let store = tx.store(store_id)?;
        let sid = store.id.as_str();
        if load_endpoints(&tx, sid)?.len() >= MAX_WEBHOOKS {
            return Err(Error::Conflict(format!(
                "a store has at most {MAX_WEBHOOKS} webhook endpoints; delete one first"
            )));
        }
        let secret = new_secret()?;
        let endpoint = Endpoint {
            v: Endpoint::VERSION,
            id: format!(
                "wh_{}",
                crate::secret::random_chars(b"0123456789abcdefghijklmnopqrstuvwxyz", 16)?
            ),
            store_id: store.id,
            url: url.to_string(),
            events,
            active: active.unwrap_or(true),
            disabled_reason: None,
            secret: SigningSecret(secret.expose().to_owned()),
            created_at: inner.clock.now(),
            since_seq: crate::entities::outbox_position(&tx)?,
            previous: None,
        };
        tx.open_table(WEBHOOKS)?.insert(
            (sid, endpoint.id.as_str()),
            storage::encode(&endpoint)?.as_slice(),
        )?;
        let subject = Subject::Webhook(store.id, &endpoint.id);
        let action = AuditAction::WebhookCreated;
        append_audit(&tx, subject, action, actor, Vec::new(), endpoint.created_at)?;
        tx.commit()?;
        let mut out = endpoint.output(endpoint.created_at);
        out["secret"] = Value::String(secret.expose().to_owned());
        Ok(out)
    }

    /// The store's endpoints (without secrets), oldest first.
    pub fn list_webhooks(&self, store_id: &str) -> Result<Vec<Value>> {
        let tx = storage::read(&self.inner().db)?;
        let store = tx.store(store_id)?;
        let sid = store.id.as_str();
        let table = tx.open_table(WEBHOOKS)?;
        let mut endpoints = Vec::new();
        for item in table.range((sid, "")..(sid, "~"))? {
            let (_, value) = item?;
            endpoints.push(storage::decode::<Endpoint>(
                value.value(),
                Endpoint::VERSION,
                "webhook",
            )?);
        }
        endpoints.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let now = self.inner().clock.now();
        Ok(endpoints.iter().map(|e| e.output(now)).collect())
    }

    /// One endpoint (without its secret).
    pub fn get_webhook(&self, store_id: &str, webhook_id: &str) -> Result<Value> {
        let tx = storage::read(&self.inner().db)?;
        let store = tx.store(store_id)?;
        let table = tx.open_table(WEBHOOKS)?;
        let now = self.inner().clock.now();
        Ok(load_endpoint(&table, store.id.as_str(), webhook_id)?.output(now))
    }

    /// Changes an endpoint's `url`, `events` or `active`. Enabling clears `disabled_reason`.
    pub fn update_webhook(
        &self,
        store_id: &str,
        actor: &Actor,
        webhook_id: &str,
        input: &Value,
    ) -> Result<Value> {
        let inner = self.inner();
        let mut f = Fields::new(input, "webhook")?;
        let url = f.optional("url", url);
        let events = f.optional("events", events);
        let active = f.optional("active", boolean);
        let mut problems = f.finish();
        if let Some(url) = &url
            && let Err(why) = inner.check_target(url)
        {
            problems.push(format!("url: {why}"));
        }
        problems.finish()?;
        let (shown, ()) = self.change_endpoint(store_id, actor, webhook_id, |endpoint, _| {
            let mut changes = Vec::new();
            if let Some(url) = url.map(|url| url.to_string())
                && url != endpoint.url
            {
                endpoint.url = url;
                changes.push("url".to_owned());
            }
            if let Some(events) = events
                && events != endpoint.events
            {
                endpoint.events = events;
                changes.push("events".to_owned());
            }
            if let Some(active) = active {
                if active != endpoint.active {
                    changes.push("active".to_owned());
                }
                endpoint.active = active;
                if active {
                    endpoint.disabled_reason = None;
                }
            }
            // As for keys and stores, a patch that changes nothing leaves no event.
            let event = (!changes.is_empty()).then_some((AuditAction::WebhookUpdated, changes));
            Ok((event, ()))
        })?;
        Ok(shown)
    }

    /// Changes one endpoint in one commit: `change` edits it (given the time) and names the
    /// audit event to record, if any. A rotated-out secret whose overlap has ended is dropped
    /// on the way (it signs nothing). Answers the endpoint as now shown, and what `change`
    /// returned.
    fn change_endpoint<T>(
        &self,
        store_id: &str,
        actor: &Actor,
        webhook_id: &str,
        change: impl FnOnce(
            &mut Endpoint,
            OffsetDateTime,
        ) -> Result<(Option<(AuditAction, Vec<String>)>, T)>,
    ) -> Result<(Value, T)> {
        let inner = self.inner();
        let _writer = inner.writer.lock();
        let tx = storage::write(&inner.db)?;
        let store = tx.store(store_id)?;
        let key = (store.id.as_str(), webhook_id);
        let mut endpoint = load_endpoint(&tx.open_table(WEBHOOKS)?, key.0, webhook_id)?;
        let now = inner.clock.now();
        if endpoint.previous.as_ref().is_some_and(|p| p.until <= now) {
            endpoint.previous = None;
        }
        let (event, answer) = change(&mut endpoint, now)?;
        tx.open_table(WEBHOOKS)?
            .insert(key, storage::encode(&endpoint)?.as_slice())?;
        if let Some((action, changes)) = event {
            let subject = Subject::Webhook(store.id, webhook_id);
            append_audit(&tx, subject, action, actor, changes, now)?;
        }
        tx.commit()?;
        Ok((endpoint.output(now), answer))
    }

    /// Deletes an endpoint with its deliveries (pending ones are not sent).
    pub fn delete_webhook(&self, store_id: &str, actor: &Actor, webhook_id: &str) -> Result<()> {
        let inner = self.inner();
        let _writer = inner.writer.lock();
        let tx = storage::write(&inner.db)?;
        let store = tx.store(store_id)?;
        let removed = tx
            .open_table(WEBHOOKS)?
            .remove((store.id.as_str(), webhook_id))?
            .is_some();
        if !removed {
            return Err(Error::not_found("webhook", webhook_id));
        }
        Inner::forget_deliveries(&tx, store.id.as_str(), webhook_id)?;
        let subject = Subject::Webhook(store.id, webhook_id);
        let (action, now) = (AuditAction::WebhookDeleted, inner.clock.now());
        append_audit(&tx, subject, action, actor, Vec::new(), now)?;
        tx.commit()?;
        Ok(())
    }

    /// Replaces an endpoint's signing secret; the answer is the endpoint with the new `secret`,
    /// shown this once. `{overlap_seconds?}` (0 to [`MAX_SECRET_OVERLAP_SECONDS`], default
    /// [`DEFAULT_SECRET_OVERLAP_SECONDS`]): for that long, deliveries carry a signature by the
    /// old secret as well, so a receiver keeps verifying while it switches over. A rotation
    /// during an overlap ends the earlier one: only the secret being replaced keeps signing.
    pub fn rotate_webhook_secret(
        &self,
        store_id: &str,
        actor: &Actor,
        webhook_id: &str,
        input: &Value,
    ) -> Result<Value> {
        let mut f = Fields::new(input, "rotation")?;
        let overlap = f.optional("overlap_seconds", |v| {
            overlap_seconds(v, time::Duration::seconds(MAX_SECRET_OVERLAP_SECONDS))
        });
        f.finish().finish()?;
        let overlap = overlap.unwrap_or(time::Duration::seconds(DEFAULT_SECRET_OVERLAP_SECONDS));
        let (mut shown, secret) =
            self.change_endpoint(store_id, actor, webhook_id, |endpoint, now| {
                let secret = new_secret()?;
                let old = std::mem::replace(
                    &mut endpoint.secret,
                    SigningSecret(secret.expose().to_owned()),
                );
                endpoint.previous = (overlap > time::Duration::ZERO).then(|| PreviousSecret {
                    secret: old,
                    until: now + overlap,
                });
                Ok((
                    Some((AuditAction::WebhookSecretRotated, Vec::new())),
                    secret,
                ))
            })?;
        shown["secret"] = Value::String(secret.expose().to_owned());
        Ok(shown)
    }

    /// An endpoint's deliveries with every attempt, newest first: `limit` of them (default
    /// [`DEFAULT_DELIVERIES`], at most [`MAX_DELIVERIES`]).
    pub fn list_webhook_deliveries(
        &self,
        store_id: &str,
        webhook_id: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Value>> {
        let limit = limit.unwrap_or(DEFAULT_DELIVERIES);
        if !(1..=MAX_DELIVERIES).contains(&limit) {
            return Err(Error::invalid(vec![format!(
                "limit: must be between 1 and {MAX_DELIVERIES}"
            )]));
        }
        let sid = self.get_store(store_id)?.id;
        self.get_webhook(sid.as_str(), webhook_id)?;
        self.inner()
            .list_deliveries(sid.as_str(), webhook_id, limit)
    }

    /// Queues a finished delivery (`whd_…`) for one more attempt now: a "resend" for a
    /// receiver that was down past the retry schedule. One attempt, no retries after it; the
    /// answer is the delivery, pending. Refused (409) while it is still pending or while the
    /// endpoint is disabled.
    pub fn retry_webhook_delivery(
        &self,
        store_id: &str,
        webhook_id: &str,
        delivery_id: &str,
    ) -> Result<Value> {
        let store = self.get_store(store_id)?;
        self.inner()
            .redeliver(store.id.as_str(), webhook_id, delivery_id)
    }

    /// Sends a sample `webhook.test` event to the endpoint now, through the same guard and
    /// signature as real deliveries, and records it with its deliveries. Returns
    /// `{status_code, body, error, duration_ms, delivery_id}`; an unreachable endpoint is an
    /// `error` in the result, not an `Err`. Blocks for up to the webhook timeout.
    pub fn test_webhook(&self, store_id: &str, webhook_id: &str) -> Result<Value> {
        let endpoint = {
            let tx = storage::read(&self.inner().db)?;
            let store = tx.store(store_id)?;
            load_endpoint(&tx.open_table(WEBHOOKS)?, store.id.as_str(), webhook_id)?
        };
        self.inner().send_test(&endpoint)
    }

    /// Runs one delivery pass now on the calling thread: queues deliveries for new outbox
    /// events, sends every due one, records the outcomes. For embedders that schedule their
    /// own work, and for tests with a fake clock; [`Engine::start_webhook_worker`] runs passes
    /// in the background.
    pub fn deliver_webhooks(&self) -> Result<DeliveryPass> {
        self.inner().deliver_webhooks()
    }

    /// Starts the background delivery worker (once; later calls do nothing). It runs a pass
    /// when a commit writes outbox events, when a retry falls due, and at least every
    /// `poll_interval`; dropping the engine stops it after its current pass.
    pub fn start_webhook_worker(&self) -> Result<()> {
        self.inner_arc().start_webhook_worker()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Actor;
    use crate::stores::NewStore;

    #[test]
    fn endpoints_validate_and_never_show_their_secret_again() {
        let engine = Engine::memory().unwrap();
        let (store, _) = engine
            .create_store(&Actor::admin("t"), NewStore::named("Hooks"))
            .unwrap();
        let sid = store.id.as_str();
        let err = engine
            .create_webhook(
                sid,
                &Actor::admin("t"),
                &json!({"url": "ftp://x", "events": ["order.paid", "order.created"], "x": 1}),
            )
            .unwrap_err();
        let problems = err.problems().join("\n");
        for needle in [
            "url: must be an http",
            "events: unknown order.paid",
            "x: unknown field",
        ] {
            assert!(problems.contains(needle), "{needle}: {problems}");
        }
        for bad in [
            "https://",
            "https://user:pw@example.com/x",
            "https://example.com/a b",
            "http://:80/",
        ] {
            assert!(
                engine
                    .create_webhook(
                        sid,
                        &Actor::admin("t"),
                        &json!({"url": bad, "events": ["order.created"]})
                    )
                    .is_err(),
                "{bad}"
            );
        }
        let created = engine
            .create_webhook(sid, &Actor::admin("t"), &json!({"url": "https://example.com/hooks", "events": ["order.created", "order.created"]}))
            .unwrap();
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(created["events"], json!(["order.created"]));
        let id = created["id"].as_str().unwrap();
        let listed = engine.list_webhooks(sid).unwrap();
        let updated = engine
            .update_webhook(sid, &Actor::admin("t"), id, &json!({"active": false}))
            .unwrap();
        assert_eq!(updated["active"], false);
        for text in [
            json!(listed).to_string(),
            updated.to_string(),
            format!("{engine:?}"),
        ] {
            assert!(
                !text.contains(&secret) && !text.contains("whsec_"),
                "{text}"
            );
        }
        engine.delete_webhook(sid, &Actor::admin("t"), id).unwrap();
        assert_eq!(
            engine
                .delete_webhook(sid, &Actor::admin("t"), id)
                .unwrap_err()
                .code(),
            "NOT_FOUND"
        );
        assert!(engine.list_webhooks(sid).unwrap().is_empty());

        // Every stored change is in the audit trail, with who made it; refused ones are not,
        // nor is an update that changes nothing.
        let ops = Actor::admin("ops");
        let again = engine
            .create_webhook(
                sid,
                &ops,
                &json!({"url": "https://example.com/b", "events": ["order.created"]}),
            )
            .unwrap();
        let again = again["id"].as_str().unwrap();
        let patch = json!({"url": "https://example.com/c", "events": ["order.created"]});
        engine.update_webhook(sid, &ops, again, &patch).unwrap();
        engine.update_webhook(sid, &ops, again, &patch).unwrap();
        let events = engine.audit(sid, 100).unwrap();
        let webhook_events: Vec<_> = events
            .iter()
            .filter(|e| e.webhook_id.is_some())
            .map(|e| {
                let who = match &e.actor {
                    Actor::Admin(who) | Actor::Key(who) => who.as_str(),
                };
                (
                    e.action,
                    e.webhook_id.as_deref().unwrap(),
                    who,
                    e.changes.join(","),
                )
            })
            .collect();
        use AuditAction::*;
        assert_eq!(
            webhook_events,
            [
                (WebhookUpdated, again, "ops", "url".to_owned()),
                (WebhookCreated, again, "ops", String::new()),
                (WebhookDeleted, id, "t", String::new()),
                (WebhookUpdated, id, "t", "active".to_owned()),
                (WebhookCreated, id, "t", String::new()),
            ]
        );
        assert!(
            events
                .iter()
                .all(|e| e.key_id.is_none() || e.webhook_id.is_none())
        );
        let shown = serde_json::to_value(&events[0]).unwrap();
        assert_eq!(
            (&shown["action"], &shown["webhook_id"], &shown["key_id"]),
            (&json!("webhook_updated"), &json!(again), &Value::Null)
        );
        // A key's event carries no webhook_id field at all.
        let key_event = events.iter().find(|e| e.key_id.is_some()).unwrap();
        assert!(
            serde_json::to_value(key_event)
                .unwrap()
                .get("webhook_id")
                .is_none()
        );
    }

    #[test]
    fn a_rotated_secret_signs_alongside_the_new_one_until_its_overlap_ends() {
        let engine = Engine::memory().unwrap();
        let ops = Actor::admin("ops");
        let (store, _) = engine
            .create_store(&ops, NewStore::named("Rotate"))
            .unwrap();
        let sid = store.id.as_str();
        let created = engine
            .create_webhook(
                sid,
                &ops,
                &json!({"url": "https://example.com/h", "events": ["order.created"]}),
            )
            .unwrap();
        let (id, old) = (
            created["id"].as_str().unwrap(),
            created["secret"].as_str().unwrap(),
        );
        assert_eq!(created["previous_secret_expires_at"], Value::Null);

        let bad = engine
            .rotate_webhook_secret(sid, &ops, id, &json!({"overlap_seconds": -1, "x": 1}))
            .unwrap_err();
        assert_eq!(bad.problems().len(), 2, "{bad}");
        let rotated = engine
            .rotate_webhook_secret(sid, &ops, id, &json!({"overlap_seconds": 3600}))
            .unwrap();
        let new = rotated["secret"].as_str().unwrap();
        assert!(new.starts_with("whsec_") && new != old);
        assert!(rotated["previous_secret_expires_at"].is_string());
        // Neither secret is readable afterwards.
        for text in [
            engine.get_webhook(sid, id).unwrap().to_string(),
            json!(engine.list_webhooks(sid).unwrap()).to_string(),
        ] {
            assert!(!text.contains(old) && !text.contains(new), "{text}");
        }

        let endpoint = {
            let tx = storage::read(&engine.inner().db).unwrap();
            load_endpoint(&tx.open_table(WEBHOOKS).unwrap(), sid, id).unwrap()
        };
        let until = endpoint.previous.as_ref().unwrap().until.unix_timestamp();
        let body = br#"{"type":"order.created"}"#;
        let during = endpoint.signature("msg_1", until - 1, body).unwrap();
        let expected = [
            sign::signature(new, "msg_1", until - 1, body).unwrap(),
            sign::signature(old, "msg_1", until - 1, body).unwrap(),
        ];
        assert_eq!(during, expected.join(" "));
        let after = endpoint.signature("msg_1", until, body).unwrap();
        assert_eq!(after, sign::signature(new, "msg_1", until, body).unwrap());

        // Overlap 0: the old secret stops at once; the rotation is audited.
        let at_once = engine
            .rotate_webhook_secret(sid, &ops, id, &json!({"overlap_seconds": 0}))
            .unwrap();
        assert_eq!(at_once["previous_secret_expires_at"], Value::Null);
        let trail = engine.audit(sid, 2).unwrap();
        assert!(
            trail
                .iter()
                .all(|e| e.action == AuditAction::WebhookSecretRotated
                    && e.webhook_id.as_deref() == Some(id)
                    && e.actor == ops)
        );
        assert_eq!(
            engine
                .rotate_webhook_secret(sid, &ops, "wh_missing", &json!({}))
                .unwrap_err()
                .code(),
            "NOT_FOUND"
        );
    }
}
