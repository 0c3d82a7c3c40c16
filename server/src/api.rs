//! `/api/v1/`: routes used with an API key (SPEC §7). The store and environment come from the
//! key, never from the URL.
//!
//! One middleware verifies every keyed request: it derives the area from the route and the
//! action from the method, answers a denial with its status, message and headers, puts the
//! verified scope in the request for the handler, adds the rate-limit headers to the handler's
//! response, and records the request in the store's log.

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use latchkey::{
    Action, Actor, Area, Decision, LogEntry, NewKey, Permission, Scope, VerifyRequest,
    credential_from_headers,
};
use serde_json::{Value, json};

use crate::net::{self, client_ip, json_object, limit_param};
use crate::{AppState, respond};

/// The entity areas and their URL segments.
const ENTITY_ROUTES: [(&str, Area); 10] = [
    ("packages", Area::Packages),
    ("categories", Area::Categories),
    ("coupons", Area::Coupons),
    ("sales", Area::Sales),
    ("gift-cards", Area::GiftCards),
    ("orders", Area::Orders),
    ("customers", Area::Customers),
    ("bans", Area::Bans),
    ("subscriptions", Area::Subscriptions),
    ("products", Area::Products),
];

/// The area a keyed route belongs to, from its first segment after `/api/v1/`.
fn area_of(path: &str) -> Option<Area> {
    let segment = path.strip_prefix("/api/v1/")?.split('/').next()?;
    if segment == "api-keys" {
        return Some(Area::ApiKeys);
    }
    ENTITY_ROUTES
        .iter()
        .find(|(slug, _)| *slug == segment)
        .map(|(_, area)| *area)
}

/// What the middleware hands the handler: the verified key's scope and id.
#[derive(Clone, Debug)]
struct Authed {
    scope: Scope,
    key_id: String,
}

pub fn routes(state: AppState) -> Router<AppState> {
    let mut keyed = Router::new();
    for (slug, _) in ENTITY_ROUTES {
        keyed = keyed
            .route(&format!("/api/v1/{slug}"), get(list).post(create))
            .route(
                &format!("/api/v1/{slug}/{{id}}"),
                get(read).patch(update).delete(remove),
            );
    }
    let keyed = keyed
        .route("/api/v1/api-keys", get(list_keys).post(create_key))
        .route("/api/v1/api-keys/{id}", delete(revoke_key))
        .route("/api/v1/api-keys/{id}/regenerate", post(regenerate_key))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), verify));
    Router::new()
        .merge(keyed)
        .route(
            "/api/v1/storefront/{store_id}/packages",
            get(storefront_packages),
        )
        .route(
            "/api/v1/storefront/{store_id}/categories",
            get(storefront_categories),
        )
}

/// Verifies the key of a keyed request (see the module documentation).
async fn verify(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let headers = request.headers();
    let ip = client_ip(net::peer(&request), headers, &state.config.trusted_proxies);
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let permission = area_of(&path).and_then(|area| {
        let action = Action::for_method(method.as_str())?;
        // An action the area does not offer is refused as a missing permission.
        Some(Permission::new(area, action))
    });
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    // A header that is not valid text is a malformed credential: 401, never 500.
    let unreadable = ["x-api-key", "authorization"]
        .iter()
        .any(|n| headers.get(*n).is_some_and(|v| v.to_str().is_err()));
    let credential = credential_from_headers(header("x-api-key"), header("authorization"));
    let credential = if unreadable {
        Some(std::borrow::Cow::Borrowed("\u{0}"))
    } else {
        credential
    };
    let decision = state.engine.verify(&VerifyRequest {
        credential: credential.as_deref(),
        permission,
        ip,
        path: &path,
    });
    state.metrics.decision(decision.code());
    let response = match Scope::of(&decision).zip(decision.key_id()) {
        Some((scope, key_id)) if decision.allowed() => {
            request.extensions_mut().insert(Authed {
                scope,
                key_id: key_id.to_owned(),
            });
            next.run(request).await
        }
        _ => refusal(&decision),
    };
    let response = respond::with_headers(response, &decision.headers());
    if let Some(store_id) = decision.store_id() {
        state.engine.record_request(LogEntry::new(
            state.engine.clock().now(),
            store_id,
            decision.key_id(),
            method.as_str(),
            &path,
            response.status().as_u16(),
            ip,
            decision.code_str(),
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        ));
    }
    response
}

fn refusal(decision: &Decision) -> Response {
    let status = StatusCode::from_u16(decision.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let message = decision.message();
    respond::fail(
        status,
        decision.code_str(),
        &message,
        vec![message.to_string()],
    )
}

fn result(status: StatusCode, value: latchkey::Result<Value>) -> Response {
    match value {
        Ok(data) => respond::ok(status, data),
        Err(err) => respond::error(&err),
    }
}

fn bad_request(problems: Vec<String>) -> Response {
    respond::fail(
        StatusCode::BAD_REQUEST,
        "VALIDATION",
        "Validation failed",
        problems,
    )
}

/// The area of an entity route (the router only sends entity paths here).
fn entity_area(uri: &Uri) -> Area {
    area_of(uri.path()).unwrap_or(Area::Packages)
}

async fn list(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    request: Request,
) -> Response {
    let area = entity_area(request.uri());
    let params = net::query(request.uri().query());
    let limit = match limit_param(&params) {
        Ok(limit) => limit,
        Err(problem) => return bad_request(vec![problem]),
    };
    let page = state.engine.list_entities(
        &auth.scope,
        area,
        limit,
        params.get("cursor").map(String::as_str),
    );
    result(StatusCode::OK, page.map(|p| json!(p)))
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
    result(
        StatusCode::CREATED,
        state.engine.create_entity(&auth.scope, area, &body),
    )
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
        state.engine.get_entity(&auth.scope, area, &id),
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
    result(
        StatusCode::OK,
        state.engine.update_entity(&auth.scope, area, &id, &body),
    )
}

async fn remove(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let area = entity_area(&uri);
    let done = state.engine.delete_entity(&auth.scope, area, &id);
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
        .list_keys(auth.scope.store_id.as_str())
        .map(|keys| {
            // A key sees the keys of its own environment only.
            let visible: Vec<_> = keys
                .into_iter()
                .filter(|k| k.environment == auth.scope.environment)
                .collect();
            json!(visible)
        });
    result(StatusCode::OK, keys)
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
    let created = NewKey::from_json(&body).and_then(|key| {
        state.engine.create_key(
            auth.scope.store_id.as_str(),
            &Actor::Key(auth.key_id.clone()),
            key,
        )
    });
    result(StatusCode::CREATED, created.map(|c| c.to_json()))
}

async fn revoke_key(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    Path(id): Path<String>,
) -> Response {
    let done = state.engine.revoke_key(
        auth.scope.store_id.as_str(),
        &Actor::Key(auth.key_id.clone()),
        &id,
    );
    result(
        StatusCode::OK,
        done.map(|()| json!({"id": id, "revoked": true})),
    )
}

async fn regenerate_key(
    State(state): State<AppState>,
    axum::Extension(auth): axum::Extension<Authed>,
    Path(id): Path<String>,
) -> Response {
    let created = state.engine.regenerate_key(
        auth.scope.store_id.as_str(),
        &Actor::Key(auth.key_id.clone()),
        &id,
    );
    result(StatusCode::OK, created.map(|c| c.to_json()))
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
    let headers: Vec<(&'static str, String)> = limit_state
        .map(|l| {
            let mut h = vec![
                ("X-RateLimit-Limit", l.limit.to_string()),
                ("X-RateLimit-Remaining", l.remaining.to_string()),
                ("X-RateLimit-Reset", l.reset_at.to_string()),
            ];
            if let Some(after) = l.retry_after {
                h.push(("Retry-After", after.to_string()));
            }
            h
        })
        .unwrap_or_default();
    if limit_state.is_some_and(|l| l.retry_after.is_some()) {
        let response = respond::fail(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "Rate limit exceeded",
            vec!["Rate limit exceeded".into()],
        );
        return respond::with_headers(response, &headers);
    }
    let params = net::query(request.uri().query());
    let response = match limit_param(&params) {
        Err(problem) => bad_request(vec![problem]),
        Ok(limit) => {
            let page = state.engine.storefront(
                &store_id,
                area,
                limit,
                params.get("cursor").map(String::as_str),
            );
            result(StatusCode::OK, page.map(|p| json!(p)))
        }
    };
    respond::with_headers(response, &headers)
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
