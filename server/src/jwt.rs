//! Management-API tokens (SPEC §7): JWTs signed with HS256, claims `sub`, `exp`,
//! `permissions` (`Stores:Create`, `Stores:Edit`, `Stores:View`) and `stores` (ids or `"*"`).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every management permission.
pub const ALL_PERMISSIONS: [&str; 3] = ["Stores:Create", "Stores:Edit", "Stores:View"];

/// Shortest accepted signing secret, in bytes.
pub const MIN_SECRET: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: i64,
    #[serde(default)]
    pub permissions: Vec<String>,
    /// `"*"` or a list of store ids.
    #[serde(default)]
    pub stores: Value,
}

impl Claims {
    pub fn has(&self, permission: &str) -> bool {
        self.permissions.iter().any(|p| p == permission)
    }

    /// True when the token may act on `store_id`.
    pub fn covers(&self, store_id: &str) -> bool {
        match &self.stores {
            Value::String(all) => all == "*",
            Value::Array(ids) => ids.iter().any(|id| id.as_str() == Some(store_id)),
            _ => false,
        }
    }
}

/// Signs a token for `sub`, valid for `ttl_seconds`.
pub fn issue(
    secret: &[u8],
    sub: &str,
    permissions: &[&str],
    stores: Value,
    now_secs: i64,
    ttl_seconds: i64,
) -> Result<String, String> {
    let claims = Claims {
        sub: sub.to_owned(),
        exp: now_secs.saturating_add(ttl_seconds),
        permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
        stores,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| format!("cannot sign the token: {e}"))
}

/// Checks a token's signature (HS256 only), expiry and claims.
pub fn check(secret: &[u8], token: &str) -> Result<Claims, String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
            _ => "the token is not valid".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_round_trip_and_expire() {
        let now = 1_800_000_000;
        let token = issue(SECRET, "ops", &ALL_PERMISSIONS, json!("*"), now, 60).unwrap();
        let claims = check(SECRET, &token).unwrap();
        assert!(claims.has("Stores:Edit") && claims.covers("abcd1234"));
        let expired = issue(SECRET, "ops", &ALL_PERMISSIONS, json!("*"), 1_000, 60).unwrap();
        assert_eq!(
            check(SECRET, &expired).unwrap_err(),
            "the token has expired"
        );
        assert!(check(b"another secret of thirty-two byte", &token).is_err());
        assert!(check(SECRET, "not.a.token").is_err());
        let some = issue(
            SECRET,
            "ops",
            &["Stores:View"],
            json!(["abcd1234"]),
            now,
            60,
        )
        .unwrap();
        let claims = check(SECRET, &some).unwrap();
        assert!(claims.covers("abcd1234") && !claims.covers("zzzz9999"));
        assert!(!claims.has("Stores:Edit"));
    }
}
