//! `/api/v1/`: routes used with an API key (SPEC §7). The store and environment come from the
//! key, never from the URL.
//!
//! Every keyed handler runs inside [`keyed`]: it derives the area from the route and the
//! action from the method, answers a denial with its status, message and headers, hands the
//! handler the verified key, adds the rate-limit headers to the handler's response, and records
//! the request in the store's log.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use latchkey::{
    Action, Actor, Area, Decision, DenyCode, KeyIdentity, NewKey, Permission, Scope, StoreId,
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

pub fn routes() -> Router<AppState> {
    // A keyed path answers the methods it does not serve through `keyed` too: the key is
    // verified first (a request without a valid key is a 401 whatever its method), then the
    // method refused 405 (axum adds the `Allow` header).
    fn keyed_route(
        router: Router<AppState>,
        path: &str,
        methods: MethodRouter<AppState>,
    ) -> Router<AppState> {
        router.route(path, methods.fallback(wrong_method))
    }
    let mut router = Router::new();
    // Each entity area's handlers get the area from the route they were registered on, so
    // none parses it out of the path again.
    for area in entity_areas() {
        let slug = area.route_segment();
        router = keyed_route(
            router,
            &format!("/api/v1/{slug}"),
            get(move |State(s): State<AppState>, r: Request| list(s, r, area))
                .post(move |State(s): State<AppState>, r: Request| create(s, r, area)),
        );
        router = keyed_route(
            router,
            &format!("/api/v1/{slug}/{{id}}"),
            get(move |State(s): State<AppState>, r: Request| read(s, r, area))
                .patch(move |State(s): State<AppState>, r: Request| update(s, r, area))
                .delete(move |State(s): State<AppState>, r: Request| remove(s, r, area)),
        );
    }
    let keyed_routes = [
        ("/api/v1/api-keys", get(list_keys).post(create_key)),
        (latchkey::CURRENT_KEY_PATH, get(current_key)),
        ("/api/v1/api-keys/{id}", delete(revoke_key)),
        ("/api/v1/api-keys/{id}/regenerate", post(regenerate_key)),
        ("/api/v1/auth/portal-sessions", post(open_portal)),
    ];
    for (path, methods) in keyed_routes {
        router = keyed_route(router, path, methods);
    }
    router
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

/// Every keyed route's handler runs inside this (see the module documentation): it verifies
/// the request, hands `handler` the verified key with the request's head and body, or answers
/// the refusal itself; then adds the rate-limit headers and records the request.
///
/// A function each handler calls rather than a middleware layer: a layer over a route costs a
/// second boxed route, its clone and future, on every request, and handing the key over in the
/// request's extensions a map allocated per request. The verify is synchronous and the head
/// stays here, borrowed by the handler, for the log entry.
async fn keyed(
    state: &AppState,
    request: Request,
    needs: Needs,
    handler: impl AsyncFnOnce(Authed, &mut Parts, Body) -> Result<Response, Response>,
) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let ip = client_ip(
        net::peer(&parts.extensions),
        &parts.headers,
        &state.config.trusted_proxies,
    );
    let path = parts.uri.path();
    // An action the area does not offer is refused as a missing permission.
    let permission = match needs {
        Needs::ByRoute => Permission::for_route(parts.method.as_str(), path),
        Needs::Exactly(permission) => Some(permission),
    };
    let headers = &parts.headers;
    let (api_key, authorization) = (headers.get_all(&X_API_KEY), headers.get_all(AUTHORIZATION));
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
    // The credential may borrow the headers; the handler borrows the whole head next.
    drop(credential);
    state.metrics.decision(decision.code());
    let response = match decision.key_identity() {
        // A handler's refusal of its input (`Err`) is answered like its success.
        Some(id) if decision.allowed() => match handler(Authed(id), &mut parts, body).await {
            Ok(response) | Err(response) => response,
        },
        _ => refusal(&decision),
    };
    let response = respond::with_headers(response, decision.limit());
    state.engine.record_decision(
        &decision,
        parts.method.as_str(),
        parts.uri.path(),
        response.status().as_u16(),
        ip,
        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    );
    response
}

/// A method a keyed path does not serve: 405 once the key is verified (see `routes`).
async fn wrong_method(State(state): State<AppState>, request: Request) -> Response {
    keyed(&state, request, Needs::ByRoute, async |_, _, _| {
        Ok(StatusCode::METHOD_NOT_ALLOWED.into_response())
    })
    .await
}

/// The permission a keyed route needs of its key.
#[derive(Clone, Copy, Debug)]
enum Needs {
    /// The one [`Permission::for_route`] derives from the request's method and path.
    ByRoute,
    /// This one: an entity route's, registered for its area with its method's action, which
    /// `for_route` would derive too (a test checks), without reading the path again.
    Exactly(Permission),
}

/// The `{id}` of a keyed route's path (percent-decoded by the router).
async fn path_id(parts: &mut Parts) -> Result<String, Response> {
    Path::<String>::from_request_parts(parts, &())
        .await
        .map(|Path(id)| id)
        .map_err(IntoResponse::into_response)
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

async fn list(state: AppState, request: Request, area: Area) -> Response {
    let needs = Needs::Exactly(Permission::new(area, Action::View));
    keyed(&state, request, needs, async |auth, parts, _| {
        let (limit, cursor) = page_params(&parts.uri)?;
        let page = state
            .engine
            .list_entities_json(&auth.scope(), area, limit, cursor.as_deref());
        Ok(match page {
            Ok(page) => respond::ok_page(page),
            Err(err) => respond::error(&err),
        })
    })
    .await
}

async fn create(state: AppState, request: Request, area: Area) -> Response {
    let needs = Needs::Exactly(Permission::new(area, Action::Edit));
    keyed(&state, request, needs, async |auth, parts, body| {
        let body = json_object(&state, &parts.headers, body, false).await?;
        let key = idempotency_key(&parts.headers)?;
        let engine = state.engine.clone();
        let created = net::off_workers(move || {
            engine.create_entity_once(&auth.scope(), area, &body, key.as_deref())
        })
        .await;
        Ok(match created {
            // A replay answers as the first request did (IETF httpapi-idempotency-key-header),
            // and says so (as Stripe's API does).
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
        })
    })
    .await
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

async fn read(state: AppState, request: Request, area: Area) -> Response {
    let needs = Needs::Exactly(Permission::new(area, Action::View));
    keyed(&state, request, needs, async |auth, parts, _| {
        let id = path_id(parts).await?;
        Ok(result(
            StatusCode::OK,
            state.engine.get_entity(&auth.scope(), area, &id),
        ))
    })
    .await
}

async fn update(state: AppState, request: Request, area: Area) -> Response {
    let needs = Needs::Exactly(Permission::new(area, Action::Edit));
    keyed(&state, request, needs, async |auth, parts, body| {
        let id = path_id(parts).await?;
        let body = json_object(&state, &parts.headers, body, false).await?;
        let engine = state.engine.clone();
        let updated =
            net::off_workers(move || engine.update_entity(&auth.scope(), area, &id, &body)).await;
        Ok(result(StatusCode::OK, updated))
    })
    .await
}

async fn remove(state: AppState, request: Request, area: Area) -> Response {
    let needs = Needs::Exactly(Permission::new(area, Action::Delete));
    keyed(&state, request, needs, async |auth, parts, _| {
        let id = path_id(parts).await?;
        let engine = state.engine.clone();
        let deleted = id.clone();
        let done =
            net::off_workers(move || engine.delete_entity(&auth.scope(), area, &deleted)).await;
        Ok(result(
            StatusCode::OK,
            done.map(|()| json!({"id": id, "deleted": true})),
        ))
    })
    .await
}

// ---- self-service keys (seed 001): a key managing its store's keys ----------------------

async fn list_keys(State(state): State<AppState>, request: Request) -> Response {
    keyed(&state, request, Needs::ByRoute, async |auth, _, _| {
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
        Ok(result(StatusCode::OK, keys))
    })
    .await
}

/// The caller's own key (no permission needed): its permissions, limit, expiry and last use,
/// so an integration can check what it may do (as Shopify's `access_scopes`).
async fn current_key(State(state): State<AppState>, request: Request) -> Response {
    keyed(&state, request, Needs::ByRoute, async |auth, _, _| {
        let key = state
            .engine
            .get_key(auth.store_id().as_str(), auth.key_id())
            .map(|key| json!(key));
        Ok(result(StatusCode::OK, key))
    })
    .await
}

async fn create_key(State(state): State<AppState>, request: Request) -> Response {
    keyed(
        &state,
        request,
        Needs::ByRoute,
        async |auth, parts, body| {
            let body = json_object(&state, &parts.headers, body, false).await?;
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
            Ok(result(StatusCode::CREATED, created.map(|c| c.to_json())))
        },
    )
    .await
}

async fn revoke_key(State(state): State<AppState>, request: Request) -> Response {
    keyed(&state, request, Needs::ByRoute, async |auth, parts, _| {
        let id = path_id(parts).await?;
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
        Ok(result(
            StatusCode::OK,
            done.map(|()| json!({"id": id, "revoked": true})),
        ))
    })
    .await
}

async fn regenerate_key(State(state): State<AppState>, request: Request) -> Response {
    keyed(
        &state,
        request,
        Needs::ByRoute,
        async |auth, parts, body| {
            let id = path_id(parts).await?;
            // The body is optional (`{}`: the old secret stops at once).
            let body = json_object(&state, &parts.headers, body, true).await?;
            let engine = state.engine.clone();
            let created = net::off_workers(move || {
                let (store, actor) = (auth.store_id(), Actor::Key(auth.key_id().to_owned()));
                engine.regenerate_key_from_json(store.as_str(), &actor, &id, &body)
            })
            .await;
            Ok(result(StatusCode::OK, created.map(|c| c.to_json())))
        },
    )
    .await
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
        net::peer(request.extensions()),
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

async fn open_portal(State(state): State<AppState>, request: Request) -> Response {
    keyed(
        &state,
        request,
        Needs::ByRoute,
        async |auth, parts, body| {
            let body = json_object(&state, &parts.headers, body, false).await?;
            let engine = state.engine.clone();
            let session = net::off_workers(move || {
                engine.create_portal_session_from_json(&auth.scope(), &body)
            });
            let session = session.await.map(|s| s.to_json());
            Ok(result(StatusCode::CREATED, session))
        },
    )
    .await
}

async fn portal(state: AppState, request: Request, area: Area) -> Response {
    let ip = client_ip(
        net::peer(request.extensions()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The entity handlers name their permission (`Needs::Exactly`) rather than derive it: it
    /// must be the one the core's rule derives for every method they serve on every area.
    #[test]
    fn entity_routes_need_what_the_core_derives_from_their_method_and_path() {
        for area in entity_areas() {
            let list = format!("/api/v1/{}", area.route_segment());
            let one = format!("{list}/x_1");
            for (method, path, action) in [
                ("GET", &list, Action::View),
                ("HEAD", &list, Action::View),
                ("POST", &list, Action::Edit),
                ("GET", &one, Action::View),
                ("PATCH", &one, Action::Edit),
                ("DELETE", &one, Action::Delete),
            ] {
                assert_eq!(
                    Permission::for_route(method, path),
                    Some(Permission::new(area, action)),
                    "{method} {path}"
                );
            }
        }
    }
}
