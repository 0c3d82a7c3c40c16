//! Coupons: codes that take a discount off an order.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::discount::Discount;
use super::rules::{COUNT_MAX, check_order, check_unique, present};
use super::{Ctx, Entity, Kind, unique};
use crate::error::Result;
use crate::input::{Fields, integer, string, timestamp};

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
        Ok(n) if (1..=COUNT_MAX).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 1 to {COUNT_MAX}")),
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
        check_unique(
            ctx,
            &mut problems,
            "code",
            unique::COUPON_CODE,
            code.as_deref(),
            None,
        )?;
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
        check_unique(
            ctx,
            &mut problems,
            "code",
            unique::COUPON_CODE,
            code.as_deref(),
            Some(&self.id),
        )?;
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
