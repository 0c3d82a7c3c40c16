//! What every request goes through: request id, timeout, the wrapper on bodies the router
//! leaves empty, metrics; and the readers shared by handlers (client IP, JSON body, query).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;
use serde_json::Value;

use crate::{AppState, respond};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The client's address by the core's rule ([`latchkey::client_ip`]), reading every
/// `X-Forwarded-For` line of the request. The lines are looked up only if the core reads them
/// (when the peer is a trusted proxy): a header lookup costs about as much as the rest.
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let forwarded = std::iter::once(headers)
        .flat_map(|headers| headers.get_all(&X_FORWARDED_FOR))
        .filter_map(|v| v.to_str().ok());
    latchkey::client_ip(peer, forwarded, trusted)
}

/// The peer address the listener recorded (absent in in-process tests).
pub fn peer(extensions: &Extensions) -> Option<IpAddr> {
    extensions
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
            let id = latchkey::hex_lower(&rand::random::<u64>().to_be_bytes());
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

/// Runs engine work that commits (and so waits for the disk to sync) or reads through a
/// store's whole log, on tokio's blocking pool: a slow disk then holds one of its threads,
/// not one of the async workers (as many as cores) that answer every other request, keyed
/// reads included. A panic in `work` is answered as a storage failure (nothing acknowledged).
pub async fn off_workers<T: Send + 'static>(
    work: impl FnOnce() -> latchkey::Result<T> + Send + 'static,
) -> latchkey::Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|_| {
        Err(latchkey::Error::Storage(
            "the operation did not complete".into(),
        ))
    })
}

/// A request's query parameters as [`query`] read them: each allowed name at most once,
/// percent-decoded, in the slot of its place among the allowed names. Borrowed from the request
/// line where no decoding was needed, and held inline: the keyed list routes read one on
/// every request.
#[derive(Debug)]
pub struct Query<'a, const N: usize> {
    names: &'static [&'static str; N],
    values: [Option<Cow<'a, str>>; N],
}

impl<const N: usize> Query<'_, N> {
    fn slot(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|known| *known == name)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values[self.slot(name)?].as_deref()
    }

    pub fn take(&mut self, name: &str) -> Option<String> {
        let at = self.slot(name)?;
        self.values[at].take().map(Cow::into_owned)
    }
}

/// A route's query parameters. Each name must be one the route reads (`allowed`) and come at
/// most once: a misspelt `limt=5` or a second `limit` would otherwise be ignored silently.
/// Every unknown or repeated name is added to `problems`, once each.
pub fn query<'a, const N: usize>(
    request_query: Option<&'a str>,
    allowed: &'static [&'static str; N],
    problems: &mut Vec<String>,
) -> Query<'a, N> {
    let mut out = Query {
        names: allowed,
        values: std::array::from_fn(|_| None),
    };
    let first_problem = problems.len();
    let mut rest = request_query.unwrap_or_default();
    while !rest.is_empty() {
        // By bytes: `&` and `=` are ASCII, so the cuts fall on character boundaries.
        let end = rest.bytes().position(|b| b == b'&').unwrap_or(rest.len());
        let pair = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        if pair.is_empty() {
            continue;
        }
        let split = pair.bytes().position(|b| b == b'=');
        let (k, v) = split.map_or((pair, ""), |at| (&pair[..at], &pair[at + 1..]));
        let name = decode(k);
        let problem = match out.slot(&name) {
            Some(at) if out.values[at].is_none() => {
                out.values[at] = Some(decode(v));
                continue;
            }
            Some(_) => format!("query: `{name}` given more than once"),
            None => {
                let reads = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                format!(
                    "query: unknown parameter `{}` (this route reads {reads})",
                    name.escape_debug()
                )
            }
        };
        if !problems[first_problem..].contains(&problem) {
            problems.push(problem);
        }
    }
    out
}

/// Percent-decoding for query strings (`+` is a space); the text itself when it has neither.
fn decode(text: &str) -> Cow<'_, str> {
    if !text.bytes().any(|b| b == b'%' || b == b'+') {
        return Cow::Borrowed(text);
    }
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
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// `limit` as a page size: `Ok(None)` when absent, a problem when not a whole number.
pub fn limit_param<const N: usize>(params: &Query<'_, N>) -> Result<Option<usize>, String> {
    params
        .get("limit")
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| format!("limit: `{v}` is not a whole number"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_the_callers_when_well_formed_else_16_hex_digits() {
        let made: Vec<HeaderValue> = (0..64).map(|_| request_id(&HeaderMap::new())).collect();
        for id in &made {
            assert_eq!(id.len(), 16);
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|b| b"0123456789abcdef".contains(b))
            );
            // Each place its own four bits, not one digit repeated.
            assert!(id.as_bytes().iter().any(|b| *b != id.as_bytes()[0]));
        }
        // Random: 64 draws of 64 bits do not repeat, and every digit place varies.
        assert!(made.iter().skip(1).any(|id| *id != made[0]));
        for place in 0..16 {
            assert!(
                made.iter()
                    .any(|id| id.as_bytes()[place] != made[0].as_bytes()[place])
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("trace-01_AB"));
        assert_eq!(request_id(&headers), "trace-01_AB");
        headers.insert(REQUEST_ID, HeaderValue::from_static("bad id!"));
        assert_eq!(request_id(&headers).len(), 16);
    }

    #[tokio::test]
    async fn engine_work_runs_off_the_async_worker_and_a_panic_is_an_error() {
        let worker = std::thread::current().id();
        let ran_on = off_workers(|| Ok(std::thread::current().id()))
            .await
            .unwrap();
        assert_ne!(ran_on, worker);
        let failed = off_workers::<()>(|| panic!("boom")).await.unwrap_err();
        assert_eq!(failed.code(), "STORAGE");
    }

    #[test]
    fn query_decodes_only_what_is_encoded_and_names_every_problem() {
        let mut problems = Vec::new();
        let mut params = query(
            Some("%6Cimit=2&cursor=a%2Bb+c&since=x&limit=3&limit=4&&cursor"),
            &["limit", "cursor"],
            &mut problems,
        );
        assert_eq!(params.get("limit"), Some("2"));
        assert_eq!(limit_param(&params), Ok(Some(2)));
        assert_eq!(params.take("cursor").as_deref(), Some("a+b c"));
        assert_eq!(params.get("cursor"), None);
        assert_eq!(
            problems,
            [
                "query: unknown parameter `since` (this route reads limit, cursor)",
                "query: `limit` given more than once",
                "query: `cursor` given more than once",
            ]
        );
        // Nothing to decode: the values are the request line's own text.
        let plain = query(Some("limit=20"), &["limit"], &mut Vec::new());
        assert!(matches!(plain.values[0], Some(Cow::Borrowed("20"))));
        let bad = query(Some("limit=ten"), &["limit"], &mut Vec::new());
        assert_eq!(
            limit_param(&bad),
            Err("limit: `ten` is not a whole number".to_owned())
        );
    }
}
