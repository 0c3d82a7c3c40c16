//! `/api/stores/…`: the management API (SPEC §7), for a store's owner or the platform, with a
//! JWT bearer token (see [`crate::jwt`]).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use latchkey::{Actor, KeyPatch, LogQuery, NewKey, NewStore, StorePatch};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::jwt::{self, Claims};
use crate::net::{self, json_object, limit_param};
use crate::{AppState, respond};

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/meta", get(meta))
        .route("/api/leaks", post(check_leaks))
        .route("/api/stores", get(list_stores).post(create_store))
        .route("/api/stores/{store_id}", get(get_store).patch(update_store))
        .route(
            "/api/stores/{store_id}/api-keys",
            get(list_keys).post(create_key),
        )
        .route(
            "/api/stores/{store_id}/api-keys/{key_id}",
            get(get_key).patch(update_key).delete(revoke_key),
        )
        .route(
            "/api/stores/{store_id}/api-keys/{key_id}/regenerate",
            post(regenerate_key),
        )
        .route("/api/stores/{store_id}/logs", get(logs))
        .route("/api/stores/{store_id}/audit", get(audit))
        .route("/api/stores/{store_id}/usage", get(usage))
        .route(
            "/api/stores/{store_id}/webhooks",
            get(list_webhooks).post(create_webhook),
        )
        .route(
            "/api/stores/{store_id}/webhooks/{webhook_id}",
            get(get_webhook)
                .patch(update_webhook)
                .delete(delete_webhook),
        )
        .route(
            "/api/stores/{store_id}/webhooks/{webhook_id}/deliveries",
            get(webhook_deliveries),
        )
        .route(
            "/api/stores/{store_id}/webhooks/{webhook_id}/test",
            post(test_webhook),
        )
        .route(
            "/api/stores/{store_id}/webhooks/{webhook_id}/rotate-secret",
            post(rotate_webhook_secret),
        )
        .route(
            "/api/stores/{store_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
            post(retry_webhook_delivery),
        )
        .route(
            "/api/stores/{store_id}/portal-sessions",
            get(list_portal_sessions).delete(end_customer_portal_sessions),
        )
        .route(
            "/api/stores/{store_id}/portal-sessions/{session_id}",
            delete(end_portal_session),
        )
        .route_layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Checks the bearer token; the handler receives its claims.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let Some(token) = token else {
        let message = "A management token is required (Authorization: Bearer …)";
        return respond::fail(
            StatusCode::UNAUTHORIZED,
            "MISSING",
            message,
            vec![message.into()],
        );
    };
    match jwt::check(&state.config.jwt_secret, token) {
        Ok(claims) => {
            request.extensions_mut().insert(claims);
            next.run(request).await
        }
        Err(problem) => respond::fail(
            StatusCode::UNAUTHORIZED,
            "INVALID",
            &problem,
            vec![problem.clone()],
        ),
    }
}

/// 403 unless the token holds `permission` (and covers `store_id`, when given).
fn allow(claims: &Claims, permission: &str, store_id: Option<&str>) -> Result<(), Response> {
    if !claims.has(permission) {
        let message = format!("Missing permission {permission}");
        return Err(respond::fail(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            &message,
            vec![message.clone()],
        ));
    }
    if let Some(store_id) = store_id
        && !claims.covers(store_id)
    {
        let message = "The token does not cover this store".to_owned();
        return Err(respond::fail(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            &message,
            vec![message.clone()],
        ));
    }
    Ok(())
}

fn actor(claims: &Claims) -> Actor {
    Actor::admin(claims.sub.clone())
}

fn result(status: StatusCode, value: latchkey::Result<Value>) -> Response {
    match value {
        Ok(data) => respond::ok(status, data),
        Err(err) => respond::error(&err),
    }
}

macro_rules! guard {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(response) => return response,
        }
    };
}

/// Engine work that may wait on the network (a webhook target's name lookup, a test
/// dispatch) or the disk, answered from the blocking pool (see [`net::off_workers`]).
async fn blocking(
    status: StatusCode,
    work: impl FnOnce() -> latchkey::Result<Value> + Send + 'static,
) -> Response {
    result(status, net::off_workers(work).await)
}

/// What a client needs to build forms: the areas with the actions each offers, key formats,
/// limit algorithms, webhook events, and how long before a key expires its
/// `api_key.expiring` notice goes out (the console flags keys from then).
async fn meta() -> Response {
    let areas: Vec<Value> = latchkey::Area::ALL
        .iter()
        .map(|area| {
            let actions: Vec<&str> = area.actions().iter().map(|a| a.as_str()).collect();
            json!({"name": area.as_str(), "actions": actions})
        })
        .collect();
    respond::ok(
        StatusCode::OK,
        json!({
            "areas": areas,
            "formats": ["token", "hex", "pair"],
            "algorithms": ["fixed_window", "sliding_window", "token_bucket"],
            "webhook_events": latchkey::WEBHOOK_EVENTS,
            "expiry_notice_seconds": latchkey::EXPIRY_NOTICE.whole_seconds(),
        }),
    )
}

async fn create_store(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    guard!(allow(&claims, "Stores:Create", None));
    let body = guard!(json_object(&state, &headers, body, false).await);
    let engine = state.engine.clone();
    let created =
        net::off_workers(move || engine.create_store(&actor(&claims), NewStore::from_json(&body)?))
            .await
            .map(|(store, key)| json!({"store": store, "default_key": key.to_json()}));
    result(StatusCode::CREATED, created)
}

async fn list_stores(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
) -> Response {
    guard!(allow(&claims, "Stores:View", None));
    let stores = state.engine.list_stores().map(|stores| {
        let visible: Vec<_> = stores
            .into_iter()
            .filter(|s| claims.covers(s.id.as_str()))
            .collect();
        json!(visible)
    });
    result(StatusCode::OK, stores)
}

async fn get_store(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    result(
        StatusCode::OK,
        state.engine.get_store(&store_id).map(|s| json!(s)),
    )
}

async fn update_store(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let body = guard!(json_object(&state, &headers, body, false).await);
    let engine = state.engine.clone();
    let updated = net::off_workers(move || {
        engine.update_store(&store_id, &actor(&claims), StorePatch::from_json(&body)?)
    })
    .await
    .map(|s| json!(s));
    result(StatusCode::OK, updated)
}

async fn list_keys(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    result(
        StatusCode::OK,
        state.engine.list_keys(&store_id).map(|k| json!(k)),
    )
}

async fn create_key(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let body = guard!(json_object(&state, &headers, body, false).await);
    let engine = state.engine.clone();
    let created = net::off_workers(move || {
        engine.create_key(&store_id, &actor(&claims), NewKey::from_json(&body)?)
    })
    .await
    .map(|c| c.to_json());
    result(StatusCode::CREATED, created)
}

async fn get_key(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, key_id)): Path<(String, String)>,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    result(
        StatusCode::OK,
        state.engine.get_key(&store_id, &key_id).map(|k| json!(k)),
    )
}

async fn update_key(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, key_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let body = guard!(json_object(&state, &headers, body, false).await);
    let engine = state.engine.clone();
    let updated = net::off_workers(move || {
        engine.update_key(
            &store_id,
            &actor(&claims),
            &key_id,
            KeyPatch::from_json(&body)?,
        )
    })
    .await
    .map(|k| json!(k));
    result(StatusCode::OK, updated)
}

async fn revoke_key(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, key_id)): Path<(String, String)>,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let engine = state.engine.clone();
    let revoked = key_id.clone();
    let done =
        net::off_workers(move || engine.revoke_key(&store_id, &actor(&claims), &revoked)).await;
    result(
        StatusCode::OK,
        done.map(|()| json!({"id": key_id, "revoked": true})),
    )
}

async fn regenerate_key(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, key_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    // The body is optional (`{}`: the old secret stops at once).
    let body = guard!(json_object(&state, &headers, body, true).await);
    let engine = state.engine.clone();
    let created = net::off_workers(move || {
        engine.regenerate_key_from_json(&store_id, &actor(&claims), &key_id, &body)
    })
    .await;
    result(StatusCode::OK, created.map(|c| c.to_json()))
}

fn parse_time<const N: usize>(
    params: &net::Query<'_, N>,
    name: &str,
    problems: &mut Vec<String>,
) -> Option<OffsetDateTime> {
    let text = params.get(name)?;
    match OffsetDateTime::parse(text, &Rfc3339) {
        Ok(at) => Some(at),
        Err(_) => {
            problems.push(format!("{name}: `{text}` is not an RFC 3339 date-time"));
            None
        }
    }
}

async fn usage(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
    request: Request,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    let mut problems = Vec::new();
    let params = net::query(request.uri().query(), &["since", "until"], &mut problems);
    let query = latchkey::UsageQuery {
        since: parse_time(&params, "since", &mut problems),
        until: parse_time(&params, "until", &mut problems),
    };
    if !problems.is_empty() {
        return respond::invalid(problems);
    }
    let engine = state.engine.clone();
    let usage = net::off_workers(move || engine.usage(&store_id, &query)).await;
    result(StatusCode::OK, usage.map(|u| json!(u)))
}

async fn logs(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
    request: Request,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    let mut problems = Vec::new();
    let params = net::query(
        request.uri().query(),
        &["key_id", "status", "since", "until", "limit"],
        &mut problems,
    );
    let limit = limit_param(&params).unwrap_or_else(|p| {
        problems.push(p);
        None
    });
    let status = params.get("status").and_then(|s| match s.parse::<u16>() {
        Ok(status) if (100..=599).contains(&status) => Some(status),
        _ => {
            problems.push(format!("status: `{s}` is not an HTTP status"));
            None
        }
    });
    let query = LogQuery {
        key_id: params.get("key_id").map(str::to_owned),
        status,
        since: parse_time(&params, "since", &mut problems),
        until: parse_time(&params, "until", &mut problems),
        limit,
    };
    if !problems.is_empty() {
        return respond::invalid(problems);
    }
    let engine = state.engine.clone();
    let entries = net::off_workers(move || engine.logs(&store_id, &query));
    let entries = entries.await.map(|entries| {
        let items: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "at": e.at.format(&Rfc3339).ok(),
                    "key_id": e.key_id,
                    "method": e.method,
                    "path": e.path,
                    "status": e.status,
                    "ip": e.ip,
                    "code": e.code,
                    "latency_us": e.latency_us,
                })
            })
            .collect();
        json!(items)
    });
    result(StatusCode::OK, entries)
}

async fn audit(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
    request: Request,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    let mut problems = Vec::new();
    let params = net::query(request.uri().query(), &["limit"], &mut problems);
    // The range is the core's rule (`Engine::audit` refuses it with a 400 like this one).
    let limit = limit_param(&params).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    let limit = limit.unwrap_or(100);
    if !problems.is_empty() {
        return respond::invalid(problems);
    }
    let engine = state.engine.clone();
    let events = net::off_workers(move || engine.audit(&store_id, limit)).await;
    result(StatusCode::OK, events.map(|events| json!(events)))
}

/// Checks pasted text for leaked credentials of the stores the token covers, and with
/// `stop` stops the live ones: the management API's `latchkey scan --db --revoke`, for a
/// database a running server holds. Reading needs Stores:View, stopping Stores:Edit.
async fn check_leaks(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = guard!(json_object(&state, &headers, body, false).await);
    let check = match latchkey::LeakCheck::from_json(&body) {
        Ok(check) => check,
        Err(err) => return respond::error(&err),
    };
    guard!(allow(
        &claims,
        if check.stop {
            "Stores:Edit"
        } else {
            "Stores:View"
        },
        None
    ));
    let engine = state.engine.clone();
    blocking(StatusCode::OK, move || {
        let covers = |store: &latchkey::StoreId| claims.covers(store.as_str());
        let findings = engine.check_leaks_within(&check.text, check.stop, &actor(&claims), covers);
        Ok(json!(findings))
    })
    .await
}

async fn list_portal_sessions(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    let engine = state.engine.clone();
    let sessions = net::off_workers(move || engine.portal_sessions(&store_id)).await;
    result(
        StatusCode::OK,
        sessions.map(|list| json!(list.iter().map(|s| s.to_json()).collect::<Vec<_>>())),
    )
}

/// `DELETE …/portal-sessions?customer_id=…`: every live session of one customer.
async fn end_customer_portal_sessions(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
    request: Request,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let mut problems = Vec::new();
    let params = net::query(request.uri().query(), &["customer_id"], &mut problems);
    let customer = params
        .get("customer_id")
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    if customer.is_none() {
        problems.push("customer_id: required (the customer whose sessions to end)".to_owned());
    }
    let Some(customer) = customer.filter(|_| problems.is_empty()) else {
        return respond::invalid(problems);
    };
    end_sessions(
        &state,
        claims,
        store_id,
        |id| latchkey::EndPortalSessions::OfCustomer(id),
        customer,
    )
    .await
}

async fn end_portal_session(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, session_id)): Path<(String, String)>,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    end_sessions(
        &state,
        claims,
        store_id,
        |id| latchkey::EndPortalSessions::One(id),
        session_id,
    )
    .await
}

/// Ends the sessions `which(id)` names, off the async workers: `{ended: [ids]}`.
async fn end_sessions(
    state: &AppState,
    claims: Claims,
    store_id: String,
    which: for<'a> fn(&'a str) -> latchkey::EndPortalSessions<'a>,
    id: String,
) -> Response {
    let engine = state.engine.clone();
    let ended = net::off_workers(move || {
        engine.end_portal_sessions(&store_id, &actor(&claims), which(&id))
    })
    .await;
    result(StatusCode::OK, ended.map(|ids| json!({"ended": ids})))
}

async fn list_webhooks(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    result(
        StatusCode::OK,
        state.engine.list_webhooks(&store_id).map(|w| json!(w)),
    )
}

async fn create_webhook(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path(store_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let body = guard!(json_object(&state, &headers, body, false).await);
    let (engine, actor) = (state.engine.clone(), actor(&claims));
    blocking(StatusCode::CREATED, move || {
        engine.create_webhook(&store_id, &actor, &body)
    })
    .await
}

async fn get_webhook(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, webhook_id)): Path<(String, String)>,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    result(
        StatusCode::OK,
        state.engine.get_webhook(&store_id, &webhook_id),
    )
}

async fn webhook_deliveries(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, webhook_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    guard!(allow(&claims, "Stores:View", Some(&store_id)));
    let mut problems = Vec::new();
    let params = net::query(request.uri().query(), &["limit"], &mut problems);
    let limit = limit_param(&params).unwrap_or_else(|problem| {
        problems.push(problem);
        None
    });
    if !problems.is_empty() {
        return respond::invalid(problems);
    }
    result(
        StatusCode::OK,
        state
            .engine
            .list_webhook_deliveries(&store_id, &webhook_id, limit)
            .map(|d| json!(d)),
    )
}

async fn test_webhook(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, webhook_id)): Path<(String, String)>,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let engine = state.engine.clone();
    blocking(StatusCode::OK, move || {
        engine.test_webhook(&store_id, &webhook_id)
    })
    .await
}

async fn update_webhook(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, webhook_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let body = guard!(json_object(&state, &headers, body, false).await);
    let (engine, actor) = (state.engine.clone(), actor(&claims));
    blocking(StatusCode::OK, move || {
        engine.update_webhook(&store_id, &actor, &webhook_id, &body)
    })
    .await
}

async fn rotate_webhook_secret(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, webhook_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    // The body is optional (`{}` keeps the default overlap).
    let body = guard!(json_object(&state, &headers, body, true).await);
    let (engine, actor) = (state.engine.clone(), actor(&claims));
    blocking(StatusCode::OK, move || {
        engine.rotate_webhook_secret(&store_id, &actor, &webhook_id, &body)
    })
    .await
}

async fn retry_webhook_delivery(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, webhook_id, delivery_id)): Path<(String, String, String)>,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let engine = state.engine.clone();
    blocking(StatusCode::OK, move || {
        engine.retry_webhook_delivery(&store_id, &webhook_id, &delivery_id)
    })
    .await
}

async fn delete_webhook(
    State(state): State<AppState>,
    axum::Extension(claims): axum::Extension<Claims>,
    Path((store_id, webhook_id)): Path<(String, String)>,
) -> Response {
    guard!(allow(&claims, "Stores:Edit", Some(&store_id)));
    let engine = state.engine.clone();
    let deleted = webhook_id.clone();
    let done =
        net::off_workers(move || engine.delete_webhook(&store_id, &actor(&claims), &deleted)).await;
    result(
        StatusCode::OK,
        done.map(|()| json!({"id": webhook_id, "deleted": true})),
    )
}
