//! The catalog: categories, packages and products.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::parse::{id_of, name, text};
use super::promotions::Sale;
use super::{Ctx, Entity, Kind, unique};
use crate::error::{Error, Problems, Result};
use crate::input::{Fields, Patch, boolean, integer, string};
use crate::money::Money;

const NAME_MAX: usize = 200;
const DESCRIPTION_MAX: usize = 5_000;

/// A value that was checked to be present when the problems list came back empty.
pub(super) fn present<T>(value: Option<T>, field: &str) -> Result<T> {
    value.ok_or_else(|| Error::invalid(vec![format!("{field}: is required")]))
}

/// Checks that a referenced entity exists, naming the field otherwise.
pub(super) fn check_ref(
    ctx: &Ctx<'_>,
    problems: &mut Problems,
    field: &str,
    kind: Kind,
    id: Option<&String>,
) -> Result<()> {
    if let Some(id) = id
        && !ctx.exists(kind, id)?
    {
        problems.push(format!("{field}: no {} `{id}` in this store", kind.name()));
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Category {
    id: String,
    name: String,
    description: Option<String>,
    parent_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl Category {
    /// True when `ancestor` is `start` or one of its ancestors.
    fn descends_from(ctx: &Ctx<'_>, start: &str, ancestor: &str) -> Result<bool> {
        let mut current = Some(start.to_owned());
        // Bounded walk: a cycle in stored data cannot loop forever.
        for _ in 0..1_000 {
            let Some(id) = current else { return Ok(false) };
            if id == ancestor {
                return Ok(true);
            }
            current = ctx.load::<Category>(&id)?.and_then(|c| c.parent_id);
        }
        Ok(true)
    }
}

impl Entity for Category {
    const KIND: Kind = Kind::Category;

    fn id(&self) -> &str {
        &self.id
    }

    fn create(id: String, input: &Value, ctx: &mut Ctx<'_>) -> Result<Self> {
        let mut f = Fields::new(input, "category")?;
        let name = f.required("name", name(NAME_MAX));
        let description = f.optional("description", text(DESCRIPTION_MAX));
        let parent_id = f.optional("parent_id", id_of(Kind::Category));
        let mut problems = f.finish();
        check_ref(
            ctx,
            &mut problems,
            "parent_id",
            Kind::Category,
            parent_id.as_ref(),
        )?;
        problems.finish()?;
        Ok(Category {
            id,
            name: present(name, "name")?,
            description,
            parent_id,
            created_at: ctx.now,
            updated_at: ctx.now,
        })
    }

    fn update(&mut self, input: &Value, ctx: &mut Ctx<'_>) -> Result<()> {
        let mut f = Fields::new(input, "category")?;
        let name = f.optional("name", name(NAME_MAX));
        let description = f.patch("description", text(DESCRIPTION_MAX));
        let parent_id = f.patch("parent_id", id_of(Kind::Category));
        let mut problems = f.finish();
        if let Patch::Set(parent) = &parent_id {
            check_ref(
                ctx,
                &mut problems,
                "parent_id",
                Kind::Category,
                Some(parent),
            )?;
            if Category::descends_from(ctx, parent, &self.id)? {
                problems.push("parent_id: a category cannot be placed under itself");
            }
        }
        problems.finish()?;
        if let Some(name) = name {
            self.name = name;
        }
        if let Some(description) = description.into_update() {
            self.description = description;
        }
        if let Some(parent_id) = parent_id.into_update() {
            self.parent_id = parent_id;
        }
        self.updated_at = ctx.now;
        Ok(())
    }

    fn check_delete(&self, ctx: &mut Ctx<'_>) -> Result<()> {
        let child = ctx
            .all::<Category>()?
            .into_iter()
            .find(|c| c.parent_id.as_deref() == Some(&self.id));
        let package = ctx
            .all::<Package>()?
            .into_iter()
            .find(|p| p.category_id.as_deref() == Some(&self.id));
        let product = ctx
            .all::<Product>()?
            .into_iter()
            .find(|p| p.category_id.as_deref() == Some(&self.id));
        let users: Vec<String> = [
            child.map(|c| format!("category {}", c.id)),
            package.map(|p| format!("package {}", p.id)),
            product.map(|p| format!("product {}", p.id)),
        ]
        .into_iter()
        .flatten()
        .collect();
        if users.is_empty() {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "the category is still used (e.g. by {}); move those first",
                users.join(", ")
            )))
        }
    }

    fn public(&self) -> bool {
        true
    }
}

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
    category_id: Option<String>,
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

fn sku(value: &Value) -> Result<String, String> {
    let text = string(value)?;
    let ok = (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(text)
    } else {
        Err("must be 1 to 64 of [A-Za-z0-9._-]".into())
    }
}

fn stock(value: &Value) -> Result<i64, String> {
    match integer(value) {
        Ok(n) if (0..=1_000_000_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number from 0 to 1000000000".into()),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Product {
    pub id: String,
    sku: String,
    pub name: String,
    pub price: Money,
    pub stock: i64,
    category_id: Option<String>,
    pub active: bool,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

impl Entity for Product {
    const KIND: Kind = Kind::Product;

    fn id(&self) -> &str {
        &self.id
    }

    fn create(id: String, input: &Value, ctx: &mut Ctx<'_>) -> Result<Self> {
        let mut f = Fields::new(input, "product")?;
        let sku = f.required("sku", sku);
        let name = f.required("name", name(NAME_MAX));
        let price = f.required("price", Money::from_json);
        let stock = f.optional("stock", stock);
        let category_id = f.optional("category_id", id_of(Kind::Category));
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
        Ok(Product {
            id,
            sku: present(sku, "sku")?,
            name: present(name, "name")?,
            price: present(price, "price")?,
            stock: stock.unwrap_or(0),
            category_id,
            active: active.unwrap_or(true),
            created_at: ctx.now,
            updated_at: ctx.now,
        })
    }

    fn update(&mut self, input: &Value, ctx: &mut Ctx<'_>) -> Result<()> {
        let mut f = Fields::new(input, "product")?;
        let sku = f.optional("sku", sku);
        let name = f.optional("name", name(NAME_MAX));
        let price = f.optional("price", Money::from_json);
        let stock = f.optional("stock", stock);
        let category_id = f.patch("category_id", id_of(Kind::Category));
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
        if let Some(sku) = sku {
            self.sku = sku;
        }
        if let Some(name) = name {
            self.name = name;
        }
        if let Some(price) = price {
            self.price = price;
        }
        if let Some(stock) = stock {
            self.stock = stock;
        }
        if let Some(category_id) = category_id.into_update() {
            self.category_id = category_id;
        }
        if let Some(active) = active {
            self.active = active;
        }
        self.updated_at = ctx.now;
        Ok(())
    }

    fn uniques(&self) -> Vec<(u8, String)> {
        vec![(unique::PRODUCT_SKU, self.sku.to_ascii_lowercase())]
    }

    fn check_delete(&self, _ctx: &mut Ctx<'_>) -> Result<()> {
        Ok(())
    }
}
