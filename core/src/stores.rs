//! Stores (tenants) and their settings (SPEC §6): defaults, validation and patches.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::error::{Problems, Result};
use crate::ids::StoreId;
use crate::input::{Fields, Patch, boolean, char_len, integer, string, string_list, timestamp};
use crate::limits::RateLimit;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_SCOPED_KEYS_LIMIT: u32 = 10_000;
pub const MAX_KEY_TTL_DAYS: u32 = 3_650;
pub const MAX_ENVIRONMENTS: usize = 16;
/// Prefixes that would read as another credential type.
const RESERVED_PREFIXES: [&str; 4] = ["ck", "cs", "cps", "whsec"];

/// A store's subscription tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    #[default]
    Free,
    Pro,
}

/// A store's plan: tier and when it lapses (`None`: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Plan {
    pub tier: Tier,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
}

impl Plan {
    /// True when this is a Pro plan that has not lapsed at `now`.
    pub fn is_active_pro(&self, now: OffsetDateTime) -> bool {
        self.tier == Tier::Pro && self.expires_at.is_none_or(|at| at > now)
    }

    fn from_json(value: &Value) -> Result<Plan, Vec<String>> {
        let mut fields = Fields::new(value, "plan").map_err(|e| e.problems())?;
        let tier = fields.required("tier", string);
        let expires_at = fields
            .patch("expires_at", timestamp)
            .into_update()
            .flatten();
        let mut problems = fields.finish();
        let tier = match tier.as_deref() {
            Some("free") => Some(Tier::Free),
            Some("pro") => Some(Tier::Pro),
            Some(other) => {
                problems.push(format!("tier: unknown `{other}` (expected free or pro)"));
                None
            }
            None => None,
        };
        match (problems.finish(), tier) {
            (Ok(()), Some(tier)) => Ok(Plan { tier, expires_at }),
            (Err(err), _) => Err(err.problems()),
            (Ok(()), None) => Err(vec!["tier: is required".into()]),
        }
    }
}

/// Every store setting, with the defaults of SPEC §6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSettings {
    pub name: String,
    pub api_enabled: bool,
    pub plan: Plan,
    pub require_pro: bool,
    pub key_prefix: String,
    /// `None`: the server default applies.
    pub default_rate_limit: Option<RateLimit>,
    pub max_scoped_keys: u32,
    /// `None`: new keys do not expire unless given an expiry.
    pub default_key_ttl_days: Option<u32>,
    pub permissions_editable: bool,
    pub environments: Vec<String>,
    /// Days the request log of this store is kept (1–365; SPEC §11).
    #[serde(default = "default_log_retention_days")]
    pub log_retention_days: u32,
}

fn default_log_retention_days() -> u32 {
    30
}

/// The longest request-log retention a store may ask for.
pub const MAX_LOG_RETENTION_DAYS: u32 = 365;

impl StoreSettings {
    /// The defaults, for a store called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            api_enabled: true,
            plan: Plan::default(),
            require_pro: false,
            key_prefix: "lk".into(),
            default_rate_limit: None,
            max_scoped_keys: 5,
            default_key_ttl_days: Some(365),
            permissions_editable: false,
            environments: vec!["live".into(), "test".into()],
            log_retention_days: default_log_retention_days(),
        }
    }

    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let name_len = char_len(self.name.trim());
        if name_len == 0 {
            problems.push("name: must not be empty".to_owned());
        } else if char_len(&self.name) > MAX_NAME_CHARS {
            problems.push(format!("name: must be at most {MAX_NAME_CHARS} characters"));
        }
        let prefix = &self.key_prefix;
        if !(2..=8).contains(&prefix.len()) || !prefix.bytes().all(|b| b.is_ascii_lowercase()) {
            problems.push(format!(
                "key_prefix: `{prefix}` must be 2–8 lowercase letters"
            ));
        } else if RESERVED_PREFIXES.contains(&prefix.as_str()) {
            problems.push(format!("key_prefix: `{prefix}` is reserved"));
        }
        if let Some(limit) = &self.default_rate_limit {
            problems.extend(limit.problems("default_rate_limit"));
        }
        if !(1..=MAX_LOG_RETENTION_DAYS).contains(&self.log_retention_days) {
            problems.push(format!(
                "log_retention_days: must be between 1 and {MAX_LOG_RETENTION_DAYS}"
            ));
        }
        if self.max_scoped_keys > MAX_SCOPED_KEYS_LIMIT {
            problems.push(format!(
                "max_scoped_keys: must be between 0 and {MAX_SCOPED_KEYS_LIMIT}"
            ));
        }
        if let Some(days) = self.default_key_ttl_days
            && !(1..=MAX_KEY_TTL_DAYS).contains(&days)
        {
            problems.push(format!(
                "default_key_ttl_days: must be between 1 and {MAX_KEY_TTL_DAYS}, or null for no expiry"
            ));
        }
        if self.environments.is_empty() || self.environments.len() > MAX_ENVIRONMENTS {
            problems.push(format!(
                "environments: must list 1 to {MAX_ENVIRONMENTS} environments"
            ));
        }
        for (i, env) in self.environments.iter().enumerate() {
            let valid = (1..=32).contains(&env.len())
                && env.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                });
            if !valid {
                problems.push(format!("environments: `{env}` must be 1–32 of [a-z0-9_-]"));
            } else if self.environments[..i].contains(env) {
                problems.push(format!("environments: `{env}` is listed twice"));
            }
        }
        problems
    }

    /// The environment a key gets when none is named: `live` if the store has it, else the
    /// first listed.
    pub fn default_environment(&self) -> &str {
        if self.environments.iter().any(|e| e == "live") {
            "live"
        } else {
            self.environments.first().map_or("live", String::as_str)
        }
    }

    /// True when verify must answer `PLAN_REQUIRED` at `now`.
    pub fn plan_blocks(&self, now: OffsetDateTime) -> bool {
        self.require_pro && !self.plan.is_active_pro(now)
    }
}

/// A change to a store's settings; absent fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorePatch {
    pub name: Option<String>,
    pub api_enabled: Option<bool>,
    pub plan: Option<Plan>,
    pub require_pro: Option<bool>,
    pub key_prefix: Option<String>,
    pub default_rate_limit: Patch<RateLimit>,
    pub max_scoped_keys: Option<u32>,
    pub default_key_ttl_days: Patch<u32>,
    pub permissions_editable: Option<bool>,
    pub environments: Option<Vec<String>>,
    pub log_retention_days: Option<u32>,
}

impl StorePatch {
    /// Reads a patch from a JSON object, naming every wrong or unknown field.
    pub fn from_json(value: &Value) -> Result<StorePatch> {
        let mut fields = Fields::new(value, "store")?;
        let patch = Self::read(&mut fields);
        let mut problems = fields.finish();
        // Check the fields that did parse too, so one answer names every problem.
        let mut settings = patch.clone();
        settings.name.get_or_insert_with(|| "-".to_owned());
        problems.extend_from(settings.apply(&StoreSettings::new("-")));
        problems.finish()?;
        Ok(patch)
    }

    pub(crate) fn read(fields: &mut Fields<'_>) -> StorePatch {
        let non_negative = |v: &Value| {
            integer(v).and_then(|n| u32::try_from(n).map_err(|_| format!("{n} is out of range")))
        };
        StorePatch {
            name: fields.optional("name", string),
            api_enabled: fields.optional("api_enabled", boolean),
            plan: fields.optional("plan", Plan::from_json),
            require_pro: fields.optional("require_pro", boolean),
            key_prefix: fields.optional("key_prefix", string),
            default_rate_limit: fields.patch("default_rate_limit", RateLimit::from_json),
            max_scoped_keys: fields.optional("max_scoped_keys", non_negative),
            default_key_ttl_days: fields.patch("default_key_ttl_days", non_negative),
            permissions_editable: fields.optional("permissions_editable", boolean),
            environments: fields.optional("environments", string_list),
            log_retention_days: fields.optional("log_retention_days", non_negative),
        }
    }

    /// The settings after this patch, validated as a whole.
    pub(crate) fn apply(self, current: &StoreSettings) -> Result<StoreSettings> {
        let mut next = current.clone();
        let StorePatch {
            name,
            api_enabled,
            plan,
            require_pro,
            key_prefix,
            default_rate_limit,
            max_scoped_keys,
            default_key_ttl_days,
            permissions_editable,
            environments,
            log_retention_days,
        } = self;
        if let Some(name) = name {
            next.name = name.trim().to_owned();
        }
        next.api_enabled = api_enabled.unwrap_or(next.api_enabled);
        next.plan = plan.unwrap_or(next.plan);
        next.require_pro = require_pro.unwrap_or(next.require_pro);
        next.key_prefix = key_prefix.unwrap_or(next.key_prefix);
        if let Some(limit) = default_rate_limit.into_update() {
            next.default_rate_limit = limit;
        }
        next.max_scoped_keys = max_scoped_keys.unwrap_or(next.max_scoped_keys);
        if let Some(ttl) = default_key_ttl_days.into_update() {
            next.default_key_ttl_days = ttl;
        }
        next.permissions_editable = permissions_editable.unwrap_or(next.permissions_editable);
        next.environments = environments.unwrap_or(next.environments);
        next.log_retention_days = log_retention_days.unwrap_or(next.log_retention_days);
        let mut problems = Problems::new();
        for problem in next.problems() {
            problems.push(problem);
        }
        problems.finish()?;
        Ok(next)
    }
}

/// Input for creating a store: a name and any settings to override.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewStore {
    pub name: String,
    pub settings: StorePatch,
}

impl NewStore {
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            settings: StorePatch::default(),
        }
    }

    /// Reads `{name, …settings}`, naming every wrong or unknown field.
    pub fn from_json(value: &Value) -> Result<NewStore> {
        let mut fields = Fields::new(value, "store")?;
        let mut settings = StorePatch::read(&mut fields);
        let name = settings.name.take();
        if name.is_none() && fields.raw("name").is_none() {
            fields.problems.push("name: is required");
        }
        let mut problems = fields.finish();
        let store = NewStore {
            name: name.unwrap_or_default(),
            settings,
        };
        if !problems.is_empty() {
            // Check the fields that did parse too, so one answer names every problem.
            problems.extend_from(store.clone().settings());
        }
        problems.finish()?;
        Ok(store)
    }

    pub(crate) fn settings(self) -> Result<StoreSettings> {
        let mut patch = self.settings;
        patch.name = Some(self.name);
        patch.apply(&StoreSettings::new(String::new()))
    }
}

/// A store as read back: id, settings and creation time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    pub id: StoreId,
    #[serde(flatten)]
    pub settings: StoreSettings,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn defaults_match_the_spec() {
        let s = StoreSettings::new("Shop");
        assert!(s.api_enabled && !s.require_pro && !s.permissions_editable);
        assert_eq!(s.key_prefix, "lk");
        assert_eq!(s.max_scoped_keys, 5);
        assert_eq!(s.default_key_ttl_days, Some(365));
        assert_eq!(s.environments, ["live", "test"]);
        assert_eq!(
            s.plan,
            Plan {
                tier: Tier::Free,
                expires_at: None
            }
        );
        assert!(s.problems().is_empty());
    }

    #[test]
    fn every_bad_setting_is_named_at_once() {
        let err = NewStore::from_json(&json!({
            "name": "x".repeat(201),
            "key_prefix": "Bad1",
            "max_scoped_keys": 20000,
            "default_key_ttl_days": 0,
            "environments": ["live", "live", "Prod!"],
            "default_rate_limit": {"limit": 100000},
            "colour": "blue",
            "plan": {"tier": "gold"},
        }))
        .and_then(NewStore::settings)
        .unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 9, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("colour")),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.contains("gold")), "{problems:?}");

        let err = NewStore::from_json(&json!({
            "name": "x".repeat(201),
            "key_prefix": "Bad1",
            "max_scoped_keys": 20000,
            "default_key_ttl_days": 0,
            "environments": ["live", "live", "Prod!"],
            "default_rate_limit": {"limit": 100000},
        }))
        .and_then(NewStore::settings)
        .unwrap_err();
        let problems = err.problems();
        assert_eq!(problems.len(), 7, "{problems:?}");
        for field in [
            "name",
            "key_prefix",
            "max_scoped_keys",
            "default_key_ttl_days",
            "listed twice",
            "Prod!",
            "default_rate_limit",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(field)),
                "{field} in {problems:?}"
            );
        }
    }

    #[test]
    fn name_is_required_and_trimmed() {
        assert!(NewStore::from_json(&json!({})).is_err());
        assert!(
            NewStore::from_json(&json!({"name": "   "}))
                .and_then(NewStore::settings)
                .is_err()
        );
        let s = NewStore::from_json(&json!({"name": "  Shop "}))
            .and_then(NewStore::settings)
            .unwrap();
        assert_eq!(s.name, "Shop");
        assert!(
            NewStore::from_json(&json!({"name": "é".repeat(200)}))
                .and_then(NewStore::settings)
                .is_ok()
        );
    }

    #[test]
    fn nullable_settings_accept_null() {
        let patch = StorePatch::from_json(
            &json!({"default_key_ttl_days": null, "default_rate_limit": null}),
        )
        .unwrap();
        let next = patch.apply(&StoreSettings::new("S")).unwrap();
        assert_eq!(next.default_key_ttl_days, None);
        assert!(StorePatch::from_json(&json!({"api_enabled": null})).is_err());
    }

    #[test]
    fn plan_activity() {
        let now = datetime!(2026-06-01 0:00 UTC);
        let pro = Plan {
            tier: Tier::Pro,
            expires_at: Some(datetime!(2026-07-01 0:00 UTC)),
        };
        assert!(pro.is_active_pro(now));
        assert!(!pro.is_active_pro(datetime!(2026-07-01 0:00 UTC)));
        assert!(
            Plan {
                tier: Tier::Pro,
                expires_at: None
            }
            .is_active_pro(now)
        );
        assert!(!Plan::default().is_active_pro(now));
        let mut s = StoreSettings::new("S");
        assert!(!s.plan_blocks(now));
        s.require_pro = true;
        assert!(s.plan_blocks(now));
        s.plan = pro;
        assert!(!s.plan_blocks(now));
    }

    #[test]
    fn reserved_prefixes_are_refused() {
        let mut s = StoreSettings::new("S");
        s.key_prefix = "ck".into();
        assert_eq!(s.problems().len(), 1);
    }
}
