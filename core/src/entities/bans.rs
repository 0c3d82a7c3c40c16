//! Bans of users, IP addresses and networks, and emails.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::customers::{Customer, email};
use super::rules::{NAME_MAX, NOTE_MAX, name, present, text};
use super::{Ctx, Entity, Kind};
use crate::error::Result;
use crate::input::{Fields, Patch, string, timestamp};

/// What a ban matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BanType {
    User,
    Ip,
    Email,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ban {
    id: String,
    #[serde(rename = "type")]
    ban_type: BanType,
    value: String,
    reason: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

fn ban_type(value: &Value) -> Result<BanType, String> {
    match string(value)?.as_str() {
        "user" => Ok(BanType::User),
        "ip" => Ok(BanType::Ip),
        "email" => Ok(BanType::Email),
        other => Err(format!("unknown `{other}` (expected user, ip or email)")),
    }
}

/// The ban's value, validated for its type: an address or CIDR for `ip` (stored as a network),
/// an email address for `email`, 1–200 characters for `user`.
fn ban_value(ban_type: BanType, value: &Value) -> Result<String, String> {
    match ban_type {
        BanType::Ip => {
            let text = string(value)?;
            crate::input::parse_cidrs(std::slice::from_ref(&text))
                .map(|nets| nets[0].to_string())
                .map_err(|problems| problems.join("; "))
        }
        BanType::Email => email(value).map(|e| Customer::email_key(&e)),
        BanType::User => name(NAME_MAX)(value),
    }
}

impl Entity for Ban {
    const KIND: Kind = Kind::Ban;

    fn id(&self) -> &str {
        &self.id
    }

    fn create(id: String, input: &Value, ctx: &mut Ctx<'_>) -> Result<Self> {
        let mut f = Fields::new(input, "ban")?;
        let ban_type = f.required("type", ban_type);
        let raw_value = f.required("value", |v| Ok::<_, String>(v.clone()));
        let reason = f.optional("reason", text(NOTE_MAX));
        let expires_at = f.optional("expires_at", timestamp);
        let mut problems = f.finish();
        let value = match (ban_type, &raw_value) {
            (Some(t), Some(raw)) => match ban_value(t, raw) {
                Ok(value) => Some(value),
                Err(problem) => {
                    problems.push(format!("value: {problem}"));
                    None
                }
            },
            _ => None,
        };
        if expires_at.is_some_and(|at| at <= ctx.now) {
            problems.push("expires_at: must be in the future");
        }
        problems.finish()?;
        Ok(Ban {
            id,
            ban_type: present(ban_type, "type")?,
            value: present(value, "value")?,
            reason,
            expires_at,
            created_at: ctx.now,
        })
    }

    fn update(&mut self, input: &Value, ctx: &mut Ctx<'_>) -> Result<()> {
        let mut f = Fields::new(input, "ban")?;
        let reason = f.patch("reason", text(NOTE_MAX));
        let expires_at = f.patch("expires_at", timestamp);
        let mut problems = f.finish();
        if let Patch::Set(at) = expires_at
            && at <= ctx.now
        {
            problems.push("expires_at: must be in the future");
        }
        problems.finish()?;
        if let Some(reason) = reason.into_update() {
            self.reason = reason;
        }
        if let Some(expires_at) = expires_at.into_update() {
            self.expires_at = expires_at;
        }
        Ok(())
    }

    fn check_delete(&self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
}
