//! The verify decision: one answer per request (SPEC §4).
//!
//! The checks run in the order of [`DenyCode`]'s variants and stop at the first failure. A
//! denial is a [`Decision`], not an error: the caller answers it with its status and message.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use crate::ids::StoreId;
use crate::keys::KeyKind;
use crate::permissions::{Permission, PermissionSet};

/// Why a request was refused, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyCode {
    /// No credential was presented.
    Missing,
    /// Malformed, bad checksum, unknown, wrong secret, or revoked.
    Invalid,
    Expired,
    Inactive,
    ApiDisabled,
    PlanRequired,
    IpNotAllowed,
    Forbidden,
    RateLimited,
}

impl DenyCode {
    /// Every code, in check order.
    pub const ALL: [DenyCode; 9] = [
        DenyCode::Missing,
        DenyCode::Invalid,
        DenyCode::Expired,
        DenyCode::Inactive,
        DenyCode::ApiDisabled,
        DenyCode::PlanRequired,
        DenyCode::IpNotAllowed,
        DenyCode::Forbidden,
        DenyCode::RateLimited,
    ];

    /// The code's position in [`DenyCode::ALL`], for bindings that pass codes as integers.
    pub fn index(self) -> u32 {
        self as u32
    }

    /// The code at `index` of [`DenyCode::ALL`].
    pub fn from_index(index: u32) -> Option<DenyCode> {
        DenyCode::ALL.get(usize::try_from(index).ok()?).copied()
    }

    /// The refusal's message; `missing` names the permission of a `FORBIDDEN`
    /// (`Missing permission Orders:Edit`).
    pub fn message_for(self, missing: Option<Permission>) -> Cow<'static, str> {
        match (self, missing) {
            (DenyCode::Forbidden, Some(missing)) => {
                Cow::Owned(format!("Missing permission {missing}"))
            }
            (code, _) => Cow::Borrowed(code.message()),
        }
    }

    /// The body every front end answers this refusal with: the response wrapper of SPEC §7
    /// (`success: false`, the message in `message` and `errors`, and the `code`).
    pub fn refusal_body(self, missing: Option<Permission>) -> serde_json::Value {
        let message = self.message_for(missing);
        serde_json::json!({
            "success": false,
            "data": null,
            "message": message,
            "errors": [message],
            "code": self.as_str(),
        })
    }

    /// The stable machine-readable code.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCode::Missing => "MISSING",
            DenyCode::Invalid => "INVALID",
            DenyCode::Expired => "EXPIRED",
            DenyCode::Inactive => "INACTIVE",
            DenyCode::ApiDisabled => "API_DISABLED",
            DenyCode::PlanRequired => "PLAN_REQUIRED",
            DenyCode::IpNotAllowed => "IP_NOT_ALLOWED",
            DenyCode::Forbidden => "FORBIDDEN",
            DenyCode::RateLimited => "RATE_LIMITED",
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            DenyCode::Missing | DenyCode::Invalid | DenyCode::Expired => 401,
            DenyCode::Inactive
            | DenyCode::ApiDisabled
            | DenyCode::PlanRequired
            | DenyCode::IpNotAllowed
            | DenyCode::Forbidden => 403,
            DenyCode::RateLimited => 429,
        }
    }

    /// The message, except for `FORBIDDEN`, whose message names the missing permission
    /// (see [`Decision::message`]).
    pub fn message(self) -> &'static str {
        match self {
            DenyCode::Missing => "API key required",
            DenyCode::Invalid => "Invalid API key",
            DenyCode::Expired => "API key has expired",
            DenyCode::Inactive => "API key is inactive",
            DenyCode::ApiDisabled => "REST API is disabled for this store",
            DenyCode::PlanRequired => "An active Pro subscription is required",
            DenyCode::IpNotAllowed => "IP address not allowed",
            DenyCode::Forbidden => "Missing permission",
            DenyCode::RateLimited => "Rate limit exceeded",
        }
    }
}

impl fmt::Display for DenyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The code and message of a method an area's routes do not serve (405).
pub const METHOD_NOT_ALLOWED: (&str, &str) = ("METHOD_NOT_ALLOWED", "Method not allowed");

/// The body every front end answers 405 with. The server's method router answers it for a
/// method its routes do not serve. The middlewares, which cannot see the application's routes,
/// answer it on an area's path when the method implies no action (see [`crate::Action::for_method`]):
/// a handler that takes any method would otherwise run with no permission checked.
pub fn method_not_allowed_body() -> serde_json::Value {
    let (code, message) = METHOD_NOT_ALLOWED;
    serde_json::json!({
        "success": false,
        "data": null,
        "message": message,
        "errors": [],
        "code": code,
    })
}

/// Reads the area, action and client address a front end passes to verify as text (names in
/// any case), naming every problem: an unknown area or action, an unreadable address, or an
/// area without an action (or the reverse). `None` for a route that needs only a valid key.
pub fn verify_arguments(
    area: Option<&str>,
    action: Option<&str>,
    ip: Option<&str>,
) -> crate::Result<(Option<Permission>, Option<IpAddr>)> {
    use crate::permissions::{Action, Area};
    let mut problems = Vec::new();
    let area = area.and_then(|a| {
        Area::parse(a).or_else(|| {
            problems.push(format!("area: unknown `{}`", a.escape_debug()));
            None
        })
    });
    let action = action.and_then(|a| {
        Action::parse(a).or_else(|| {
            problems.push(format!(
                "action: unknown `{}` (View, Edit or Delete)",
                a.escape_debug()
            ));
            None
        })
    });
    let ip = ip.and_then(|text| {
        crate::parse_ip_argument(text)
            .map_err(|problem| problems.push(problem))
            .ok()
    });
    let permission = match (area, action) {
        (Some(area), Some(action)) => Some(Permission::new(area, action)),
        (None, None) => None,
        _ if !problems.is_empty() => None,
        _ => {
            problems.push("area and action: give both or neither".into());
            None
        }
    };
    if problems.is_empty() {
        Ok((permission, ip))
    } else {
        Err(crate::Error::invalid(problems))
    }
}

/// One request to decide on.
#[derive(Clone, Copy)]
pub struct VerifyRequest<'a> {
    /// The credential as presented (see [`crate::credential_from_headers`]); `None` or empty
    /// when none was sent.
    pub credential: Option<&'a str>,
    /// The permission the request needs; `None` for routes that only need a valid key.
    pub permission: Option<Permission>,
    /// The client's address, for the IP allowlist and per-IP limits.
    pub ip: Option<IpAddr>,
    /// The request path, for route-scoped limits.
    pub path: &'a str,
}

impl fmt::Debug for VerifyRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyRequest")
            .field("credential", &self.credential.map(|_| "<redacted>"))
            .field("permission", &self.permission)
            .field("ip", &self.ip)
            .field("path", &self.path)
            .finish()
    }
}

/// The limit that applied to a request, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds at which the budget is fully restored.
    pub reset_at: i64,
    /// Whole seconds (≥ 1) to wait before retrying; set on `RATE_LIMITED`.
    pub retry_after: Option<u32>,
}

impl LimitState {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`, and `Retry-After` (at least 1) when the
    /// request was refused: the headers of every answer a limit governed.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        self.header_figures()
            .map(|(header, value)| (header.name(), value.to_string()))
            .collect()
    }

    /// [`LimitState::headers`] with their values as numbers, for a front end that writes
    /// them without formatting a string for each first (the server, on every keyed answer).
    pub fn header_figures(&self) -> impl Iterator<Item = (LimitHeader, i64)> + use<> {
        [
            (LimitHeader::Limit, i64::from(self.limit)),
            (LimitHeader::Remaining, i64::from(self.remaining)),
            (LimitHeader::Reset, self.reset_at),
        ]
        .into_iter()
        .chain(
            self.retry_after
                .map(|after| (LimitHeader::RetryAfter, i64::from(after.max(1)))),
        )
    }
}

/// A header of [`LimitState::header_figures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitHeader {
    Limit,
    Remaining,
    Reset,
    RetryAfter,
}

impl LimitHeader {
    /// The header's name, as SPEC §5 spells it.
    pub fn name(self) -> &'static str {
        match self {
            LimitHeader::Limit => "X-RateLimit-Limit",
            LimitHeader::Remaining => "X-RateLimit-Remaining",
            LimitHeader::Reset => "X-RateLimit-Reset",
            LimitHeader::RetryAfter => "Retry-After",
        }
    }
}

/// A short string stored inline, so a decision is copied out of the index without
/// allocating or touching a reference count. NUL-padded rather than length-prefixed: every
/// string stored here (key ids, environments, token prefixes) is validated to contain no NUL,
/// and whole 8-byte multiples copy without overlapping partial moves. Aligned to 8 so a
/// decision moved through the lookup's closures copies in aligned words: unaligned 16-byte
/// copies of freshly written bytes defeat store forwarding and cost ~10 ns per move.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(8))]
pub(crate) struct Inline<const N: usize> {
    bytes: [u8; N],
}

impl<const N: usize> fmt::Debug for Inline<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> Inline<N> {
    /// `None` when `text` is longer than `N` bytes or contains NUL.
    pub(crate) fn new(text: &str) -> Option<Self> {
        if text.as_bytes().contains(&0) {
            return None;
        }
        let mut bytes = [0u8; N];
        bytes
            .get_mut(..text.len())?
            .copy_from_slice(text.as_bytes());
        Some(Self { bytes })
    }

    pub(crate) fn as_str(&self) -> &str {
        let len = self.bytes.iter().position(|&b| b == 0).unwrap_or(N);
        // Invariant: built from a `&str` in `new`, so the prefix is valid UTF-8.
        std::str::from_utf8(&self.bytes[..len]).unwrap_or_default()
    }

    /// Equal to `text`, without measuring the stored string first: every stored byte against
    /// the byte of `text` at its place, NUL past its end. A loop over the fixed `N` bytes, not
    /// a slice comparison: one of a length known only at run time is a call to `bcmp`, which
    /// for a token's few prefix bytes costs more than the comparison (`verify/hot`).
    #[inline]
    pub(crate) fn matches(&self, text: &str) -> bool {
        let text = text.as_bytes();
        if text.len() > N {
            return false;
        }
        let mut diff = 0u8;
        for (i, &stored) in self.bytes.iter().enumerate() {
            diff |= stored ^ text.get(i).copied().unwrap_or(0);
        }
        diff == 0
    }
}

/// The key a decision names (its id, store and environment) as one small `Copy` value, so a
/// front end that keeps something per key (the Node binding numbers the identities it has
/// reported) can hash and compare it without measuring or validating strings on every call.
/// Hashes its key id only (ids are unique; equal identities have equal ids). Equality is of
/// the three strings; [`KeyIdentity::serial`] is not compared.
#[derive(Clone, Copy)]
pub struct KeyIdentity {
    store_id: StoreId,
    key_id: Inline<24>,
    environment: Inline<32>,
    serial: u64,
}

impl PartialEq for KeyIdentity {
    fn eq(&self, other: &Self) -> bool {
        (self.store_id, self.key_id, self.environment)
            == (other.store_id, other.key_id, other.environment)
    }
}

impl Eq for KeyIdentity {}

/// A number given to each key entry the index builds, unique in the process and never reused,
/// so that equal serials always name equal identities: a front end can remember "already
/// reported" under it with one word compared, where comparing identities reads 64 bytes it
/// must also keep. (One key has a new serial each time its entry is rebuilt, e.g. on update.)
///
/// Seven bytes, so it fits the padding after [`Grant::kind`] and an index entry stays four
/// cache lines: 2^56 serials last two thousand years at a million entries a second; were they
/// ever to run out, entries get serial 0, "unnumbered", which a front end must not remember.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Serial([u8; 7]);

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({})", self.get())
    }
}

impl Serial {
    pub(crate) const UNNUMBERED: Serial = Serial([0; 7]);

    pub(crate) fn next() -> Serial {
        use std::sync::atomic::{AtomicU64, Ordering};
        // Starts at 1: 0 is `UNNUMBERED`. Relaxed: only uniqueness matters, which the
        // atomic increment gives in any ordering.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        if n >> 56 != 0 {
            return Serial::UNNUMBERED;
        }
        let bytes = n.to_le_bytes();
        Serial([
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6],
        ])
    }

    fn get(self) -> u64 {
        let [a, b, c, d, e, f, g] = self.0;
        u64::from_le_bytes([a, b, c, d, e, f, g, 0])
    }
}

impl Grant {
    /// The serial, read with the kind byte before it as one aligned word: seven bytes read on
    /// their own take several loads, and copies of a decision just made are still in the store
    /// buffer in other widths, which such loads wait on.
    fn serial(&self) -> u64 {
        let [a, b, c, d, e, f, g] = self.serial.0;
        u64::from_le_bytes([self.kind as u8, a, b, c, d, e, f, g]) >> 8
    }
}

impl KeyIdentity {
    pub fn key_id(&self) -> &str {
        self.key_id.as_str()
    }

    pub fn store_id(&self) -> StoreId {
        self.store_id
    }

    pub fn environment(&self) -> &str {
        self.environment.as_str()
    }

    /// A number that no other identity has had or will have in this process (see `Serial`),
    /// though one key may be seen under several; `None` when serials ran out. A front end
    /// can remember which identities it has handled by this number alone.
    pub fn serial(&self) -> Option<std::num::NonZeroU64> {
        std::num::NonZeroU64::new(self.serial)
    }
}

impl std::hash::Hash for KeyIdentity {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write(&self.key_id.bytes);
    }
}

impl fmt::Debug for KeyIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyIdentity")
            .field("key_id", &self.key_id)
            .field("store_id", &self.store_id)
            .field("environment", &self.environment)
            .finish()
    }
}

/// Who a successful decision is for: copied out of the index entry. In this order because
/// the entry's checks read the first two (see `index::KeyEntry`).
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub(crate) struct Grant {
    pub store_id: StoreId,
    pub permissions: PermissionSet,
    pub key_id: Inline<24>,
    pub environment: Inline<32>,
    pub kind: KeyKind,
    pub serial: Serial,
}

/// The answer to a [`VerifyRequest`].
#[derive(Clone)]
pub struct Decision {
    denial: Option<(DenyCode, Option<Permission>)>,
    key: Option<Grant>,
    limit: Option<LimitState>,
}

impl Decision {
    pub(crate) fn allow(key: Grant, limit: Option<LimitState>) -> Self {
        Self {
            denial: None,
            key: Some(key),
            limit,
        }
    }

    pub(crate) fn deny(code: DenyCode) -> Self {
        Self {
            denial: Some((code, None)),
            key: None,
            limit: None,
        }
    }

    /// A denial of a request whose credential identified a key (`EXPIRED` and later checks);
    /// the permission is the missing one for `FORBIDDEN`.
    pub(crate) fn refuse(
        denial: (DenyCode, Option<Permission>),
        key: Grant,
        limit: Option<LimitState>,
    ) -> Self {
        Self {
            denial: Some(denial),
            key: Some(key),
            limit,
        }
    }

    pub(crate) fn with_limit(mut self, limit: Option<LimitState>) -> Self {
        self.limit = limit;
        self
    }

    pub fn allowed(&self) -> bool {
        self.denial.is_none()
    }

    /// Why the request was refused; `None` when allowed.
    pub fn code(&self) -> Option<DenyCode> {
        self.denial.map(|(code, _)| code)
    }

    /// `"OK"` when allowed, else the deny code.
    pub fn code_str(&self) -> &'static str {
        self.code().map_or("OK", DenyCode::as_str)
    }

    /// 200 when allowed, else the status of the deny code.
    pub fn status(&self) -> u16 {
        self.code().map_or(200, DenyCode::http_status)
    }

    /// `"OK"` when allowed; else the message of SPEC §4, e.g. `Missing permission Orders:Edit`.
    pub fn message(&self) -> Cow<'static, str> {
        match self.denial {
            None => Cow::Borrowed("OK"),
            Some((code, missing)) => code.message_for(missing),
        }
    }

    /// The permission that was missing (`FORBIDDEN` only).
    pub fn missing_permission(&self) -> Option<Permission> {
        self.denial.and_then(|(_, missing)| missing)
    }

    /// The key the credential identified: on every allowed decision, and on denials from
    /// `EXPIRED` on (the secret matched), so request logs can name the key.
    pub fn key_id(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.key_id.as_str())
    }

    pub fn store_id(&self) -> Option<StoreId> {
        self.key.as_ref().map(|k| k.store_id)
    }

    /// The key's id, store and environment together (see [`KeyIdentity`]); `None` exactly
    /// when [`Decision::key_id`] is.
    pub fn key_identity(&self) -> Option<KeyIdentity> {
        self.key.as_ref().map(|k| KeyIdentity {
            store_id: k.store_id,
            key_id: k.key_id,
            environment: k.environment,
            serial: k.serial(),
        })
    }

    pub fn environment(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.environment.as_str())
    }

    pub fn permissions(&self) -> Option<PermissionSet> {
        self.key.as_ref().map(|k| k.permissions)
    }

    pub fn key_kind(&self) -> Option<KeyKind> {
        self.key.as_ref().map(|k| k.kind)
    }

    /// The limit that governs this requester: after an allowed request, the applicable
    /// limit with the least left (key or client IP); on `RATE_LIMITED`, the limit that
    /// refused; on other denials, the key's and IP's state, uncharged, or after a 401 the
    /// IP's brute-force limit. `None` when no limit applies.
    pub fn limit(&self) -> Option<LimitState> {
        self.limit
    }

    /// The body every front end answers a refusal with: the response wrapper of SPEC §7
    /// (`success: false`, the message in `message` and `errors`, and the `code`).
    pub fn refusal_body(&self) -> serde_json::Value {
        match self.denial {
            Some((code, missing)) => code.refusal_body(missing),
            // Not a refusal; the same wrapper with success, for callers that answer anyway.
            None => serde_json::json!({
                "success": true,
                "data": null,
                "message": "OK",
                "errors": [],
                "code": "OK",
            }),
        }
    }

    /// The headers to answer with: `X-RateLimit-Limit`, `-Remaining`, `-Reset` when a limit
    /// applied, and `Retry-After` on `RATE_LIMITED`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        self.limit.map(|limit| limit.headers()).unwrap_or_default()
    }
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("code", &self.code_str())
            .field("status", &self.status())
            .field("key_id", &self.key_id())
            .field("store_id", &self.store_id())
            .field("environment", &self.environment())
            .field("limit", &self.limit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_spec_table() {
        let table = [
            ("MISSING", 401, "API key required"),
            ("INVALID", 401, "Invalid API key"),
            ("EXPIRED", 401, "API key has expired"),
            ("INACTIVE", 403, "API key is inactive"),
            ("API_DISABLED", 403, "REST API is disabled for this store"),
            (
                "PLAN_REQUIRED",
                403,
                "An active Pro subscription is required",
            ),
            ("IP_NOT_ALLOWED", 403, "IP address not allowed"),
            ("FORBIDDEN", 403, "Missing permission"),
            ("RATE_LIMITED", 429, "Rate limit exceeded"),
        ];
        for (code, (name, status, message)) in DenyCode::ALL.iter().zip(table) {
            assert_eq!(
                (code.as_str(), code.http_status(), code.message()),
                (name, status, message)
            );
        }
    }

    #[test]
    fn codes_and_permissions_round_trip_through_their_indexes() {
        for (i, code) in DenyCode::ALL.iter().enumerate() {
            assert_eq!(code.index() as usize, i);
            assert_eq!(DenyCode::from_index(code.index()), Some(*code));
        }
        assert_eq!(DenyCode::from_index(9), None);
        let mut seen = std::collections::HashSet::new();
        for &area in crate::permissions::Area::ALL {
            for &action in &crate::permissions::Action::ALL {
                let permission = Permission::new(area, action);
                assert!(seen.insert(permission.index()));
                assert_eq!(Permission::from_index(permission.index()), Some(permission));
            }
        }
        let past = u32::try_from(crate::permissions::Area::ALL.len() * 3).unwrap();
        assert_eq!(Permission::from_index(past), None);
    }

    #[test]
    fn verify_arguments_name_every_problem() {
        use crate::permissions::{Action, Area};
        assert_eq!(
            verify_arguments(Some("orders"), Some("VIEW"), Some("10.0.0.1")).unwrap(),
            (
                Some(Permission::new(Area::Orders, Action::View)),
                Some("10.0.0.1".parse().unwrap())
            )
        );
        assert_eq!(verify_arguments(None, None, None).unwrap(), (None, None));
        let err = verify_arguments(Some("Nope"), Some("Fly"), Some("x")).unwrap_err();
        assert_eq!(err.problems().len(), 3);
        let err = verify_arguments(Some("Orders"), None, None).unwrap_err();
        assert_eq!(
            err.problems(),
            vec!["area and action: give both or neither"]
        );
    }

    #[test]
    fn forbidden_names_the_permission() {
        use crate::permissions::{Action, Area};
        let grant = Grant {
            key_id: Inline::new("key_x").unwrap(),
            store_id: StoreId::from_validated(*b"abcd1234"),
            environment: Inline::new("live").unwrap(),
            permissions: PermissionSet::default(),
            kind: KeyKind::Scoped,
            serial: Serial::UNNUMBERED,
        };
        let missing = Permission::new(Area::Orders, Action::Edit);
        let d = Decision::refuse((DenyCode::Forbidden, Some(missing)), grant, None);
        assert_eq!(d.message(), "Missing permission Orders:Edit");
        assert_eq!(d.status(), 403);
        assert!(!d.allowed());
        assert!(d.headers().is_empty());
    }

    #[test]
    fn an_inline_string_matches_exactly_its_text() {
        let stored = Inline::<8>::new("acme").unwrap();
        assert!(stored.matches("acme"));
        for other in ["", "acm", "acmee", "bcme", "ACME", "acme1234", "acme12345"] {
            assert!(!stored.matches(other), "{other:?}");
        }
        let full = Inline::<8>::new("abcdefgh").unwrap();
        assert!(full.matches("abcdefgh"));
        assert!(!full.matches("abcdefg") && !full.matches("abcdefghi"));
        assert!(Inline::<8>::new("").unwrap().matches(""));
    }

    #[test]
    fn request_debug_hides_the_credential() {
        let req = VerifyRequest {
            credential: Some("lk_secret"),
            permission: None,
            ip: None,
            path: "/",
        };
        assert!(!format!("{req:?}").contains("lk_secret"));
    }
}
