//! Packages: what a store sells, one-off or as a subscription.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::rules::{DESCRIPTION_MAX, NAME_MAX, check_ref, id_of, name, present, text};
use super::sales::Sale;
use super::{Ctx, Entity, Kind};
use crate::error::{Error, Result};
use crate::input::{Fields, Patch, boolean, string};
use crate::money::Money;

/// What buying a package gives: a one-off item or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PackageType {
    Single,
    Subscription,
}

fn package_type(value: &Value) -> Result<PackageType, String> {
    match string(value)?.as_str() {
        "single" => Ok(PackageType::Single),
        "subscription" => Ok(PackageType::Subscription),
        other => Err(format!(
            "unknown `{other}` (expected single or subscription)"
        )),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Package {
    pub id: String,
    pub name: String,
    description: Option<String>,
    pub price: Money,
    pub(crate) category_id: Option<String>,
    #[serde(rename = "type")]
    pub package_type: PackageType,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl Entity for Package {
    const KIND: Kind = Kind::Package;

    fn id(&self) -> &str {
        &self.id
    }

    fn create(id: String, input: &Value, ctx: &mut Ctx<'_>) -> Result<Self> {
        let mut f = Fields::new(input, "package")?;
        let name = f.required("name", name(NAME_MAX));
        let description = f.optional("description", text(DESCRIPTION_MAX));
        let price = f.required("price", Money::from_json);
        let category_id = f.optional("category_id", id_of(Kind::Category));
        let package_type = f.optional("type", package_type);
        let active = f.optional("active", boolean);
        let mut problems = f.finish();
        check_ref(
            ctx,
            &mut problems,
            "category_id",
            Kind::Category,
            category_id.as_ref(),
        )?;
        problems.finish()?;
        Ok(Package {
            id,
            name: present(name, "name")?,
            description,
            price: present(price, "price")?,
            category_id,
            package_type: package_type.unwrap_or(PackageType::Single),
            active: active.unwrap_or(true),
            created_at: ctx.now,
            updated_at: ctx.now,
        })
    }

    fn update(&mut self, input: &Value, ctx: &mut Ctx<'_>) -> Result<()> {
        let mut f = Fields::new(input, "package")?;
        let name = f.optional("name", name(NAME_MAX));
        let description = f.patch("description", text(DESCRIPTION_MAX));
        let price = f.optional("price", Money::from_json);
        let category_id = f.patch("category_id", id_of(Kind::Category));
        let package_type = f.optional("type", package_type);
        let active = f.optional("active", boolean);
        let mut problems = f.finish();
        if let Patch::Set(category) = &category_id {
            check_ref(
                ctx,
                &mut problems,
                "category_id",
                Kind::Category,
                Some(category),
            )?;
        }
        problems.finish()?;
        if let Some(name) = name {
            self.name = name;
        }
        if let Some(description) = description.into_update() {
            self.description = description;
        }
        if let Some(price) = price {
            self.price = price;
        }
        if let Some(category_id) = category_id.into_update() {
            self.category_id = category_id;
        }
        if let Some(package_type) = package_type {
            self.package_type = package_type;
        }
        if let Some(active) = active {
            self.active = active;
        }
        self.updated_at = ctx.now;
        Ok(())
    }

    fn check_delete(&self, ctx: &mut Ctx<'_>) -> Result<()> {
        match ctx
            .all::<Sale>()?
            .into_iter()
            .find(|sale| sale.covers(&self.id))
        {
            Some(sale) => Err(Error::Conflict(format!(
                "the package is part of sale {}; remove it from the sale first",
                sale.id
            ))),
            None => Ok(()),
        }
    }

    fn public(&self) -> bool {
        self.active
    }
}
