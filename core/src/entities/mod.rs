//! Store entities (SPEC §2 area table, §7, appendix): packages, categories, products, coupons,
//! sales, gift cards, customers, bans, orders and subscriptions.
//!
//! Every entity lives in one table keyed by (store, environment, kind, id), so data reached
//! with a key is always that key's store *and* environment. Ids are time-ordered
//! (`pkg_` + 12 hex digits of milliseconds + 8 random characters), and lists page by id with
//! an opaque cursor: a page starts strictly after the last id of the previous one, so an
//! entity that exists throughout a listing is seen exactly once, however many are inserted
//! meanwhile.
//!
//! The engine's API is JSON in, JSON out (the shapes of the appendix), because its callers are
//! the HTTP server and the bindings; inside, each kind is a typed record with its own
//! validation that names every problem.

mod bans;
mod categories;
mod coupons;
mod customers;
mod discount;
mod gift_cards;
mod idempotency;
mod orders;
mod outbox;
mod packages;
pub(crate) mod pages;
mod products;
mod rules;
mod sales;
mod subscriptions;

use std::sync::Arc;

use base64::Engine as _;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use time::OffsetDateTime;

use crate::clock::Clock;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ids::StoreId;
use crate::permissions::Area;
use crate::storage;
use crate::stores::Store;
use crate::verify::Decision;

pub use idempotency::{Created, IDEMPOTENCY_KEY_MAX, IDEMPOTENCY_TTL, check_idempotency_key};
pub(crate) use idempotency::{IDEMPOTENCY, IDEMPOTENCY_AGE};
pub use orders::{MAX_ITEMS as ORDER_MAX_ITEMS, MAX_QUANTITY as ORDER_MAX_QUANTITY};
pub use outbox::OutboxEvent;
pub(crate) use outbox::{OUTBOX, outbox_position, write_outbox};
pub use rules::{
    COUNT_MAX as ENTITY_COUNT_MAX, DESCRIPTION_MAX as ENTITY_DESCRIPTION_MAX_CHARS,
    NAME_MAX as ENTITY_NAME_MAX_CHARS, NOTE_MAX as ENTITY_NOTE_MAX_CHARS, SALE_PACKAGES_MAX,
};

/// (store, environment, kind tag, id) → the record.
pub(crate) const ENTITIES: TableDefinition<(&str, &str, u8, &str), &[u8]> =
    TableDefinition::new("entities");
/// The same key → the entity's output (its API shape, as JSON text), written in the same
/// transaction as its record. Derived data: a page of records reads as their outputs joined,
/// without decoding a record. A release that changes what an output holds must rebuild this
/// table ([`rebuild_outputs`], from a format-version migration).
pub(crate) const OUTPUTS: TableDefinition<(&str, &str, u8, &str), &[u8]> =
    TableDefinition::new("entity_outputs");
/// (store, environment, constraint tag, value) → id, for values unique in a scope.
pub(crate) const UNIQUE: TableDefinition<(&str, &str, u8, &str), &str> =
    TableDefinition::new("entity_unique");

/// Where entity data lives: one environment of one store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    pub store_id: StoreId,
    pub environment: String,
}

impl Scope {
    pub fn new(store_id: StoreId, environment: impl Into<String>) -> Self {
        Self {
            store_id,
            environment: environment.into(),
        }
    }

    /// The scope a verified key reaches: its store and environment. `None` for a denial that
    /// identified no key.
    pub fn of(decision: &Decision) -> Option<Scope> {
        Some(Scope::new(
            decision.store_id()?,
            decision.environment()?.to_owned(),
        ))
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub items: Vec<Value>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl From<Page> for Value {
    /// The page as JSON (`items`, `next_cursor`), moving the items rather than copying them
    /// as `serde_json::to_value` (and `json!`) would.
    fn from(page: Page) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("items".into(), Value::Array(page.items));
        object.insert(
            "next_cursor".into(),
            page.next_cursor.map_or(Value::Null, Value::String),
        );
        Value::Object(object)
    }
}

/// A page whose items are already JSON text: for front ends that pass a page on as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageJson {
    /// The items as one JSON array, each exactly as [`Page::items`] would serialize it.
    pub items: String,
    pub next_cursor: Option<String>,
}

impl PageJson {
    /// The page as JSON text, the same as `serde_json::to_string(&Value::from(page))` for
    /// the [`Page`] with these items (`items`, then `next_cursor`).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.items.len() + 64);
        self.write_json(&mut out);
        out
    }

    /// What comes before [`PageJson::items`] in [`PageJson::to_json`]'s text.
    pub const HEAD: &'static str = "{\"items\":";

    /// Appends [`PageJson::to_json`]'s text to `out` (for a front end that wraps the page).
    pub fn write_json(&self, out: &mut String) {
        out.push_str(Self::HEAD);
        out.push_str(&self.items);
        self.write_tail(out);
    }

    /// Appends what comes after [`PageJson::items`] in [`PageJson::to_json`]'s text: a front
    /// end may send [`PageJson::HEAD`], the items and this without joining them.
    pub fn write_tail(&self, out: &mut String) {
        out.push_str(",\"next_cursor\":");
        match self.next_cursor.as_deref() {
            // A cursor is base64url text, but it is escaped as any string would be.
            Some(cursor) => out.push_str(&Value::from(cursor).to_string()),
            None => out.push_str("null"),
        }
        out.push('}');
    }
}

/// Default and largest page sizes.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 100;

/// The kinds of entity, with what each allows (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Category,
    Package,
    Product,
    Coupon,
    Sale,
    GiftCard,
    Customer,
    Ban,
    Order,
    Subscription,
}

impl Kind {
    /// The stored tag: part of the database format, never reused.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Kind::Category => 1,
            Kind::Package => 2,
            Kind::Product => 3,
            Kind::Coupon => 4,
            Kind::Sale => 5,
            Kind::GiftCard => 6,
            Kind::Customer => 7,
            Kind::Ban => 8,
            Kind::Order => 9,
            Kind::Subscription => 10,
        }
    }

    /// The kind stored under `tag`.
    pub(crate) fn from_tag(tag: u8) -> Option<Kind> {
        [
            Kind::Category,
            Kind::Package,
            Kind::Product,
            Kind::Coupon,
            Kind::Sale,
            Kind::GiftCard,
            Kind::Customer,
            Kind::Ban,
            Kind::Order,
            Kind::Subscription,
        ]
        .into_iter()
        .find(|kind| kind.tag() == tag)
    }

    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Kind::Category => "cat",
            Kind::Package => "pkg",
            Kind::Product => "prd",
            Kind::Coupon => "cpn",
            Kind::Sale => "sal",
            Kind::GiftCard => "gft",
            Kind::Customer => "cus",
            Kind::Ban => "ban",
            Kind::Order => "ord",
            Kind::Subscription => "sub",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Category => "category",
            Kind::Package => "package",
            Kind::Product => "product",
            Kind::Coupon => "coupon",
            Kind::Sale => "sale",
            Kind::GiftCard => "gift card",
            Kind::Customer => "customer",
            Kind::Ban => "ban",
            Kind::Order => "order",
            Kind::Subscription => "subscription",
        }
    }

    /// The kind of an entity area; `None` for `ApiKeys`, which is not an entity.
    pub(crate) fn of(area: Area) -> Option<Kind> {
        Some(match area {
            Area::Packages => Kind::Package,
            Area::Categories => Kind::Category,
            Area::Coupons => Kind::Coupon,
            Area::Sales => Kind::Sale,
            Area::GiftCards => Kind::GiftCard,
            Area::Orders => Kind::Order,
            Area::Customers => Kind::Customer,
            Area::Bans => Kind::Ban,
            Area::Subscriptions => Kind::Subscription,
            Area::Products => Kind::Product,
            Area::ApiKeys => return None,
        })
    }

    fn area(area: Area) -> Result<Kind> {
        Kind::of(area)
            .ok_or_else(|| Error::NotAllowed("API keys are managed with the key operations".into()))
    }
}

/// Constraint tags in [`UNIQUE`]: part of the database format.
pub(crate) mod unique {
    pub const COUPON_CODE: u8 = 1;
    pub const PRODUCT_SKU: u8 = 2;
    pub const CUSTOMER_EMAIL: u8 = 3;
    pub const GIFT_CARD_CODE: u8 = 4;
}

/// A kind of entity as stored.
pub(crate) trait Entity: Serialize + DeserializeOwned {
    const KIND: Kind;
    const VERSION: u8 = 1;

    fn id(&self) -> &str;

    /// Validates a create body (naming every problem) into a record with id `id`.
    fn create(id: String, input: &Value, ctx: &mut Ctx<'_>) -> Result<Self>;

    /// Applies an update body, naming every problem; nothing is stored on error.
    fn update(&mut self, input: &Value, ctx: &mut Ctx<'_>) -> Result<()>;

    /// The output shape (with masking).
    fn output(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Values that must be unique in the scope: (constraint tag, normalised value).
    fn uniques(&self) -> Vec<(u8, String)> {
        Vec::new()
    }

    /// Refuses a delete that would leave references dangling (409).
    fn check_delete(&self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Err(Error::NotAllowed(format!(
            "a {} cannot be deleted",
            Self::KIND.name()
        )))
    }

    /// Shown on the public storefront.
    fn public(&self) -> bool {
        false
    }

    /// The customer the entity belongs to (orders, subscriptions), for the customer portal.
    fn customer_id(&self) -> Option<&str> {
        None
    }
}

/// Which entities a page shows.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Show<'a> {
    All,
    /// The public storefront: what [`Entity::public`] allows.
    Public,
    /// One customer's own (the customer portal).
    Customer(&'a str),
}

/// A stored record: one byte of format version, then the entity as JSON. (A version byte,
/// rather than a `v` field, lets a read parse the JSON once, straight into the entity.)
fn encode<T: Entity>(entity: &T) -> Result<Vec<u8>> {
    let mut bytes = vec![T::VERSION];
    serde_json::to_writer(&mut bytes, entity)
        .map_err(|e| Error::Corrupt(format!("cannot encode a {}: {e}", T::KIND.name())))?;
    Ok(bytes)
}

/// The write transaction an operation runs in, with what validation needs.
pub(crate) struct Ctx<'a> {
    pub tx: &'a WriteTransaction,
    pub scope: &'a Scope,
    pub now: OffsetDateTime,
    /// Events to write to the outbox in this commit.
    pub events: Vec<(&'static str, Value)>,
}

impl Ctx<'_> {
    fn key<'k>(&'k self, kind: Kind, id: &'k str) -> (&'k str, &'k str, u8, &'k str) {
        (
            self.scope.store_id.as_str(),
            &self.scope.environment,
            kind.tag(),
            id,
        )
    }

    pub(crate) fn load<T: Entity>(&self, id: &str) -> Result<Option<T>> {
        let table = self.tx.open_table(ENTITIES)?;
        let value = table.get(self.key(T::KIND, id))?;
        value.map(|bytes| decode::<T>(bytes.value())).transpose()
    }

    pub(crate) fn exists(&self, kind: Kind, id: &str) -> Result<bool> {
        let table = self.tx.open_table(ENTITIES)?;
        Ok(table.get(self.key(kind, id))?.is_some())
    }

    /// Every entity of a kind in the scope (for reference checks on delete).
    pub(crate) fn all<T: Entity>(&self) -> Result<Vec<T>> {
        let table = self.tx.open_table(ENTITIES)?;
        let (store, env, tag) = (
            self.scope.store_id.as_str(),
            self.scope.environment.as_str(),
            T::KIND.tag(),
        );
        let mut out = Vec::new();
        for item in table.range((store, env, tag, "")..(store, env, tag, "~"))? {
            let (_, value) = item?;
            out.push(decode::<T>(value.value())?);
        }
        Ok(out)
    }

    /// The id holding `value` under constraint `tag`, if any.
    pub(crate) fn unique_owner(&self, tag: u8, value: &str) -> Result<Option<String>> {
        let table = self.tx.open_table(UNIQUE)?;
        let key = (
            self.scope.store_id.as_str(),
            self.scope.environment.as_str(),
            tag,
            value,
        );
        Ok(table.get(key)?.map(|id| id.value().to_owned()))
    }

    /// Writes an entity, moving its unique values from `old` (none for a new entity).
    pub(crate) fn save<T: Entity>(&mut self, entity: &T, old: &[(u8, String)]) -> Result<()> {
        let (store, env) = (
            self.scope.store_id.as_str(),
            self.scope.environment.as_str(),
        );
        let new = entity.uniques();
        {
            let mut table = self.tx.open_table(UNIQUE)?;
            for (tag, value) in old.iter().filter(|u| !new.contains(u)) {
                table.remove((store, env, *tag, value.as_str()))?;
            }
            let mut taken = Vec::new();
            for (tag, value) in new.iter().filter(|u| !old.contains(u)) {
                let key = (store, env, *tag, value.as_str());
                if let Some(owner) = table.get(key)?
                    && owner.value() != entity.id()
                {
                    taken.push(*tag);
                    continue;
                }
                table.insert(key, entity.id())?;
            }
            if let Some(tag) = taken.first() {
                return Err(Error::Conflict(unique_message(*tag)));
            }
        }
        let bytes = encode(entity)?;
        let output = stored_output::<T>(&bytes)?;
        let key = self.key(T::KIND, entity.id());
        self.tx
            .open_table(ENTITIES)?
            .insert(key, bytes.as_slice())?;
        self.tx
            .open_table(OUTPUTS)?
            .insert(key, output.as_slice())?;
        Ok(())
    }

    pub(crate) fn remove<T: Entity>(&mut self, entity: &T) -> Result<()> {
        let (store, env) = (
            self.scope.store_id.as_str(),
            self.scope.environment.as_str(),
        );
        {
            let mut table = self.tx.open_table(UNIQUE)?;
            for (tag, value) in entity.uniques() {
                table.remove((store, env, tag, value.as_str()))?;
            }
        }
        let key = self.key(T::KIND, entity.id());
        self.tx.open_table(ENTITIES)?.remove(key)?;
        self.tx.open_table(OUTPUTS)?.remove(key)?;
        Ok(())
    }

    /// A new id for `kind`: time-ordered, unused.
    pub(crate) fn new_id(&self, kind: Kind) -> Result<String> {
        loop {
            let id = new_id(kind, self.now)?;
            if !self.exists(kind, &id)? {
                return Ok(id);
            }
        }
    }

    pub(crate) fn emit(&mut self, event: &'static str, data: Value) {
        self.events.push((event, data));
    }
}

pub(crate) fn unique_message(tag: u8) -> String {
    match tag {
        unique::COUPON_CODE => "a coupon with this code already exists".into(),
        unique::PRODUCT_SKU => "a product with this sku already exists".into(),
        unique::CUSTOMER_EMAIL => "a customer with this email already exists".into(),
        _ => "this value is already in use".into(),
    }
}

fn new_id(kind: Kind, now: OffsetDateTime) -> Result<String> {
    const LOWER_ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let millis = u64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let random = crate::secret::random_chars(LOWER_ALNUM, 8)?;
    Ok(format!(
        "{}_{:012x}{random}",
        kind.prefix(),
        millis & 0xFFFF_FFFF_FFFF
    ))
}

fn decode<T: Entity>(bytes: &[u8]) -> Result<T> {
    let name = T::KIND.name();
    match bytes.split_first() {
        Some((&version, json)) if (1..=T::VERSION).contains(&version) => {
            serde_json::from_slice(json)
                .map_err(|e| Error::Corrupt(format!("unreadable {name}: {e}")))
        }
        Some((&version, _)) => Err(Error::Corrupt(format!(
            "{name} record format {version} is newer than this release reads ({})",
            T::VERSION
        ))),
        None => Err(Error::Corrupt(format!("empty {name} record"))),
    }
}

fn encode_cursor(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

pub(crate) fn decode_cursor(kind: Kind, cursor: &str) -> Result<String> {
    let bad = || Error::invalid(vec!["cursor: not a cursor from a previous page".to_owned()]);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let id = String::from_utf8(bytes).map_err(|_| bad())?;
    let shaped = id.len() == 24
        && id.starts_with(kind.prefix())
        && id.as_bytes()[3] == b'_'
        && id[4..].bytes().all(|b| b.is_ascii_alphanumeric());
    if shaped { Ok(id) } else { Err(bad()) }
}

/// Runs `op` on the concrete type of `kind`.
macro_rules! dispatch {
    ($kind:expr, $op:ident ( $($arg:expr),* )) => {
        match $kind {
            Kind::Category => $op::<categories::Category>($($arg),*),
            Kind::Package => $op::<packages::Package>($($arg),*),
            Kind::Product => $op::<products::Product>($($arg),*),
            Kind::Coupon => $op::<coupons::Coupon>($($arg),*),
            Kind::Sale => $op::<sales::Sale>($($arg),*),
            Kind::GiftCard => $op::<gift_cards::GiftCard>($($arg),*),
            Kind::Customer => $op::<customers::Customer>($($arg),*),
            Kind::Ban => $op::<bans::Ban>($($arg),*),
            Kind::Order => $op::<orders::Order>($($arg),*),
            Kind::Subscription => $op::<subscriptions::Subscription>($($arg),*),
        }
    };
}

fn create_in<T: Entity>(ctx: &mut Ctx<'_>, input: &Value) -> Result<Value> {
    let id = ctx.new_id(T::KIND)?;
    let entity = T::create(id, input, ctx)?;
    ctx.save(&entity, &[])?;
    Ok(entity.output())
}

fn update_in<T: Entity>(ctx: &mut Ctx<'_>, id: &str, input: &Value) -> Result<Value> {
    let mut entity: T = ctx
        .load(id)?
        .ok_or_else(|| Error::not_found(T::KIND.name(), id))?;
    let old = entity.uniques();
    entity.update(input, ctx)?;
    ctx.save(&entity, &old)?;
    Ok(entity.output())
}

fn delete_in<T: Entity>(ctx: &mut Ctx<'_>, id: &str) -> Result<()> {
    let entity: T = ctx
        .load(id)?
        .ok_or_else(|| Error::not_found(T::KIND.name(), id))?;
    entity.check_delete(ctx)?;
    ctx.remove(&entity)
}

/// The output stored beside a record: what [`output_of`] shows of it, as JSON text. Made from
/// the encoded record rather than the entity in hand, so what lives only in memory between
/// creation and the create response (a gift card's code) can never be stored.
fn stored_output<T: Entity>(bytes: &[u8]) -> Result<Vec<u8>> {
    let entity = decode::<T>(bytes)?;
    serde_json::to_vec(&entity.output())
        .map_err(|e| Error::Corrupt(format!("cannot encode a {}'s output: {e}", T::KIND.name())))
}

/// Writes the output of every stored entity again (a format migration's step).
pub(crate) fn rebuild_outputs(tx: &redb::WriteTransaction) -> Result<()> {
    let entities = tx.open_table(ENTITIES)?;
    let mut outputs = tx.open_table(OUTPUTS)?;
    for row in entities.iter()? {
        let (key, bytes) = row?;
        let (store, env, tag, id) = key.value();
        let kind = Kind::from_tag(tag)
            .ok_or_else(|| Error::Corrupt(format!("entity {id} has an unknown kind {tag}")))?;
        let output = dispatch!(kind, stored_output(bytes.value()))?;
        outputs.insert((store, env, tag, id), output.as_slice())?;
    }
    Ok(())
}

/// The kind, size and position of a page request, naming every problem.
fn page_arguments(
    area: Area,
    limit: Option<usize>,
    cursor: Option<&str>,
) -> Result<(Kind, usize, Option<String>)> {
    let kind = Kind::area(area)?;
    let mut problems = crate::error::Problems::new();
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        problems.push(format!("limit: must be between 1 and {MAX_PAGE}"));
    }
    let after = match cursor {
        Some(cursor) => match decode_cursor(kind, cursor) {
            Ok(id) => Some(id),
            Err(err) => {
                problems.extend_from::<()>(Err(err));
                None
            }
        },
        None => None,
    };
    problems.finish()?;
    Ok((kind, limit, after))
}

/// Walks the rows of one page of `kind` in `table` (records or outputs, keyed alike), oldest
/// first after `after`, handing each row's bytes to `take`, which says whether it went on the
/// page. Stops at `limit` taken; returns the cursor of the next page, if there is one.
fn walk_page(
    table: &impl ReadableTable<(&'static str, &'static str, u8, &'static str), &'static [u8]>,
    scope: &Scope,
    kind: Kind,
    limit: usize,
    after: Option<&str>,
    mut take: impl FnMut(&[u8]) -> Result<bool>,
) -> Result<Option<String>> {
    let (store, env, tag) = (
        scope.store_id.as_str(),
        scope.environment.as_str(),
        kind.tag(),
    );
    let start = after.unwrap_or("");
    let mut taken = 0;
    // The id of the last item walked, in one buffer reused for every item.
    let mut last: Option<String> = None;
    for item in table.range((store, env, tag, start)..(store, env, tag, "~"))? {
        let (key, value) = item?;
        let id = key.value().3;
        if Some(id) == after {
            continue;
        }
        if taken == limit {
            return Ok(last.as_deref().map(encode_cursor));
        }
        if take(value.value())? {
            taken += 1;
        }
        let last = last.get_or_insert_with(String::new);
        last.clear();
        last.push_str(id);
    }
    Ok(None)
}

fn output_of<T: Entity>(bytes: &[u8], show: Show<'_>) -> Result<Option<Value>> {
    let entity = decode::<T>(bytes)?;
    let shown = match show {
        Show::All => true,
        Show::Public => entity.public(),
        Show::Customer(id) => entity.customer_id() == Some(id),
    };
    Ok(shown.then(|| entity.output()))
}

/// The kind an API create of `area` makes (subscriptions are made by orders only).
fn creatable(area: Area) -> Result<Kind> {
    let kind = Kind::area(area)?;
    if kind == Kind::Subscription {
        return Err(Error::NotAllowed(
            "subscriptions are created by orders of subscription packages".into(),
        ));
    }
    Ok(kind)
}

fn create_kind(ctx: &mut Ctx<'_>, kind: Kind, input: &Value) -> Result<Value> {
    if kind == Kind::Order {
        orders::create_order(ctx, input)
    } else {
        dispatch!(kind, create_in(ctx, input))
    }
}

impl Engine {
    /// Creates an entity of `area` from a JSON body; returns it in its output shape (a gift
    /// card's code appears in this response only).
    pub fn create_entity(&self, scope: &Scope, area: Area, input: &Value) -> Result<Value> {
        Ok(self.create_entity_once(scope, area, input, None)?.value)
    }

    /// [`Engine::create_entity`] at most once per `idempotency_key` in the scope (see
    /// [`idempotency`]): a retry of the same request within [`IDEMPOTENCY_TTL`] answers with
    /// what the first made, as it is now, and changes nothing; the same key with another area
    /// or body is a conflict. Without a key, an ordinary create.
    pub fn create_entity_once(
        &self,
        scope: &Scope,
        area: Area,
        input: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Created> {
        let kind = creatable(area)?;
        let Some(key) = idempotency_key else {
            let value = self.write_in(scope, |ctx| create_kind(ctx, kind, input))?;
            return Ok(Created {
                value,
                replayed: false,
            });
        };
        if let Err(bad_key) = idempotency::check_idempotency_key(key) {
            // Every problem at once: the body's too, from a create that is not kept.
            let mut problems = bad_key.problems();
            if let Err(Error::Validation(more)) =
                self.dry_run_in(scope, |ctx| create_kind(ctx, kind, input))
            {
                problems.extend(more);
            }
            return Err(Error::Validation(problems));
        }
        let digest = idempotency::request_digest(kind, input);
        self.write_in(scope, |ctx| {
            if let Some(value) = idempotency::replay(ctx.tx, scope, key, &digest, ctx.now)? {
                return Ok(Created {
                    value,
                    replayed: true,
                });
            }
            let value = create_kind(ctx, kind, input)?;
            let id = value["id"]
                .as_str()
                .ok_or_else(|| Error::Corrupt(format!("a new {} has no id", kind.name())))?;
            idempotency::remember(ctx.tx, scope, key, kind, id, digest, ctx.now)?;
            Ok(Created {
                value,
                replayed: false,
            })
        })
    }

    pub fn get_entity(&self, scope: &Scope, area: Area, id: &str) -> Result<Value> {
        let kind = Kind::area(area)?;
        self.check_scope_live(scope.store_id, &scope.environment)?;
        let tx = storage::read(&self.inner().db)?;
        let table = tx.open_table(ENTITIES)?;
        let key = (
            scope.store_id.as_str(),
            scope.environment.as_str(),
            kind.tag(),
            id,
        );
        let bytes = table
            .get(key)?
            .ok_or_else(|| Error::not_found(kind.name(), id))?;
        let value = dispatch!(kind, output_of(bytes.value(), Show::All))?;
        value.ok_or_else(|| Error::not_found(kind.name(), id))
    }

    /// One page of `area`, oldest first: at most `limit` (1–100, default 50) after `cursor`.
    pub fn list_entities(
        &self,
        scope: &Scope,
        area: Area,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Page> {
        let (kind, limit, after) = page_arguments(area, limit, cursor)?;
        self.page(scope, kind, limit, after.as_deref(), Show::All)
    }

    /// [`list_entities`](Self::list_entities) with the items as JSON text, read as stored:
    /// no record is decoded and no item is built, so a page costs little more than its bytes.
    pub fn list_entities_json(
        &self,
        scope: &Scope,
        area: Area,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Arc<PageJson>> {
        let (kind, limit, after) = page_arguments(area, limit, cursor)?;
        self.check_scope_live(scope.store_id, &scope.environment)?;
        let which = pages::PageRef {
            environment: &scope.environment,
            kind: kind.tag(),
            limit,
            after: after.as_deref(),
        };
        let pages = &self.inner().pages;
        let ticket = match pages.get(scope.store_id, which) {
            Ok(page) => return Ok(page),
            Err(ticket) => ticket,
        };
        let tx = storage::read(&self.inner().db)?;
        let table = tx.open_table(OUTPUTS)?;
        let mut items = String::from("[");
        let next_cursor = walk_page(&table, scope, kind, limit, after.as_deref(), |bytes| {
            let json = std::str::from_utf8(bytes)
                .map_err(|_| Error::Corrupt(format!("a stored {} output", kind.name())))?;
            if items.len() > 1 {
                items.push(',');
            } else {
                // Room for a page of items the size of the first, instead of growing by
                // doubling (each growth a copy of the page so far).
                items.reserve((json.len() + 1) * limit + 1);
            }
            items.push_str(json);
            Ok(true)
        })?;
        items.push(']');
        items.shrink_to_fit();
        let page = Arc::new(PageJson { items, next_cursor });
        pages.put(ticket, scope.store_id, which, &page);
        Ok(page)
    }

    pub(crate) fn page(
        &self,
        scope: &Scope,
        kind: Kind,
        limit: usize,
        after: Option<&str>,
        show: Show<'_>,
    ) -> Result<Page> {
        self.check_scope_live(scope.store_id, &scope.environment)?;
        let tx = storage::read(&self.inner().db)?;
        let table = tx.open_table(ENTITIES)?;
        let mut items = Vec::new();
        let next_cursor = walk_page(&table, scope, kind, limit, after, |bytes| {
            let output = dispatch!(kind, output_of(bytes, show))?;
            Ok(output.map(|output| items.push(output)).is_some())
        })?;
        Ok(Page { items, next_cursor })
    }

    /// Applies a JSON update body to an entity; returns it.
    pub fn update_entity(
        &self,
        scope: &Scope,
        area: Area,
        id: &str,
        input: &Value,
    ) -> Result<Value> {
        let kind = Kind::area(area)?;
        if kind == Kind::Subscription {
            return Err(Error::NotAllowed("subscriptions are read-only".into()));
        }
        self.write_in(scope, |ctx| dispatch!(kind, update_in(ctx, id, input)))
    }

    pub fn delete_entity(&self, scope: &Scope, area: Area, id: &str) -> Result<()> {
        let kind = Kind::area(area)?;
        self.write_in(scope, |ctx| dispatch!(kind, delete_in(ctx, id)))
    }

    /// The public storefront (no key): active packages, or categories, of a store's default
    /// environment, one page at a time.
    pub fn storefront(
        &self,
        store_id: &str,
        area: Area,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Result<Page> {
        let kind = match area {
            Area::Packages | Area::Categories => Kind::area(area)?,
            _ => {
                return Err(Error::NotAllowed(
                    "the storefront shows packages and categories".into(),
                ));
            }
        };
        let store = self.get_store(store_id)?;
        let scope = Scope::new(store.id, store.settings.default_environment());
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::invalid(vec![format!(
                "limit: must be between 1 and {MAX_PAGE}"
            )]));
        }
        let after = cursor.map(|c| decode_cursor(kind, c)).transpose()?;
        self.page(&scope, kind, limit, after.as_deref(), Show::Public)
    }

    /// Fails with 404 unless the scope's store exists and has the environment.
    fn check_scope<T: crate::engine::ReadStores>(&self, tx: &T, scope: &Scope) -> Result<Store> {
        let store = tx.store(scope.store_id.as_str())?;
        if !store.settings.environments.contains(&scope.environment) {
            return Err(Error::not_found("environment", scope.environment.clone()));
        }
        Ok(store)
    }

    /// Runs `op` in one durable write transaction in `scope`, with its outbox events.
    fn write_in<R>(&self, scope: &Scope, op: impl FnOnce(&mut Ctx<'_>) -> Result<R>) -> Result<R> {
        self.transact(scope, true, op)
    }

    /// Runs `op` as [`Engine::write_in`] would, then discards what it wrote: for the problems
    /// a body has when the request is refused for another reason too.
    fn dry_run_in<R>(
        &self,
        scope: &Scope,
        op: impl FnOnce(&mut Ctx<'_>) -> Result<R>,
    ) -> Result<R> {
        self.transact(scope, false, op)
    }

    fn transact<R>(
        &self,
        scope: &Scope,
        commit: bool,
        op: impl FnOnce(&mut Ctx<'_>) -> Result<R>,
    ) -> Result<R> {
        let inner = self.inner();
        let _writer = inner.writer.lock();
        let now = inner.clock.now();
        let tx = storage::write(&inner.db)?;
        self.check_scope(&tx, scope)?;
        let mut ctx = Ctx {
            tx: &tx,
            scope,
            now,
            events: Vec::new(),
        };
        let result = op(&mut ctx)?;
        if !commit {
            tx.abort()?;
            return Ok(result);
        }
        let events = std::mem::take(&mut ctx.events);
        let wake = !events.is_empty();
        outbox::write_outbox(&tx, scope, now, events)?;
        tx.commit()?;
        // Before returning: the caller's next list must not be a page from before this write.
        inner.pages.invalidate(scope.store_id);
        if wake {
            inner.webhooks.wake();
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before outputs were kept (format 1) gets them on its next open, in
    /// the transaction that moves it to format 2, and its JSON pages read as before.
    #[test]
    fn a_format_1_database_gets_its_outputs_when_opened() {
        use crate::permissions::Area;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v1.redb");
        let admin = crate::Actor::admin("test");
        let (scope, expected) = {
            let engine = Engine::open(&path).expect("open");
            let (store, _) = engine
                .create_store(&admin, crate::NewStore::named("Old"))
                .expect("store");
            let scope = Scope::new(store.id, "live");
            for i in 0..3 {
                let body = serde_json::json!({"name": format!("P{i}"),
                    "price": {"amount": 100, "currency": "USD"}});
                engine
                    .create_entity(&scope, Area::Packages, &body)
                    .expect("package");
            }
            let card = serde_json::json!({"balance": {"amount": 500, "currency": "USD"}});
            engine
                .create_entity(&scope, Area::GiftCards, &card)
                .expect("gift card");
            // As format 1 left it: no outputs, version 1.
            let tx = engine.inner().db.begin_write().expect("write");
            tx.delete_table(OUTPUTS).expect("drop outputs");
            storage::set_format_version(&tx, 1);
            tx.commit().expect("commit");
            let expected = [Area::Packages, Area::GiftCards].map(|area| {
                let page = engine
                    .list_entities(&scope, area, None, None)
                    .expect("page");
                serde_json::to_string(&Value::from(page)).expect("json")
            });
            (scope, expected)
        };
        let engine = Engine::open(&path).expect("reopen");
        let got = [Area::Packages, Area::GiftCards].map(|area| {
            engine
                .list_entities_json(&scope, area, None, None)
                .expect("page")
                .to_json()
        });
        assert_eq!(got, expected);
        assert!(got[0].contains("P2"), "{}", got[0]);
        let tx = storage::read(&engine.inner().db).expect("read");
        let meta = tx.open_table(storage::META).expect("meta");
        let version = meta.get("format_version").expect("get").expect("set");
        assert_eq!(version.value(), storage::FORMAT_VERSION.to_be_bytes());
    }

    #[test]
    fn a_page_moved_into_json_has_its_serialized_shape() {
        for next_cursor in [None, Some("cursor".to_owned())] {
            let page = Page {
                items: vec![serde_json::json!({"id": "pkg_1", "price": {"amount": 100}})],
                next_cursor,
            };
            let serialized = serde_json::to_value(&page).expect("a page serializes");
            assert_eq!(Value::from(page), serialized);
        }
    }
}
