//! Webhook endpoints per store (SPEC §8): registration, listing, enabling and deleting.
//! Delivery (signing, retries, the SSRF check at dispatch) builds on these records.
//!
//! The signing secret (`whsec_…`, Standard Webhooks) is returned by the create call only. It is
//! stored as is, because signing each delivery needs it; no read, list or error returns it.

use base64::Engine as _;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::engine::{Engine, ReadStores};
use crate::error::{Error, Problems, Result};
use crate::ids::StoreId;
use crate::input::{Fields, boolean, string, string_list};
use crate::secret::{Secret, fill_random};
use crate::storage;

/// (store, webhook id) → endpoint.
pub(crate) const WEBHOOKS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("webhooks");

/// The events an endpoint can subscribe to.
pub const EVENTS: [&str; 5] = [
    "order.created",
    "subscription.created",
    "api_key.created",
    "api_key.regenerated",
    "api_key.revoked",
];

/// Endpoints a store may register.
pub const MAX_WEBHOOKS: usize = 20;
const MAX_URL: usize = 2_048;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Endpoint {
    v: u32,
    id: String,
    store_id: StoreId,
    url: String,
    events: Vec<String>,
    active: bool,
    /// Never serialized into any output (see [`Endpoint::output`]).
    secret: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl Endpoint {
    fn output(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "active": self.active,
            "created_at": self.created_at.format(&Rfc3339).ok(),
        })
    }
}

/// An `http`/`https` URL with a host, no credentials, no fragment.
fn url(value: &Value) -> Result<String, String> {
    let text = string(value)?;
    let text = text.trim();
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or("must be an http:// or https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if text.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    if host.is_empty() || host.starts_with(':') {
        return Err("must name a host".into());
    }
    if host.contains('@') {
        return Err("must not carry credentials".into());
    }
    if text.contains('#') || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain a fragment, spaces or control characters".into());
    }
    Ok(text.to_owned())
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
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )))
}

impl Engine {
    /// Registers an endpoint `{url, events, active?}`; the result carries `secret`, once.
    pub fn create_webhook(&self, store_id: &str, input: &Value) -> Result<Value> {
        let mut f = Fields::new(input, "webhook")?;
        let url = f.required("url", url);
        let events = f.required("events", events);
        let active = f.optional("active", boolean);
        f.finish().finish()?;
        let (Some(url), Some(events)) = (url, events) else {
            return Err(Error::invalid(vec!["url and events are required".into()]));
        };
        let inner = self.inner();
        let _writer = inner.writer.lock();
        let tx = storage::write(&inner.db)?;
        let store = tx.store(store_id)?;
        let sid = store.id.as_str();
        let count = tx
            .open_table(WEBHOOKS)?
            .range((sid, "")..(sid, "~"))?
            .count();
        if count >= MAX_WEBHOOKS {
            return Err(Error::Conflict(format!(
                "a store has at most {MAX_WEBHOOKS} webhook endpoints; delete one first"
            )));
        }
        let secret = new_secret()?;
        let endpoint = Endpoint {
            v: 1,
            id: format!(
                "wh_{}",
                crate::secret::random_chars(b"0123456789abcdefghijklmnopqrstuvwxyz", 16)?
            ),
            store_id: store.id,
            url,
            events,
            active: active.unwrap_or(true),
            secret: secret.expose().to_owned(),
            created_at: inner.clock.now(),
        };
        tx.open_table(WEBHOOKS)?.insert(
            (sid, endpoint.id.as_str()),
            storage::encode(&endpoint)?.as_slice(),
        )?;
        tx.commit()?;
        let mut out = endpoint.output();
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
            endpoints.push(storage::decode::<Endpoint>(value.value(), 1, "webhook")?);
        }
        endpoints.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(endpoints.iter().map(Endpoint::output).collect())
    }

    /// Changes an endpoint's `url`, `events` or `active`.
    pub fn update_webhook(&self, store_id: &str, webhook_id: &str, input: &Value) -> Result<Value> {
        let mut f = Fields::new(input, "webhook")?;
        let url = f.optional("url", url);
        let events = f.optional("events", events);
        let active = f.optional("active", boolean);
        let problems: Problems = f.finish();
        problems.finish()?;
        let inner = self.inner();
        let _writer = inner.writer.lock();
        let tx = storage::write(&inner.db)?;
        let store = tx.store(store_id)?;
        let key = (store.id.as_str(), webhook_id);
        let mut endpoint: Endpoint = {
            let table = tx.open_table(WEBHOOKS)?;
            let bytes = table
                .get(key)?
                .ok_or_else(|| Error::not_found("webhook", webhook_id))?;
            storage::decode(bytes.value(), 1, "webhook")?
        };
        if let Some(url) = url {
            endpoint.url = url;
        }
        if let Some(events) = events {
            endpoint.events = events;
        }
        if let Some(active) = active {
            endpoint.active = active;
        }
        tx.open_table(WEBHOOKS)?
            .insert(key, storage::encode(&endpoint)?.as_slice())?;
        tx.commit()?;
        Ok(endpoint.output())
    }

    pub fn delete_webhook(&self, store_id: &str, webhook_id: &str) -> Result<()> {
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
        tx.commit()?;
        Ok(())
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
                    .create_webhook(sid, &json!({"url": bad, "events": ["order.created"]}))
                    .is_err(),
                "{bad}"
            );
        }
        let created = engine
            .create_webhook(sid, &json!({"url": "https://example.com/hooks", "events": ["order.created", "order.created"]}))
            .unwrap();
        let secret = created["secret"].as_str().unwrap().to_owned();
        assert!(secret.starts_with("whsec_"));
        assert_eq!(created["events"], json!(["order.created"]));
        let id = created["id"].as_str().unwrap();
        let listed = engine.list_webhooks(sid).unwrap();
        let updated = engine
            .update_webhook(sid, id, &json!({"active": false}))
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
        engine.delete_webhook(sid, id).unwrap();
        assert_eq!(
            engine.delete_webhook(sid, id).unwrap_err().code(),
            "NOT_FOUND"
        );
        assert!(engine.list_webhooks(sid).unwrap().is_empty());
    }
}
