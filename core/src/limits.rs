//! Rate-limit settings: what a key or a store asks for. (The limiter that enforces them is a
//! separate module; this is the validated configuration it reads.)

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
        if self.limit == 0 {
            problems.push(format!("{field}.limit: must be at least 1"));
        }
        if self.window_seconds == 0 || self.window_seconds > MAX_WINDOW_SECONDS {
            problems.push(format!(
                "{field}.window_seconds: must be between 1 and {MAX_WINDOW_SECONDS}"
            ));
        }
        if problems.is_empty() {
            // Compare limit/window against the per-minute range without rounding:
            // MIN ≤ limit * 60 / window ≤ MAX.
            let scaled = u64::from(self.limit) * 60;
            let window = u64::from(self.window_seconds);
            if scaled < MIN_PER_MINUTE * window || scaled > MAX_PER_MINUTE * window {
                problems.push(format!(
                    "{field}: {} per {} s is outside {MIN_PER_MINUTE}–{MAX_PER_MINUTE} requests per minute",
                    self.limit, self.window_seconds
                ));
            }
        }
        problems
    }

    /// Reads a limit from JSON: `{limit, window_seconds?, algorithm?}` (window defaults to 60 s,
    /// algorithm to `sliding_window`), or a bare integer meaning "per minute".
    pub(crate) fn from_json(value: &Value) -> Result<RateLimit, String> {
        if let Some(limit) = value.as_i64() {
            let limit = u32::try_from(limit).map_err(|_| format!("{limit} is out of range"))?;
            return Ok(RateLimit::per_minute(limit));
        }
        let mut fields = Fields::new(value, "rate_limit").map_err(|e| e.problems().join("; "))?;
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
        match (problems.finish(), limit, window, algorithm) {
            (Ok(()), Some(limit), Some(window_seconds), Some(algorithm)) => Ok(RateLimit {
                limit,
                window_seconds,
                algorithm,
            }),
            (Err(err), ..) => Err(err.problems().join("; ")),
            _ => Err("invalid rate limit".to_owned()),
        }
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
        assert!(
            err.contains("leaky") && err.contains("x: unknown") && err.contains("limit"),
            "{err}"
        );
        assert!(RateLimit::from_json(&json!("fast")).is_err());
    }
}
