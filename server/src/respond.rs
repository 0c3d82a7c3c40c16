//! The response wrapper of SPEC §7 on every body:
//! `{"success", "data", "message", "errors", "code"}`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use latchkey::{LimitHeader, LimitState, PageJson};
use serde_json::{Value, json};

/// The success wrapper around `data`: what comes before it and after it.
const BEFORE: &str = r#"{"data":"#;
const AFTER: &str = r#","errors":[],"message":null,"success":true}"#;

/// A successful body: `data` serialized once, inside the wrapper of [`ok_raw`].
pub fn ok(status: StatusCode, data: Value) -> Response {
    ok_raw(status, &data.to_string())
}

/// A successful body around `data` that is JSON text already (a page of stored outputs, or
/// [`ok`]'s data): the one place the success wrapper is written.
pub fn ok_raw(status: StatusCode, data: &str) -> Response {
    ok_written(status, data.len(), |out| out.push_str(data))
}

/// [`ok_raw`] for data written straight into the body (`size` bytes, about): the body is
/// built in one buffer, with no copy of the data made first.
pub fn ok_written(status: StatusCode, size: usize, data: impl FnOnce(&mut String)) -> Response {
    let mut body = String::with_capacity(BEFORE.len() + size + AFTER.len());
    body.push_str(BEFORE);
    data(&mut body);
    body.push_str(AFTER);
    (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A page of stored entity outputs inside the success wrapper, sent as its pieces: the page's
/// items are the engine's kept text (shared by every request for the page until a write), so
/// hyper writes them with the wrapper in one `writev` instead of each request copying them.
pub fn ok_page(page: Arc<PageJson>) -> Response {
    let tail = if page.next_cursor.is_none() {
        Bytes::from_static(LAST_PAGE_TAIL.as_bytes())
    } else {
        let mut tail = String::with_capacity(64);
        page.write_tail(&mut tail);
        tail.push_str(AFTER);
        Bytes::from(tail)
    };
    let pieces = Pieces::new([
        Bytes::from_static(PAGE_HEAD.as_bytes()),
        Bytes::from_owner(Items(page)),
        tail,
    ]);
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::new(pieces),
    )
        .into_response()
}

/// [`BEFORE`] and then [`PageJson::HEAD`], as one piece (a test checks it is their join).
const PAGE_HEAD: &str = r#"{"data":{"items":"#;
/// The tail of a page without a next cursor ([`PageJson::write_tail`]) and then [`AFTER`]: the
/// last page of a list, or its only one, goes out without a tail made for it.
const LAST_PAGE_TAIL: &str = r#","next_cursor":null},"errors":[],"message":null,"success":true}"#;

/// A page's items as bytes that keep the page alive.
struct Items(Arc<PageJson>);

impl AsRef<[u8]> for Items {
    fn as_ref(&self) -> &[u8] {
        self.0.items.as_bytes()
    }
}

/// A body of a few byte strings, sent one frame each. Its length is known, so it goes out with
/// a Content-Length, as one joined body would.
struct Pieces<const N: usize> {
    pieces: std::array::IntoIter<Bytes, N>,
    left: u64,
}

impl<const N: usize> Pieces<N> {
    fn new(pieces: [Bytes; N]) -> Self {
        let left = pieces.iter().map(|p| p.len() as u64).sum();
        Self {
            pieces: pieces.into_iter(),
            left,
        }
    }
}

impl<const N: usize> http_body::Body for Pieces<N> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let next = self.pieces.next();
        if let Some(piece) = &next {
            self.left -= piece.len() as u64;
        }
        Poll::Ready(next.map(|piece| Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A refused or failed request: `message` for people, `code` for programs, `errors` listing
/// every problem.
pub fn fail(status: StatusCode, code: &str, message: &str, errors: Vec<String>) -> Response {
    let body = json!({
        "success": false,
        "data": null,
        "message": message,
        "errors": errors,
        "code": code,
    });
    (status, Json(body)).into_response()
}

/// A 400 for bad client input, naming every problem (what an engine validation error maps to).
pub fn invalid(problems: Vec<String>) -> Response {
    fail(
        StatusCode::BAD_REQUEST,
        "VALIDATION",
        "Validation failed",
        problems,
    )
}

/// An engine error as a response. Server-side failures say so without their details (they
/// are for the operator's log, not the client).
pub fn error(err: &latchkey::Error) -> Response {
    let status =
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        eprintln!("latchkey: {err}");
        return fail(
            status,
            err.code(),
            "Internal error; the operation was not applied",
            Vec::new(),
        );
    }
    let message = match err {
        latchkey::Error::Validation(_) => "Validation failed".to_owned(),
        other => other.to_string(),
    };
    fail(status, err.code(), &message, err.problems())
}

/// Adds the headers of the limit that governed a request (`X-RateLimit-*`, and `Retry-After`
/// on a refusal) to its response.
pub fn with_headers(mut response: Response, limit: Option<LimitState>) -> Response {
    let headers = response.headers_mut();
    for (header, value) in limit.iter().flat_map(LimitState::header_figures) {
        headers.insert(header_name(header), figure(header, value));
    }
    response
}

/// A limit header's value for `value`: the value this thread made for the header last time
/// when it is the same figure, else a new one. A key's limit repeats on every answer and the
/// reset time for a whole window, and sharing a value is a reference count where making one is
/// two allocations.
fn figure(header: LimitHeader, value: i64) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<[(i64, HeaderValue); 4]> =
            std::cell::RefCell::new(std::array::from_fn(|_| (-1, HeaderValue::from_static("-1"))));
    }
    LAST.with_borrow_mut(|last| {
        // One slot a header (four); a header added later without one is made each time.
        let Some((figure, made)) = last.get_mut(header as usize) else {
            return HeaderValue::from(value);
        };
        if *figure != value {
            *figure = value;
            *made = HeaderValue::from(value);
        }
        made.clone()
    })
}

/// The name of a limit header. Constants, as `from_static` outside a const context looks the
/// name up among the standard headers each time it runs, and these go out on every keyed
/// response.
fn header_name(header: LimitHeader) -> HeaderName {
    const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
    const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
    const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
    match header {
        LimitHeader::Limit => LIMIT,
        LimitHeader::Remaining => REMAINING,
        LimitHeader::Reset => RESET,
        LimitHeader::RetryAfter => header::RETRY_AFTER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_figure_is_its_own_text_whether_made_or_reused() {
        for (header, value) in [
            (LimitHeader::Limit, 100),
            (LimitHeader::Limit, 100),
            (LimitHeader::Limit, 7),
            (LimitHeader::Remaining, -1),
            (LimitHeader::Remaining, 0),
            (LimitHeader::Reset, 1_767_225_600),
            (LimitHeader::RetryAfter, 1_767_225_600),
            (LimitHeader::Reset, 1_767_225_601),
        ] {
            assert_eq!(figure(header, value), value.to_string().as_str());
        }
    }

    #[test]
    fn the_joined_pieces_are_the_wrapper_around_the_page() {
        assert_eq!(PAGE_HEAD, format!("{BEFORE}{}", PageJson::HEAD));
        let last = PageJson {
            items: "[]".into(),
            next_cursor: None,
        };
        let mut tail = String::new();
        last.write_tail(&mut tail);
        assert_eq!(LAST_PAGE_TAIL, format!("{tail}{AFTER}"));
    }
}
