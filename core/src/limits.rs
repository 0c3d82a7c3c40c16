//! Rate-limit settings: what a key or a store asks for, and the engine-wide policy (server
//! default, per-IP route scopes, brute-force limit, exempt routes). The limiter that enforces
//! them is [`crate::Limiter`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::input::{Fields, integer, string};

/// How requests are counted against a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Aligned windows (e.g. 30 per wall-clock minute).
    FixedWindow,
    /// Rolling: never more than `limit` admitted in any window of `window_seconds`.
    SlidingWindow,
    /// Steady refill of `limit` per `window_seconds`, with a burst of `limit`.
    TokenBucket,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::TokenBucket => "token_bucket",
        }
    }

    pub fn parse(text: &str) -> Option<Algorithm> {
        [
            Algorithm::FixedWindow,
            Algorithm::SlidingWindow,
            Algorithm::TokenBucket,
        ]
        .into_iter()
        .find(|a| a.as_str() == text)
    }
}

/// A rate limit: at most `limit` requests per `window_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    pub limit: u32,
    pub window_seconds: u32,
    pub algorithm: Algorithm,
}

/// Longest window a limit may use: one day.
pub const MAX_WINDOW_SECONDS: u32 = 86_400;
/// The per-key range, as a rate per minute (seed 002: 1–10,000 requests/minute).
pub const MIN_PER_MINUTE: u64 = 1;
pub const MAX_PER_MINUTE: u64 = 10_000;

/// The checks every limit's figures pass, whatever else applies to it: a limit of at least 1
/// and a window of 1 s to a day. Reports each failure with its sub-field; `true` when both
/// hold.
fn figure_problems(limit: u32, window: u32, report: &mut impl FnMut(Option<&str>, String)) -> bool {
    let mut fine = true;
    if limit == 0 {
        report(Some("limit"), "must be at least 1".into());
        fine = false;
    }
    if window == 0 || window > MAX_WINDOW_SECONDS {
        report(
            Some("window_seconds"),
            format!("must be between 1 and {MAX_WINDOW_SECONDS}"),
        );
        fine = false;
    }
    fine
}

/// The problems of a limit's figures, each handed to `report` with the sub-field it is about
/// (`None`: the two together).
fn range_problems(limit: u32, window: u32, mut report: impl FnMut(Option<&str>, String)) {
    let fine = figure_problems(limit, window, &mut report);
    // Compare limit/window against the per-minute range without rounding:
    // MIN ≤ limit * 60 / window ≤ MAX.
    let scaled = u64::from(limit) * 60;
    let window = u64::from(window);
    if fine && (scaled < MIN_PER_MINUTE * window || scaled > MAX_PER_MINUTE * window) {
        report(
            None,
            format!(
                "{limit} per {window} s is outside {MIN_PER_MINUTE}–{MAX_PER_MINUTE} requests per minute"
            ),
        );
    }
}

impl RateLimit {
    /// `limit` per minute, sliding (the server default's shape).
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            window_seconds: 60,
            algorithm: Algorithm::SlidingWindow,
        }
    }

    /// Every problem with this limit; empty when valid.
    pub fn problems(&self, field: &str) -> Vec<String> {
        let mut problems = Vec::new();
        range_problems(self.limit, self.window_seconds, |sub, problem| {
            problems.push(match sub {
                Some(sub) => format!("{field}.{sub}: {problem}"),
                None => format!("{field}: {problem}"),
            });
        });
        problems
    }

    /// Reads a limit from JSON: `{limit, window_seconds?, algorithm?}` (window defaults to 60 s,
    /// algorithm to `sliding_window`), or a bare integer meaning "per minute".
    pub(crate) fn from_json(value: &Value) -> Result<RateLimit, Vec<String>> {
        if let Some(limit) = value.as_i64() {
            let limit =
                u32::try_from(limit).map_err(|_| vec![format!("{limit} is out of range")])?;
            return Ok(RateLimit::per_minute(limit));
        }
        let mut fields = Fields::new(value, "rate_limit").map_err(|e| e.problems())?;
        let limit = fields.required("limit", integer);
        let window = fields.optional("window_seconds", integer).unwrap_or(60);
        let algorithm = fields.optional("algorithm", string);
        let mut problems = fields.finish();
        let algorithm = match algorithm.as_deref() {
            None => Some(Algorithm::SlidingWindow),
            Some(text) => {
                let parsed = Algorithm::parse(text);
                if parsed.is_none() {
                    problems.push(format!(
                        "algorithm: unknown `{text}` (expected fixed_window, sliding_window or token_bucket)"
                    ));
                }
                parsed
            }
        };
        let in_u32 = |name: &str, v: i64, problems: &mut crate::error::Problems| {
            u32::try_from(v)
                .map_err(|_| problems.push(format!("{name}: {v} is out of range")))
                .ok()
        };
        let limit = limit.and_then(|v| in_u32("limit", v, &mut problems));
        let window = in_u32("window_seconds", window, &mut problems);
        // With another field wrong, still name what is wrong with the figures (which a valid
        // limit has checked by its user, under the user's field name).
        if let (false, Some(limit), Some(window)) = (problems.is_empty(), limit, window) {
            range_problems(limit, window, |sub, problem| match sub {
                Some(sub) => problems.push(format!("{sub}: {problem}")),
                None => problems.push(problem),
            });
        }
        match (problems.finish(), limit, window, algorithm) {
            (Ok(()), Some(limit), Some(window_seconds), Some(algorithm)) => Ok(RateLimit {
                limit,
                window_seconds,
                algorithm,
            }),
            (Err(err), ..) => Err(err.problems()),
            _ => Err(vec!["invalid rate limit".to_owned()]),
        }
    }
}

/// A per-client-IP limit for requests whose path starts with `prefix` (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpScope {
    pub prefix: String,
    pub limit: RateLimit,
}

impl IpScope {
    pub fn new(prefix: impl Into<String>, limit: RateLimit) -> Self {
        Self {
            prefix: prefix.into(),
            limit,
        }
    }
}

/// The environment variable that overrides the server default per-key limit (seed 002).
pub const DEFAULT_LIMIT_ENV: &str = "API_DEFAULT_RATE_LIMIT_PER_MINUTE";

/// Engine-wide rate-limit policy (SPEC §5). [`Default`] is the specification's defaults;
/// [`RateOptions::from_env`] also applies [`DEFAULT_LIMIT_ENV`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateOptions {
    /// The per-key limit when neither the key nor its store sets one (60/min sliding).
    pub default_limit: RateLimit,
    /// Per-client-IP limits by route prefix; the longest matching prefix applies.
    pub ip_scopes: Vec<IpScope>,
    /// Route prefixes the per-key limit skips (the per-IP limit still applies).
    pub exempt_prefixes: Vec<String>,
    /// Failed authentications (401s) allowed per client IP; past it every request from that
    /// IP is refused with 429 until the window passes. `None` turns it off.
    pub brute_force: Option<RateLimit>,
    /// Sizing of the per-IP limiter (scopes and brute force together).
    pub ips: crate::LimiterOptions,
}

impl Default for RateOptions {
    fn default() -> Self {
        let per_15_min = |limit| RateLimit {
            limit,
            window_seconds: 900,
            algorithm: Algorithm::FixedWindow,
        };
        Self {
            default_limit: RateLimit::per_minute(60),
            ip_scopes: vec![
                IpScope::new("/api/v1/storefront/", per_15_min(5_000)),
                IpScope::new("/api/v1/auth/", per_15_min(10)),
                IpScope::new("/api/v1/", per_15_min(1_000)),
            ],
            exempt_prefixes: vec!["/api/v1/products".to_owned()],
            brute_force: Some(per_15_min(100)),
            ips: crate::LimiterOptions {
                shards: 64,
                capacity: 1 << 18,
            },
        }
    }
}

impl RateOptions {
    /// The defaults, with the server default per-key limit taken from
    /// `API_DEFAULT_RATE_LIMIT_PER_MINUTE` when it is set (an integer from 1 to 10,000).
    pub fn from_env() -> crate::Result<Self> {
        Self::from_env_over(Self::default())
    }

    /// `options` with the server default per-key limit taken from the environment when it is
    /// set, as [`from_env`](Self::from_env) does over the defaults.
    pub fn from_env_over(options: Self) -> crate::Result<Self> {
        let value = std::env::var_os(DEFAULT_LIMIT_ENV);
        Self::with_default_from(
            options,
            value.as_deref().map(|v| v.to_string_lossy()).as_deref(),
        )
    }

    /// `options` with the server default per-key limit read from `value` (the variable's
    /// text; `None` or blank: unset, `options`' own kept).
    fn with_default_from(mut options: Self, value: Option<&str>) -> crate::Result<Self> {
        let Some(text) = value.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(options);
        };
        options.default_limit = text
            .parse::<u32>()
            .ok()
            .map(RateLimit::per_minute)
            .filter(|l| l.problems(DEFAULT_LIMIT_ENV).is_empty())
            .ok_or_else(|| {
                crate::Error::Validation(vec![format!(
                    "{DEFAULT_LIMIT_ENV}: `{text}` is not a whole number from {MIN_PER_MINUTE} to {MAX_PER_MINUTE}"
                )])
            })?;
        Ok(options)
    }

    /// Every problem with this policy; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.default_limit.problems("default_limit");
        for (i, scope) in self.ip_scopes.iter().enumerate() {
            let field = format!("ip_scopes[{i}]");
            if !scope.prefix.starts_with('/') {
                problems.push(format!("{field}.prefix: must start with `/`"));
            }
            problems.extend(scope.limit.scope_problems(&format!("{field}.limit")));
            if self.ip_scopes[..i].iter().any(|s| s.prefix == scope.prefix) {
                problems.push(format!("{field}.prefix: `{}` appears twice", scope.prefix));
            }
        }
        if self.ip_scopes.len() >= usize::from(u16::MAX) {
            problems.push("ip_scopes: at most 65534 scopes".to_owned());
        }
        for (i, prefix) in self.exempt_prefixes.iter().enumerate() {
            if !prefix.starts_with('/') {
                problems.push(format!("exempt_prefixes[{i}]: must start with `/`"));
            }
        }
        if let Some(limit) = &self.brute_force {
            problems.extend(limit.scope_problems("brute_force"));
        }
        problems.extend(self.ips.problems("ips"));
        problems
    }

    /// The scope for `path`: its index and limit. The longest matching prefix wins.
    #[inline]
    pub(crate) fn scope_for(&self, path: &str) -> Option<(u16, &RateLimit)> {
        let mut best: Option<(usize, &IpScope)> = None;
        for (i, scope) in self.ip_scopes.iter().enumerate() {
            if best.is_none_or(|(_, b)| scope.prefix.len() > b.prefix.len())
                && prefix_matches(&scope.prefix, path)
            {
                best = Some((i, scope));
            }
        }
        let (i, scope) = best?;
        Some((u16::try_from(i).ok()?, &scope.limit))
    }

    /// True when the per-key limit skips `path`.
    #[inline]
    pub(crate) fn exempt(&self, path: &str) -> bool {
        self.exempt_prefixes
            .iter()
            .any(|prefix| prefix_matches(prefix, path))
    }
}

/// Whole-segment prefix matching: `/api/v1/products` covers `/api/v1/products` and
/// `/api/v1/products/42` but not `/api/v1/productsX`; `/api/v1/storefront/` also covers
/// `/api/v1/storefront`. A query or fragment ends the path (prefixes never contain `?`/`#`).
#[inline]
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let ends_segment = |rest: &[u8]| {
        rest.first()
            .is_none_or(|&b| matches!(b, b'/' | b'?' | b'#'))
    };
    let (prefix, path) = (prefix.as_bytes(), path.as_bytes());
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with(b"/") || ends_segment(rest),
        None => match prefix.strip_suffix(b"/") {
            Some(bare) if !bare.is_empty() => path.strip_prefix(bare).is_some_and(ends_segment),
            _ => false,
        },
    }
}

impl RateLimit {
    /// Problems with a limit used for an IP scope: any positive rate, windows up to a day.
    fn scope_problems(&self, field: &str) -> Vec<String> {
        let mut problems = Vec::new();
        figure_problems(self.limit, self.window_seconds, &mut |name, problem| {
            problems.push(match name {
                Some(name) => format!("{field}.{name}: {problem}"),
                None => format!("{field}: {problem}"),
            });
        });
        problems
    }

    /// Packs a limit into a `u64` (0 is reserved for none), so it can live in an atomic.
    /// Valid limits fit: window ≤ 86,400 < 2^24, algorithm in 2 bits.
    pub(crate) fn pack(limit: Option<&RateLimit>) -> u64 {
        limit.map_or(0, |l| {
            let algorithm: u64 = match l.algorithm {
                Algorithm::FixedWindow => 1,
                Algorithm::SlidingWindow => 2,
                Algorithm::TokenBucket => 3,
            };
            algorithm << 56 | u64::from(l.window_seconds.min(0xFF_FFFF)) << 32 | u64::from(l.limit)
        })
    }

    pub(crate) fn unpack(bits: u64) -> Option<RateLimit> {
        let algorithm = match bits >> 56 {
            1 => Algorithm::FixedWindow,
            2 => Algorithm::SlidingWindow,
            3 => Algorithm::TokenBucket,
            _ => return None,
        };
        Some(RateLimit {
            limit: bits as u32,
            window_seconds: ((bits >> 32) & 0xFF_FFFF) as u32,
            algorithm,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn range_is_per_minute_equivalent() {
        assert!(RateLimit::per_minute(1).problems("r").is_empty());
        assert!(RateLimit::per_minute(10_000).problems("r").is_empty());
        assert_eq!(RateLimit::per_minute(10_001).problems("r").len(), 1);
        assert_eq!(RateLimit::per_minute(0).problems("r").len(), 1);
        let fifteen = RateLimit {
            limit: 1000,
            window_seconds: 900,
            algorithm: Algorithm::FixedWindow,
        };
        assert!(fifteen.problems("r").is_empty());
        let too_slow = RateLimit {
            limit: 1,
            window_seconds: 3600,
            algorithm: Algorithm::TokenBucket,
        };
        assert_eq!(too_slow.problems("r").len(), 1);
        let bad_window = RateLimit {
            limit: 5,
            window_seconds: 0,
            algorithm: Algorithm::TokenBucket,
        };
        assert_eq!(bad_window.problems("r").len(), 1);
    }

    #[test]
    fn json_forms() {
        assert_eq!(
            RateLimit::from_json(&json!(30)).unwrap(),
            RateLimit::per_minute(30)
        );
        let fixed =
            RateLimit::from_json(&json!({"limit": 30, "algorithm": "fixed_window"})).unwrap();
        assert_eq!(fixed.algorithm, Algorithm::FixedWindow);
        assert_eq!(fixed.window_seconds, 60);
        let err =
            RateLimit::from_json(&json!({"limit": -1, "algorithm": "leaky", "x": 1})).unwrap_err();
        // One entry a problem, each naming its field.
        assert_eq!(err.len(), 3, "{err:#?}");
        for (problem, needle) in
            err.iter()
                .zip(["x: unknown", "algorithm: unknown `leaky`", "limit: -1"])
        {
            assert!(problem.starts_with(needle), "{err:#?}");
        }
        // The figures are checked even when another field is wrong.
        let err =
            RateLimit::from_json(&json!({"limit": 0, "window_seconds": 0, "algorithm": "leaky"}))
                .unwrap_err();
        assert_eq!(
            err,
            [
                "algorithm: unknown `leaky` (expected fixed_window, sliding_window or token_bucket)",
                "limit: must be at least 1",
                "window_seconds: must be between 1 and 86400",
            ],
        );
        assert!(RateLimit::from_json(&json!("fast")).is_err());
    }

    #[test]
    fn scopes_longest_prefix_wins() {
        let options = RateOptions::default();
        let limit_of = |path| options.scope_for(path).map(|(_, l)| l.limit);
        assert_eq!(limit_of("/api/v1/storefront/packages"), Some(5_000));
        assert_eq!(limit_of("/api/v1/storefront"), Some(5_000));
        assert_eq!(limit_of("/api/v1/auth/login?next=/x"), Some(10));
        assert_eq!(limit_of("/api/v1/orders/7"), Some(1_000));
        assert_eq!(limit_of("/api/v1"), Some(1_000));
        assert_eq!(limit_of("/api/v10/orders"), None);
        assert_eq!(limit_of("/healthz"), None);
        assert!(options.exempt("/api/v1/products"));
        assert!(options.exempt("/api/v1/products/42?x=1"));
        assert!(options.exempt("/api/v1/products#top"));
        assert_eq!(limit_of("/api/v1/storefront?page=2"), Some(5_000));
        assert!(!options.exempt("/api/v1/productsX"));
        assert!(!options.exempt("/api/v1/orders"));
    }

    #[test]
    fn policy_problems_are_all_named() {
        let mut options = RateOptions {
            default_limit: RateLimit::per_minute(0),
            ..RateOptions::default()
        };
        options
            .ip_scopes
            .push(IpScope::new("api", RateLimit::per_minute(0)));
        options
            .ip_scopes
            .push(IpScope::new("/api/v1/", RateLimit::per_minute(5)));
        options.exempt_prefixes.push("products".into());
        options.ips.shards = 0;
        options.brute_force = Some(RateLimit {
            limit: 5,
            window_seconds: 0,
            algorithm: Algorithm::SlidingWindow,
        });
        let problems = options.problems();
        for needle in [
            "default_limit.limit",
            "ip_scopes[3].prefix: must start",
            "ip_scopes[3].limit.limit: must be at least 1",
            "brute_force.window_seconds: must be between 1 and 86400",
            "ip_scopes[4].prefix: `/api/v1/` appears twice",
            "exempt_prefixes[1]",
            "ips.shards",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(needle)),
                "{needle}: {problems:?}"
            );
        }
        assert!(RateOptions::default().problems().is_empty());
    }

    #[test]
    fn limits_pack_into_a_word() {
        for limit in [
            RateLimit::per_minute(10_000),
            RateLimit {
                limit: 14_400_000,
                window_seconds: 86_400,
                algorithm: Algorithm::TokenBucket,
            },
            RateLimit {
                limit: 1,
                window_seconds: 1,
                algorithm: Algorithm::FixedWindow,
            },
        ] {
            assert_eq!(
                RateLimit::unpack(RateLimit::pack(Some(&limit))),
                Some(limit)
            );
        }
        assert_eq!(RateLimit::unpack(RateLimit::pack(None)), None);
    }

    #[test]
    fn server_default_from_the_environment() {
        let from = |value| RateOptions::with_default_from(RateOptions::default(), value);
        let default = from(None).unwrap();
        assert_eq!(default.default_limit, RateLimit::per_minute(60));
        assert_eq!(from(Some(" ")).unwrap(), default);
        let set = from(Some("120")).unwrap();
        assert_eq!(set.default_limit, RateLimit::per_minute(120));
        // Over a front end's own options: unset keeps its default limit, and the variable
        // changes only that.
        let own = RateOptions {
            default_limit: RateLimit::per_minute(7),
            brute_force: None,
            ..RateOptions::default()
        };
        assert_eq!(
            RateOptions::with_default_from(own.clone(), None).unwrap(),
            own
        );
        let over = RateOptions::with_default_from(own.clone(), Some("120")).unwrap();
        assert_eq!(over.default_limit, RateLimit::per_minute(120));
        assert_eq!(over.brute_force, None);
        for bad in ["0", "10001", "-5", "fast", "1.5"] {
            let err = from(Some(bad)).unwrap_err();
            let message = err.problems().join("");
            assert!(
                message.contains(DEFAULT_LIMIT_ENV) && message.contains(bad),
                "{message}"
            );
        }
    }
}
