//! Customers, whose emails are masked on every output.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::rules::{NAME_MAX, check_unique, name, present};
use super::{Ctx, Entity, Kind, unique};
use crate::error::Result;
use crate::input::{Fields, string};
use time::format_description::well_known::Rfc3339;

/// An email address as given (trimmed), checked against RFC 5321/5322 syntax and a dotted
/// domain.
pub(crate) fn email(value: &Value) -> Result<String, String> {
    let text = string(value)?;
    let text = text.trim();
    let parsed = text
        .parse::<email_address::EmailAddress>()
        .map_err(|_| format!("`{text}` is not an email address"))?;
    if text.len() > 254 || !parsed.domain().contains('.') {
        return Err(format!("`{text}` is not an email address"));
    }
    Ok(text.to_owned())
}

/// `jane@example.com` → `j***@example.com`: enough to recognise, not enough to harvest.
pub(crate) fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Customer {
    pub id: String,
    /// The full address, kept for matching; every output masks it.
    email: String,
    name: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

impl Customer {
    /// The normalised form emails are matched by.
    pub(crate) fn email_key(email: &str) -> String {
        email.trim().to_lowercase()
    }

    pub(crate) fn new(id: String, email: String, now: OffsetDateTime) -> Self {
        Customer {
            id,
            email,
            name: None,
            created_at: now,
        }
    }
}

impl Entity for Customer {
    const KIND: Kind = Kind::Customer;

    fn id(&self) -> &str {
        &self.id
    }

    fn create(id: String, input: &Value, ctx: &mut Ctx<'_>) -> Result<Self> {
        let mut f = Fields::new(input, "customer")?;
        let email = f.required("email", email);
        let name = f.optional("name", name(NAME_MAX));
        let mut problems = f.finish();
        let key = email.as_deref().map(Customer::email_key);
        check_unique(
            ctx,
            &mut problems,
            "email",
            unique::CUSTOMER_EMAIL,
            key.as_deref(),
            None,
        )?;
        problems.finish()?;
        Ok(Customer {
            id,
            email: present(email, "email")?,
            name,
            created_at: ctx.now,
        })
    }

    fn update(&mut self, input: &Value, ctx: &mut Ctx<'_>) -> Result<()> {
        let mut f = Fields::new(input, "customer")?;
        let email = f.optional("email", email);
        let name = f.patch("name", name(NAME_MAX));
        let mut problems = f.finish();
        let key = email.as_deref().map(Customer::email_key);
        let own = Some(self.id.as_str());
        check_unique(
            ctx,
            &mut problems,
            "email",
            unique::CUSTOMER_EMAIL,
            key.as_deref(),
            own,
        )?;
        problems.finish()?;
        if let Some(email) = email {
            self.email = email;
        }
        if let Some(name) = name.into_update() {
            self.name = name;
        }
        Ok(())
    }

    fn output(&self) -> Value {
        json!({
            "id": self.id,
            "email": mask_email(&self.email),
            "name": self.name,
            "created_at": self.created_at.format(&Rfc3339).ok(),
        })
    }

    fn uniques(&self) -> Vec<(u8, String)> {
        vec![(unique::CUSTOMER_EMAIL, Customer::email_key(&self.email))]
    }
}
