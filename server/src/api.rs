//! `/api/v1/`: routes used with an API key (SPEC §7). The store and environment come from the
//! key, never from the URL.
//!
//! One middleware verifies every keyed request: it derives the area from the route and the
//! action from the method, answers a denial with its status, message and headers, puts the
//! verified scope in the request for the handler, adds the rate-limit headers to the handler's
//! response, and records the request in the store's log.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use latchkey::{
    Actor, Area, Decision, DenyCode, KeyIdentity, NewKey, Permission, Scope, StoreId,
    VerifyRequest, credential_from_headers,
};
use serde_json::{Value, json};

use crate::net::{self, client_ip, json_object, limit_param};
use crate::{AppState, respond};

/// The entity areas and their URL segments.
/// The store entity areas, each served under `/api/v1/{segment}` (API keys have their own
/// self-service routes).
fn entity_areas() -> impl Iterator<Item = Area> {
    Area::ALL.iter().copied().filter(|a| *a != Area::ApiKeys)
}

/// What the middleware hands the handler: the verified key (its id, store and environment,
/// held inline, so handing it over allocates nothing).
#[derive(Clone, Copy)]
struct Authed(KeyIdentity);

impl Authed {
    /// The store environment the key reaches.
    fn scope(&self) -> Scope {
        Scope::new(self.0.store_id(), self.0.environment())
    }

    fn key_id(&self) -> &str {
        self.0.key_id()
    }

    fn store_id(&self) -> StoreId {
        self.0.store_id()
    }
}

impl std::fmt::Debug for Authed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Authed").field(&self.key_id()).finish()
    }
}

pub fn routes(state: AppState) -> Router<AppState> {
    let mut keyed = Router::new();
    for slug in entity_areas().map(Area::route_segment) {
        keyed = keyed
            .route(&format!("/api/v1/{slug}"), get(list).post(create))
            .route(
                &format!("/api/v1/{slug}/{{id}}"),
                get(read).patch(update).delete(remove),
            );
    }
    let keyed = keyed
        .route("/api/v1/api-keys", get(list_keys).post(create_key))
        .route(latchkey::CURRENT_KEY_PATH, get(current_key))
        .route("/api/v1/api-keys/{id}", delete(revoke_key))
        .route("/api/v1/api-keys/{id}/regenerate", post(regenerate_key))
        .route("/api/v1/auth/portal-sessions", post(open_portal))
        .route_layer(VerifyLayer(state));
    Router::new()
        .merge(keyed)
        .route("/api/v1/portal/orders", get(portal_orders))
        .route("/api/v1/portal/subscriptions", get(portal_subscriptions))
        .route(
            "/api/v1/storefront/{store_id}/packages",
            get(storefront_packages),
        )
        .route(
            "/api/v1/storefront/{store_id}/categories",
            get(storefront_categories),
        )
}

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The verify middleware (see the module documentation), as a layer over each keyed route.
///
/// Written out rather than with `axum::middleware::from_fn`, which on every request clones the
/// route behind it and boxes two futures (its own and the route's again): the verify itself is
/// synchronous, so this layer answers a refusal at once and otherwise wraps the route's own
/// future, adding the headers and the log entry when it completes.
#[derive(Clone, Debug)]
struct VerifyLayer(AppState);

impl<S> tower::Layer<S> for VerifyLayer {
    type Service = Verify<S>;

    fn layer(&self, inner: S) -> Verify<S> {
        Verify {
            state: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone, Debug)]
struct Verify<S> {
    state: AppState,
    inner: S,
}

impl<S> tower::Service<Request> for Verify<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Verified<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let state = &self.state;
        let headers = request.headers();
        let ip = client_ip(net::peer(&request), headers, &state.config.trusted_proxies);
        let path = request.uri().path();
        // An action the area does not offer is refused as a missing permission.
        let permission = Permission::for_route(request.method().as_str(), path);
        let (api_key, authorization) =
            (headers.get_all(&X_API_KEY), headers.get_all(AUTHORIZATION));
        // A header that is not valid text is a malformed credential: 401, never 500.
        let unreadable = api_key
            .iter()
            .chain(authorization.iter())
            .any(|v| v.to_str().is_err());
        let credential = if unreadable {
            Some(std::borrow::Cow::Borrowed(latchkey::UNREADABLE_CREDENTIAL))
        } else {
            credential_from_headers(
                api_key.iter().filter_map(|v| v.to_str().ok()),
                authorization.iter().filter_map(|v| v.to_str().ok()),
            )
        };
        let decision = state.engine.verify(&VerifyRequest {
            credential: credential.as_deref(),
            permission,
            ip,
            path,
        });
        state.metrics.decision(decision.code());
        let after = After {
            state: state.clone(),
            // The request moves on to the route; its method and URI are kept for the log (a
            // URI's clone shares the request line's bytes).
            method: request.method().clone(),
            uri: request.uri().clone(),
            ip,
            started,
        };
        let answer = match decision.key_identity() {
            Some(id) if decision.allowed() => {
                request.extensions_mut().insert(Authed(id));
                Answer::Route(self.inner.call(request))
            }
            _ => Answer::Refused(Some(refusal(&decision))),
        };
        Verified {
            answer,
            after: Some((after, decision)),
        }
    }
}

/// What the log entry needs once the route has answered.
#[derive(Debug)]
struct After {
    state: AppState,
    method: axum::http::Method,
    uri: Uri,
    ip: Option<std::net::IpAddr>,
    started: Instant,
}

#[derive(Debug)]
enum Answer<F> {
    Route(F),
    Refused(Option<Response>),
}

/// The future of a keyed request: the route's answer (or the refusal), then the rate-limit
/// headers and the request's log entry.
#[derive(Debug)]
struct Verified<F> {
    answer: Answer<F>,
    after: Option<(After, Decision)>,
}

impl<F> Future for Verified<F>
where
    F: Future<Output = Result<Response, Infallible>> + Unpin,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let response = match &mut this.answer {
            Answer::Route(route) => match Pin::new(route).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(response)) => Some(response),
            },
            Answer::Refused(refusal) => refusal.take(),
        };
        // Both are taken once: a future polled again after it completed answers 500.
        let (Some(response), Some((after, decision))) = (response, this.after.take()) else {
            return Poll::Ready(Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response()));
        };
        let response = respond::with_headers(response, decision.limit());
        after.state.engine.record_decision(
            &decision,
            after.method.as_str(),
            after.uri.path(),
            response.status().as_u16(),
            after.ip,
            u64::try_from(after.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        );
        Poll::Ready(Ok(response))
    }
}

fn refusal(decision: &Decision) -> Response {
    let status = StatusCode::from_u16(decision.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    axum::response::IntoResponse::into_response((status, axum::Json(decision.refusal_body())))
}

fn result(status: StatusCode, value: latchkey::Result<Value>) -> Response {
    match value {
        Ok(data) => respond::ok(status, data),
        Err(err) => respond::error(&err),
    }
}

/// A paged list's query (SPEC §7: `?limit=&cursor=`, nothing else): the limit and cursor,
/// or every problem with it, as a 400.
fn page_params(uri: &Uri) -> Result<(Option<usize>, Option<String>), Response> {
    let mut problems = Vec::new();
    let mut params = net::query(uri.query(), &["limit", "cursor"], &mut problems);
    let limit = limit_param(&params).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    if problems.is_empty() {
        Ok((limit, params.take("cursor")))
    } else {
        Err(respond::invalid(problems))
    }
}

/// The area of an entity route (the router only sends entity paths here).
fn entity_area(uri: &Uri) -> Area {
    Area::for_path(uri.path()).unwrap_or(Area::Packages)
}

async fn list(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    request: Request,
) -> Response {
    let area = entity_area(request.uri());
    let (limit, cursor) = match page_params(request.uri()) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let page = state
        .engine
        .list_entities_json(&auth.scope(), area, limit, cursor.as_deref());
    match page {
        Ok(page) => respond::ok_page(page),
        Err(err) => respond::error(&err),
    }
}

async fn create(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let area = entity_area(&uri);
    let body = match json_object(&state, &headers, body, false).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(response) => return response,
    };
    let engine = state.engine.clone();
    let created = net::off_workers(move || {
        engine.create_entity_once(&auth.scope(), area, &body, key.as_deref())
    })
    .await;
    match created {
        // A replay answers as the first request did (IETF httpapi-idempotency-key-header), and
        // says so (as Stripe's API does).
        Ok(created) if created.replayed => {
            let mut response = respond::ok(StatusCode::CREATED, created.value);
            response.headers_mut().insert(
                HeaderName::from_static("idempotent-replayed"),
                HeaderValue::from_static("true"),
            );
            response
        }
        Ok(created) => respond::ok(StatusCode::CREATED, created.value),
        Err(err) => respond::error(&err),
    }
}

/// The request's `Idempotency-Key`, if it sent one (once); the core checks it, with the body.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Response> {
    let mut values = headers.get_all("idempotency-key").iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(value), None) => value,
        (Some(_), Some(_)) => {
            return Err(respond::invalid(vec![
                "idempotency key: send one Idempotency-Key header".into(),
            ]));
        }
    };
    // Bytes outside ASCII read as replacement characters, which the core's check refuses.
    Ok(Some(String::from_utf8_lossy(value.as_bytes()).into_owned()))
}

async fn read(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let area = entity_area(&uri);
    result(
        StatusCode::OK,
        state.engine.get_entity(&auth.scope(), area, &id),
    )
}

async fn update(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    uri: Uri,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let area = entity_area(&uri);
    let body = match json_object(&state, &headers, body, false).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let engine = state.engine.clone();
    let updated =
        net::off_workers(move || engine.update_entity(&auth.scope(), area, &id, &body)).await;
    result(StatusCode::OK, updated)
}

async fn remove(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let area = entity_area(&uri);
    let engine = state.engine.clone();
    let deleted = id.clone();
    let done = net::off_workers(move || engine.delete_entity(&auth.scope(), area, &deleted)).await;
    result(
        StatusCode::OK,
        done.map(|()| json!({"id": id, "deleted": true})),
    )
}

// ---- self-service keys (seed 001): a key managing its store's keys ----------------------

async fn list_keys(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
) -> Response {
    let keys = state
        .engine
        .list_keys(auth.store_id().as_str())
        .map(|keys| {
            // A key sees the keys of its own environment only.
            let visible: Vec<_> = keys
                .into_iter()
                .filter(|k| k.environment == auth.0.environment())
                .collect();
            json!(visible)
        });
    result(StatusCode::OK, keys)
}

/// The caller's own key (no permission needed): its permissions, limit, expiry and last use,
/// so an integration can check what it may do (as Shopify's `access_scopes`).
async fn current_key(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
) -> Response {
    let key = state
        .engine
        .get_key(auth.store_id().as_str(), auth.key_id())
        .map(|key| json!(key));
    result(StatusCode::OK, key)
}

async fn create_key(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match json_object(&state, &headers, body, false).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let engine = state.engine.clone();
    let created = net::off_workers(move || {
        let key = NewKey::from_json(&body)?;
        engine.create_key(
            auth.store_id().as_str(),
            &Actor::Key(auth.key_id().to_owned()),
            key,
        )
    })
    .await;
    result(StatusCode::CREATED, created.map(|c| c.to_json()))
}

async fn revoke_key(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    Path(id): Path<String>,
) -> Response {
    let engine = state.engine.clone();
    let revoked = id.clone();
    let done = net::off_workers(move || {
        engine.revoke_key(
            auth.store_id().as_str(),
            &Actor::Key(auth.key_id().to_owned()),
            &revoked,
        )
    })
    .await;
    result(
        StatusCode::OK,
        done.map(|()| json!({"id": id, "revoked": true})),
    )
}

async fn regenerate_key(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The body is optional (`{}`: the old secret stops at once).
    let body = match json_object(&state, &headers, body, true).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let engine = state.engine.clone();
    let created = net::off_workers(move || {
        let (store, actor) = (auth.store_id(), Actor::Key(auth.key_id().to_owned()));
        engine.regenerate_key_from_json(store.as_str(), &actor, &id, &body)
    })
    .await;
    result(StatusCode::OK, created.map(|c| c.to_json()))
}

fn rate_limited() -> Response {
    respond::fail(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        "Rate limit exceeded",
        vec!["Rate limit exceeded".into()],
    )
}

// ---- public storefront (seed 002): no key, per-IP limited ---------------------------------

async fn storefront(state: AppState, store_id: String, request: Request, area: Area) -> Response {
    let ip = client_ip(
        net::peer(&request),
        request.headers(),
        &state.config.trusted_proxies,
    );
    let path = request.uri().path().to_owned();
    let limit_state = ip.and_then(|ip| state.engine.check_ip(ip, &path));
    if limit_state.is_some_and(|l| l.retry_after.is_some()) {
        return respond::with_headers(rate_limited(), limit_state);
    }
    let response = match page_params(request.uri()) {
        Err(response) => response,
        Ok((limit, cursor)) => {
            let page = state
                .engine
                .storefront(&store_id, area, limit, cursor.as_deref());
            result(StatusCode::OK, page.map(Value::from))
        }
    };
    respond::with_headers(response, limit_state)
}

async fn storefront_packages(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    request: Request,
) -> Response {
    storefront(state, store_id, request, Area::Packages).await
}

async fn storefront_categories(
    State(state): State<AppState>,
    Path(store_id): Path<String>,
    request: Request,
) -> Response {
    storefront(state, store_id, request, Area::Categories).await
}

// ---- customer portal (seed 001) -------------------------------------------------------------

async fn open_portal(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match json_object(&state, &headers, body, false).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let engine = state.engine.clone();
    let session =
        net::off_workers(move || engine.create_portal_session_from_json(&auth.scope(), &body));
    let session = session.await.map(|s| s.to_json());
    result(StatusCode::CREATED, session)
}

async fn portal(state: AppState, request: Request, area: Area) -> Response {
    let ip = client_ip(
        net::peer(&request),
        request.headers(),
        &state.config.trusted_proxies,
    );
    let path = request.uri().path().to_owned();
    let limit_state = ip.and_then(|ip| state.engine.check_ip(ip, &path));
    if limit_state.is_some_and(|l| l.retry_after.is_some()) {
        return respond::with_headers(rate_limited(), limit_state);
    }
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let customer = match token {
        None => Err(DenyCode::Missing),
        Some(token) => match state.engine.portal_access(&token) {
            Ok(access) => access,
            Err(err) => return respond::with_headers(respond::error(&err), limit_state),
        },
    };
    let response = match customer {
        // A missing or unknown token counts against the client's brute-force limit; a live
        // session refused because its store's API is closed does not (as for keys).
        Err(code @ (DenyCode::Missing | DenyCode::Invalid)) => {
            if let Some(ip) = ip {
                state.engine.record_auth_failure(ip);
            }
            let message = if code == DenyCode::Missing {
                "A portal session token is required"
            } else {
                "Invalid or expired portal session"
            };
            respond::fail(
                StatusCode::UNAUTHORIZED,
                code.as_str(),
                message,
                vec![message.to_owned()],
            )
        }
        Err(code) => {
            let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::FORBIDDEN);
            axum::response::IntoResponse::into_response((
                status,
                axum::Json(code.refusal_body(None)),
            ))
        }
        Ok(customer) => match page_params(request.uri()) {
            Err(response) => response,
            Ok((limit, cursor)) => {
                let page = state
                    .engine
                    .portal_list(&customer, area, limit, cursor.as_deref());
                result(StatusCode::OK, page.map(Value::from))
            }
        },
    };
    respond::with_headers(response, limit_state)
}

async fn portal_orders(State(state): State<AppState>, request: Request) -> Response {
    portal(state, request, Area::Orders).await
}

async fn portal_subscriptions(State(state): State<AppState>, request: Request) -> Response {
    portal(state, request, Area::Subscriptions).await
}
