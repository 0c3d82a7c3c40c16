//! What every request goes through: request id, timeout, the wrapper on bodies the router
//! leaves empty, metrics; and the readers shared by handlers (client IP, JSON body, query).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, SocketAddr};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use serde_json::Value;

use crate::{AppState, respond};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's address by the core's rule ([`latchkey::client_ip`]), reading every
/// `X-Forwarded-For` line of the request.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok());
    latchkey::client_ip(peer, forwarded, trusted)
}

/// The peer address the listener recorded (absent in in-process tests).
pub fn peer(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// The caller's `X-Request-Id` when it is 1–64 letters, digits, `-` or `_`; else 16 random
/// hex digits.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    let given = headers.get(&REQUEST_ID).filter(|v| {
        (1..=64).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    match given {
        Some(id) => id.clone(),
        None => {
            let id = format!("{:016x}", rand::random::<u64>());
            // Hex digits are always a valid header value.
            HeaderValue::try_from(id).unwrap_or(HeaderValue::from_static("-"))
        }
    }
}

/// Request id, timeout, a wrapper body on empty error responses, metrics.
pub async fn envelope(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let id = request_id(request.headers());
    let timeout = state.config.request_timeout;
    let mut response = match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => respond::fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "TIMEOUT",
            "The request took too long",
            Vec::new(),
        ),
    };
    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && response.body().size_hint().exact() == Some(0)
    {
        let headers = response.headers().clone();
        let (code, message) = match status {
            StatusCode::METHOD_NOT_ALLOWED => latchkey::METHOD_NOT_ALLOWED,
            StatusCode::NOT_FOUND => ("NOT_FOUND", "No such route"),
            _ => ("ERROR", status.canonical_reason().unwrap_or("Error")),
        };
        response = respond::fail(status, code, message, Vec::new());
        for (name, value) in &headers {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().insert(name, value.clone());
            }
        }
    }
    response.headers_mut().insert(REQUEST_ID, id);
    state.metrics.count(status, started.elapsed());
    response
}

/// Reads a JSON body: `Ok(Value::Null)` when empty; 413 over the limit; 400 naming where the
/// JSON is broken.
pub async fn json_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Value, Response> {
    let limit = state.config.body_limit;
    let too_large = || {
        respond::fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            &format!("Request body over {limit} bytes"),
            Vec::new(),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| respond::invalid(vec![format!("body: not valid JSON ({e})")]))
}

/// A body that must be a JSON object (an empty body counts as `{}` when `empty_ok`).
pub async fn json_object(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    empty_ok: bool,
) -> Result<Value, Response> {
    match json_body(state, headers, body).await? {
        Value::Null if empty_ok => Ok(Value::Object(Default::default())),
        value @ Value::Object(_) => Ok(value),
        _ => Err(respond::invalid(vec![
            "body: expected a JSON object".into(),
        ])),
    }
}

/// A route's query parameters. Each name must be one the route reads (`allowed`) and come at
/// most once: a misspelt `limt=5` or a second `limit` would otherwise be ignored silently.
/// Every unknown or repeated name is added to `problems`, once each.
pub fn query(
    request_query: Option<&str>,
    allowed: &[&str],
    problems: &mut Vec<String>,
) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut refused: Vec<String> = Vec::new();
    for pair in request_query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(k);
        let problem = if !allowed.contains(&name.as_str()) {
            let reads = if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            };
            format!(
                "query: unknown parameter `{}` (this route reads {reads})",
                name.escape_debug()
            )
        } else {
            match out.entry(name) {
                Entry::Vacant(slot) => {
                    slot.insert(decode(v));
                    continue;
                }
                Entry::Occupied(seen) => format!("query: `{}` given more than once", seen.key()),
            }
        };
        if !refused.contains(&problem) {
            refused.push(problem);
        }
    }
    problems.extend(refused);
    out
}

/// Percent-decoding for query strings (`+` is a space).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(text.get(i + 1..i + 3).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `limit` as a page size: `Ok(None)` when absent, a problem when not a whole number.
pub fn limit_param(params: &HashMap<String, String>) -> Result<Option<usize>, String> {
    params
        .get("limit")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| format!("limit: `{v}` is not a whole number"))
        })
        .transpose()
}
