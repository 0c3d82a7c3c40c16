//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>): the receiver checks
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the key
//! is the base64 part of the endpoint's `whsec_…` secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// The prefix of every signing secret.
pub(crate) const SECRET_PREFIX: &str = "whsec_";

/// The `webhook-signature` header value for one delivery.
pub(crate) fn signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String> {
    let key = secret
        .strip_prefix(SECRET_PREFIX)
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .ok_or_else(|| Error::Corrupt("a webhook signing secret is not whsec_<base64>".into()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| Error::Corrupt("a webhook signing secret has an unusable length".into()))?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks reference libraries' test suites.
    #[test]
    fn matches_the_reference_vector() {
        let sig = signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_malformed_secret_is_an_error_not_a_panic() {
        assert!(signature("nope", "id", 1, b"{}").is_err());
        assert!(signature("whsec_***", "id", 1, b"{}").is_err());
    }
}
