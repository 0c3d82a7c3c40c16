//! Finding credentials in text (source files, logs, pasted config), for scanners of leaked
//! keys: which words have the shape of one of the three key formats, and how to show one in a
//! report without repeating its secret.
//!
//! A shape is not proof. A token carries a checksum, so a token-shaped word is almost surely
//! one a Latchkey issued; a pair's consumer secret (`cs_` + 32 hex) is distinctive enough to
//! report on sight; a hex key looks like every SHA-256 digest written in hex (lockfiles,
//! checksums, commit ids of SHA-256 repositories), so only a lookup in the key index
//! ([`crate::Engine::identify`]) tells one from the rest.

use serde::{Deserialize, Serialize};

use super::format::{self, CONSUMER_SECRET_PREFIX};
use crate::audit::Actor;
use crate::engine::{Engine, Stopped};
use crate::ids::StoreId;
use crate::input::{Fields, boolean, string};

/// Which key format a word found in text has the shape of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakShape {
    /// `{prefix}_{storeId}_{secret}` whose checksum holds.
    Token,
    /// A pair's consumer secret, `cs_` + 32 lowercase hex. The consumer key (`ck_…`) is an
    /// identifier, not a secret: it is not a leak by itself, and the secret alone finds its key.
    PairSecret,
    /// 64 lowercase hex characters: a hex key, or (far more often) a digest.
    Hex,
}

/// A credential-shaped word and where it is. `Debug` never shows the word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Leak<'a> {
    /// 1-based line number in the text scanned.
    pub line: usize,
    pub shape: LeakShape,
    /// The credential itself, to look up; never print it (see [`Leak::masked`]).
    pub credential: &'a str,
}

impl std::fmt::Debug for Leak<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leak")
            .field("line", &self.line)
            .field("shape", &self.shape)
            .field("masked", &self.masked())
            .finish()
    }
}

impl Leak<'_> {
    /// The form key lists show (`lk_ab12cd34_…Xy9Z`, `cs_…9f3a`, `…9f3a`): the public part
    /// and the last four characters, so a report does not spread the leak it reports.
    pub fn masked(&self) -> String {
        let text = self.credential;
        let last4 = &text[text.len() - 4..];
        match self.shape {
            // The prefix and store id, up to the second `_`, are public.
            LeakShape::Token => match text.rfind('_') {
                Some(end) => format!("{}…{last4}", &text[..=end]),
                None => format!("…{last4}"),
            },
            LeakShape::PairSecret => format!("{CONSUMER_SECRET_PREFIX}…{last4}"),
            LeakShape::Hex => format!("…{last4}"),
        }
    }
}

/// The shape of `word`, if it has one of the key formats' (a token only with a valid checksum).
pub fn leak_shape(word: &str) -> Option<LeakShape> {
    if format::is_token(word) {
        Some(LeakShape::Token)
    } else if format::is_pair_secret(word) {
        Some(LeakShape::PairSecret)
    } else if format::is_hex_key(word) {
        Some(LeakShape::Hex)
    } else {
        None
    }
}

/// Every credential-shaped word of `text`, in order. Words are runs of ASCII letters, digits
/// and `_` (every format's alphabet), so a credential is found inside quotes, after `=` or
/// `Bearer `, and the secret half of `ck_…:cs_…`; a run longer than any credential is not
/// split.
pub fn find_leaks(text: &str) -> impl Iterator<Item = Leak<'_>> {
    text.lines().enumerate().flat_map(|(i, line)| {
        // Split on bytes (a scanner over large trees spends its time here): word bytes are
        // ASCII, and every other byte, a multi-byte character's included, separates.
        let word_byte = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
        let mut at = 0;
        line.as_bytes()
            .split(move |b| !word_byte(b))
            .filter_map(move |bytes| {
                let start = at;
                at += bytes.len() + 1;
                // A non-empty piece is ASCII and follows an ASCII separator (or starts the
                // line), so both its ends are char boundaries; an empty one may sit inside a
                // multi-byte character, so it is never sliced.
                if bytes.is_empty() {
                    return None;
                }
                let word = &line[start..start + bytes.len()];
                leak_shape(word).map(|shape| Leak {
                    line: i + 1,
                    shape,
                    credential: word,
                })
            })
    })
}

/// The fewest characters a credential has (a pair secret: `cs_` + 32 hex); tokens are longer
/// (prefix, store id, 32), hex keys 64.
const SHORTEST_CREDENTIAL: usize = CONSUMER_SECRET_PREFIX.len() + 32;

/// `text` with every credential [`find_leaks`] finds replaced by its masked form
/// ([`Leak::masked`]): for log lines, error reports, tickets, anything kept or shown beyond the
/// one response that issued a key. With `hex`, every 64-hex word is masked too: a hex key
/// cannot be told from a digest by its shape, so mask them all where digests are not expected
/// (a request path) and leave them where they are (a build log). Borrowed when nothing is
/// masked, and quick to say so: text without a run of 35 word characters holds no credential.
pub fn redact(text: &str, hex: bool) -> std::borrow::Cow<'_, str> {
    if !has_word_run(text, SHORTEST_CREDENTIAL) {
        return text.into();
    }
    let mut out = String::new();
    let mut copied = 0;
    for leak in find_leaks(text).filter(|leak| hex || leak.shape != LeakShape::Hex) {
        // `credential` is a slice of `text` (through `lines`): its offset is where it starts.
        let start = leak.credential.as_ptr() as usize - text.as_ptr() as usize;
        out.push_str(&text[copied..start]);
        out.push_str(&leak.masked());
        copied = start + leak.credential.len();
    }
    if copied == 0 {
        return text.into();
    }
    out.push_str(&text[copied..]);
    out.into()
}

/// Whether `text` has `n` word bytes (ASCII letters, digits, `_`) in a row.
fn has_word_run(text: &str, n: usize) -> bool {
    let mut run = 0;
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            run += 1;
            if run >= n {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// What became of a credential [`Engine::check_leaks`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeakStatus {
    /// It authenticates nothing: never issued here, or already revoked or replaced.
    NotLive,
    /// It is live (asked not to stop it).
    Live,
    /// Stopped: its key was revoked.
    Revoked,
    /// Stopped: it was an old secret in its regeneration's overlap, which was ended (the key's
    /// current secret keeps working).
    OverlapEnded,
    /// Stopped: a store's default key, which cannot be revoked, got a new secret, not shown.
    SecretReplaced,
    /// Live, and stopping it failed (`error` says why).
    NotStopped,
    /// It names a live key of a store outside the caller's scope
    /// ([`Engine::check_leaks_within`]): neither named nor stopped here.
    OutOfScope,
}

impl LeakStatus {
    /// The credential still authenticates after the check: live and not asked to stop, not
    /// stoppable, or another store's (what a scanner's `--fail` and alerts go by).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Live | Self::NotStopped | Self::OutOfScope)
    }

    /// The check stopped it (whichever way its kind of key is stopped).
    pub fn is_stopped(self) -> bool {
        matches!(
            self,
            Self::Revoked | Self::OverlapEnded | Self::SecretReplaced
        )
    }
}

/// The request of a leak check as the HTTP API takes it: `{text, stop?}`. Its `Debug` shows
/// the text's length only: the text holds the credentials it is checked for.
#[derive(Clone, PartialEq, Eq)]
pub struct LeakCheck {
    pub text: String,
    /// Stop the live credentials found (default false: only report them).
    pub stop: bool,
}

impl std::fmt::Debug for LeakCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeakCheck")
            .field("text_bytes", &self.text.len())
            .field("stop", &self.stop)
            .finish()
    }
}

impl LeakCheck {
    /// Reads `{text, stop?}`; every problem (and each unknown field) named at once.
    pub fn from_json(value: &serde_json::Value) -> crate::Result<LeakCheck> {
        let mut fields = Fields::new(value, "leak check")?;
        let text = fields.required("text", string);
        let stop = fields.optional("stop", boolean).unwrap_or(false);
        fields.finish().finish()?;
        Ok(LeakCheck {
            text: text.unwrap_or_default(),
            stop,
        })
    }
}

/// A credential found in text, checked against the key index. Holds no secret. Deserializes
/// from what `POST /api/leaks` answers, for clients of a server's check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// 1-based line of the text.
    pub line: usize,
    pub shape: LeakShape,
    /// As key lists show it ([`Leak::masked`]).
    pub masked: String,
    pub status: LeakStatus,
    /// The key it named, when it was live.
    pub key_id: Option<String>,
    pub store_id: Option<StoreId>,
    /// It was an old secret of the key, in its regeneration's overlap.
    pub replaced: bool,
    /// When the credential was last presented (to the minute), before this check: whether
    /// the leak may have been used. For an old secret, its own last use.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<time::OffsetDateTime>,
    /// From where (the key's current secret only).
    pub last_used_ip: Option<std::net::IpAddr>,
    /// Why a live credential could not be stopped.
    pub error: Option<String>,
}

impl Engine {
    /// Every credential in `text` ([`find_leaks`]) checked against the key index: which key
    /// each names and whether it is live; with `stop`, each live one is stopped
    /// ([`Engine::stop_leaked`]: revoked, its overlap ended, or a default key's secret
    /// replaced). A 64-hex string that names no key is left out: most are digests, not keys.
    /// For scanners of files, pasted text and support tickets; charges no limit.
    pub fn check_leaks(&self, text: &str, stop: bool, actor: &Actor) -> Vec<Finding> {
        self.check_leaks_within(text, stop, actor, |_| true)
    }

    /// [`Engine::check_leaks`] for a caller who manages only the stores `covers` accepts: a
    /// live credential of another store is reported [`LeakStatus::OutOfScope`], without its
    /// key or store, and never stopped. (Whoever holds a credential can learn that it is live
    /// by presenting it; which tenant it belongs to, and stopping it, are that tenant's.)
    pub fn check_leaks_within(
        &self,
        text: &str,
        stop: bool,
        actor: &Actor,
        covers: impl Fn(&StoreId) -> bool,
    ) -> Vec<Finding> {
        find_leaks(text)
            .filter_map(|leak| {
                let mut finding = Finding {
                    line: leak.line,
                    shape: leak.shape,
                    masked: leak.masked(),
                    status: LeakStatus::NotLive,
                    key_id: None,
                    store_id: None,
                    replaced: false,
                    last_used_at: None,
                    last_used_ip: None,
                    error: None,
                };
                let Some(found) = self.identify(leak.credential) else {
                    return (leak.shape != LeakShape::Hex).then_some(finding);
                };
                if !covers(&found.store_id) {
                    finding.status = LeakStatus::OutOfScope;
                    return Some(finding);
                }
                // Read before stopping: a revoked key is gone from the reads.
                let used = self.get_key(found.store_id.as_str(), &found.key_id).ok();
                let used = used.map(|key| match found.replaced {
                    true => (key.previous_last_used_at, None),
                    false => (key.last_used_at, key.last_used_ip),
                });
                finding.status = if !stop {
                    LeakStatus::Live
                } else {
                    match self.stop_leaked(leak.credential, actor).map(|(_, how)| how) {
                        // Stopped by an earlier line of the same text.
                        None => LeakStatus::NotLive,
                        Some(Ok(Stopped::Revoked)) => LeakStatus::Revoked,
                        Some(Ok(Stopped::OverlapEnded)) => LeakStatus::OverlapEnded,
                        Some(Ok(Stopped::SecretReplaced)) => LeakStatus::SecretReplaced,
                        Some(Err(e)) => {
                            finding.error = Some(e.to_string());
                            LeakStatus::NotStopped
                        }
                    }
                };
                if finding.status != LeakStatus::NotLive {
                    finding.key_id = Some(found.key_id);
                    finding.store_id = Some(found.store_id);
                    finding.replaced = found.replaced;
                    (finding.last_used_at, finding.last_used_ip) = used.unwrap_or_default();
                }
                Some(finding)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "lk_abcd1234_";

    fn generate(format: format::KeyFormat) -> format::Generated {
        let store = crate::ids::StoreId::parse("abcd1234").unwrap();
        format::generate(format, "lk", store).unwrap()
    }

    fn token() -> String {
        generate(format::KeyFormat::Token)
            .secret
            .expose()
            .to_owned()
    }

    #[test]
    fn each_format_is_found_by_its_shape_and_masked_as_lists_show_it() {
        let token = token();
        let pair = generate(format::KeyFormat::Pair);
        let ck = pair.consumer_key.unwrap();
        let cs = pair.secret.expose().to_owned();
        let hex = "0123456789abcdef".repeat(4);
        let text = format!(
            "# config\nAPI_KEY=\"{token}\"\nWC={ck}:{cs}\nsha256 {hex}  file.tar\n{}\n",
            "x".repeat(80)
        );
        // Multi-byte characters around and between credentials change nothing.
        let accented = format!("« clé »\nAPI_KEY=«{token}»\nWC=é{ck}:{cs}ü\n😀 {hex}é\n");
        let found: Vec<_> = find_leaks(&accented)
            .map(|l| (l.line, l.credential))
            .collect();
        assert_eq!(
            found,
            [(2, token.as_str()), (3, cs.as_str()), (4, hex.as_str())]
        );
        let found: Vec<_> = find_leaks(&text).collect();
        let shapes: Vec<_> = found.iter().map(|l| (l.line, l.shape)).collect();
        assert_eq!(
            shapes,
            [
                (2, LeakShape::Token),
                (3, LeakShape::PairSecret),
                (4, LeakShape::Hex)
            ]
        );
        assert_eq!(found[0].credential, token);
        assert_eq!(found[1].credential, cs);
        assert_eq!(
            found[0].masked(),
            format!("{TOKEN}…{}", &token[token.len() - 4..])
        );
        assert_eq!(found[1].masked(), format!("cs_…{}", &cs[cs.len() - 4..]));
        assert_eq!(found[2].masked(), "…cdef");
        for leak in &found {
            let shown = format!("{leak:?} {}", leak.masked());
            assert!(!shown.contains(leak.credential), "{shown}");
        }
    }

    #[test]
    fn redact_masks_each_credential_in_place_and_borrows_when_there_is_none() {
        let token = token();
        let pair = generate(format::KeyFormat::Pair);
        let (ck, cs) = (pair.consumer_key.unwrap(), pair.secret.expose().to_owned());
        let hex = "0123456789abcdef".repeat(4);
        let text = format!("GET /x/{token}?k={ck}:{cs} «{hex}»\nAuthorization: Bearer {token}");
        let masked = format!("{TOKEN}…{}", &token[token.len() - 4..]);
        let cs_masked = format!("cs_…{}", &cs[cs.len() - 4..]);
        assert_eq!(
            redact(&text, false),
            format!("GET /x/{masked}?k={ck}:{cs_masked} «{hex}»\nAuthorization: Bearer {masked}")
        );
        assert_eq!(
            redact(&text, true),
            format!("GET /x/{masked}?k={ck}:{cs_masked} «…cdef»\nAuthorization: Bearer {masked}")
        );
        for plain in [
            "/api/v1/packages",
            "",
            &"x".repeat(34),
            &"ab".repeat(40),
            &hex,
        ] {
            assert!(
                matches!(redact(plain, false), std::borrow::Cow::Borrowed(_)),
                "{plain}"
            );
        }
        // Masking is final: a masked text has nothing left to mask.
        let once = redact(&text, true).into_owned();
        assert_eq!(redact(&once, true), once);
    }

    #[test]
    fn after_a_check_a_credential_is_live_stopped_or_neither() {
        use LeakStatus::*;
        let live = [Live, NotStopped, OutOfScope];
        let stopped = [Revoked, OverlapEnded, SecretReplaced];
        for status in [
            NotLive,
            Live,
            Revoked,
            OverlapEnded,
            SecretReplaced,
            NotStopped,
            OutOfScope,
        ] {
            assert_eq!(status.is_live(), live.contains(&status), "{status:?}");
            assert_eq!(status.is_stopped(), stopped.contains(&status), "{status:?}");
        }
    }

    proptest::proptest! {
        /// Whatever surrounds them, no credential survives `redact`, a text without one is
        /// left as it is, and a redacted text has nothing left to mask.
        #[test]
        fn no_credential_survives_redact(
            pieces in proptest::collection::vec(("[ -~é\n]{0,12}", 0u8..4), 0..8)
        ) {
            let mut text = String::new();
            let mut secrets = Vec::new();
            for (filler, kind) in pieces {
                text.push_str(&filler);
                // A separator, so the credential is a word of its own.
                text.push(' ');
                let secret = match kind {
                    0 => token(),
                    1 => generate(format::KeyFormat::Pair).secret.expose().to_owned(),
                    2 => generate(format::KeyFormat::Hex).secret.expose().to_owned(),
                    _ => continue,
                };
                text.push_str(&secret);
                text.push(' ');
                secrets.push(secret);
            }
            let redacted = redact(&text, true);
            for secret in &secrets {
                proptest::prop_assert!(!redacted.contains(secret.as_str()));
            }
            proptest::prop_assert_eq!(find_leaks(&redacted).count(), 0);
            proptest::prop_assert_eq!(redact(&redacted, true), redacted.clone());
            if secrets.is_empty() {
                proptest::prop_assert_eq!(redacted.as_ref(), text.as_str());
            }
        }
    }

    #[test]
    fn a_check_request_is_read_with_every_problem_named_and_never_shows_its_text() {
        let token = token();
        let check = LeakCheck::from_json(&serde_json::json!({"text": token, "stop": true}));
        let check = check.unwrap();
        assert!(check.stop && check.text == token);
        assert!(!format!("{check:?}").contains(&token));
        let err = LeakCheck::from_json(&serde_json::json!({"stop": 1, "x": 2})).unwrap_err();
        assert_eq!(
            err.problems(),
            [
                "text: is required",
                "stop: expected true or false",
                "x: unknown field"
            ]
        );
        assert!(LeakCheck::from_json(&serde_json::json!("text")).is_err());
    }

    #[test]
    fn near_misses_are_not_credentials() {
        let token = token();
        let mut mistyped = token.clone();
        let last = mistyped.pop().unwrap();
        mistyped.push(if last == 'A' { 'B' } else { 'A' });
        let cs_upper = format!("cs_{}", "ABCDEF0123456789".repeat(2));
        let cs_short = format!("cs_{}", "a".repeat(31));
        let hex_upper = "0123456789ABCDEF".repeat(4);
        let hex_long = "a".repeat(65);
        let ck_only = format!("ck_{}", "a".repeat(32));
        for word in [
            mistyped.as_str(),
            &cs_upper,
            &cs_short,
            &hex_upper,
            &hex_long,
            &ck_only,
            &format!("x{token}"),
        ] {
            assert_eq!(leak_shape(word), None, "{word}");
            assert_eq!(find_leaks(word).count(), 0, "{word}");
        }
    }
}
