//! Promotions: coupons, sales and gift cards.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::catalog::{check_ref, present};
use super::parse::{id_of, name, text};
use super::{Ctx, Entity, Kind, unique};
use crate::error::{Problems, Result};
use crate::input::{Fields, Patch, boolean, integer, string, timestamp};
use crate::money::{self, Money, percent_of};
use crate::secret::{Digest, Secret, random_chars};

/// A price reduction: a percentage (0–100) or a fixed amount in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Discount {
    Percentage { value: i64 },
    Fixed { value: i64, currency: String },
}

impl Discount {
    pub(crate) fn from_json(value: &Value) -> Result<Discount, String> {
        let mut f = Fields::new(value, "discount").map_err(|e| e.problems().join("; "))?;
        let kind = f.required("type", string);
        let amount = f.required("value", integer);
        let currency = f.optional("currency", money::currency_code);
        let mut problems = f.finish();
        let discount = match (kind.as_deref(), amount) {
            (Some("percentage"), Some(value)) => {
                if !(0..=100).contains(&value) {
                    problems.push("value: a percentage must be from 0 to 100");
                }
                if currency.is_some() {
                    problems.push("currency: only a fixed discount has a currency");
                }
                Some(Discount::Percentage { value })
            }
            (Some("fixed"), Some(value)) => {
                if let Err(problem) = money::amount(&json!(value)) {
                    problems.push(format!("value: {problem}"));
                }
                match currency {
                    Some(currency) => Some(Discount::Fixed { value, currency }),
                    None => {
                        problems.push("currency: is required for a fixed discount");
                        None
                    }
                }
            }
            (Some(other), _) if other != "percentage" && other != "fixed" => {
                problems.push(format!(
                    "type: unknown `{other}` (expected percentage or fixed)"
                ));
                None
            }
            _ => None,
        };
        problems.finish().map_err(|e| e.problems().join("; "))?;
        discount.ok_or_else(|| "expected {type, value}".to_owned())
    }

    /// How much comes off `amount` (never more than it). A fixed discount in another
    /// currency is an error.
    pub(crate) fn off(&self, amount: i64, currency: &str) -> Result<i64, String> {
        match self {
            Discount::Percentage { value } => Ok(percent_of(amount, *value).min(amount)),
            Discount::Fixed {
                value,
                currency: own,
            } if own == currency => Ok((*value).min(amount)),
            Discount::Fixed { currency: own, .. } => {
                Err(format!("the discount is in {own}, the order in {currency}"))
            }
        }
    }
}

fn code(value: &Value) -> Result<String, String> {
    let text = string(value)?;
    let ok = (3..=32).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if ok {
        Ok(text.to_ascii_uppercase())
    } else {
        Err("must be 3 to 32 of [A-Za-z0-9_-]".into())
    }
}

fn max_uses(value: &Value) -> Result<i64, String> {
    match integer(value) {
        Ok(n) if (1..=1_000_000_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number from 1 to 1000000000".into()),
    }
}

/// Names a start at or after an end.
fn check_order(
    problems: &mut Problems,
    start: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
    end_field: &str,
    start_field: &str,
) {
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        problems.push(format!("{end_field}: must be after {start_field}"));
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Coupon {
    id: String,
    /// Upper case; unique in the scope.
    pub code: String,
    pub discount: Discount,
    #[serde(with = "time::serde::rfc3339::option")]
    starts_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    max_uses: Option<i64>,
    pub uses: i64,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl Coupon {
    /// Why the coupon cannot be used at `now`, if it cannot.
    pub(crate) fn unusable(&self, now: OffsetDateTime) -> Option<&'static str> {
        if self.starts_at.is_some_and(|at| now < at) {
            Some("is not valid yet")
        } else if self.expires_at.is_some_and(|at| now >= at) {
            Some("has expired")
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some("has been used up")
        } else {
            None
        }
    }
}

impl Entity for Coupon {
    const KIND: Kind = Kind::Coupon;

    fn id(&self) -> &str {
        &self.id
    }

    fn create(id: String, input: &Value, ctx: &mut Ctx<'_>) -> Result<Self> {
        let mut f = Fields::new(input, "coupon")?;
        let code = f.required("code", code);
        let discount = f.required("discount", Discount::from_json);
        let starts_at = f.optional("starts_at", timestamp);
        let expires_at = f.optional("expires_at", timestamp);
        let max_uses = f.optional("max_uses", max_uses);
        let mut problems = f.finish();
        check_order(
            &mut problems,
            starts_at,
            expires_at,
            "expires_at",
            "starts_at",
        );
        if expires_at.is_some_and(|at| at <= ctx.now) {
            problems.push("expires_at: must be in the future");
        }
        if let Some(code) = &code
            && ctx.unique_owner(unique::COUPON_CODE, code)?.is_some()
        {
            problems.push(format!("code: a coupon `{code}` already exists"));
        }
        problems.finish()?;
        Ok(Coupon {
            id,
            code: present(code, "code")?,
            discount: present(discount, "discount")?,
            starts_at,
            expires_at,
            max_uses,
            uses: 0,
            created_at: ctx.now,
        })
    }

    fn update(&mut self, input: &Value, ctx: &mut Ctx<'_>) -> Result<()> {
        let mut f = Fields::new(input, "coupon")?;
        let code = f.optional("code", code);
        let discount = f.optional("discount", Discount::from_json);
        let starts_at = f.patch("starts_at", timestamp);
        let expires_at = f.patch("expires_at", timestamp);
        let max_uses = f.patch("max_uses", max_uses);
        let mut problems = f.finish();
        let next_start = starts_at.clone().into_update().unwrap_or(self.starts_at);
        let next_end = expires_at.clone().into_update().unwrap_or(self.expires_at);
        check_order(
            &mut problems,
            next_start,
            next_end,
            "expires_at",
            "starts_at",
        );
        if let Some(code) = &code
            && ctx
                .unique_owner(unique::COUPON_CODE, code)?
                .is_some_and(|owner| owner != self.id)
        {
            problems.push(format!("code: a coupon `{code}` already exists"));
        }
        problems.finish()?;
        if let Some(code) = code {
            self.code = code;
        }
        if let Some(discount) = discount {
            self.discount = discount;
        }
        self.starts_at = next_start;
        self.expires_at = next_end;
        if let Some(max_uses) = max_uses.into_update() {
            self.max_uses = max_uses;
        }
        Ok(())
    }

    fn uniques(&self) -> Vec<(u8, String)> {
        vec![(unique::COUPON_CODE, self.code.clone())]
    }

    fn check_delete(&self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
}

fn package_ids(value: &Value) -> Result<Vec<String>, String> {
    let items = value.as_array().ok_or("expected a list of package ids")?;
    if items.is_empty() || items.len() > 1_000 {
        return Err("must list 1 to 1000 packages".into());
    }
    let parse = id_of(Kind::Package);
    let mut ids = Vec::with_capacity(items.len());
    let mut bad = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match parse(item) {
            Ok(id) if !ids.contains(&id) => ids.push(id),
            Ok(id) => bad.push(format!("[{i}] `{id}` is listed twice")),
            Err(problem) => bad.push(format!("[{i}] {problem}")),
        }
    }
    if bad.is_empty() {
        Ok(ids)
    } else {
        Err(bad.join("; "))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sale {
    pub id: String,
    name: String,
    pub discount: Discount,
    package_ids: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    starts_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    ends_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl Sale {
    pub(crate) fn covers(&self, package_id: &str) -> bool {
        self.package_ids.iter().any(|id| id == package_id)
    }

    pub(crate) fn running_at(&self, now: OffsetDateTime) -> bool {
        self.starts_at <= now && self.ends_at.is_none_or(|end| now < end)
    }
}

fn check_packages(ctx: &Ctx<'_>, problems: &mut Problems, ids: &[String]) -> Result<()> {
    for id in ids {
        check_ref(ctx, problems, "package_ids", Kind::Package, Some(id))?;
    }
    Ok(())
}

impl Entity for Sale {
    const KIND: Kind = Kind::Sale;

    fn id(&self) -> &str {
        &self.id
    }

    fn create(id: String, input: &Value, ctx: &mut Ctx<'_>) -> Result<Self> {
        let mut f = Fields::new(input, "sale")?;
        let name = f.required("name", name(200));
        let discount = f.required("discount", Discount::from_json);
        let package_ids = f.required("package_ids", package_ids);
        let starts_at = f.required("starts_at", timestamp);
        let ends_at = f.optional("ends_at", timestamp);
        let mut problems = f.finish();
        check_order(&mut problems, starts_at, ends_at, "ends_at", "starts_at");
        check_packages(
            ctx,
            &mut problems,
            package_ids.as_deref().unwrap_or_default(),
        )?;
        problems.finish()?;
        Ok(Sale {
            id,
            name: present(name, "name")?,
            discount: present(discount, "discount")?,
            package_ids: present(package_ids, "package_ids")?,
            starts_at: present(starts_at, "starts_at")?,
            ends_at,
            created_at: ctx.now,
        })
    }

    fn update(&mut self, input: &Value, ctx: &mut Ctx<'_>) -> Result<()> {
        let mut f = Fields::new(input, "sale")?;
        let name = f.optional("name", name(200));
        let discount = f.optional("discount", Discount::from_json);
        let package_ids = f.optional("package_ids", package_ids);
        let starts_at = f.optional("starts_at", timestamp);
        let ends_at = f.patch("ends_at", timestamp);
        let mut problems = f.finish();
        let next_start = starts_at.unwrap_or(self.starts_at);
        let next_end = ends_at.into_update().unwrap_or(self.ends_at);
        check_order(
            &mut problems,
            Some(next_start),
            next_end,
            "ends_at",
            "starts_at",
        );
        check_packages(
            ctx,
            &mut problems,
            package_ids.as_deref().unwrap_or_default(),
        )?;
        problems.finish()?;
        if let Some(name) = name {
            self.name = name;
        }
        if let Some(discount) = discount {
            self.discount = discount;
        }
        if let Some(package_ids) = package_ids {
            self.package_ids = package_ids;
        }
        self.starts_at = next_start;
        self.ends_at = next_end;
        Ok(())
    }

    fn check_delete(&self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
}

/// Gift card codes: 16 characters of Crockford's base32 (no I, L, O, U), shown in groups of 4.
const CODE_ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The digest a gift card code is found by (dashes and case ignored).
pub(crate) fn code_digest(code: &str) -> String {
    let normalised: String = code
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    Digest::of(normalised.as_bytes()).to_hex()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GiftCard {
    id: String,
    /// SHA-256 of the code: the code itself is never stored.
    code_digest: String,
    last4: String,
    balance: Money,
    note: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    void: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    /// The code, in memory only between creation and the create response.
    #[serde(skip)]
    code: Option<Secret>,
}

impl Entity for GiftCard {
    const KIND: Kind = Kind::GiftCard;

    fn id(&self) -> &str {
        &self.id
    }

    fn create(id: String, input: &Value, ctx: &mut Ctx<'_>) -> Result<Self> {
        let mut f = Fields::new(input, "gift card")?;
        let balance = f.required("balance", Money::from_json);
        let note = f.optional("note", text(1_000));
        let expires_at = f.optional("expires_at", timestamp);
        let mut problems = f.finish();
        if expires_at.is_some_and(|at| at <= ctx.now) {
            problems.push("expires_at: must be in the future");
        }
        problems.finish()?;
        let (code, digest) = loop {
            let raw = random_chars(CODE_ALPHABET, 16)?;
            let digest = code_digest(&raw);
            if ctx.unique_owner(unique::GIFT_CARD_CODE, &digest)?.is_none() {
                break (raw, digest);
            }
        };
        let grouped = code
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("-");
        Ok(GiftCard {
            id,
            code_digest: digest,
            last4: code[12..].to_owned(),
            balance: present(balance, "balance")?,
            note,
            expires_at,
            void: false,
            created_at: ctx.now,
            code: Some(Secret::new(grouped)),
        })
    }

    fn update(&mut self, input: &Value, ctx: &mut Ctx<'_>) -> Result<()> {
        let mut f = Fields::new(input, "gift card")?;
        let balance = f.optional("balance", Money::from_json);
        let note = f.patch("note", text(1_000));
        let expires_at = f.patch("expires_at", timestamp);
        let void = f.optional("void", boolean);
        let mut problems = f.finish();
        if let Some(balance) = &balance
            && balance.currency != self.balance.currency
        {
            problems.push(format!(
                "balance.currency: the card is in {}",
                self.balance.currency
            ));
        }
        if let Patch::Set(at) = expires_at
            && at <= ctx.now
        {
            problems.push("expires_at: must be in the future");
        }
        if self.void && void == Some(false) {
            problems.push("void: a void gift card cannot be restored");
        }
        problems.finish()?;
        if let Some(balance) = balance {
            self.balance = balance;
        }
        if let Some(note) = note.into_update() {
            self.note = note;
        }
        if let Some(expires_at) = expires_at.into_update() {
            self.expires_at = expires_at;
        }
        if let Some(void) = void {
            self.void = void;
        }
        Ok(())
    }

    fn output(&self) -> Value {
        let mut out = json!({
            "id": self.id,
            "masked_code": format!("****-****-****-{}", self.last4),
            "balance": self.balance,
            "note": self.note,
            "expires_at": self.expires_at.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            "void": self.void,
            "created_at": self.created_at.format(&time::format_description::well_known::Rfc3339).ok(),
        });
        if let Some(code) = &self.code {
            out["code"] = Value::String(code.expose().to_owned());
        }
        out
    }

    fn uniques(&self) -> Vec<(u8, String)> {
        vec![(unique::GIFT_CARD_CODE, self.code_digest.clone())]
    }

    fn check_delete(&self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
}
