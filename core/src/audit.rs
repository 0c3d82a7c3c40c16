//! Audit events: who created, changed, regenerated or revoked which key, changed the store's
//! settings, added, changed or removed a webhook endpoint, or ended customer portal sessions,
//! and when. Written in the same transaction as the change they describe.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::StoreId;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "lowercase")]
pub enum Actor {
    /// An administrator (management token subject, CLI user, embedding application).
    Admin(String),
    /// An API key acting on its own store (self-service, with ApiKeys permissions).
    Key(String),
}

impl Actor {
    pub fn admin(subject: impl Into<String>) -> Self {
        Actor::Admin(subject.into())
    }
}

/// What happened: to a key, to the store's settings, or to a webhook endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    KeyCreated,
    KeyUpdated,
    KeyRegenerated,
    KeyRevoked,
    /// The store's settings changed (`changes` names them; e.g. `api_enabled` when the REST
    /// API was switched off).
    StoreUpdated,
    /// A webhook endpoint was registered (`webhook_id` names it).
    WebhookCreated,
    /// An endpoint's `url`, `events` or `active` changed (`changes` names which).
    WebhookUpdated,
    /// An endpoint was removed, with its deliveries.
    WebhookDeleted,
    /// An endpoint's signing secret was replaced (the old one may sign for a while longer).
    WebhookSecretRotated,
    /// Customer portal sessions were ended before they expired (`changes` lists the ids of
    /// the sessions ended).
    PortalSessionsEnded,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub(crate) v: u32,
    /// Increasing across the database; newer events have larger numbers.
    pub seq: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub store_id: StoreId,
    /// The key the event is about; `None` for the store's and its webhooks' events.
    #[serde(default)]
    pub key_id: Option<String>,
    /// The webhook endpoint the event is about (`Webhook*` events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
    pub action: AuditAction,
    pub actor: Actor,
    /// The fields an update changed (names only, never values); for `portal_sessions_ended`,
    /// the ids of the sessions ended.
    #[serde(default)]
    pub changes: Vec<String>,
    /// Why, when the change was made for a reason the engine knows: `leaked` for a key
    /// stopped because its credential was found where it should not be
    /// ([`crate::Engine::stop_leaked`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The [`AuditEvent::reason`] of a key stopped by [`crate::Engine::stop_leaked`].
pub const REASON_LEAKED: &str = "leaked";

impl AuditEvent {
    pub(crate) const VERSION: u32 = 1;
}
