//! `latchkey-server`: the Latchkey engine over HTTP (SPEC §7). [`app`] builds the router;
//! the binary (`src/main.rs`) adds the command line and the listener.
//!
//! All business rules live in the `latchkey` crate: this crate reads requests, calls the
//! engine, and writes the wrapper of SPEC §7 with the status the engine's answer maps to.

// Handlers answer refusals with a ready `Response` as their error value; it is built once and
// moved once per request, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod admin;
mod api;
mod dashboard;
pub mod jwt;
pub mod leak_client;
mod net;
pub mod openapi;
mod respond;
pub mod scan;
pub mod secret_file;
pub mod serve;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use latchkey::Engine;

pub use net::client_ip;

/// How the server behaves (flags and environment variables of `latchkey serve`).
#[derive(Clone)]
pub struct Config {
    /// The HS256 secret management-API tokens are signed with.
    pub jwt_secret: Vec<u8>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("jwt_secret", &"<redacted>")
            .field("trusted_proxies", &self.trusted_proxies)
            .field("body_limit", &self.body_limit)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Config {
    /// Defaults around a signing secret: no trusted proxies, 1 MiB bodies, 30 s requests.
    pub fn new(jwt_secret: Vec<u8>) -> Self {
        Self {
            jwt_secret,
            trusted_proxies: Vec::new(),
            body_limit: 1 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Upper bounds (seconds) of the request-duration histogram's buckets, as Prometheus's `le`
/// labels; a last, unbounded bucket follows.
const DURATION_BOUNDS: [&str; 14] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "1", "5", "30",
];
/// The same bounds in microseconds, to place a duration without floating point.
const DURATION_BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000, 30_000_000,
];

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By status class: 2xx, 3xx, 4xx, 5xx.
    by_class: [AtomicU64; 4],
    /// Verify decisions by code, in `latchkey::DenyCode::ALL` order, then `OK`.
    decisions: [AtomicU64; 10],
    /// Requests by duration bucket (not cumulative; summed when scraped), the last unbounded.
    durations: [AtomicU64; 15],
    /// The sum of all durations, in nanoseconds (584 years of request time before it wraps).
    duration_ns: AtomicU64,
}

impl Metrics {
    fn count(&self, status: StatusCode, took: std::time::Duration) {
        let class = usize::from(status.as_u16() / 100).saturating_sub(2).min(3);
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = DURATION_BOUNDS_US.partition_point(|&bound| bound < us);
        self.durations[bucket].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.duration_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn decision(&self, code: Option<latchkey::DenyCode>) {
        let slot = code.map_or(9, |c| {
            latchkey::DenyCode::ALL
                .iter()
                .position(|x| *x == c)
                .unwrap_or(9)
        });
        self.decisions[slot].fetch_add(1, Ordering::Relaxed);
    }
}

/// What every handler shares. One `Arc` around all of it: axum clones the state for every
/// extractor and middleware of every request, and each clone and drop is a locked update of
/// a reference count that every worker thread writes, so one count costs a third of three.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
pub struct Shared {
    pub engine: Arc<Engine>,
    pub config: Config,
    pub metrics: Metrics,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(engine: Arc<Engine>, config: Config) -> Self {
        Self(Arc::new(Shared {
            engine,
            config,
            metrics: Metrics::default(),
        }))
    }
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .merge(api::routes())
        .merge(admin::routes(state.clone()))
        .merge(dashboard::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            net::envelope,
        ))
        .with_state(state)
}

async fn healthz() -> Response {
    respond::ok(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

async fn openapi_json() -> Response {
    axum::Json(openapi::document()).into_response()
}

async fn not_found() -> Response {
    respond::fail(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "No such route",
        Vec::new(),
    )
}

/// The `# HELP` and `# TYPE` lines that open a metric family in the Prometheus text format.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

async fn metrics(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    use std::fmt::Write as _;
    let m = &state.metrics;
    let mut out = String::new();
    family(
        &mut out,
        "latchkey_http_requests_total",
        "counter",
        "HTTP requests answered.",
    );
    for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let _ = writeln!(
            out,
            "latchkey_http_requests_total{{class=\"{class}\"}} {}",
            m.by_class[i].load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "latchkey_http_request_duration_seconds",
        "histogram",
        "Time from a request's head to its response (the body may stream after).",
    );
    let mut cumulative = 0u64;
    for (i, bucket) in m.durations.iter().enumerate() {
        cumulative += bucket.load(Ordering::Relaxed);
        let le = DURATION_BOUNDS.get(i).copied().unwrap_or("+Inf");
        let _ = writeln!(
            out,
            "latchkey_http_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    // Nanoseconds to seconds: f64 is exact to the nanosecond for 104 days of request time,
    // and a sum that large only needs its leading digits.
    #[allow(clippy::cast_precision_loss)]
    let sum = m.duration_ns.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "latchkey_http_request_duration_seconds_sum {sum}");
    let _ = writeln!(
        out,
        "latchkey_http_request_duration_seconds_count {cumulative}"
    );
    family(
        &mut out,
        "latchkey_verify_decisions_total",
        "counter",
        "Verify decisions by code.",
    );
    let codes = latchkey::DenyCode::ALL
        .iter()
        .map(|c| c.as_str())
        .chain(["OK"]);
    for (i, code) in codes.enumerate() {
        let _ = writeln!(
            out,
            "latchkey_verify_decisions_total{{code=\"{code}\"}} {}",
            m.decisions[i].load(Ordering::Relaxed)
        );
    }
    let (keys, ips) = state.engine.rate_limit_entries();
    family(
        &mut out,
        "latchkey_rate_limit_entries",
        "gauge",
        "Tracked rate-limit entries.",
    );
    let _ = writeln!(out, "latchkey_rate_limit_entries{{limiter=\"key\"}} {keys}");
    let _ = writeln!(out, "latchkey_rate_limit_entries{{limiter=\"ip\"}} {ips}");
    family(
        &mut out,
        "latchkey_request_log_dropped_total",
        "counter",
        "Log entries dropped (buffer full).",
    );
    let _ = writeln!(
        out,
        "latchkey_request_log_dropped_total {}",
        state.engine.dropped_log_entries()
    );
    family(
        &mut out,
        "latchkey_request_log_pending",
        "gauge",
        "Log entries recorded and not yet written.",
    );
    let _ = writeln!(
        out,
        "latchkey_request_log_pending {}",
        state.engine.pending_log_entries()
    );
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}
