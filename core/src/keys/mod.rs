//! API keys: the stored record, what callers read back, and the inputs that create and change
//! keys (with every validation rule that needs no store context).

pub(crate) mod format;
mod leaks;

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::{Problems, Result};
use crate::ids::StoreId;
use crate::input::{
    Fields, Named, Patch, boolean, char_len, parse_cidrs, string, string_list, timestamp,
};
use crate::limits::RateLimit;
use crate::permissions::PermissionSet;
use crate::secret::Secret;

pub use format::{KeyFormat, UNREADABLE_CREDENTIAL, credential_from_headers, is_token};
pub use leaks::{Finding, Leak, LeakCheck, LeakShape, LeakStatus, find_leaks, leak_shape, redact};

pub const MAX_KEY_NAME_CHARS: usize = 200;
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;
pub const MAX_ALLOWLIST_ENTRIES: usize = 100;
pub const MAX_META_BYTES: usize = 4_096;
/// The longest a regeneration may keep the replaced secret working (`overlap_seconds`).
pub const MAX_KEY_OVERLAP: time::Duration = time::Duration::days(7);

/// `default`: one per store, full access, cannot be deleted. `scoped`: limited permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyKind {
    Default,
    Scoped,
}

/// A key as stored. Holds the digest, never the secret. `v` is the record format version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct KeyRecord {
    pub v: u32,
    pub id: String,
    pub store_id: StoreId,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub kind: KeyKind,
    pub format: KeyFormat,
    pub environment: String,
    pub permissions: PermissionSet,
    pub active: bool,
    /// The token prefix this key was issued under (`token` format only).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub consumer_key: Option<String>,
    /// Hex SHA-256 of the secret part.
    pub digest: String,
    pub last4: String,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub ip_allowlist: Vec<IpNet>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default)]
    pub meta: Map<String, Value>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
    /// The `expires_at` an `api_key.expiring` notice was written for (a changed expiry gets
    /// its own notice).
    #[serde(
        with = "time::serde::rfc3339::option",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub expiry_notice_for: Option<OffsetDateTime>,
    /// The secret a regeneration replaced, while the overlap it asked for lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousSecret>,
}

/// A replaced secret that still authenticates its key until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PreviousSecret {
    /// Hex SHA-256 of the replaced secret part.
    pub digest: String,
    /// The token prefix it was issued under (`token` format only).
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

impl KeyRecord {
    pub(crate) const VERSION: u32 = 1;

    /// The masked form shown in lists: `lk_ab12cd34_…Xy9Z`, `…9f3a`, or `cs_…9f3a`.
    pub(crate) fn masked(&self) -> String {
        match self.format {
            KeyFormat::Token => format!(
                "{}_{}_…{}",
                self.prefix.as_deref().unwrap_or("lk"),
                self.store_id,
                self.last4
            ),
            KeyFormat::Hex => format!("…{}", self.last4),
            KeyFormat::Pair => format!("{}…{}", format::CONSUMER_SECRET_PREFIX, self.last4),
        }
    }

    /// The replaced secret still accepted at `now`, if any.
    pub(crate) fn previous_at(&self, now: OffsetDateTime) -> Option<&PreviousSecret> {
        self.previous.as_ref().filter(|p| now < p.until)
    }

    /// Ends the overlap of a replaced secret at `end` (`None` or a time not after `now`: at
    /// once). An overlap can only be brought forward: lengthening one would revive a secret
    /// the merchant may already have retired. `Ok(false)`: there was none to end.
    pub(crate) fn end_overlap(
        &mut self,
        end: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Result<bool, &'static str> {
        let Some(until) = self.previous_at(now).map(|p| p.until) else {
            return match end {
                None => Ok(false),
                Some(_) => Err("the key has no replaced secret in an overlap"),
            };
        };
        match end {
            Some(end) if end > until => Err("an overlap can be shortened, not extended"),
            Some(end) if end > now => {
                if let Some(previous) = &mut self.previous {
                    previous.until = end;
                }
                Ok(true)
            }
            _ => {
                self.previous = None;
                Ok(true)
            }
        }
    }

    /// The key as shown at `now` (a replaced secret whose overlap has ended is not).
    pub(crate) fn to_key(&self, now: OffsetDateTime) -> Key {
        Key {
            id: self.id.clone(),
            store_id: self.store_id,
            name: self.name.clone(),
            description: self.description.clone(),
            kind: self.kind,
            format: self.format,
            environment: self.environment.clone(),
            permissions: self.permissions,
            active: self.active,
            masked: self.masked(),
            consumer_key: self.consumer_key.clone(),
            rate_limit: self.rate_limit,
            ip_allowlist: self.ip_allowlist.clone(),
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            // Filled from the in-memory usage by the engine.
            last_used_at: None,
            last_used_ip: None,
            meta: self.meta.clone(),
            previous_expires_at: self.previous_at(now).map(|p| p.until),
            // Filled from the in-memory index by the engine.
            previous_last_used_at: None,
        }
    }
}

/// A key as callers read it: everything but the secret, which is shown masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Key {
    pub id: String,
    pub store_id: StoreId,
    pub name: String,
    pub description: Option<String>,
    pub kind: KeyKind,
    pub format: KeyFormat,
    pub environment: String,
    pub permissions: PermissionSet,
    pub active: bool,
    pub masked: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub consumer_key: Option<String>,
    pub rate_limit: Option<RateLimit>,
    pub ip_allowlist: Vec<IpNet>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    pub last_used_ip: Option<IpAddr>,
    pub meta: Map<String, Value>,
    /// Until when the secret replaced by a regeneration with an overlap is still accepted;
    /// null when there is none (or it has ended).
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub previous_expires_at: Option<OffsetDateTime>,
    /// When a request last presented that replaced secret (to the second in memory; written
    /// to the database with the key's own last use, so to the minute across a restart):
    /// whether clients still rely on it.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub previous_last_used_at: Option<OffsetDateTime>,
}

impl Key {
    /// Whether verify refuses the key as `EXPIRED` at `now`: from its `expires_at` on.
    pub fn has_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// A key together with its secret: returned by create and regenerate, and nowhere else.
///
/// For `token` and `hex` keys the secret is the whole key; for `pair` it is the consumer
/// secret (the consumer key is in [`Key::consumer_key`]). `Debug` redacts the secret.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    pub key: Key,
    pub secret: Secret,
}

impl CreatedKey {
    /// The create/regenerate response (SPEC appendix): the key's fields plus the secret, as
    /// `key` (token and hex) or `consumer_secret` (pair). The one place a secret becomes JSON.
    pub fn to_json(&self) -> Value {
        let mut out = serde_json::to_value(&self.key).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut out {
            let field = if self.key.consumer_key.is_some() {
                "consumer_secret"
            } else {
                "key"
            };
            map.insert(
                field.to_owned(),
                Value::String(self.secret.expose().to_owned()),
            );
        }
        out
    }

    /// The full credential to present: the key itself, or `ck_…:cs_…` for a pair.
    pub fn credential(&self) -> String {
        match &self.key.consumer_key {
            Some(ck) => format!("{ck}:{}", self.secret.expose()),
            None => self.secret.expose().to_owned(),
        }
    }
}

/// A regeneration's overlap from a JSON object `{overlap_seconds?}` (a request body, binding
/// options): 0 to [`MAX_KEY_OVERLAP`] in seconds; absent, 0: the old secret stops at once.
pub fn regeneration_overlap(input: &Value) -> Result<time::Duration> {
    let mut fields = Fields::new(input, "regeneration")?;
    let overlap = fields.optional("overlap_seconds", |v| {
        crate::input::overlap_seconds(v, MAX_KEY_OVERLAP)
    });
    fields.finish().finish()?;
    Ok(overlap.unwrap_or(time::Duration::ZERO))
}

/// Input for a new scoped key.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub name: String,
    pub description: Option<String>,
    pub permissions: PermissionSet,
    pub format: KeyFormat,
    /// `None`: the store's default environment (or, for a key created with a key, that key's).
    pub environment: Option<String>,
    /// `None`: the store default, then the server default.
    pub rate_limit: Option<RateLimit>,
    pub ip_allowlist: Vec<IpNet>,
    /// Absent: the store's default TTL. Null: never expires. Set: must be in the future.
    pub expires_at: Patch<OffsetDateTime>,
    pub meta: Map<String, Value>,
    pub active: bool,
}

impl NewKey {
    /// A token key called `name` with `permissions` and every other field defaulted.
    pub fn new(name: impl Into<String>, permissions: PermissionSet) -> Self {
        Self {
            name: name.into(),
            description: None,
            permissions,
            format: KeyFormat::Token,
            environment: None,
            rate_limit: None,
            ip_allowlist: Vec::new(),
            expires_at: Patch::Absent,
            meta: Map::new(),
            active: true,
        }
    }

    /// Reads `{name, description?, permissions, format?, environment?, rate_limit?,
    /// ip_allowlist?, expires_at?, meta?, active?}`, naming every wrong or unknown field.
    pub fn from_json(value: &Value) -> Result<NewKey> {
        let mut fields = Fields::new(value, "key")?;
        let name = fields.required("name", string);
        let description = fields.patch("description", string).into_update().flatten();
        let permissions = fields.required("permissions", read_permissions);
        let format = fields.optional("format", read_format);
        let environment = fields.optional("environment", string);
        let rate_limit = fields
            .patch("rate_limit", RateLimit::from_json)
            .into_update()
            .flatten();
        let ip_allowlist = fields
            .patch("ip_allowlist", read_cidrs)
            .into_update()
            .flatten();
        let expires_at = fields.patch("expires_at", timestamp);
        let meta = fields.optional("meta", read_meta);
        let active = fields.optional("active", boolean);
        let mut problems = fields.finish();
        let key = NewKey {
            name: name.unwrap_or_default(),
            description,
            permissions: permissions.unwrap_or_default(),
            format: format.unwrap_or_default(),
            environment,
            rate_limit,
            ip_allowlist: ip_allowlist.unwrap_or_default(),
            expires_at,
            meta: meta.unwrap_or_default(),
            active: active.unwrap_or(true),
        };
        if !problems.is_empty() {
            // Name the problems of the fields that did parse as well (not those of defaults
            // standing in for missing or unreadable fields).
            for problem in key.problems() {
                let field = problem.split([':', '.']).next().unwrap_or_default();
                if value.get(field).is_some() && !problems.mentions(field) {
                    problems.push(problem);
                }
            }
        }
        problems.finish()?;
        Ok(key)
    }

    /// Every problem that needs no store context.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        name_problems(&self.name, &mut problems);
        description_problems(self.description.as_deref(), &mut problems);
        if self.permissions.is_empty() {
            problems.push("permissions: at least one permission is required".to_owned());
        }
        if let Some(limit) = &self.rate_limit {
            problems.extend(limit.problems("rate_limit"));
        }
        allowlist_problems(&self.ip_allowlist, &mut problems);
        meta_problems(&self.meta, &mut problems);
        problems
    }
}

/// A change to a key; absent fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub description: Patch<String>,
    pub active: Option<bool>,
    pub rate_limit: Patch<RateLimit>,
    /// `Some(vec![])` (or JSON null) clears the allowlist.
    pub ip_allowlist: Option<Vec<IpNet>>,
    pub expires_at: Patch<OffsetDateTime>,
    /// Only when the store has `permissions_editable`.
    pub permissions: Option<PermissionSet>,
    pub meta: Option<Map<String, Value>>,
    /// Ends a regeneration's overlap early: null (or a time not after now) stops the replaced
    /// secret at once; a later time, no later than the overlap's end, shortens it.
    pub previous_expires_at: Patch<OffsetDateTime>,
}

impl KeyPatch {
    /// Reads a patch, naming every wrong or unknown field.
    pub fn from_json(value: &Value) -> Result<KeyPatch> {
        let mut fields = Fields::new(value, "key")?;
        let patch = KeyPatch {
            name: fields.optional("name", string),
            description: fields.patch("description", string),
            active: fields.optional("active", boolean),
            rate_limit: fields.patch("rate_limit", RateLimit::from_json),
            ip_allowlist: match fields.patch("ip_allowlist", read_cidrs) {
                Patch::Absent => None,
                Patch::Null => Some(Vec::new()),
                Patch::Set(list) => Some(list),
            },
            expires_at: fields.patch("expires_at", timestamp),
            permissions: fields.optional("permissions", read_permissions),
            meta: fields.optional("meta", read_meta),
            previous_expires_at: fields.patch("previous_expires_at", timestamp),
        };
        let mut problems = fields.finish();
        if !problems.is_empty() {
            problems.extend_from(patch.check());
        }
        problems.finish()?;
        Ok(patch)
    }

    pub(crate) fn is_empty(&self) -> bool {
        *self == KeyPatch::default()
    }

    /// Every problem that needs no key or store context.
    pub(crate) fn check(&self) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(name) = &self.name {
            name_problems(name, &mut problems);
        }
        if let Patch::Set(description) = &self.description {
            description_problems(Some(description), &mut problems);
        }
        if let Patch::Set(limit) = &self.rate_limit {
            problems.extend(limit.problems("rate_limit"));
        }
        if let Some(list) = &self.ip_allowlist {
            allowlist_problems(list, &mut problems);
        }
        if let Some(permissions) = &self.permissions
            && permissions.is_empty()
        {
            problems.push("permissions: at least one permission is required".to_owned());
        }
        if let Some(meta) = &self.meta {
            meta_problems(meta, &mut problems);
        }
        let mut all = Problems::new();
        problems.into_iter().for_each(|p| all.push(p));
        all.finish()
    }
}

fn read_permissions(value: &Value) -> Result<PermissionSet, Named> {
    PermissionSet::from_input(value).map_err(Named)
}

fn read_format(value: &Value) -> Result<KeyFormat, String> {
    let text = value.as_str().ok_or("expected a string")?;
    KeyFormat::parse(text)
        .ok_or_else(|| format!("unknown format `{text}` (expected token, hex or pair)"))
}

fn read_cidrs(value: &Value) -> Result<Vec<IpNet>, Vec<String>> {
    let entries = string_list(value).map_err(|problem| vec![problem])?;
    parse_cidrs(&entries)
}

fn read_meta(value: &Value) -> Result<Map<String, Value>, String> {
    value
        .as_object()
        .cloned()
        .ok_or_else(|| "expected an object".to_owned())
}

fn name_problems(name: &str, problems: &mut Vec<String>) {
    if name.trim().is_empty() {
        problems.push("name: must not be empty".to_owned());
    } else if char_len(name) > MAX_KEY_NAME_CHARS {
        problems.push(format!(
            "name: must be at most {MAX_KEY_NAME_CHARS} characters"
        ));
    }
}

fn description_problems(description: Option<&str>, problems: &mut Vec<String>) {
    if description.is_some_and(|d| char_len(d) > MAX_DESCRIPTION_CHARS) {
        problems.push(format!(
            "description: must be at most {MAX_DESCRIPTION_CHARS} characters"
        ));
    }
}

fn allowlist_problems(list: &[IpNet], problems: &mut Vec<String>) {
    if list.len() > MAX_ALLOWLIST_ENTRIES {
        problems.push(format!(
            "ip_allowlist: at most {MAX_ALLOWLIST_ENTRIES} entries"
        ));
    }
}

fn meta_problems(meta: &Map<String, Value>, problems: &mut Vec<String>) {
    let size = serde_json::to_vec(meta).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_META_BYTES {
        problems.push(format!(
            "meta: must be at most {MAX_META_BYTES} bytes of JSON"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_key_json_names_every_problem() {
        let err = NewKey::from_json(&json!({
            "name": "",
            "permissions": {"Warehouses": ["View"]},
            "format": "jwt",
            "rate_limit": {"limit": 0},
            "ip_allowlist": ["10.0.0.0/33", "1.2.3.4"],
            "expires_at": "soon",
            "meta": [],
            "colour": "red",
        }))
        .unwrap_err();
        let problems = err.problems();
        for needle in [
            "name",
            "Warehouses",
            "jwt",
            "rate_limit",
            "10.0.0.0/33",
            "soon",
            "meta",
            "colour",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle} in {problems:?}"
            );
        }
        let err = NewKey::from_json(&json!({})).unwrap_err();
        assert_eq!(err.problems().len(), 2, "{:?}", err.problems());
    }

    #[test]
    fn new_key_json_defaults() {
        let key =
            NewKey::from_json(&json!({"name": "ERP", "permissions": ["orders:read"]})).unwrap();
        assert_eq!(key.format, KeyFormat::Token);
        assert!(key.active);
        assert_eq!(key.expires_at, Patch::Absent);
        let key = NewKey::from_json(
            &json!({"name": "ERP", "permissions": "*", "expires_at": null,
            "format": "pair", "ip_allowlist": ["::1"]}),
        )
        .unwrap();
        assert_eq!(key.expires_at, Patch::Null);
        assert_eq!(key.format, KeyFormat::Pair);
        assert_eq!(key.ip_allowlist.len(), 1);
    }

    #[test]
    fn limits_on_sizes() {
        let mut key = NewKey::new("x".repeat(201), PermissionSet::all());
        key.description = Some("d".repeat(1001));
        key.meta.insert("blob".into(), json!("b".repeat(5000)));
        key.ip_allowlist = vec!["10.0.0.0/8".parse().unwrap(); 101];
        assert_eq!(key.problems().len(), 4, "{:?}", key.problems());
        assert!(NewKey::new("ok", PermissionSet::empty()).problems().len() == 1);
    }

    #[test]
    fn patch_json() {
        let patch = KeyPatch::from_json(
            &json!({"active": false, "ip_allowlist": null, "description": null}),
        )
        .unwrap();
        assert_eq!(patch.active, Some(false));
        assert_eq!(patch.ip_allowlist, Some(vec![]));
        assert_eq!(patch.description, Patch::Null);
        let err = KeyPatch::from_json(&json!({"active": "no", "kind": "default", "name": ""}))
            .unwrap_err();
        assert_eq!(err.problems().len(), 3, "{:?}", err.problems());
        assert!(KeyPatch::from_json(&json!({})).unwrap().is_empty());
    }
}
