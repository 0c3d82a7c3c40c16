//! Gift cards: a balance behind a code shown once.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::rules::{NOTE_MAX, present, text};
use super::{Ctx, Entity, Kind, unique};
use crate::error::Result;
use crate::input::{Fields, Patch, boolean, timestamp};
use crate::money::Money;
use crate::secret::{Digest, Secret, random_chars};

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
        let note = f.optional("note", text(NOTE_MAX));
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
        let note = f.patch("note", text(NOTE_MAX));
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
