//! Products: stocked items with a SKU.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::rules::{COUNT_MAX, NAME_MAX, check_ref, check_unique, id_of, name, present};
use super::{Ctx, Entity, Kind, unique};
use crate::error::Result;
use crate::input::{Fields, Patch, boolean, integer, string};
use crate::money::Money;

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
        Ok(n) if (0..=COUNT_MAX).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from 0 to {COUNT_MAX}")),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Product {
    pub id: String,
    sku: String,
    pub name: String,
    pub price: Money,
    pub stock: i64,
    pub(crate) category_id: Option<String>,
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
        let key = sku.as_deref().map(str::to_ascii_lowercase);
        check_unique(
            ctx,
            &mut problems,
            "sku",
            unique::PRODUCT_SKU,
            key.as_deref(),
            None,
        )?;
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
        let key = sku.as_deref().map(str::to_ascii_lowercase);
        let own = Some(self.id.as_str());
        check_unique(
            ctx,
            &mut problems,
            "sku",
            unique::PRODUCT_SKU,
            key.as_deref(),
            own,
        )?;
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
