//! Categories: a tree that packages and products hang from.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::packages::Package;
use super::products::Product;
use super::rules::{DESCRIPTION_MAX, NAME_MAX, check_ref, id_of, name, present, text};
use super::{Ctx, Entity, Kind};
use crate::error::{Error, Result};
use crate::input::{Fields, Patch};

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
