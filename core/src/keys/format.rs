//! The three key formats: generating them, and parsing what a client presents.
//!
//! `token`: `{prefix}_{storeId}_{secret}`. The secret is 32 base62 characters: 26 random, then
//! a 6-character base62 CRC32 of everything before them in the token. A mistyped or invented
//! token therefore fails [`parse`] with no lookup at all. Only SHA-256(secret) is stored.
//!
//! `hex`: 64 lowercase hex characters (32 random bytes); SHA-256 of the whole key is stored.
//!
//! `pair`: consumer key `ck_` + 32 hex (an identifier, stored in clear) and consumer secret
//! `cs_` + 32 hex (SHA-256 stored), presented as `ck_…:cs_…`.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::StoreId;
use crate::secret::{BASE62, Digest, Secret, hex_lower, random_chars};

/// Length of the secret part of a `token` key. Never change: existing tokens would stop parsing.
pub const TOKEN_SECRET_LEN: usize = 32;
/// Trailing characters of the token secret that hold the checksum. Never change.
const CHECKSUM_LEN: usize = 6;
const RANDOM_LEN: usize = TOKEN_SECRET_LEN - CHECKSUM_LEN;
/// Prefixes of the `pair` format. Never change.
pub const CONSUMER_KEY_PREFIX: &str = "ck_";
pub const CONSUMER_SECRET_PREFIX: &str = "cs_";

/// How a key is presented and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KeyFormat {
    #[default]
    Token,
    Hex,
    Pair,
}

impl KeyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyFormat::Token => "token",
            KeyFormat::Hex => "hex",
            KeyFormat::Pair => "pair",
        }
    }

    pub fn parse(text: &str) -> Option<KeyFormat> {
        [KeyFormat::Token, KeyFormat::Hex, KeyFormat::Pair]
            .into_iter()
            .find(|f| f.as_str() == text)
    }
}

impl fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Freshly generated key material: what the owner is shown once, and what is stored.
#[derive(Debug)]
pub(crate) struct Generated {
    /// The full credential for `token`/`hex`, or the consumer secret for `pair`.
    pub secret: Secret,
    pub digest: Digest,
    /// The consumer key of a `pair` (public).
    pub consumer_key: Option<String>,
    /// The last 4 characters of the secret, for the masked form.
    pub last4: String,
}

pub(crate) fn generate(format: KeyFormat, prefix: &str, store: StoreId) -> Result<Generated> {
    match format {
        KeyFormat::Token => {
            let mut token = format!("{prefix}_{store}_");
            token.push_str(&random_chars(BASE62, RANDOM_LEN)?);
            let checksum = checksum(token.as_bytes());
            token.push_str(std::str::from_utf8(&checksum).unwrap_or_default());
            let secret_part = &token[token.len() - TOKEN_SECRET_LEN..];
            Ok(Generated {
                digest: Digest::of(secret_part.as_bytes()),
                last4: last4(&token),
                secret: Secret::new(token),
                consumer_key: None,
            })
        }
        KeyFormat::Hex => {
            let mut bytes = [0u8; 32];
            crate::secret::fill_random(&mut bytes)?;
            let key = hex_lower(&bytes);
            Ok(Generated {
                digest: Digest::of(key.as_bytes()),
                last4: last4(&key),
                secret: Secret::new(key),
                consumer_key: None,
            })
        }
        KeyFormat::Pair => {
            let mut bytes = [0u8; 16];
            crate::secret::fill_random(&mut bytes)?;
            let consumer_key = format!("{CONSUMER_KEY_PREFIX}{}", hex_lower(&bytes));
            crate::secret::fill_random(&mut bytes)?;
            let consumer_secret = format!("{CONSUMER_SECRET_PREFIX}{}", hex_lower(&bytes));
            Ok(Generated {
                digest: Digest::of(consumer_secret.as_bytes()),
                last4: last4(&consumer_secret),
                secret: Secret::new(consumer_secret),
                consumer_key: Some(consumer_key),
            })
        }
    }
}

fn last4(text: &str) -> String {
    text[text.len().saturating_sub(4)..].to_owned()
}

/// Base62 of the CRC32 of `data`, left-padded to 6 characters (62^6 > 2^32).
fn checksum(data: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(data);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// The value of each base62 digit; 0xff for bytes that are not one.
const BASE62_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 62 {
        table[BASE62[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Same answer as `checksum(body) == given`, without the six divisions: the given digits are
/// decoded (multiply-adds) and compared with the CRC. Verify runs this on every token.
#[inline]
fn checksum_matches(body: &[u8], given: &[u8]) -> bool {
    let mut value: u64 = 0;
    for &c in given {
        let digit = BASE62_VALUE[usize::from(c)];
        if digit == 0xff {
            return false;
        }
        value = value * 62 + u64::from(digit);
    }
    value == u64::from(crc32fast::hash(body))
}

/// A credential as presented, parsed but not yet looked up. Borrowed: parsing never allocates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    Token {
        prefix: &'a str,
        store: StoreId,
        secret: &'a str,
    },
    Hex(&'a str),
    Pair {
        consumer_key: [u8; 16],
        secret: &'a str,
    },
}

impl<'a> Presented<'a> {
    /// The part whose digest names the key (a pair's consumer secret, the whole hex key).
    pub(crate) fn secret(&self) -> &'a str {
        match *self {
            Presented::Token { secret, .. } | Presented::Pair { secret, .. } => secret,
            Presented::Hex(key) => key,
        }
    }
}

impl fmt::Debug for Presented<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret part.
        match self {
            Presented::Token { prefix, store, .. } => write!(f, "Token({prefix}_{store}_…)"),
            Presented::Hex(_) => f.write_str("Hex(…)"),
            Presented::Pair { consumer_key, .. } => {
                write!(f, "Pair(ck_{}…)", hex_lower(&consumer_key[..2]))
            }
        }
    }
}

/// Parses a presented credential. `None` means malformed, including a token whose checksum
/// does not match: such a credential is rejected without touching the index.
///
/// A token's checksum is not computed here. Verify looks the token up by the SHA-256 of its
/// secret part and compares its prefix and store: a token that matches a key *is* the token
/// that was issued, whose checksum is valid, and any other token is `INVALID` whatever its
/// checksum says. Skipping the CRC saves a fifth of the cost of a hot verify; scanners, which
/// have no index to ask, use [`is_token`], which checks it.
pub(crate) fn parse(text: &str) -> Option<Presented<'_>> {
    // Each format has its own length, so the branch is chosen without scanning the text.
    match text.len() {
        PAIR_LEN => parse_pair(text),
        64 => is_hex_key(text).then_some(Presented::Hex(text)),
        _ => parse_token(text, false),
    }
}

/// 64 lowercase hex characters: the shape of a `hex` key.
pub(crate) fn is_hex_key(text: &str) -> bool {
    text.len() == 64 && all_bytes(text.as_bytes(), is_lower_hex)
}

/// `ck_` + 32 hex, `:`, `cs_` + 32 hex.
const PAIR_LEN: usize = 3 + 32 + 1 + 3 + 32;

fn parse_pair(text: &str) -> Option<Presented<'_>> {
    let (ck, cs) = (text.get(..35)?, text.get(36..)?);
    if text.as_bytes()[35] != b':' {
        return None;
    }
    let mut consumer_key = [0u8; 16];
    let ck_hex = ck.strip_prefix(CONSUMER_KEY_PREFIX)?;
    if !crate::secret::decode_hex(ck_hex, &mut consumer_key) {
        return None;
    }
    let cs_hex = cs.strip_prefix(CONSUMER_SECRET_PREFIX)?;
    all_bytes(cs_hex.as_bytes(), is_lower_hex).then_some(Presented::Pair {
        consumer_key,
        secret: cs,
    })
}

// Character checks as plain compares joined by `|` (never `&&`/`matches!`, which branch in
// unoptimised builds): the same work for every byte value, so how long parsing takes says
// nothing about which characters a credential holds (tests/timing.rs), and the loop over a
// credential vectorises.
fn is_lower(b: u8) -> bool {
    b.wrapping_sub(b'a') < 26
}

fn is_digit(b: u8) -> bool {
    b.wrapping_sub(b'0') < 10
}

fn is_upper(b: u8) -> bool {
    b.wrapping_sub(b'A') < 26
}

fn is_lower_hex(b: u8) -> bool {
    is_digit(b) | (b.wrapping_sub(b'a') < 6)
}

/// `pred` over every byte, without early exit, so the loop vectorises.
#[inline]
fn all_bytes(bytes: &[u8], pred: impl Fn(u8) -> bool) -> bool {
    bytes.iter().fold(true, |ok, &b| ok & pred(b))
}

fn parse_token(text: &str, check_checksum: bool) -> Option<Presented<'_>> {
    // The layout is fixed once the length is known: `{prefix:2..=8}_{store:8}_{secret:32}`.
    let bytes = text.as_bytes();
    let prefix_len = bytes.len().checked_sub(1 + 8 + 1 + TOKEN_SECRET_LEN)?;
    if !(2..=8).contains(&prefix_len) || bytes[prefix_len] != b'_' || bytes[prefix_len + 9] != b'_'
    {
        return None;
    }
    let prefix = &bytes[..prefix_len];
    let store = &bytes[prefix_len + 1..prefix_len + 9];
    let secret = &bytes[prefix_len + 10..];
    let valid = all_bytes(prefix, is_lower)
        & all_bytes(store, |b| is_lower(b) | is_digit(b))
        & all_bytes(secret, |b| is_lower(b) | is_digit(b) | is_upper(b));
    if !valid {
        return None;
    }
    let (body, given) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if check_checksum && !checksum_matches(body, given) {
        return None;
    }
    Some(Presented::Token {
        prefix: &text[..prefix_len],
        store: StoreId::from_validated(store.try_into().ok()?),
        secret: &text[prefix_len + 10..],
    })
}

/// True when `text` looks like a live-format Latchkey token (format and checksum), for scanners.
pub fn is_token(text: &str) -> bool {
    matches!(parse_token(text, true), Some(Presented::Token { .. }))
}

/// True when `text` is a pair's consumer secret (`cs_` + 32 lowercase hex), for scanners: the
/// secret is what leaks, and alone it names its key (the consumer key is public).
pub fn is_pair_secret(text: &str) -> bool {
    text.len() == CONSUMER_SECRET_PREFIX.len() + 32
        && text
            .strip_prefix(CONSUMER_SECRET_PREFIX)
            .is_some_and(|hex| all_bytes(hex.as_bytes(), is_lower_hex))
}

/// The credential a front end passes for a credential header it cannot use (not text, or
/// sent more than once): no format parses it, so `verify` answers `INVALID`, as for any
/// malformed key, and never `MISSING`.
pub const UNREADABLE_CREDENTIAL: &str = "\u{0}";

/// Where a request carried its credential, extracted from its headers.
///
/// `X-Api-Key` wins over `Authorization`. `Authorization: Bearer <key>` carries a key as is;
/// `Authorization: Basic base64(ck:cs)` carries a pair, and a bare base64 `ck:cs` token is
/// accepted too. The result is the credential text `verify` takes; `None` means none was sent.
/// A header that is present but unusable yields `Some` of text that will not parse, so the
/// request is answered `INVALID`, never an error.
///
/// Each argument is every line of that header, in order (an `Option<&str>` is one line or
/// none). A header sent more than once is unusable: which line the client meant is
/// ambiguous, a proxy may have added one, and front ends that keep only the first or the
/// last line would each let a different credential through.
pub fn credential_from_headers<'a>(
    x_api_key: impl IntoIterator<Item = &'a str>,
    authorization: impl IntoIterator<Item = &'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    use std::borrow::Cow;
    /// The header's one line, trimmed and non-empty; `Err` when it was sent more than once.
    fn only_line<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Option<&'a str>, ()> {
        let mut lines = lines.into_iter();
        let first = lines.next();
        match lines.next() {
            Some(_) => Err(()),
            None => Ok(first.map(str::trim).filter(|line| !line.is_empty())),
        }
    }
    let unreadable = || Some(Cow::Borrowed(UNREADABLE_CREDENTIAL));
    match only_line(x_api_key) {
        Err(()) => return unreadable(),
        Ok(Some(key)) => return Some(Cow::Borrowed(key)),
        Ok(None) => {}
    }
    let Ok(auth) = only_line(authorization) else {
        return unreadable();
    };
    let auth = auth?;
    let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(Cow::Borrowed(rest));
    }
    let encoded = if scheme.eq_ignore_ascii_case("basic") {
        rest
    } else {
        auth
    };
    match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Some(Cow::Owned(text)),
            // Sent but unreadable: the header as is, which no format parses (`INVALID`);
            // an empty credential would be answered `MISSING`.
            Err(_) => Some(Cow::Borrowed(auth)),
        },
        // Not base64: a raw credential in Authorization (e.g. `Authorization: lk_…`).
        Err(_) => Some(Cow::Borrowed(auth)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn store() -> StoreId {
        StoreId::parse("ab12cd34").unwrap()
    }

    #[test]
    fn token_has_the_documented_shape() {
        let g = generate(KeyFormat::Token, "lk", store()).unwrap();
        let token = g.secret.expose();
        assert_eq!(token.len(), 2 + 1 + 8 + 1 + 32);
        assert!(token.starts_with("lk_ab12cd34_"));
        assert_eq!(
            g.digest,
            Digest::of(&token.as_bytes()[12..]),
            "only the secret is hashed"
        );
        assert!(matches!(
            parse(token),
            Some(Presented::Token { prefix: "lk", .. })
        ));
        assert_eq!(g.last4, &token[token.len() - 4..]);
    }

    #[test]
    fn any_single_character_change_fails_the_checksum() {
        let g = generate(KeyFormat::Token, "lk", store()).unwrap();
        let token = g.secret.expose().to_owned();
        let secret_start = token.len() - TOKEN_SECRET_LEN;
        for i in secret_start..token.len() {
            for &c in BASE62 {
                let mut bytes = token.clone().into_bytes();
                if bytes[i] == c {
                    continue;
                }
                bytes[i] = c;
                let changed = String::from_utf8(bytes).unwrap();
                assert!(!is_token(&changed), "{i}");
            }
        }
        // The checksum covers the prefix and store id too.
        let moved = token.replacen("ab12cd34", "ab12cd35", 1);
        assert!(!is_token(&moved));
        assert!(is_token(&token));
    }

    #[test]
    fn checksum_decoding_agrees_with_encoding() {
        for body in [
            &b""[..],
            b"lk_ab12cd34_",
            b"some longer body of bytes",
            &[0xff; 40],
        ] {
            let sum = checksum(body);
            assert!(checksum_matches(body, &sum));
            let mut wrong = sum;
            wrong[5] = if wrong[5] == b'0' { b'1' } else { b'0' };
            assert!(!checksum_matches(body, &wrong));
            assert!(!checksum_matches(body, b"!!!!!!"));
        }
        // 62^6 > 2^32: the largest CRC fits and a too-large decoded value never matches.
        assert!(!checksum_matches(b"x", b"zzzzzz"));
    }

    #[test]
    fn hex_and_pair_shapes() {
        let hex = generate(KeyFormat::Hex, "lk", store()).unwrap();
        assert_eq!(hex.secret.expose().len(), 64);
        assert_eq!(hex.digest, Digest::of(hex.secret.expose().as_bytes()));
        assert!(matches!(
            parse(hex.secret.expose()),
            Some(Presented::Hex(_))
        ));

        let pair = generate(KeyFormat::Pair, "lk", store()).unwrap();
        let ck = pair.consumer_key.clone().unwrap();
        let cs = pair.secret.expose();
        assert!(ck.starts_with("ck_") && ck.len() == 35);
        assert!(cs.starts_with("cs_") && cs.len() == 35);
        assert_eq!(pair.digest, Digest::of(cs.as_bytes()));
        let presented = format!("{ck}:{cs}");
        assert!(matches!(parse(&presented), Some(Presented::Pair { .. })));
    }

    #[test]
    fn malformed_credentials_do_not_parse() {
        for bad in [
            "",
            "lk",
            "lk__",
            "lk_ab12cd34_",
            "LK_ab12cd34_0123456789abcdefghijklmnopqrstuv",
            "l_ab12cd34_0123456789abcdefghijklmnopqrstuv",
            "ck_00:cs_00",
            "ck_zz:cs_zz",
            &"A".repeat(64),
            &"0".repeat(63),
            "ck_0123456789abcdef0123456789abcdef:",
            "lk_ab12cd3_0123456789abcdefghijklmnopqrstuv",
            "\u{0}\u{0}\u{0}",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn debug_of_presented_never_shows_the_secret() {
        let g = generate(KeyFormat::Token, "lk", store()).unwrap();
        let shown = format!("{:?}", parse(g.secret.expose()).unwrap());
        assert!(!shown.contains(&g.secret.expose()[12..]), "{shown}");
    }

    #[test]
    fn headers_yield_the_credential() {
        assert_eq!(
            credential_from_headers(Some(" lk_x "), Some("Bearer y")).unwrap(),
            "lk_x"
        );
        assert_eq!(
            credential_from_headers(None, Some("bearer lk_y")).unwrap(),
            "lk_y"
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("ck_1:cs_2");
        let header = format!("Basic {basic}");
        assert_eq!(
            credential_from_headers(None, Some(header.as_str())).unwrap(),
            "ck_1:cs_2"
        );
        assert_eq!(
            credential_from_headers(None, Some(basic.as_str())).unwrap(),
            "ck_1:cs_2"
        );
        assert_eq!(
            credential_from_headers(None, Some("Basic %%%")).unwrap(),
            "Basic %%%"
        );
        assert!(credential_from_headers(Some(""), None).is_none());
        // Sent twice: refused, whichever header, whether the lines agree or not.
        for (keys, auths) in [
            (&["lk_a", "lk_a"][..], &[][..]),
            (&["lk_a", ""][..], &["Bearer lk_b"][..]),
            (&[][..], &["Bearer lk_b", "Bearer lk_c"][..]),
        ] {
            assert_eq!(
                credential_from_headers(keys.iter().copied(), auths.iter().copied()).unwrap(),
                UNREADABLE_CREDENTIAL
            );
        }
        // One X-Api-Key line leaves Authorization alone, repeated or not.
        assert_eq!(
            credential_from_headers(["lk_a"], ["x", "y"]).unwrap(),
            "lk_a"
        );
        assert!(credential_from_headers(None, None).is_none());
        let bad_utf8 = base64::engine::general_purpose::STANDARD.encode([0xff, 0xfe]);
        assert_eq!(
            credential_from_headers(None, Some(bad_utf8.as_str())).unwrap(),
            bad_utf8
        );
        let basic_bad_utf8 = format!("Basic {bad_utf8}");
        let sent = credential_from_headers(None, Some(basic_bad_utf8.as_str())).unwrap();
        assert!(!sent.is_empty() && parse(&sent).is_none(), "{sent}");
    }

    proptest! {
        #[test]
        fn generated_tokens_always_parse(prefix in "[a-z]{2,8}", store in "[a-z0-9]{8}") {
            let store = StoreId::parse(&store).unwrap();
            let g = generate(KeyFormat::Token, &prefix, store).unwrap();
            match parse(g.secret.expose()) {
                Some(Presented::Token { prefix: p, store: s, secret }) => {
                    prop_assert_eq!(p, prefix.as_str());
                    prop_assert_eq!(s, store);
                    prop_assert_eq!(Digest::of(secret.as_bytes()), g.digest);
                }
                other => prop_assert!(false, "did not parse: {:?}", other),
            }
            prop_assert!(is_token(g.secret.expose()));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,80}") {
            let _ = parse(&text);
            let _ = credential_from_headers(None, Some(text.as_str()));
        }
    }
}
