//! Creating an entity at most once per idempotency key (the `Idempotency-Key` request header
//! of Stripe's API and of the IETF httpapi draft): a client that retries a create after a lost
//! response (a timeout, a dropped connection) gets what its first request made instead of a
//! second order, coupon or gift card.
//!
//! Invariants:
//! - A key is remembered per store and environment for [`IDEMPOTENCY_TTL`], with a digest of
//!   the request (area and body) and the kind and id of what it made, written in the commit
//!   that makes it. Writes are serialised, so a retry racing the first request or following a
//!   crash finds either no record (and creates) or the record (and replays), never both.
//! - A request that fails writes nothing, so a corrected retry with the same key goes ahead.
//! - A replay answers with the object as it is now, from its stored output: a secret shown
//!   once (a gift card's code) is not shown again.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use time::{Duration, OffsetDateTime};

use super::{Kind, OUTPUTS, Scope};
use crate::error::{Error, Result};
use crate::storage::unix_nanos;

/// (store id, environment, idempotency key) → record (see [`Record`]).
pub(crate) const IDEMPOTENCY: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("idempotency_keys");
/// (recorded at, unix nanos; store id; environment; idempotency key) → nothing: the records
/// oldest first, so the expired ones are found at the front.
pub(crate) const IDEMPOTENCY_AGE: TableDefinition<(i64, &str, &str, &str), ()> =
    TableDefinition::new("idempotency_age");

/// How long a key is remembered (Stripe keeps them 24 hours).
pub const IDEMPOTENCY_TTL: Duration = Duration::hours(24);
/// The longest idempotency key accepted (as Stripe).
pub const IDEMPOTENCY_KEY_MAX: usize = 255;
/// Expired records removed by each new one: more than one, so a burst of keys followed by a
/// quiet spell is still cleared by the next few.
const SWEEP_PER_RECORD: usize = 8;
const RECORD_VERSION: u8 = 1;

/// Checks an idempotency key: 1 to [`IDEMPOTENCY_KEY_MAX`] visible ASCII characters (what
/// an HTTP header carries unchanged; a UUID is the usual choice).
pub fn check_idempotency_key(key: &str) -> Result<()> {
    if (1..=IDEMPOTENCY_KEY_MAX).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(Error::invalid(vec![format!(
            "idempotency key: must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters (a UUID, say)"
        )]))
    }
}

/// What a create with an idempotency key answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The entity in its output shape.
    pub value: Value,
    /// True when an earlier request with the same key made it and this one changed nothing.
    pub replayed: bool,
}

/// What a key made: `[version][kind tag][recorded at, i64 LE nanos][request digest; 32][id]`.
struct Record<'a> {
    kind: u8,
    at: i64,
    digest: [u8; 32],
    id: &'a str,
}

impl<'a> Record<'a> {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(42 + self.id.len());
        out.push(RECORD_VERSION);
        out.push(self.kind);
        out.extend_from_slice(&self.at.to_le_bytes());
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(self.id.as_bytes());
        out
    }

    fn decode(bytes: &'a [u8]) -> Result<Record<'a>> {
        let corrupt = || Error::Corrupt("an idempotency record cannot be read".into());
        if bytes.len() < 42 || bytes[0] != RECORD_VERSION {
            return Err(corrupt());
        }
        let at = i64::from_le_bytes(bytes[2..10].try_into().map_err(|_| corrupt())?);
        let digest = bytes[10..42].try_into().map_err(|_| corrupt())?;
        let id = std::str::from_utf8(&bytes[42..]).map_err(|_| corrupt())?;
        Ok(Record {
            kind: bytes[1],
            at,
            digest,
            id,
        })
    }
}

/// The digest a retry must match: the kind created and the body as parsed, so the same JSON
/// with other spacing or key order is the same request (serde_json's maps are sorted; the
/// `preserve_order` feature would break this, which a test catches).
pub(crate) fn request_digest(kind: Kind, input: &Value) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([kind.tag()]);
    hasher.update(input.to_string().as_bytes());
    hasher.finalize().into()
}

/// The earlier answer to `key` in `scope`, if a live record exists: the entity's stored
/// output. A record made by another request (other area or body) is a conflict, as is one
/// whose entity has since been deleted.
pub(crate) fn replay(
    tx: &WriteTransaction,
    scope: &Scope,
    key: &str,
    digest: &[u8; 32],
    now: OffsetDateTime,
) -> Result<Option<Value>> {
    let table = tx.open_table(IDEMPOTENCY)?;
    let Some(bytes) = table.get((scope.store_id.as_str(), scope.environment.as_str(), key))? else {
        return Ok(None);
    };
    let record = Record::decode(bytes.value())?;
    if record.at <= unix_nanos(now - IDEMPOTENCY_TTL) {
        return Ok(None);
    }
    if &record.digest != digest {
        return Err(Error::Conflict(
            "this idempotency key was used for a different request (another area or body); \
             send a new key for a new request"
                .into(),
        ));
    }
    let kind = Kind::from_tag(record.kind)
        .ok_or_else(|| Error::Corrupt("an idempotency record names an unknown kind".into()))?;
    let outputs = tx.open_table(OUTPUTS)?;
    let key = (
        scope.store_id.as_str(),
        scope.environment.as_str(),
        kind.tag(),
        record.id,
    );
    let Some(output) = outputs.get(key)? else {
        return Err(Error::Conflict(format!(
            "the {} this idempotency key created ({}) has since been deleted",
            kind.name(),
            record.id
        )));
    };
    serde_json::from_slice(output.value())
        .map(Some)
        .map_err(|e| Error::Corrupt(format!("a stored {} cannot be read: {e}", kind.name())))
}

/// Remembers that `key` made `id` (in the commit that made it), and forgets a few expired keys.
pub(crate) fn remember(
    tx: &WriteTransaction,
    scope: &Scope,
    key: &str,
    kind: Kind,
    id: &str,
    digest: [u8; 32],
    now: OffsetDateTime,
) -> Result<()> {
    let (store, env) = (scope.store_id.as_str(), scope.environment.as_str());
    let at = unix_nanos(now);
    let mut records = tx.open_table(IDEMPOTENCY)?;
    let mut ages = tx.open_table(IDEMPOTENCY_AGE)?;
    let record = Record {
        kind: kind.tag(),
        at,
        digest,
        id,
    };
    records.insert((store, env, key), record.encode().as_slice())?;
    ages.insert((at, store, env, key), ())?;
    let cutoff = unix_nanos(now - IDEMPOTENCY_TTL);
    let mut expired: Vec<(i64, String, String, String)> = Vec::new();
    for row in ages.range(..(cutoff, "", "", ""))?.take(SWEEP_PER_RECORD) {
        let (age, _) = row?;
        let (at, store, env, key) = age.value();
        expired.push((at, store.to_owned(), env.to_owned(), key.to_owned()));
    }
    for (at, store, env, key) in &expired {
        ages.remove((*at, store.as_str(), env.as_str(), key.as_str()))?;
        // The key may have been used again since; only the record of this age goes.
        let same = match records.get((store.as_str(), env.as_str(), key.as_str()))? {
            Some(bytes) => Record::decode(bytes.value())?.at == *at,
            None => false,
        };
        if same {
            records.remove((store.as_str(), env.as_str(), key.as_str()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use redb::ReadableTableMetadata as _;
    use serde_json::json;

    use super::*;
    use crate::permissions::Area;
    use crate::stores::NewStore;
    use crate::{Actor, Engine, storage};

    fn remembered(engine: &Engine) -> [u64; 2] {
        let tx = storage::read(&engine.inner().db).expect("read");
        [
            tx.open_table(IDEMPOTENCY).expect("t").len().expect("len"),
            tx.open_table(IDEMPOTENCY_AGE)
                .expect("t")
                .len()
                .expect("len"),
        ]
    }

    fn shop() -> (Engine, crate::clock::FakeClock, Scope) {
        let (engine, clock) = Engine::memory_on_fake_clock();
        let (store, _) = engine
            .create_store(&Actor::admin("t"), NewStore::named("S"))
            .expect("store");
        (engine, clock, Scope::new(store.id, "live"))
    }

    fn count(engine: &Engine, scope: &Scope, area: Area) -> usize {
        engine
            .list_entities(scope, area, Some(100), None)
            .expect("list")
            .items
            .len()
    }

    #[test]
    fn a_retry_gets_the_first_answer_and_makes_nothing() {
        let (engine, _, scope) = shop();
        let body = json!({"name": "VIP", "price": {"amount": 999, "currency": "USD"}});
        let first = engine
            .create_entity_once(&scope, Area::Packages, &body, Some("retry-1"))
            .expect("create");
        assert!(!first.replayed);
        let again = engine
            .create_entity_once(&scope, Area::Packages, &body, Some("retry-1"))
            .expect("replay");
        assert_eq!(
            again,
            Created {
                value: first.value.clone(),
                replayed: true
            }
        );
        assert_eq!(count(&engine, &scope, Area::Packages), 1);
        // Another key, or none, is another request.
        engine
            .create_entity_once(&scope, Area::Packages, &body, Some("retry-2"))
            .expect("create");
        engine
            .create_entity_once(&scope, Area::Packages, &body, None)
            .expect("create");
        assert_eq!(count(&engine, &scope, Area::Packages), 3);
        // Keys are per store and environment.
        let test = Scope::new(scope.store_id, "test");
        let other = engine
            .create_entity_once(&test, Area::Packages, &body, Some("retry-1"))
            .expect("create in test");
        assert!(!other.replayed);
        assert_ne!(other.value["id"], first.value["id"]);
    }

    #[test]
    fn a_replay_shows_the_object_as_it_is_now_without_a_secret() {
        let (engine, _, scope) = shop();
        let body = json!({"balance": {"amount": 500, "currency": "USD"}});
        let first = engine
            .create_entity_once(&scope, Area::GiftCards, &body, Some("card"))
            .expect("create");
        let code = first.value["code"]
            .as_str()
            .expect("code shown once")
            .to_owned();
        let id = first.value["id"].as_str().expect("id").to_owned();
        engine
            .update_entity(&scope, Area::GiftCards, &id, &json!({"note": "for Jo"}))
            .expect("update");
        let again = engine
            .create_entity_once(&scope, Area::GiftCards, &body, Some("card"))
            .expect("replay");
        assert!(again.replayed);
        assert_eq!(again.value["note"], "for Jo");
        assert!(again.value.get("code").is_none(), "{:#}", again.value);
        assert!(!again.value.to_string().contains(&code));
    }

    #[test]
    fn racing_retries_make_one_object() {
        let (engine, _, scope) = shop();
        let engine = std::sync::Arc::new(engine);
        let body = json!({"email": "jo@example.com", "name": "Jo"});
        let answers: Vec<Created> = std::thread::scope(|threads| {
            let racers: Vec<_> = (0..8)
                .map(|_| {
                    threads.spawn(|| {
                        engine
                            .create_entity_once(&scope, Area::Customers, &body, Some("race"))
                            .expect("create or replay")
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|r| r.join().expect("thread"))
                .collect()
        });
        assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
        assert!(
            answers
                .iter()
                .all(|a| a.value["id"] == answers[0].value["id"])
        );
        assert_eq!(count(&engine, &scope, Area::Customers), 1);
    }

    #[test]
    fn the_same_body_with_its_fields_in_another_order_is_the_same_request() {
        let (engine, _, scope) = shop();
        let parse = |text: &str| serde_json::from_str::<Value>(text).expect("json");
        let first = parse(r#"{"name": "VIP", "price": {"amount": 9, "currency": "USD"}}"#);
        let again = parse(r#"{"price":{"currency":"USD","amount":9},"name":"VIP"}"#);
        engine
            .create_entity_once(&scope, Area::Packages, &first, Some("k"))
            .expect("create");
        let replay = engine
            .create_entity_once(&scope, Area::Packages, &again, Some("k"))
            .expect("replay");
        assert!(replay.replayed);
    }

    #[test]
    fn the_same_key_for_another_request_is_a_conflict() {
        let (engine, _, scope) = shop();
        let body = json!({"name": "VIP", "price": {"amount": 999, "currency": "USD"}});
        engine
            .create_entity_once(&scope, Area::Packages, &body, Some("k"))
            .expect("create");
        let other_body = json!({"name": "VIP", "price": {"amount": 1000, "currency": "USD"}});
        let other_area = json!({"name": "VIP"});
        for (area, body) in [
            (Area::Packages, &other_body),
            (Area::Categories, &other_area),
        ] {
            let err = engine
                .create_entity_once(&scope, area, body, Some("k"))
                .expect_err("conflict");
            assert_eq!(err.code(), "CONFLICT", "{err}");
        }
        assert_eq!(count(&engine, &scope, Area::Packages), 1);
        assert_eq!(count(&engine, &scope, Area::Categories), 0);
    }

    #[test]
    fn a_failed_request_leaves_its_key_free_and_a_deleted_object_is_a_conflict() {
        let (engine, _, scope) = shop();
        let bad = json!({"name": "", "price": {"amount": 1, "currency": "USD"}});
        let err = engine
            .create_entity_once(&scope, Area::Packages, &bad, Some("k"))
            .expect_err("invalid");
        assert_eq!(err.code(), "VALIDATION");
        assert_eq!(remembered(&engine), [0, 0]);
        let good = json!({"name": "VIP", "price": {"amount": 1, "currency": "USD"}});
        let made = engine
            .create_entity_once(&scope, Area::Packages, &good, Some("k"))
            .expect("create");
        assert!(!made.replayed);
        let id = made.value["id"].as_str().expect("id");
        engine
            .delete_entity(&scope, Area::Packages, id)
            .expect("delete");
        let err = engine
            .create_entity_once(&scope, Area::Packages, &good, Some("k"))
            .expect_err("deleted");
        assert_eq!(err.code(), "CONFLICT");
        assert!(err.to_string().contains("deleted"), "{err}");
    }

    #[test]
    fn keys_are_forgotten_after_a_day_and_swept_by_later_ones() {
        let (engine, clock, scope) = shop();
        let body =
            |n: i64| json!({"name": format!("P{n}"), "price": {"amount": n, "currency": "USD"}});
        for n in 0..20 {
            engine
                .create_entity_once(&scope, Area::Packages, &body(n), Some(&format!("k{n}")))
                .expect("create");
        }
        assert_eq!(remembered(&engine), [20, 20]);
        clock.advance(IDEMPOTENCY_TTL + Duration::seconds(1));
        // Past the day the key makes a new package, and each new key sweeps a few old ones.
        let fresh = engine
            .create_entity_once(&scope, Area::Packages, &body(0), Some("k0"))
            .expect("create");
        assert!(!fresh.replayed);
        assert_eq!(count(&engine, &scope, Area::Packages), 21);
        let [records, ages] = remembered(&engine);
        assert_eq!(ages, 20 + 1 - SWEEP_PER_RECORD as u64);
        // k0's new record survived the sweep of its old age entry.
        assert_eq!(records, ages);
        let again = engine
            .create_entity_once(&scope, Area::Packages, &body(0), Some("k0"))
            .expect("replay");
        assert_eq!(again.value["id"], fresh.value["id"]);
        for n in 100..104 {
            engine
                .create_entity_once(&scope, Area::Packages, &body(n), Some(&format!("k{n}")))
                .expect("create");
        }
        assert_eq!(remembered(&engine), [5, 5]);
    }

    #[test]
    fn bad_keys_are_refused_before_anything_is_written() {
        let (engine, _, scope) = shop();
        let body = json!({"name": "VIP", "price": {"amount": 1, "currency": "USD"}});
        let long = "k".repeat(IDEMPOTENCY_KEY_MAX + 1);
        for key in ["", "has space", "tab\t", "é", long.as_str()] {
            let err = engine
                .create_entity_once(&scope, Area::Packages, &body, Some(key))
                .expect_err(key);
            assert_eq!(err.code(), "VALIDATION", "{key:?}");
        }
        // A bad key and a bad body: both named, nothing made (a good body is not made either).
        let bad_body = json!({"name": "", "price": {"amount": -1, "currency": "USD"}});
        let err = engine
            .create_entity_once(&scope, Area::Packages, &bad_body, Some("has space"))
            .expect_err("both");
        let problems = err.problems();
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("idempotency key:"), "{problems:#?}");
        assert_eq!(count(&engine, &scope, Area::Packages), 0);
        check_idempotency_key(&"k".repeat(IDEMPOTENCY_KEY_MAX)).expect("longest");
    }

    #[test]
    fn an_order_is_placed_once() {
        let (engine, _, scope) = shop();
        let pkg = engine
            .create_entity(
                &scope,
                Area::Packages,
                &json!({"name": "VIP", "price": {"amount": 999, "currency": "USD"}}),
            )
            .expect("package");
        let order = json!({"email": "jo@example.com", "items": [{"package_id": pkg["id"]}]});
        let first = engine
            .create_entity_once(&scope, Area::Orders, &order, Some("order-1"))
            .expect("order");
        let again = engine
            .create_entity_once(&scope, Area::Orders, &order, Some("order-1"))
            .expect("replay");
        assert!(again.replayed);
        assert_eq!(again.value, first.value);
        assert_eq!(count(&engine, &scope, Area::Orders), 1);
    }
}
