//! The engine's management calls as named operations on JSON arguments, for embedders that
//! speak JSON across a language boundary (the Node binding): one routing and argument-checking
//! path, so each binding only translates values and errors.
//!
//! Every operation takes a JSON object of named arguments; a missing, mistyped or unknown
//! argument is a `VALIDATION` error naming each problem, and nothing is written.

use serde_json::{Map, Value, json};

use crate::Engine;
use crate::audit::Actor;
use crate::entities::Scope;
use crate::error::{Error, Problems, Result};
use crate::ids::StoreId;
use crate::keys::{KeyPatch, NewKey};
use crate::logs::LogQuery;
use crate::permissions::Area;
use crate::stores::{NewStore, StorePatch};
use crate::usage::UsageQuery;

/// A management operation. Which arguments each takes is listed by [`Op::arguments`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    CreateStore,
    GetStore,
    ListStores,
    UpdateStore,
    CreateKey,
    GetKey,
    ListKeys,
    UpdateKey,
    RegenerateKey,
    RevokeKey,
    Audit,
    CreateEntity,
    GetEntity,
    ListEntities,
    UpdateEntity,
    DeleteEntity,
    Logs,
    Flush,
    CreateWebhook,
    ListWebhooks,
    GetWebhook,
    UpdateWebhook,
    DeleteWebhook,
    WebhookDeliveries,
    TestWebhook,
    DeliverWebhooks,
    StartWebhookWorker,
    CreatePortalSession,
    PortalCustomer,
    PortalList,
    RotateWebhookSecret,
    Usage,
    RetryWebhookDelivery,
    PortalSessions,
    EndPortalSession,
    EndCustomerPortalSessions,
    CheckLeaks,
}

const ALL: [Op; 37] = [
    Op::CreateStore,
    Op::GetStore,
    Op::ListStores,
    Op::UpdateStore,
    Op::CreateKey,
    Op::GetKey,
    Op::ListKeys,
    Op::UpdateKey,
    Op::RegenerateKey,
    Op::RevokeKey,
    Op::Audit,
    Op::CreateEntity,
    Op::GetEntity,
    Op::ListEntities,
    Op::UpdateEntity,
    Op::DeleteEntity,
    Op::Logs,
    Op::Flush,
    Op::CreateWebhook,
    Op::ListWebhooks,
    Op::GetWebhook,
    Op::UpdateWebhook,
    Op::DeleteWebhook,
    Op::WebhookDeliveries,
    Op::TestWebhook,
    Op::DeliverWebhooks,
    Op::StartWebhookWorker,
    Op::CreatePortalSession,
    Op::PortalCustomer,
    Op::PortalList,
    Op::RotateWebhookSecret,
    Op::Usage,
    Op::RetryWebhookDelivery,
    Op::PortalSessions,
    Op::EndPortalSession,
    Op::EndCustomerPortalSessions,
    Op::CheckLeaks,
];

impl Op {
    /// The operation's name in camelCase (`createStore`), as the Node binding calls it.
    pub fn name(self) -> &'static str {
        match self {
            Op::CreateStore => "createStore",
            Op::GetStore => "getStore",
            Op::ListStores => "listStores",
            Op::UpdateStore => "updateStore",
            Op::CreateKey => "createKey",
            Op::GetKey => "getKey",
            Op::ListKeys => "listKeys",
            Op::UpdateKey => "updateKey",
            Op::RegenerateKey => "regenerateKey",
            Op::RevokeKey => "revokeKey",
            Op::Audit => "audit",
            Op::CreateEntity => "createEntity",
            Op::GetEntity => "getEntity",
            Op::ListEntities => "listEntities",
            Op::UpdateEntity => "updateEntity",
            Op::DeleteEntity => "deleteEntity",
            Op::Logs => "logs",
            Op::Flush => "flush",
            Op::CreateWebhook => "createWebhook",
            Op::ListWebhooks => "listWebhooks",
            Op::GetWebhook => "getWebhook",
            Op::UpdateWebhook => "updateWebhook",
            Op::DeleteWebhook => "deleteWebhook",
            Op::WebhookDeliveries => "webhookDeliveries",
            Op::TestWebhook => "testWebhook",
            Op::DeliverWebhooks => "deliverWebhooks",
            Op::StartWebhookWorker => "startWebhookWorker",
            Op::CreatePortalSession => "createPortalSession",
            Op::PortalCustomer => "portalCustomer",
            Op::PortalList => "portalList",
            Op::RotateWebhookSecret => "rotateWebhookSecret",
            Op::Usage => "usage",
            Op::RetryWebhookDelivery => "retryWebhookDelivery",
            Op::PortalSessions => "portalSessions",
            Op::EndPortalSession => "endPortalSession",
            Op::EndCustomerPortalSessions => "endCustomerPortalSessions",
            Op::CheckLeaks => "checkLeaks",
        }
    }

    pub fn parse(name: &str) -> Option<Op> {
        ALL.into_iter().find(|op| op.name() == name)
    }

    /// The named arguments the operation reads (all others are refused).
    pub fn arguments(self) -> &'static [&'static str] {
        match self {
            Op::CreateStore => &["actor", "input"],
            Op::GetStore | Op::ListKeys | Op::ListWebhooks | Op::PortalSessions => &["storeId"],
            Op::ListStores | Op::Flush | Op::DeliverWebhooks | Op::StartWebhookWorker => &[],
            Op::UpdateStore => &["storeId", "actor", "patch"],
            Op::CreateKey => &["storeId", "actor", "input"],
            Op::GetKey => &["storeId", "keyId"],
            Op::UpdateKey => &["storeId", "actor", "keyId", "patch"],
            Op::RegenerateKey => &["storeId", "actor", "keyId", "input"],
            Op::RevokeKey => &["storeId", "actor", "keyId"],
            Op::Audit => &["storeId", "limit"],
            Op::CreateEntity => &["storeId", "environment", "area", "input", "idempotencyKey"],
            Op::GetEntity | Op::DeleteEntity => &["storeId", "environment", "area", "id"],
            Op::ListEntities => &["storeId", "environment", "area", "limit", "cursor"],
            Op::UpdateEntity => &["storeId", "environment", "area", "id", "input"],
            Op::Logs | Op::Usage => &["storeId", "query"],
            Op::CreateWebhook => &["storeId", "actor", "input"],
            Op::GetWebhook | Op::TestWebhook => &["storeId", "webhookId"],
            Op::DeleteWebhook => &["storeId", "actor", "webhookId"],
            Op::UpdateWebhook => &["storeId", "actor", "webhookId", "patch"],
            Op::RotateWebhookSecret => &["storeId", "actor", "webhookId", "input"],
            Op::RetryWebhookDelivery => &["storeId", "webhookId", "deliveryId"],
            Op::WebhookDeliveries => &["storeId", "webhookId", "limit"],
            Op::CreatePortalSession => &["storeId", "environment", "input"],
            Op::PortalCustomer => &["token"],
            Op::PortalList => &["token", "area", "limit", "cursor"],
            Op::EndPortalSession => &["storeId", "actor", "sessionId"],
            Op::EndCustomerPortalSessions => &["storeId", "actor", "customerId"],
            Op::CheckLeaks => &["text", "stop", "actor"],
        }
    }

    /// Whether the operation writes to the database (bindings run those off their main
    /// thread; reads are cheap enough to answer in place but may run off it too).
    pub fn writes(self) -> bool {
        !matches!(
            self,
            Op::GetStore
                | Op::ListStores
                | Op::GetKey
                | Op::ListKeys
                | Op::Audit
                | Op::GetEntity
                | Op::ListEntities
                | Op::ListWebhooks
                | Op::GetWebhook
                | Op::WebhookDeliveries
                | Op::StartWebhookWorker
                | Op::PortalCustomer
                | Op::PortalList
                | Op::PortalSessions
                | Op::Usage
        )
    }
}

/// Named arguments being read; every problem is collected before anything runs.
struct Args<'a> {
    map: &'a Map<String, Value>,
    problems: Problems,
}

impl<'a> Args<'a> {
    fn new(op: Op, args: &'a Value) -> Result<Self> {
        let Value::Object(map) = args else {
            return Err(Error::invalid(vec![format!(
                "{}: arguments must be an object",
                op.name()
            )]));
        };
        let mut problems = Problems::new();
        for name in map.keys() {
            if !op.arguments().contains(&name.as_str()) {
                problems.push(format!("{name}: unknown argument of {}", op.name()));
            }
        }
        Ok(Self { map, problems })
    }

    fn value(&mut self, name: &str) -> &'a Value {
        static NULL: Value = Value::Null;
        self.map.get(name).unwrap_or(&NULL)
    }

    fn text(&mut self, name: &str) -> &'a str {
        match self.value(name) {
            Value::String(text) => text,
            Value::Null => {
                self.problems.push(format!("{name}: is required"));
                ""
            }
            _ => {
                self.problems.push(format!("{name}: expected a string"));
                ""
            }
        }
    }

    fn optional_text(&mut self, name: &str) -> Option<&'a str> {
        match self.value(name) {
            Value::Null => None,
            _ => Some(self.text(name)),
        }
    }

    /// An optional boolean, false when absent.
    fn flag(&mut self, name: &str) -> bool {
        match self.value(name) {
            Value::Null => false,
            Value::Bool(flag) => *flag,
            _ => {
                self.problems
                    .push(format!("{name}: expected true or false"));
                false
            }
        }
    }

    fn count(&mut self, name: &str) -> Option<usize> {
        match self.value(name) {
            Value::Null => None,
            value => {
                let count = value.as_u64().and_then(|n| usize::try_from(n).ok());
                if count.is_none() {
                    self.problems
                        .push(format!("{name}: expected a whole number ≥ 0"));
                }
                count
            }
        }
    }

    fn object(&mut self, name: &str) -> &'a Value {
        static EMPTY: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| json!({}));
        match self.value(name) {
            Value::Null => &EMPTY,
            value => value,
        }
    }

    fn actor(&mut self) -> Actor {
        Actor::admin(self.optional_text("actor").unwrap_or("embedder"))
    }

    fn area(&mut self) -> Option<Area> {
        match self.value("area") {
            Value::String(text) => Area::parse(text).or_else(|| {
                self.problems.push(format!("area: unknown `{text}`"));
                None
            }),
            _ => {
                self.text("area");
                None
            }
        }
    }

    /// The scope of an entity operation; an id that cannot be a store's is not found.
    fn scope(&mut self) -> Result<Option<Scope>> {
        let store = self.text("storeId");
        let environment = self.optional_text("environment").unwrap_or("live");
        if store.is_empty() {
            return Ok(None);
        }
        match StoreId::parse(store) {
            Some(id) => Ok(Some(Scope::new(id, environment))),
            None => Err(Error::not_found("store", store)),
        }
    }

    fn finish(self) -> Result<()> {
        self.problems.finish()
    }
}

/// The store scope and area of an entity operation; both were checked (a missing one is a
/// problem already reported), so this only guards the invariant.
fn target(scope: Option<Scope>, area: Option<Area>) -> Result<(Scope, Area)> {
    scope
        .zip(area)
        .ok_or_else(|| Error::invalid(vec!["storeId and area: are required".to_owned()]))
}

/// Runs one operation; its JSON answer is what the server's management API answers with
/// (created keys carry their secret this once).
pub fn call(engine: &Engine, op: Op, args: &Value) -> Result<Value> {
    let mut a = Args::new(op, args)?;
    match op {
        Op::CreateStore => {
            let (actor, input) = (a.actor(), a.object("input"));
            a.finish()?;
            let (store, key) = engine.create_store(&actor, NewStore::from_json(input)?)?;
            Ok(json!({"store": store, "defaultKey": key.to_json()}))
        }
        Op::GetStore => {
            let store = a.text("storeId");
            a.finish()?;
            Ok(json!(engine.get_store(store)?))
        }
        Op::ListStores => {
            a.finish()?;
            Ok(json!(engine.list_stores()?))
        }
        Op::UpdateStore => {
            let (store, actor, patch) = (a.text("storeId"), a.actor(), a.object("patch"));
            a.finish()?;
            let patch = StorePatch::from_json(patch)?;
            Ok(json!(engine.update_store(store, &actor, patch)?))
        }
        Op::CreateKey => {
            let (store, actor, input) = (a.text("storeId"), a.actor(), a.object("input"));
            a.finish()?;
            let created = engine.create_key(store, &actor, NewKey::from_json(input)?)?;
            Ok(created.to_json())
        }
        Op::GetKey => {
            let (store, key) = (a.text("storeId"), a.text("keyId"));
            a.finish()?;
            Ok(json!(engine.get_key(store, key)?))
        }
        Op::ListKeys => {
            let store = a.text("storeId");
            a.finish()?;
            Ok(json!(engine.list_keys(store)?))
        }
        Op::UpdateKey => {
            let (store, actor, key) = (a.text("storeId"), a.actor(), a.text("keyId"));
            let patch = a.object("patch");
            a.finish()?;
            let patch = KeyPatch::from_json(patch)?;
            Ok(json!(engine.update_key(store, &actor, key, patch)?))
        }
        Op::RegenerateKey => {
            let (store, actor, key) = (a.text("storeId"), a.actor(), a.text("keyId"));
            let input = a.object("input");
            a.finish()?;
            Ok(engine
                .regenerate_key_from_json(store, &actor, key, input)?
                .to_json())
        }
        Op::RevokeKey => {
            let (store, actor, key) = (a.text("storeId"), a.actor(), a.text("keyId"));
            a.finish()?;
            engine.revoke_key(store, &actor, key)?;
            Ok(Value::Null)
        }
        Op::Audit => {
            let (store, limit) = (a.text("storeId"), a.count("limit"));
            a.finish()?;
            Ok(json!(engine.audit(store, limit.unwrap_or(100))?))
        }
        Op::CreateEntity => {
            let (scope, area, input) = (a.scope()?, a.area(), a.object("input"));
            let key = a.optional_text("idempotencyKey");
            a.finish()?;
            let (scope, area) = target(scope, area)?;
            // The entity and whether an earlier call with the key made it (the HTTP API's
            // `Idempotent-Replayed` header); the binding hands the entity back with the flag.
            let created = engine.create_entity_once(&scope, area, input, key)?;
            Ok(json!({"entity": created.value, "replayed": created.replayed}))
        }
        Op::GetEntity => {
            let (scope, area, id) = (a.scope()?, a.area(), a.text("id"));
            a.finish()?;
            let (scope, area) = target(scope, area)?;
            engine.get_entity(&scope, area, id)
        }
        Op::ListEntities => {
            let (scope, area) = (a.scope()?, a.area());
            let (limit, cursor) = (a.count("limit"), a.optional_text("cursor"));
            a.finish()?;
            let (scope, area) = target(scope, area)?;
            Ok(Value::from(
                engine.list_entities(&scope, area, limit, cursor)?,
            ))
        }
        Op::UpdateEntity => {
            let (scope, area, id) = (a.scope()?, a.area(), a.text("id"));
            let input = a.object("input");
            a.finish()?;
            let (scope, area) = target(scope, area)?;
            engine.update_entity(&scope, area, id, input)
        }
        Op::DeleteEntity => {
            let (scope, area, id) = (a.scope()?, a.area(), a.text("id"));
            a.finish()?;
            let (scope, area) = target(scope, area)?;
            engine.delete_entity(&scope, area, id)?;
            Ok(Value::Null)
        }
        Op::Logs => {
            let (store, query) = (a.text("storeId"), a.object("query"));
            a.finish()?;
            Ok(json!(engine.logs(store, &LogQuery::from_json(query)?)?))
        }
        Op::RetryWebhookDelivery => {
            let (store, webhook) = (a.text("storeId"), a.text("webhookId"));
            let delivery = a.text("deliveryId");
            a.finish()?;
            engine.retry_webhook_delivery(store, webhook, delivery)
        }
        Op::Usage => {
            let (store, query) = (a.text("storeId"), a.object("query"));
            a.finish()?;
            Ok(json!(engine.usage(store, &UsageQuery::from_json(query)?)?))
        }
        Op::Flush => {
            a.finish()?;
            engine.flush()?;
            Ok(Value::Null)
        }
        Op::CreateWebhook => {
            let (store, actor, input) = (a.text("storeId"), a.actor(), a.object("input"));
            a.finish()?;
            engine.create_webhook(store, &actor, input)
        }
        Op::ListWebhooks => {
            let store = a.text("storeId");
            a.finish()?;
            Ok(json!(engine.list_webhooks(store)?))
        }
        Op::GetWebhook => {
            let (store, webhook) = (a.text("storeId"), a.text("webhookId"));
            a.finish()?;
            engine.get_webhook(store, webhook)
        }
        Op::UpdateWebhook => {
            let (store, actor, webhook) = (a.text("storeId"), a.actor(), a.text("webhookId"));
            let patch = a.object("patch");
            a.finish()?;
            engine.update_webhook(store, &actor, webhook, patch)
        }
        Op::DeleteWebhook => {
            let (store, actor, webhook) = (a.text("storeId"), a.actor(), a.text("webhookId"));
            a.finish()?;
            engine.delete_webhook(store, &actor, webhook)?;
            Ok(Value::Null)
        }
        Op::WebhookDeliveries => {
            let (store, webhook) = (a.text("storeId"), a.text("webhookId"));
            let limit = a.count("limit");
            a.finish()?;
            Ok(json!(
                engine.list_webhook_deliveries(store, webhook, limit)?
            ))
        }
        Op::TestWebhook => {
            let (store, webhook) = (a.text("storeId"), a.text("webhookId"));
            a.finish()?;
            engine.test_webhook(store, webhook)
        }
        Op::DeliverWebhooks => {
            a.finish()?;
            let pass = engine.deliver_webhooks()?;
            Ok(json!({
                "queued": pass.queued,
                "attempted": pass.attempted,
                "nextDueMs": pass.next_due_ms,
            }))
        }
        Op::StartWebhookWorker => {
            a.finish()?;
            engine.start_webhook_worker()?;
            Ok(Value::Null)
        }
        Op::RotateWebhookSecret => {
            let (store, actor, webhook) = (a.text("storeId"), a.actor(), a.text("webhookId"));
            let input = a.object("input");
            a.finish()?;
            engine.rotate_webhook_secret(store, &actor, webhook, input)
        }
        Op::CreatePortalSession => {
            let (scope, input) = (a.scope()?, a.object("input"));
            a.finish()?;
            // An empty store id is no store (as `target` answers for entities).
            let scope =
                scope.ok_or_else(|| Error::invalid(vec!["storeId: is required".to_owned()]))?;
            Ok(engine
                .create_portal_session_from_json(&scope, input)?
                .to_json())
        }
        Op::PortalCustomer => {
            let token = a.text("token");
            a.finish()?;
            Ok(engine
                .portal_customer(token)?
                .map_or(Value::Null, |customer| customer.to_json()))
        }
        Op::PortalSessions => {
            let store = a.text("storeId");
            a.finish()?;
            let sessions = engine.portal_sessions(store)?;
            Ok(Value::Array(sessions.iter().map(|s| s.to_json()).collect()))
        }
        Op::EndPortalSession => {
            let (store, actor, session) = (a.text("storeId"), a.actor(), a.text("sessionId"));
            a.finish()?;
            let which = crate::portal::EndPortalSessions::One(session);
            Ok(json!({"ended": engine.end_portal_sessions(store, &actor, which)?}))
        }
        Op::EndCustomerPortalSessions => {
            let (store, actor, customer) = (a.text("storeId"), a.actor(), a.text("customerId"));
            a.finish()?;
            let which = crate::portal::EndPortalSessions::OfCustomer(customer);
            Ok(json!({"ended": engine.end_portal_sessions(store, &actor, which)?}))
        }
        Op::CheckLeaks => {
            let (text, stop, actor) = (a.text("text"), a.flag("stop"), a.actor());
            a.finish()?;
            Ok(json!(engine.check_leaks(text, stop, &actor)))
        }
        Op::PortalList => {
            let (token, area) = (a.text("token"), a.area());
            let (limit, cursor) = (a.count("limit"), a.optional_text("cursor"));
            a.finish()?;
            // `area` has named its problem (and `finish` refused) whenever it is `None`.
            let area = area.ok_or_else(|| Error::invalid(vec!["area: is required".to_owned()]))?;
            Ok(engine
                .portal_page(token, area, limit, cursor)?
                .map_or(Value::Null, Value::from))
        }
    }
}
