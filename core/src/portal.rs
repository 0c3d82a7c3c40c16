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
/// (store id, expiry in unix nanos, session digest) → nothing: a store's sessions in expiry
/// order, so listing and ending them reads that store's live sessions only.
pub(crate) const PORTAL_BY_STORE: TableDefinition<(&str, i64, &str), ()> =
    TableDefinition::new("portal_by_store");
/// (expiry in unix nanos, session digest) → store id: every session in expiry order, so the
/// expired ones are found at the front, not by reading them all.
pub(crate) const PORTAL_EXPIRY: TableDefinition<(i64, &str), &str> =
    TableDefinition::new("portal_expiry");

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

/// The three tables a session lives in. Invariant: a session is in all three or in none.
struct Tables<'tx> {
    sessions: redb::Table<'tx, &'static str, &'static [u8]>,
    by_store: redb::Table<'tx, (&'static str, i64, &'static str), ()>,
    expiry: redb::Table<'tx, (i64, &'static str), &'static str>,
}

impl<'tx> Tables<'tx> {
    fn open(tx: &'tx redb::WriteTransaction) -> Result<Self> {
        Ok(Self {
            sessions: tx.open_table(PORTAL)?,
            by_store: tx.open_table(PORTAL_BY_STORE)?,
            expiry: tx.open_table(PORTAL_EXPIRY)?,
        })
    }

    fn insert(&mut self, digest: &str, session: &Session) -> Result<()> {
        let (store, at) = (
            session.store_id.as_str(),
            storage::unix_nanos(session.expires_at),
        );
        self.sessions
            .insert(digest, storage::encode(session)?.as_slice())?;
        self.by_store.insert((store, at, digest), ())?;
        self.expiry.insert((at, digest), store)?;
        Ok(())
    }

    fn remove(&mut self, digest: &str, store: &str, at: i64) -> Result<()> {
        self.sessions.remove(digest)?;
        self.by_store.remove((store, at, digest))?;
        self.expiry.remove((at, digest))?;
        Ok(())
    }

    /// Removes every session expired at `now`: those at the front of the expiry order.
    fn remove_expired(&mut self, now: OffsetDateTime) -> Result<()> {
        let mut expired = Vec::new();
        // Keys before (now + 1 ns, ""): every expiry at or before `now`.
        for row in self
            .expiry
            .range(..(storage::unix_nanos(now).saturating_add(1), ""))?
        {
            let (key, store) = row?;
            let (at, digest) = key.value();
            expired.push((digest.to_owned(), store.value().to_owned(), at));
        }
        for (digest, store, at) in &expired {
            self.remove(digest, store, *at)?;
        }
        Ok(())
    }

    /// The store's sessions still live at `now`, soonest to expire first, with their digests
    /// and index expiry.
    fn live_of_store(
        &self,
        store: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<(String, i64, Session)>> {
        live_of_store(&self.by_store, &self.sessions, store, now)
    }
}

/// [`Tables::live_of_store`] over any two readable tables (a read or a write transaction).
fn live_of_store(
    by_store: &impl ReadableTable<(&'static str, i64, &'static str), ()>,
    sessions: &impl ReadableTable<&'static str, &'static [u8]>,
    store: &str,
    now: OffsetDateTime,
) -> Result<Vec<(String, i64, Session)>> {
    let mut live = Vec::new();
    for row in by_store.range((store, storage::unix_nanos(now).saturating_add(1), "")..)? {
        let (key, _) = row?;
        let (of, at, digest) = key.value();
        if of != store {
            break;
        }
        let bytes = sessions.get(digest)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "portal session {} is indexed but missing",
                session_id(digest)
            ))
        })?;
        let session: Session = storage::decode(bytes.value(), 1, "portal session")?;
        live.push((digest.to_owned(), at, session));
    }
    Ok(live)
}

/// Indexes every stored session (a format-version migration: databases before format 3 kept
/// sessions without indexes). Expired ones are indexed too, and go with the next sweep.
pub(crate) fn rebuild_index(tx: &redb::WriteTransaction) -> Result<()> {
    let mut tables = Tables::open(tx)?;
    let mut all = Vec::new();
    for row in tables.sessions.iter()? {
        let (key, bytes) = row?;
        let session: Session = storage::decode(bytes.value(), 1, "portal session")?;
        all.push((key.value().to_owned(), session));
    }
    for (digest, session) in &all {
        tables.insert(digest, session)?;
    }
    Ok(())
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
            let mut tables = Tables::open(&tx)?;
            // Expired sessions are removed as new ones are made, so the tables stay small.
            tables.remove_expired(inner.clock.now())?;
            tables.insert(&digest(&token), &session)?;
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
        let (by_store, sessions) = (tx.open_table(PORTAL_BY_STORE)?, tx.open_table(PORTAL)?);
        // In index order: by expiry, then digest, of which the id is a prefix.
        let live = live_of_store(&by_store, &sessions, store.id.as_str(), now)?;
        Ok(live
            .into_iter()
            .map(|(digest, _, session)| PortalSessionInfo {
                id: session_id(&digest),
                environment: session.environment,
                customer_id: session.customer_id,
                expires_at: session.expires_at,
            })
            .collect())
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
            let mut tables = Tables::open(&tx)?;
            for (digest, at, session) in tables.live_of_store(store.id.as_str(), now)? {
                let chosen = match which {
                    EndPortalSessions::One(id) => session_id(&digest) == id,
                    EndPortalSessions::OfCustomer(customer) => session.customer_id == customer,
                };
                if chosen {
                    tables.remove(&digest, store.id.as_str(), at)?;
                    ended.push(session_id(&digest));
                }
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

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata;

    use super::*;
    use crate::{Actor, NewStore};

    fn customer(engine: &Engine, scope: &Scope, email: &str) -> String {
        let body = json!({ "email": email });
        let created = engine
            .create_entity(scope, Area::Customers, &body)
            .expect("customer");
        created["id"].as_str().expect("id").to_owned()
    }

    fn counts(engine: &Engine) -> [u64; 3] {
        let tx = storage::read(&engine.inner().db).expect("read");
        [
            tx.open_table(PORTAL).expect("t").len().expect("len"),
            tx.open_table(PORTAL_BY_STORE)
                .expect("t")
                .len()
                .expect("len"),
            tx.open_table(PORTAL_EXPIRY).expect("t").len().expect("len"),
        ]
    }

    #[test]
    fn expired_sessions_leave_every_table_when_the_next_is_made() {
        let (engine, clock) = Engine::memory_on_fake_clock();
        let (store, _) = engine
            .create_store(&Actor::admin("t"), NewStore::named("S"))
            .expect("store");
        let scope = Scope::new(store.id, "live");
        let who = customer(&engine, &scope, "a@example.com");
        for ttl in [60, 120, 600] {
            engine
                .create_portal_session(&scope, &who, Some(ttl))
                .expect("session");
        }
        assert_eq!(counts(&engine), [3; 3]);
        // At exactly 120 s the second has expired too (a session lives while now < expiry).
        clock.advance(time::Duration::seconds(120));
        assert_eq!(
            engine
                .portal_sessions(store.id.as_str())
                .expect("list")
                .len(),
            1
        );
        engine
            .create_portal_session(&scope, &who, None)
            .expect("session");
        assert_eq!(counts(&engine), [2; 3]);
    }

    #[test]
    fn a_format_2_database_gets_its_sessions_indexed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("v2.redb");
        let (store_id, ids) = {
            let engine = Engine::open(&path).expect("open");
            let (store, _) = engine
                .create_store(&Actor::admin("t"), NewStore::named("Old"))
                .expect("store");
            let scope = Scope::new(store.id, "live");
            let who = customer(&engine, &scope, "b@example.com");
            for ttl in [600, 300] {
                engine
                    .create_portal_session(&scope, &who, Some(ttl))
                    .expect("session");
            }
            let ids: Vec<String> = engine
                .portal_sessions(store.id.as_str())
                .expect("list")
                .into_iter()
                .map(|s| s.id)
                .collect();
            // As format 2 left it: sessions without indexes, version 2.
            let tx = engine.inner().db.begin_write().expect("write");
            tx.delete_table(PORTAL_BY_STORE).expect("drop");
            tx.delete_table(PORTAL_EXPIRY).expect("drop");
            storage::set_format_version(&tx, 2);
            tx.commit().expect("commit");
            (store.id, ids)
        };
        assert_eq!(ids.len(), 2);
        let engine = Engine::open(&path).expect("reopen");
        let listed: Vec<String> = engine
            .portal_sessions(store_id.as_str())
            .expect("list")
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(listed, ids);
        assert_eq!(counts(&engine), [2; 3]);
        let ended = engine
            .end_portal_sessions(
                store_id.as_str(),
                &Actor::admin("t"),
                EndPortalSessions::One(&ids[0]),
            )
            .expect("end");
        assert_eq!(ended, [ids[0].clone()]);
        assert_eq!(counts(&engine), [1; 3]);
    }
}
