//! Sales: a discount on some packages for a period.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::discount::Discount;
use super::rules::{NAME_MAX, SALE_PACKAGES_MAX, check_order, check_ref, id_of, name, present};
use super::{Ctx, Entity, Kind};
use crate::error::{Problems, Result};
use crate::input::{Fields, timestamp};

fn package_ids(value: &Value) -> Result<Vec<String>, Vec<String>> {
    let items = value
        .as_array()
        .ok_or_else(|| vec!["expected a list of package ids".to_owned()])?;
    if items.is_empty() || items.len() > SALE_PACKAGES_MAX {
        return Err(vec![format!("must list 1 to {SALE_PACKAGES_MAX} packages")]);
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
    if bad.is_empty() { Ok(ids) } else { Err(bad) }
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
        let name = f.required("name", name(NAME_MAX));
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
        let name = f.optional("name", name(NAME_MAX));
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
