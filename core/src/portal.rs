//! Customer portal sessions (seed 001, SPEC §7): a key holding `Customers:View` opens a
//! short-lived session for one customer; the session token (`cps_…`, shown once, stored only
//! as a SHA-256 digest) reads that customer's orders and subscriptions and nothing else.

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::audit::{Actor, AuditAction};
use crate::clock::Clock;
use crate::engine::{Engine, ReadStores, Subject, append_audit};
use crate::entities::{Kind, Page, Scope, Show, decode_cursor};
use crate::error::{Error, Result};
use crate::ids::StoreId;
use crate::input::{Fields, integer, string};
use crate::permissions::Area;
use crate::secret::{BASE62, Digest, Secret, random_chars};
use crate::storage;
use crate::verify::DenyCode;

/// Session digest (hex) → session.
pub(crate) const PORTAL: TableDefinition<&str, &[u8]> = TableDefinition::new("portal_sessions");

/// What a key needs to open a portal session (seed 001: reading the customer).
pub const PORTAL_PERMISSION: crate::permissions::Permission =
    crate::permissions::Permission::new(Area::Customers, crate::permissions::Action::View);

/// Default and longest session lifetimes.
pub const PORTAL_TTL_SECONDS: i64 = 15 * 60;
pub const MAX_PORTAL_TTL_SECONDS: i64 = 24 * 3600;

const TOKEN_PREFIX: &str = "cps_";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Session {
    v: u32,
    store_id: StoreId,
    environment: String,
    customer_id: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// A new portal session: the token (shown once) and when it expires.
#[derive(Debug)]
pub struct PortalSession {
    pub token: Secret,
    pub expires_at: OffsetDateTime,
}

impl PortalSession {
    /// `{token, expires_at}`: the one answer that shows the token.
    pub fn to_json(&self) -> Value {
        json!({
            "token": self.token.expose(),
            "expires_at": self.expires_at.format(&Rfc3339).ok(),
        })
    }
}

/// What opening a portal session asks for: `{customer_id, ttl_seconds?}` (the body of
/// `POST /api/v1/auth/portal-sessions`), every problem named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPortalSession {
    pub customer_id: String,
    /// Seconds the session lasts (60 to a day; default 15 minutes).
    pub ttl_seconds: Option<i64>,
}

impl NewPortalSession {
    pub fn from_json(value: &Value) -> Result<Self> {
        let mut fields = Fields::new(value, "portal session")?;
        let customer_id = fields.required("customer_id", string);
        let ttl_seconds = fields.optional("ttl_seconds", |v| integer(v).and_then(ttl));
        fields.finish().finish()?;
        Ok(Self {
            customer_id: customer_id.unwrap_or_default(),
            ttl_seconds,
        })
    }
}

/// A session lifetime within 60 seconds and [`MAX_PORTAL_TTL_SECONDS`], or the problem.
fn ttl(seconds: i64) -> std::result::Result<i64, String> {
    if (60..=MAX_PORTAL_TTL_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!("must be from 60 to {MAX_PORTAL_TTL_SECONDS}"))
    }
}

/// Whose portal a session token opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalCustomer {
    pub scope: Scope,
    pub customer_id: String,
}

impl PortalCustomer {
    /// `{store_id, environment, customer_id}`.
    pub fn to_json(&self) -> Value {
        json!({
            "store_id": self.scope.store_id,
            "environment": self.scope.environment,
            "customer_id": self.customer_id,
        })
    }
}

fn digest(token: &str) -> String {
    Digest::of(token.as_bytes()).to_hex()
}

/// A session's id: `ps_` and the first 16 hex digits of its token's digest, which names it to
/// the store's managers and opens nothing (the token is 40 random base-62 characters).
fn session_id(digest_hex: &str) -> String {
    format!("ps_{}", digest_hex.get(..16).unwrap_or(digest_hex))
}

/// A live portal session as the store's managers see it: never its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSessionInfo {
    /// `ps_…`: what ending one session takes.
    pub id: String,
    pub environment: String,
    pub customer_id: String,
    pub expires_at: OffsetDateTime,
}

impl PortalSessionInfo {
    /// `{id, environment, customer_id, expires_at}`.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "environment": self.environment,
            "customer_id": self.customer_id,
            "expires_at": self.expires_at.format(&Rfc3339).ok(),
        })
    }
}

/// Which of a store's portal sessions to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndPortalSessions<'a> {
    /// The session with this id (`ps_…`); 404 when no live session of the store has it.
    One(&'a str),
    /// Every live session of this customer (in any environment); none is not an error.
    OfCustomer(&'a str),
}

impl Engine {
    /// [`Engine::create_portal_session`] from the request body `{customer_id, ttl_seconds?}`
    /// (the server's and the bindings' one way in), every problem named.
    pub fn create_portal_session_from_json(
        &self,
        scope: &Scope,
        input: &Value,
    ) -> Result<PortalSession> {
        let new = NewPortalSession::from_json(input)?;
        self.create_portal_session(scope, &new.customer_id, new.ttl_seconds)
    }

    /// Opens a portal session for a customer of `scope`, valid for `ttl_seconds` (default 15
    /// minutes, at most a day).
    pub fn create_portal_session(
        &self,
        scope: &Scope,
        customer_id: &str,
        ttl_seconds: Option<i64>,
    ) -> Result<PortalSession> {
        let ttl = ttl(ttl_seconds.unwrap_or(PORTAL_TTL_SECONDS))
            .map_err(|problem| Error::invalid(vec![format!("ttl_seconds: {problem}")]))?;
        // The customer must exist in this scope (404 otherwise, like any other read).
        self.get_entity(scope, Area::Customers, customer_id)?;
        let token = format!("{TOKEN_PREFIX}{}", random_chars(BASE62, 40)?);
        let inner = self.inner();
        let expires_at = inner.clock.now() + time::Duration::seconds(ttl);
        let session = Session {
            v: 1,
            store_id: scope.store_id,
            environment: scope.environment.clone(),
            customer_id: customer_id.to_owned(),
            expires_at,
        };
        let _writer = inner.writer.lock();
        let tx = storage::write(&inner.db)?;
        {
            let mut table = tx.open_table(PORTAL)?;
            // Expired sessions are removed as new ones are made, so the table stays small.
            let now = inner.clock.now();
            table.retain(|_, bytes| {
                storage::decode::<Session>(bytes, 1, "portal session")
                    .is_ok_and(|s| s.expires_at > now)
            })?;
            table.insert(
                digest(&token).as_str(),
                storage::encode(&session)?.as_slice(),
            )?;
        }
        tx.commit()?;
        Ok(PortalSession {
            token: Secret::new(token),
            expires_at,
        })
    }

    /// The customer a session token opens, if it is a live session; `None` for an unknown,
    /// malformed or expired token, and for one [`Engine::portal_access`] refuses, alike.
    pub fn portal_customer(&self, token: &str) -> Result<Option<PortalCustomer>> {
        Ok(self.portal_access(token)?.ok())
    }

    /// The customer a session token opens, or why it opens nothing: `INVALID` for an
    /// unknown, malformed or expired token, and for a session whose store environment no
    /// longer exists; `API_DISABLED` and `PLAN_REQUIRED` while the store's API is closed to
    /// its keys, as a session is a key's access handed to a customer. (Customers cannot be
    /// deleted, so a session's customer is always there.)
    pub fn portal_access(
        &self,
        token: &str,
    ) -> Result<std::result::Result<PortalCustomer, DenyCode>> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(Err(DenyCode::Invalid));
        }
        let session: Session = {
            let tx = storage::read(&self.inner().db)?;
            let table = tx.open_table(PORTAL)?;
            let Some(bytes) = table.get(digest(token).as_str())? else {
                return Ok(Err(DenyCode::Invalid));
            };
            storage::decode(bytes.value(), 1, "portal session")?
        };
        if session.expires_at <= self.inner().clock.now() {
            return Ok(Err(DenyCode::Invalid));
        }
        if let Err(code) = self.store_open(session.store_id, &session.environment) {
            return Ok(Err(code));
        }
        Ok(Ok(PortalCustomer {
            scope: Scope::new(session.store_id, session.environment),
            customer_id: session.customer_id,
        }))
    }

    /// The store's live portal sessions, the soonest to expire first.
    pub fn portal_sessions(&self, store_id: &str) -> Result<Vec<PortalSessionInfo>> {
        let tx = storage::read(&self.inner().db)?;
        let store = tx.store(store_id)?;
        let now = self.inner().clock.now();
        let mut sessions = Vec::new();
        for item in tx.open_table(PORTAL)?.iter()? {
            let (key, value) = item?;
            let session: Session = storage::decode(value.value(), 1, "portal session")?;
            if session.store_id == store.id && session.expires_at > now {
                sessions.push(PortalSessionInfo {
                    id: session_id(key.value()),
                    environment: session.environment,
                    customer_id: session.customer_id,
                    expires_at: session.expires_at,
                });
            }
        }
        sessions.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
        Ok(sessions)
    }

    /// Ends live portal sessions of the store before they expire: their tokens open nothing
    /// from the next request on. Answers the ids of the sessions ended, and records them in
    /// the audit trail (nothing is recorded when none was live).
    pub fn end_portal_sessions(
        &self,
        store_id: &str,
        actor: &Actor,
        which: EndPortalSessions<'_>,
    ) -> Result<Vec<String>> {
        let inner = self.inner();
        let _writer = inner.writer.lock();
        let tx = storage::write(&inner.db)?;
        let store = tx.store(store_id)?;
        let now = inner.clock.now();
        let mut ended = Vec::new();
        {
            let mut table = tx.open_table(PORTAL)?;
            let mut doomed = Vec::new();
            for item in table.iter()? {
                let (key, value) = item?;
                let session: Session = storage::decode(value.value(), 1, "portal session")?;
                let chosen = match which {
                    EndPortalSessions::One(id) => session_id(key.value()) == id,
                    EndPortalSessions::OfCustomer(customer) => session.customer_id == customer,
                };
                if chosen && session.store_id == store.id && session.expires_at > now {
                    doomed.push(key.value().to_owned());
                }
            }
            for digest in &doomed {
                table.remove(digest.as_str())?;
                ended.push(session_id(digest));
            }
        }
        if let (EndPortalSessions::One(id), true) = (which, ended.is_empty()) {
            return Err(Error::not_found("portal session", id));
        }
        if !ended.is_empty() {
            ended.sort();
            let action = AuditAction::PortalSessionsEnded;
            append_audit(
                &tx,
                Subject::Store(store.id),
                action,
                actor,
                ended.clone(),
                now,
            )?;
            tx.commit()?;
        }
        Ok(ended)
    }

    /// One page of the orders or subscriptions of the customer a session token opens; `None`
    /// when the token opens no live session (unknown, malformed or expired alike).
    pub fn portal_page(
        &self,
        token: &str,
        area: Area,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Option<Page>> {
        match self.portal_customer(token)? {
            Some(customer) => self.portal_list(&customer, area, limit, cursor).map(Some),
            None => Ok(None),
        }
    }

    /// One page of the portal customer's orders or subscriptions.
    pub fn portal_list(
        &self,
        customer: &PortalCustomer,
        area: Area,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Page> {
        let kind = match area {
            Area::Orders => Kind::Order,
            Area::Subscriptions => Kind::Subscription,
            _ => {
                return Err(Error::NotAllowed(
                    "the portal shows orders and subscriptions".into(),
                ));
            }
        };
        let limit = limit.unwrap_or(crate::entities::DEFAULT_PAGE);
        if !(1..=crate::entities::MAX_PAGE).contains(&limit) {
            return Err(Error::invalid(vec![format!(
                "limit: must be between 1 and {}",
                crate::entities::MAX_PAGE
            )]));
        }
        let after = cursor.map(|c| decode_cursor(kind, c)).transpose()?;
        self.page(
            &customer.scope,
            kind,
            limit,
            after.as_deref(),
            Show::Customer(&customer.customer_id),
        )
    }
}
