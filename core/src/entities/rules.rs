//! Validation helpers shared by the kinds.

use serde_json::Value;
use time::OffsetDateTime;

use super::{Ctx, Kind};
use crate::error::{Error, Problems, Result};
use crate::input::{char_len, string};

/// Characters of an entity's name (and of a user ban's value), at most.
pub const NAME_MAX: usize = 200;
/// Characters of an entity's description, at most.
pub const DESCRIPTION_MAX: usize = 5_000;
/// Characters of a short free-text note (a gift card's note, a ban's reason), at most.
pub const NOTE_MAX: usize = 1_000;
/// The largest count a record keeps (a product's stock, a coupon's uses).
pub const COUNT_MAX: i64 = 1_000_000_000;
/// Packages one sale may name, at most.
pub const SALE_PACKAGES_MAX: usize = 1_000;

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

/// Names a start at or after an end.
pub(crate) fn check_order(
    problems: &mut Problems,
    start: Option<OffsetDateTime>,
    end: Option<OffsetDateTime>,
    end_field: &str,
    start_field: &str,
) {
    if let (Some(start), Some(end)) = (start, end)
        && end <= start
    {
        problems.push(format!("{end_field}: must be after {start_field}"));
    }
}

/// A required-looking name: trimmed, 1 to `max` characters, no control characters.
pub(crate) fn name(max: usize) -> impl Fn(&Value) -> Result<String, String> {
    move |value| {
        let text = string(value)?;
        let text = text.trim();
        if text.is_empty() || char_len(text) > max {
            return Err(format!("must be 1 to {max} characters"));
        }
        if text.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(text.to_owned())
    }
}

/// Free text up to `max` characters (may be empty; line breaks allowed).
pub(crate) fn text(max: usize) -> impl Fn(&Value) -> Result<String, String> {
    move |value| {
        let text = string(value)?;
        if char_len(&text) > max {
            return Err(format!("must be at most {max} characters"));
        }
        Ok(text)
    }
}

/// An id of `kind`'s shape (existence is checked separately).
pub(crate) fn id_of(kind: Kind) -> impl Fn(&Value) -> Result<String, String> {
    move |value| {
        let text = string(value)?;
        let shaped = text.len() == 24
            && text.starts_with(kind.prefix())
            && text.as_bytes()[3] == b'_'
            && text[4..].bytes().all(|b| b.is_ascii_alphanumeric());
        if shaped {
            Ok(text)
        } else {
            Err(format!("not a {} id", kind.name()))
        }
    }
}

/// Names `field` when `value` (normalised) is already held under constraint `tag` by an
/// entity other than `own_id`.
pub(crate) fn check_unique(
    ctx: &Ctx<'_>,
    problems: &mut Problems,
    field: &str,
    tag: u8,
    value: Option<&str>,
    own_id: Option<&str>,
) -> Result<()> {
    if let Some(value) = value
        && let Some(owner) = ctx.unique_owner(tag, value)?
        && Some(owner.as_str()) != own_id
    {
        problems.push(format!("{field}: {}", super::unique_message(tag)));
    }
    Ok(())
}
