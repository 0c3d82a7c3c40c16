//! Identifiers. A store id is 8 lowercase alphanumerics and is embedded in `token` keys, so it
//! is a `Copy` value that the verify path can compare without allocating.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Result;
use crate::secret::random_chars;

const LOWER_ALNUM: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A store (tenant) id: exactly 8 characters of `[a-z0-9]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId([u8; 8]);

impl StoreId {
    /// Parses a store id; `None` unless it is exactly 8 characters of `[a-z0-9]`.
    pub fn parse(text: &str) -> Option<StoreId> {
        let bytes: [u8; 8] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            .then_some(StoreId(bytes))
    }

    /// From bytes already checked to be `[a-z0-9]`.
    pub(crate) fn from_validated(bytes: [u8; 8]) -> StoreId {
        debug_assert!(
            bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        StoreId(bytes)
    }

    pub(crate) fn random() -> Result<StoreId> {
        let text = random_chars(LOWER_ALNUM, 8)?;
        Ok(StoreId::parse(&text).unwrap_or(StoreId(*b"00000000")))
    }

    pub fn as_str(&self) -> &str {
        // Invariant: only ASCII bytes are ever stored (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or("invalid")
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreId({})", self.as_str())
    }
}

impl Serialize for StoreId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for StoreId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        StoreId::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid store id `{text}`")))
    }
}

/// A new API key id: `key_` and 16 lowercase alphanumerics.
pub(crate) fn new_key_id() -> Result<String> {
    Ok(format!("key_{}", random_chars(LOWER_ALNUM, 16)?))
}

/// Whether `text` has the shape of a key id (`key_` and 16 lowercase alphanumerics).
pub(crate) fn is_key_id(text: &str) -> bool {
    text.strip_prefix("key_")
        .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| LOWER_ALNUM.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ids_are_eight_lowercase_alphanumerics() {
        let id = StoreId::random().unwrap();
        assert_eq!(StoreId::parse(id.as_str()), Some(id));
        assert!(StoreId::parse("ABCDEFGH").is_none());
        assert!(StoreId::parse("abc").is_none());
        assert!(StoreId::parse("abcdefgh1").is_none());
        assert!(StoreId::parse("abcd-fgh").is_none());
        assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{id}\""));
        assert!(new_key_id().unwrap().starts_with("key_"));
        assert!(is_key_id(&new_key_id().unwrap()));
        assert!(!is_key_id("key_ABCDEFGHIJKLMNOP") && !is_key_id("key_abc") && !is_key_id(""));
    }
}
