//! Every route group through `app()`, in process.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use latchkey::{Actor, Engine, NewStore};
use latchkey_server::{AppState, Config, app, jwt};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &[u8] = b"route-tests-secret-of-32-bytes!!";

struct Harness {
    app: Router,
    engine: Arc<Engine>,
    store: String,
    key: String,
    admin: String,
}

fn harness() -> Harness {
    let engine = Arc::new(Engine::memory().unwrap());
    let (store, key) = engine
        .create_store(&Actor::admin("t"), NewStore::named("Shop"))
        .unwrap();
    let admin = jwt::issue(
        SECRET,
        "ops",
        &jwt::ALL_PERMISSIONS,
        json!("*"),
        time::OffsetDateTime::now_utc().unix_timestamp(),
        600,
    )
    .unwrap();
    Harness {
        app: app(AppState::new(engine.clone(), Config::new(SECRET.to_vec()))),
        engine,
        store: store.id.to_string(),
        key: key.credential(),
        admin,
    }
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Harness {
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        self.call_raw(method, path, headers, body.map(|b| b.to_string()))
            .await
    }

    async fn call_raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, Body::from))
            .unwrap();
        let peer: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn keyed(&self, method: &str, path: &str, key: &str, body: Option<Value>) -> Reply {
        self.call(method, path, &[("X-Api-Key", key)], body).await
    }

    /// The store's newest audit event, through the management API.
    async fn last_audit(&self) -> Value {
        let path = format!("/api/stores/{}/audit?limit=1", self.store);
        self.admin("GET", &path, None).await.body["data"][0].clone()
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let bearer = format!("Bearer {}", self.admin);
        self.call(method, path, &[("Authorization", &bearer)], body)
            .await
    }
}

fn assert_wrapper(reply: &Reply) {
    let body = &reply.body;
    for field in ["success", "data", "message", "errors"] {
        assert!(body.get(field).is_some(), "no `{field}` in {body}");
    }
    if !reply.status.is_success() {
        assert!(body["code"].is_string(), "{body}");
        assert_eq!(body["success"], false);
    }
    assert!(reply.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn entity_routes_with_a_key() {
    let h = harness();
    let created = h
        .keyed(
            "POST",
            "/api/v1/packages",
            &h.key,
            Some(json!({"name": "VIP", "price": {"amount": 999, "currency": "USD"}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_wrapper(&created);
    let id = created.body["data"]["id"].as_str().unwrap().to_owned();
    for header in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(created.headers.contains_key(header), "{header}");
    }
    let got = h
        .keyed("GET", &format!("/api/v1/packages/{id}"), &h.key, None)
        .await;
    assert_eq!(got.body["data"]["name"], "VIP");
    let patched = h
        .keyed(
            "PATCH",
            &format!("/api/v1/packages/{id}"),
            &h.key,
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(patched.body["data"]["active"], false);
    let listed = h
        .keyed("GET", "/api/v1/packages?limit=1", &h.key, None)
        .await;
    assert_eq!(listed.body["data"]["items"].as_array().unwrap().len(), 1);
    let bad = h
        .keyed("GET", "/api/v1/packages?limit=x&cursor=%%%", &h.key, None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_wrapper(&bad);
    // A parameter the route does not read, or one given twice, is refused rather than
    // ignored, each named once, beside any other problem; a misspelt limit is not dropped.
    let typo = h
        .keyed(
            "GET",
            "/api/v1/packages?limt=5&limt=6&limit=1&limit=2&limit=x",
            &h.key,
            None,
        )
        .await;
    assert_eq!(typo.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        typo.body["errors"],
        json!([
            "query: unknown parameter `limt` (this route reads limit, cursor)",
            "query: `limit` given more than once",
        ]),
        "{}",
        typo.body
    );
    let bad_and_unknown = h
        .keyed("GET", "/api/v1/packages?limit=x&page=2", &h.key, None)
        .await;
    assert_eq!(
        bad_and_unknown.body["errors"].as_array().unwrap().len(),
        2,
        "{}",
        bad_and_unknown.body
    );
    let invalid = h
        .keyed(
            "POST",
            "/api/v1/coupons",
            &h.key,
            Some(json!({"code": "x", "discount": 5, "extra": 1})),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::BAD_REQUEST);
    assert!(
        invalid.body["errors"].as_array().unwrap().len() >= 3,
        "{}",
        invalid.body
    );
    let deleted = h
        .keyed("DELETE", &format!("/api/v1/packages/{id}"), &h.key, None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    let gone = h
        .keyed("GET", &format!("/api/v1/packages/{id}"), &h.key, None)
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_wrapper(&gone);
    // What an area does not offer: orders cannot be deleted.
    let no = h
        .keyed(
            "DELETE",
            "/api/v1/orders/ord_000000000000aaaaaaaa",
            &h.key,
            None,
        )
        .await;
    assert_eq!(no.status, StatusCode::FORBIDDEN, "{}", no.body);
    assert_eq!(no.body["message"], "Missing permission Orders:Delete");
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_create_once() {
    let h = harness();
    let order_for = |package: &Value| json!({"email": "jo@example.com", "items": [{"package_id": package["id"]}]});
    let package = h
        .keyed(
            "POST",
            "/api/v1/packages",
            &h.key,
            Some(json!({"name": "VIP", "price": {"amount": 999, "currency": "USD"}})),
        )
        .await
        .body["data"]
        .clone();
    let post = |key: &'static str, body: Value| {
        let h = &h;
        async move {
            h.call(
                "POST",
                "/api/v1/orders",
                &[("X-Api-Key", h.key.as_str()), ("Idempotency-Key", key)],
                Some(body),
            )
            .await
        }
    };
    let first = post("7c1e2f1a-order", order_for(&package)).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = post("7c1e2f1a-order", order_for(&package)).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["data"], first.body["data"]);
    let orders = h.keyed("GET", "/api/v1/orders", &h.key, None).await;
    assert_eq!(orders.body["data"]["items"].as_array().unwrap().len(), 1);

    // The key with another body: 409, nothing made.
    let mut other = order_for(&package);
    other["items"][0]["quantity"] = json!(2);
    let conflict = post("7c1e2f1a-order", other).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
    assert_eq!(conflict.body["code"], "CONFLICT");
    assert_wrapper(&conflict);

    // A key that is not 1-255 visible ASCII characters, or sent twice: 400, nothing made.
    let long = "k".repeat(256);
    for headers in [
        vec![("Idempotency-Key", "")],
        vec![("Idempotency-Key", "two words")],
        vec![("Idempotency-Key", long.as_str())],
        vec![("Idempotency-Key", "a"), ("Idempotency-Key", "b")],
    ] {
        let mut all = vec![("X-Api-Key", h.key.as_str())];
        all.extend(headers.iter().copied());
        let refused = h
            .call("POST", "/api/v1/orders", &all, Some(order_for(&package)))
            .await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{headers:?}: {}",
            refused.body
        );
        assert!(
            refused.body["errors"][0]
                .as_str()
                .unwrap()
                .contains("dempotency"),
            "{}",
            refused.body
        );
    }
    // A bad key and a bad body: one 400 naming both.
    let both = h
        .call(
            "POST",
            "/api/v1/orders",
            &[
                ("X-Api-Key", h.key.as_str()),
                ("Idempotency-Key", "two words"),
            ],
            Some(json!({"items": []})),
        )
        .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        both.body["errors"].as_array().unwrap().len(),
        3,
        "{}",
        both.body
    );
    let orders = h.keyed("GET", "/api/v1/orders", &h.key, None).await;
    assert_eq!(orders.body["data"]["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn credentials_in_every_form_and_malformed_headers() {
    let h = harness();
    let ok = |r: &Reply| r.status == StatusCode::OK;
    assert!(ok(&h
        .call("GET", "/api/v1/packages", &[("x-api-key", &h.key)], None)
        .await));
    assert!(ok(&h
        .call("GET", "/api/v1/packages", &[("X-API-KEY", &h.key)], None)
        .await));
    let bearer = format!("Bearer {}", h.key);
    assert!(ok(&h
        .call(
            "GET",
            "/api/v1/packages",
            &[("Authorization", &bearer)],
            None
        )
        .await));
    // A pair key as HTTP Basic and as a bare base64 token.
    let created = h
        .keyed(
            "POST",
            "/api/v1/api-keys",
            &h.key,
            Some(json!({"name": "erp", "permissions": {"Packages": ["View"]}, "format": "pair"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let ck = created.body["data"]["consumer_key"].as_str().unwrap();
    let cs = created.body["data"]["consumer_secret"].as_str().unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{ck}:{cs}"));
    assert!(ok(&h
        .call(
            "GET",
            "/api/v1/packages",
            &[("Authorization", &format!("Basic {b64}"))],
            None
        )
        .await));
    assert!(ok(&h
        .call("GET", "/api/v1/packages", &[("Authorization", &b64)], None)
        .await));

    for (name, value, message) in [
        ("Authorization", "Basic !!!not-base64", "Invalid API key"),
        ("Authorization", "Bearer", "API key required"),
        ("X-Api-Key", "lk_short", "Invalid API key"),
        ("Authorization", "Digest abc", "Invalid API key"),
    ] {
        let r = h
            .call("GET", "/api/v1/packages", &[(name, value)], None)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}: {value}");
        assert_eq!(r.body["message"], message, "{name}: {value}");
        assert_wrapper(&r);
    }
    let missing = h.call("GET", "/api/v1/packages", &[], None).await;
    assert_eq!(
        (missing.status, missing.body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("MISSING"))
    );
    // A credential header sent twice is ambiguous: refused, even when both lines are valid.
    for (name, value) in [("X-Api-Key", h.key.as_str()), ("Authorization", &bearer)] {
        let r = h
            .call(
                "GET",
                "/api/v1/packages",
                &[(name, value), (name, value)],
                None,
            )
            .await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("INVALID")),
            "{name} twice"
        );
    }
    // Non-UTF-8 header bytes are a 401 too.
    let mut request = Request::builder()
        .uri("/api/v1/packages")
        .body(Body::empty())
        .unwrap();
    request.headers_mut().insert(
        "x-api-key",
        axum::http::HeaderValue::from_bytes(b"lk_\xff\xfe").unwrap(),
    );
    let response = h.app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn any_valid_key_reads_its_own_record_and_nothing_more() {
    let h = harness();
    let created = h
        .admin(
            "POST",
            &format!("/api/stores/{}/api-keys", h.store),
            Some(json!({"name": "pos", "permissions": {"Orders": ["View"]}, "rate_limit": {"limit": 30, "algorithm": "fixed_window"}})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let key = created.body["data"]["key"].as_str().unwrap().to_owned();
    let me = h.keyed("GET", "/api/v1/api-keys/current", &key, None).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_wrapper(&me);
    let data = &me.body["data"];
    assert_eq!(data["id"], created.body["data"]["id"]);
    assert_eq!(data["permissions"], json!({"Orders": ["View"]}));
    assert_eq!(data["rate_limit"]["limit"], 30);
    assert!(data.get("key").is_none() && !me.body.to_string().contains(&key));
    assert_eq!(me.headers["x-ratelimit-limit"], "30");
    // Reading the store's other keys still needs ApiKeys:View, and "current" is no way round
    // the other actions.
    let others = h.keyed("GET", "/api/v1/api-keys", &key, None).await;
    assert_eq!(others.status, StatusCode::FORBIDDEN);
    let revoke = h
        .keyed("DELETE", "/api/v1/api-keys/current", &key, None)
        .await;
    assert_eq!(revoke.status, StatusCode::FORBIDDEN, "{}", revoke.body);
    let default = h
        .keyed("GET", "/api/v1/api-keys/current", &h.key, None)
        .await;
    assert_eq!(default.body["data"]["kind"], "default");
    let nobody = h
        .keyed("GET", "/api/v1/api-keys/current", "lk_nope", None)
        .await;
    assert_eq!(nobody.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn self_service_keys_cannot_escalate() {
    let h = harness();
    let limited = h
        .keyed("POST", "/api/v1/api-keys", &h.key, Some(json!({"name": "ops", "permissions": {"ApiKeys": ["View", "Edit"], "Orders": ["View"]}})))
        .await;
    let limited_key = limited.body["data"]["key"].as_str().unwrap().to_owned();
    let escalate = h
        .keyed(
            "POST",
            "/api/v1/api-keys",
            &limited_key,
            Some(json!({"name": "x", "permissions": {"Packages": ["Edit"]}})),
        )
        .await;
    assert_eq!(escalate.status, StatusCode::FORBIDDEN, "{}", escalate.body);
    let listed = h.keyed("GET", "/api/v1/api-keys", &limited_key, None).await;
    let text = listed.body.to_string();
    assert!(
        !text.contains(&limited_key) && !text.contains(&h.key),
        "secrets never listed"
    );
    let id = limited.body["data"]["id"].as_str().unwrap();
    let regenerated = h
        .keyed(
            "POST",
            &format!("/api/v1/api-keys/{id}/regenerate"),
            &h.key,
            None,
        )
        .await;
    assert_eq!(regenerated.status, StatusCode::OK);
    let old = h.keyed("GET", "/api/v1/orders", &limited_key, None).await;
    assert_eq!(
        old.status,
        StatusCode::UNAUTHORIZED,
        "the old secret stops at once"
    );
    // With an overlap the new secret works at once and the current one until it ends; a
    // bad overlap is a 400 naming it, and changes nothing.
    let new_key = regenerated.body["data"]["key"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/api-keys/{id}/regenerate");
    for bad in [
        json!({"overlap_seconds": 604_801}),
        json!({"overlap_seconds": null, "x": 1}),
    ] {
        let refused = h.keyed("POST", &path, &h.key, Some(bad)).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
        assert!(
            refused.body["errors"][0]
                .as_str()
                .unwrap()
                .starts_with("overlap_seconds: ")
        );
    }
    let rolled = h
        .keyed(
            "POST",
            &path,
            &h.key,
            Some(json!({"overlap_seconds": 3600})),
        )
        .await;
    assert_eq!(rolled.status, StatusCode::OK, "{}", rolled.body);
    assert!(rolled.body["data"]["previous_expires_at"].is_string());
    let rolled_key = rolled.body["data"]["key"].as_str().unwrap();
    for key in [new_key.as_str(), rolled_key] {
        let used = h.keyed("GET", "/api/v1/orders", key, None).await;
        assert_eq!(used.status, StatusCode::OK, "{}", used.body);
    }
    let revoked = h
        .keyed("DELETE", &format!("/api/v1/api-keys/{id}"), &h.key, None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let gone = h.keyed("GET", "/api/v1/orders", &new_key, None).await;
    assert_eq!(
        gone.status,
        StatusCode::UNAUTHORIZED,
        "revoking ends the overlap"
    );
}

#[tokio::test]
async fn management_api_with_a_token() {
    let h = harness();
    let none = h.call("GET", "/api/stores", &[], None).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_wrapper(&none);
    let forged = h
        .call(
            "GET",
            "/api/stores",
            &[("Authorization", "Bearer a.b.c")],
            None,
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);

    let created = h
        .admin(
            "POST",
            "/api/stores",
            Some(json!({"name": "Second", "max_scoped_keys": 2})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let sid = created.body["data"]["store"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(created.body["data"]["default_key"]["key"].is_string());
    let bad = h
        .admin(
            "POST",
            "/api/stores",
            Some(json!({"name": "", "key_prefix": "X"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.body["errors"].as_array().unwrap().len(),
        2,
        "{}",
        bad.body
    );

    let patched = h
        .admin(
            "PATCH",
            &format!("/api/stores/{sid}"),
            Some(json!({"api_enabled": false})),
        )
        .await;
    assert_eq!(patched.body["data"]["api_enabled"], false);
    let key = h
        .admin(
            "POST",
            &format!("/api/stores/{sid}/api-keys"),
            Some(json!({"name": "k", "permissions": "*", "format": "hex"})),
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED, "{}", key.body);
    let hex = key.body["data"]["key"].as_str().unwrap().to_owned();
    let refused = h.keyed("GET", "/api/v1/packages", &hex, None).await;
    assert_eq!(
        refused.body["message"],
        "REST API is disabled for this store"
    );
    let kid = key.body["data"]["id"].as_str().unwrap();
    let got = h
        .admin("GET", &format!("/api/stores/{sid}/api-keys/{kid}"), None)
        .await;
    assert!(!got.body.to_string().contains(&hex));
    let off = h
        .admin(
            "PATCH",
            &format!("/api/stores/{sid}/api-keys/{kid}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(off.body["data"]["active"], false);
    let audit = h
        .admin("GET", &format!("/api/stores/{sid}/audit"), None)
        .await;
    let events = audit.body["data"].as_array().unwrap();
    assert!(events.len() >= 3);
    // Switching the REST API off is in the trail, with the token's subject as the actor.
    let switched = events
        .iter()
        .find(|e| e["action"] == "store_updated")
        .expect("the settings change is audited");
    assert_eq!(switched["key_id"], Value::Null);
    assert_eq!(switched["changes"], json!(["api_enabled"]));
    assert_eq!(switched["actor"], json!({"type": "admin", "id": "ops"}));
    let logs = h
        .admin("GET", &format!("/api/stores/{sid}/logs?status=403"), None)
        .await;
    assert_eq!(
        logs.body["data"][0]["code"], "API_DISABLED",
        "{}",
        logs.body
    );
    let bad_logs = h
        .admin(
            "GET",
            &format!("/api/stores/{sid}/logs?status=9&since=yesterday"),
            None,
        )
        .await;
    assert_eq!(bad_logs.body["errors"].as_array().unwrap().len(), 2);
    let unknown_filter = h
        .admin(
            "GET",
            &format!("/api/stores/{sid}/logs?code=FORBIDDEN"),
            None,
        )
        .await;
    assert_eq!(unknown_filter.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        unknown_filter.body["errors"],
        json!([
            "query: unknown parameter `code` (this route reads key_id, status, since, until, limit)"
        ])
    );

    // Webhook endpoints: the secret in the create response only.
    let hook = h
        .admin(
            "POST",
            &format!("/api/stores/{sid}/webhooks"),
            Some(json!({"url": "https://example.com/h", "events": ["order.created"]})),
        )
        .await;
    assert_eq!(hook.status, StatusCode::CREATED, "{}", hook.body);
    let secret = hook.body["data"]["secret"].as_str().unwrap().to_owned();
    let hid = hook.body["data"]["id"].as_str().unwrap().to_owned();
    let hooks = h
        .admin("GET", &format!("/api/stores/{sid}/webhooks"), None)
        .await;
    assert!(!hooks.body.to_string().contains(&secret));
    let off = h
        .admin(
            "PATCH",
            &format!("/api/stores/{sid}/webhooks/{hid}"),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(off.body["data"]["active"], false);
    let one = h
        .admin("GET", &format!("/api/stores/{sid}/webhooks/{hid}"), None)
        .await;
    assert_eq!(one.body["data"]["id"], hid.as_str());
    assert!(!one.body.to_string().contains(&secret));
    // The SSRF guard: an internal target is a 400 naming the field, and nothing changes.
    let internal = h
        .admin(
            "PATCH",
            &format!("/api/stores/{sid}/webhooks/{hid}"),
            Some(json!({"url": "http://[::ffff:127.0.0.1]:8080/"})),
        )
        .await;
    assert_eq!(internal.status, StatusCode::BAD_REQUEST);
    assert!(
        internal.body["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("url: refused"),
        "{}",
        internal.body
    );
    // The endpoint's creation and its switch-off are audited, by the token's subject; the
    // refused change is not.
    let audit = h
        .admin("GET", &format!("/api/stores/{sid}/audit?limit=2"), None)
        .await;
    // The limit's range is the core's rule, answered like any validation problem.
    let too_many = h
        .admin("GET", &format!("/api/stores/{sid}/audit?limit=1001"), None)
        .await;
    assert_eq!(too_many.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        too_many.body["errors"],
        json!(["limit: must be between 1 and 1000"])
    );
    let trail: Vec<_> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].clone(),
                e["webhook_id"].clone(),
                e["actor"]["id"].clone(),
                e["changes"].clone(),
            )
        })
        .collect();
    assert_eq!(
        trail,
        [
            (
                json!("webhook_updated"),
                json!(hid),
                json!("ops"),
                json!(["active"])
            ),
            (
                json!("webhook_created"),
                json!(hid),
                json!("ops"),
                json!([])
            ),
        ]
    );
    let deliveries = format!("/api/stores/{sid}/webhooks/{hid}/deliveries");
    let none = h.admin("GET", &deliveries, None).await;
    assert_eq!(none.body["data"], json!([]));
    let bad_limit = h.admin("GET", &format!("{deliveries}?limit=0"), None).await;
    assert_eq!(bad_limit.status, StatusCode::BAD_REQUEST);
    // A test dispatch to a name that can never resolve (RFC 2606): the error is in the result.
    h.admin(
        "PATCH",
        &format!("/api/stores/{sid}/webhooks/{hid}"),
        Some(json!({"url": "https://hooks.invalid/h"})),
    )
    .await;
    let test = h
        .admin(
            "POST",
            &format!("/api/stores/{sid}/webhooks/{hid}/test"),
            None,
        )
        .await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.body);
    assert_eq!(test.body["data"]["status_code"], Value::Null);
    assert!(
        test.body["data"]["error"]
            .as_str()
            .unwrap()
            .contains("hooks.invalid")
    );
    let listed = h.admin("GET", &deliveries, None).await;
    assert_eq!(listed.body["data"][0]["event_type"], "webhook.test");
    assert_eq!(
        listed.body["data"][0]["id"],
        test.body["data"]["delivery_id"]
    );
    let gone = h
        .admin("DELETE", &format!("/api/stores/{sid}/webhooks/{hid}"), None)
        .await;
    assert_eq!(gone.status, StatusCode::OK);

    // A token limited to one store and to viewing.
    let narrow = jwt::issue(
        SECRET,
        "viewer",
        &["Stores:View"],
        json!([h.store]),
        time::OffsetDateTime::now_utc().unix_timestamp(),
        600,
    )
    .unwrap();
    let bearer = format!("Bearer {narrow}");
    let own = h
        .call(
            "GET",
            &format!("/api/stores/{}", h.store),
            &[("Authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(own.status, StatusCode::OK);
    let other = h
        .call(
            "GET",
            &format!("/api/stores/{sid}"),
            &[("Authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let edit = h
        .call(
            "PATCH",
            &format!("/api/stores/{}", h.store),
            &[("Authorization", &bearer)],
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(edit.body["message"], "Missing permission Stores:Edit");
    let listed = h
        .call("GET", "/api/stores", &[("Authorization", &bearer)], None)
        .await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn storefront_health_metrics_limits_and_fallbacks() {
    let h = harness();
    let scope = latchkey::Scope::new(latchkey::StoreId::parse(&h.store).unwrap(), "live");
    h.engine
        .create_entity(
            &scope,
            latchkey::Area::Packages,
            &json!({"name": "Public", "price": {"amount": 1, "currency": "EUR"}}),
        )
        .unwrap();
    let front = h
        .call(
            "GET",
            &format!("/api/v1/storefront/{}/packages", h.store),
            &[],
            None,
        )
        .await;
    assert_eq!(front.status, StatusCode::OK);
    assert_eq!(front.body["data"]["items"][0]["name"], "Public");
    assert_eq!(front.headers["x-ratelimit-limit"], "5000");
    let health = h.call("GET", "/healthz", &[], None).await;
    assert_eq!(health.body["data"]["status"], "ok");
    let unknown = h.call("GET", "/nope", &[], None).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_wrapper(&unknown);
    let wrong_method = h.call("PUT", "/healthz", &[], None).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_wrapper(&wrong_method);
    // On an area's route the key is verified first, then the method refused: the rule the
    // middlewares follow for a method that implies no action.
    let options = h
        .call("OPTIONS", "/api/v1/orders", &[("X-Api-Key", &h.key)], None)
        .await;
    assert_eq!(options.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(options.body, latchkey::method_not_allowed_body());
    assert!(options.headers.contains_key("x-ratelimit-limit"));
    let keyless = h.call("OPTIONS", "/api/v1/orders", &[], None).await;
    assert_eq!(keyless.status, StatusCode::UNAUTHORIZED);

    // 413 over the body limit, 400 for broken JSON, both wrapped.
    let big = format!("{{\"name\": \"{}\"}}", "x".repeat(2 << 20));
    let too_big = h
        .call_raw(
            "POST",
            "/api/v1/packages",
            &[("X-Api-Key", &h.key)],
            Some(big),
        )
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_wrapper(&too_big);
    let broken = h
        .call_raw(
            "POST",
            "/api/v1/packages",
            &[("X-Api-Key", &h.key)],
            Some("{\"a\":".into()),
        )
        .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);

    // The default key's 60/min: the 61st request in the minute is a 429 with Retry-After.
    let mut last = None;
    for _ in 0..70 {
        last = Some(h.keyed("GET", "/api/v1/categories", &h.key, None).await);
    }
    let last = last.unwrap();
    assert_eq!(last.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(last.body["message"], "Rate limit exceeded");
    let after: u64 = last.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(after >= 1);

    let metrics = h
        .app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/metrics")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let text = String::from_utf8(
        metrics
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains("latchkey_verify_decisions_total{code=\"RATE_LIMITED\"}"),
        "{text}"
    );
    assert!(text.contains("latchkey_http_requests_total{class=\"4xx\"}"));
    // The duration histogram counts every request answered before this scrape, once: its
    // buckets are cumulative and end at the total of the status classes.
    let value = |line: &str| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
    let answered: f64 = text
        .lines()
        .filter(|l| l.starts_with("latchkey_http_requests_total{"))
        .map(value)
        .sum();
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("latchkey_http_request_duration_seconds_bucket{"))
        .map(value)
        .collect();
    assert_eq!(buckets.len(), 15, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{text}");
    assert!(answered > 10.0, "{text}");
    assert_eq!(buckets[14], answered, "{text}");
    assert!(text.contains("latchkey_http_request_duration_seconds_bucket{le=\"+Inf\"}"));
    let count = text
        .lines()
        .find_map(|l| l.strip_prefix("latchkey_http_request_duration_seconds_count "))
        .expect("the histogram's count");
    assert_eq!(count.parse::<f64>().unwrap(), answered);
    let sum = text
        .lines()
        .find_map(|l| l.strip_prefix("latchkey_http_request_duration_seconds_sum "))
        .expect("the histogram's sum");
    assert!(sum.parse::<f64>().unwrap() > 0.0, "{text}");
    // A gauge, not a counter: what is pending depends on when the writer last ran.
    let pending = text
        .lines()
        .find_map(|l| l.strip_prefix("latchkey_request_log_pending "))
        .expect("the pending gauge");
    assert!(pending.parse::<u64>().is_ok(), "{text}");
}

#[test]
fn client_ip_trusts_forwarded_for_only_from_trusted_proxies() {
    use latchkey_server::client_ip;
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("x-forwarded-for", "6.6.6.6, 10.0.0.2".parse().unwrap());
    let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let trusted = vec!["10.0.0.0/8".parse().unwrap()];
    assert_eq!(
        client_ip(Some(proxy), &headers, &[]),
        Some(proxy),
        "untrusted peer: its own address"
    );
    assert_eq!(
        client_ip(Some(proxy), &headers, &trusted),
        Some("6.6.6.6".parse().unwrap())
    );
    headers.insert("x-forwarded-for", "garbage".parse().unwrap());
    assert_eq!(client_ip(Some(proxy), &headers, &trusted), Some(proxy));
    let stranger: std::net::IpAddr = "198.51.100.1".parse().unwrap();
    assert_eq!(
        client_ip(Some(stranger), &headers, &trusted),
        Some(stranger)
    );
}

#[tokio::test]
async fn portal_sessions_read_one_customers_orders_only() {
    let h = harness();
    let scope = latchkey::Scope::new(latchkey::StoreId::parse(&h.store).unwrap(), "live");
    let e = &h.engine;
    let pkg = e
        .create_entity(
            &scope,
            latchkey::Area::Packages,
            &json!({"name": "VIP", "price": {"amount": 5, "currency": "USD"}}),
        )
        .unwrap();
    let order_for = |email: &str| {
        e.create_entity(
            &scope,
            latchkey::Area::Orders,
            &json!({"email": email, "items": [{"package_id": pkg["id"]}]}),
        )
        .unwrap()
    };
    let mine = order_for("me@example.com");
    order_for("other@example.com");

    let viewer = h
        .keyed(
            "POST",
            "/api/v1/api-keys",
            &h.key,
            Some(json!({"name": "portal", "permissions": {"Customers": ["View"]}})),
        )
        .await;
    let viewer = viewer.body["data"]["key"].as_str().unwrap().to_owned();
    let bad = h
        .keyed(
            "POST",
            "/api/v1/auth/portal-sessions",
            &viewer,
            Some(json!({"customer": 1})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.body["errors"].as_array().unwrap().len(),
        2,
        "{}",
        bad.body
    );
    let session = h
        .keyed(
            "POST",
            "/api/v1/auth/portal-sessions",
            &viewer,
            Some(json!({"customer_id": mine["customer_id"]})),
        )
        .await;
    assert_eq!(session.status, StatusCode::CREATED, "{}", session.body);
    let token = session.body["data"]["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("cps_"));

    let bearer = format!("Bearer {token}");
    let orders = h
        .call(
            "GET",
            "/api/v1/portal/orders",
            &[("Authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(orders.status, StatusCode::OK, "{}", orders.body);
    let items = orders.body["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], mine["id"]);
    let subs = h
        .call(
            "GET",
            "/api/v1/portal/subscriptions",
            &[("Authorization", &bearer)],
            None,
        )
        .await;
    assert_eq!(subs.body["data"]["items"].as_array().unwrap().len(), 0);
    // The session token is not an API key, and a forged one opens nothing.
    assert_eq!(
        h.keyed("GET", "/api/v1/orders", &token, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let forged = h
        .call(
            "GET",
            "/api/v1/portal/orders",
            &[("Authorization", "Bearer cps_forged")],
            None,
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_wrapper(&forged);
    // Opening a session needs Customers:View.
    let orders_only = h
        .keyed(
            "POST",
            "/api/v1/api-keys",
            &h.key,
            Some(json!({"name": "o", "permissions": {"Orders": ["View"]}})),
        )
        .await;
    let orders_only = orders_only.body["data"]["key"].as_str().unwrap().to_owned();
    let refused = h
        .keyed(
            "POST",
            "/api/v1/auth/portal-sessions",
            &orders_only,
            Some(json!({"customer_id": mine["customer_id"]})),
        )
        .await;
    assert_eq!(refused.body["message"], "Missing permission Customers:View");

    // A session is a key's access handed to a customer: closed while the store's API is
    // closed to keys (not counted as a failed authentication), open again after.
    let auth = [("Authorization", bearer.as_str())];
    let portal_orders = || h.call("GET", "/api/v1/portal/orders", &auth, None);
    let store_path = format!("/api/stores/{}", h.store);
    let api = |enabled: bool| h.admin("PATCH", &store_path, Some(json!({"api_enabled": enabled})));
    assert_eq!(api(false).await.status, StatusCode::OK);
    let closed = portal_orders().await;
    assert_eq!(closed.status, StatusCode::FORBIDDEN, "{}", closed.body);
    assert_eq!(closed.body["code"], "API_DISABLED");
    assert_wrapper(&closed);
    assert_eq!(api(true).await.status, StatusCode::OK);
    assert_eq!(portal_orders().await.status, StatusCode::OK);

    // The store's managers see the live session (not its token) and can end it.
    let sessions_path = format!("/api/stores/{}/portal-sessions", h.store);
    let listed = h.admin("GET", &sessions_path, None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert_wrapper(&listed);
    let sessions = listed.body["data"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0]["customer_id"], mine["customer_id"]);
    assert!(!listed.body.to_string().contains(&token));
    let missing = h.admin("DELETE", &sessions_path, None).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.body["errors"],
        json!(["customer_id: required (the customer whose sessions to end)"])
    );
    let id = sessions[0]["id"].as_str().unwrap();
    let ended = h
        .admin("DELETE", &format!("{sessions_path}/{id}"), None)
        .await;
    assert_eq!(ended.body["data"], json!({"ended": [id]}), "{}", ended.body);
    assert_eq!(portal_orders().await.status, StatusCode::UNAUTHORIZED);
    let again = h
        .admin("DELETE", &format!("{sessions_path}/{id}"), None)
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    let customer = mine["customer_id"].as_str().unwrap();
    let none = h
        .admin(
            "DELETE",
            &format!("{sessions_path}?customer_id={customer}"),
            None,
        )
        .await;
    assert_eq!(none.body["data"], json!({"ended": []}), "{}", none.body);
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let h = harness();
    let doc = h.call("GET", "/openapi.json", &[], None).await;
    assert_eq!(doc.body["openapi"], "3.1.0");
    let ops = latchkey_server::openapi::operations();
    assert_eq!(
        doc.body["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        ops.len()
    );
    for op in ops {
        let path = op
            .path
            .replace("{store_id}", &h.store)
            .replace("{id}", "x")
            .replace("{key_id}", "x")
            .replace("{webhook_id}", "x")
            .replace("{session_id}", "x");
        let reply = h.call(&op.method.to_uppercase(), &path, &[], None).await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            op.method,
            op.path
        );
        assert!(
            reply.status != StatusCode::NOT_FOUND || reply.body["message"] != "No such route",
            "{} {} is documented but not served",
            op.method,
            op.path
        );
    }
}

#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_a_strict_policy() {
    let h = harness();
    let moved = h.call("GET", "/dashboard", &[], None).await;
    assert_eq!(moved.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(moved.headers["location"], "/dashboard/");
    for (path, kind) in [
        ("/dashboard/", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let reply = h.call("GET", path, &[], None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        let content_type = reply.headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let policy = reply.headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
    }
    // No CDN: the page loads only its own files.
    let page = h.call("GET", "/dashboard/", &[], None).await;
    assert_eq!(page.body, Value::Null, "HTML, not JSON");

    // What the console builds its forms from: each area with only the actions it offers.
    assert_eq!(
        h.call("GET", "/api/meta", &[], None).await.status,
        StatusCode::UNAUTHORIZED
    );
    let meta = h.admin("GET", "/api/meta", None).await;
    let areas = meta.body["data"]["areas"].as_array().unwrap();
    let orders = areas.iter().find(|a| a["name"] == "Orders").unwrap();
    assert_eq!(orders["actions"], json!(["View", "Edit"]));
    assert_eq!(
        meta.body["data"]["webhook_events"],
        json!(latchkey::WEBHOOK_EVENTS)
    );
}

/// A client behind an untrusted peer cannot pick its address with `X-Forwarded-For`: a fresh
/// forwarded address on every failed attempt still counts against the peer, so the brute-force
/// limit (100 failures per 15 minutes) stops it.
#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_does_not_escape_the_limits() {
    let h = harness();
    for i in 0..100 {
        let spoofed = format!("198.51.100.{}", i % 250 + 1);
        let reply = h
            .call(
                "GET",
                "/api/v1/packages",
                &[("X-Api-Key", "lk_nope"), ("X-Forwarded-For", &spoofed)],
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let blocked = h
        .call(
            "GET",
            "/api/v1/packages",
            &[("X-Api-Key", &h.key), ("X-Forwarded-For", "192.0.2.77")],
            None,
        )
        .await;
    assert_eq!(
        blocked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        blocked.body
    );
    assert!(blocked.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn a_webhook_secret_rotates_with_its_new_secret_shown_once() {
    let h = harness();
    let hooks = format!("/api/stores/{}/webhooks", h.store);
    let created = h
        .admin(
            "POST",
            &hooks,
            Some(json!({"url": "https://example.com/h", "events": ["order.created"]})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["data"]["id"].as_str().unwrap().to_owned();
    let old = created.body["data"]["secret"].as_str().unwrap().to_owned();
    let rotate = format!("{hooks}/{id}/rotate-secret");

    // No body: the default overlap of a day.
    let rotated = h.admin("POST", &rotate, None).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.body["data"]["secret"].as_str().unwrap().to_owned();
    assert!(new.starts_with("whsec_") && new != old);
    let until = rotated.body["data"]["previous_secret_expires_at"]
        .as_str()
        .unwrap();
    let until =
        time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339).unwrap();
    let day = until - time::OffsetDateTime::now_utc();
    assert!(day > time::Duration::hours(23) && day <= time::Duration::hours(24));
    let shown = h.admin("GET", &format!("{hooks}/{id}"), None).await;
    assert!(!shown.body.to_string().contains("whsec_"), "{}", shown.body);

    let refused = h
        .admin(
            "POST",
            &rotate,
            Some(json!({"overlap_seconds": 604_801, "why": 1})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["errors"].as_array().unwrap().len(), 2);
    let missing = h
        .admin("POST", &format!("{hooks}/wh_nope/rotate-secret"), None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let audit = h.last_audit().await;
    assert_eq!(audit["action"], "webhook_secret_rotated");
    assert_eq!(audit["webhook_id"], json!(id));
    assert_eq!(audit["actor"]["id"], "ops");
}

#[tokio::test]
async fn usage_counts_the_keys_requests_from_the_log() {
    let h = harness();
    for _ in 0..3 {
        let listed = h.keyed("GET", "/api/v1/packages", &h.key, None).await;
        assert_eq!(listed.status, StatusCode::OK);
    }
    let usage = format!("/api/stores/{}/usage", h.store);
    let day = h.admin("GET", &usage, None).await;
    assert_eq!(day.status, StatusCode::OK, "{}", day.body);
    let data = &day.body["data"];
    assert_eq!(data["requests"], 3);
    assert_eq!(data["by_status"], json!({"2xx": 3}));
    assert_eq!(data["keys"][0]["requests"], 3);
    assert_eq!(data["keys"][0]["errors"], 0);
    let bad = h
        .admin("GET", &format!("{usage}?since=soon&colour=red"), None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.body["errors"].as_array().unwrap().len(),
        2,
        "{}",
        bad.body
    );
}

/// A key pasted into a URL's path (where an id goes) is masked in the request log, which the
/// management API and the console show: it is a secret, and logs are not its one response.
#[tokio::test]
async fn a_key_in_a_request_path_is_masked_in_the_request_log() {
    let h = harness();
    let hex = "0123456789abcdef".repeat(4);
    for path in [
        format!("/api/v1/packages/{}", h.key),
        format!("/api/v1/orders/{hex}"),
    ] {
        let missing = h.keyed("GET", &path, &h.key, None).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    }
    let logs = h
        .admin("GET", &format!("/api/stores/{}/logs", h.store), None)
        .await;
    let paths: Vec<&str> = logs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["path"].as_str().unwrap())
        .collect();
    let last4 = &h.key[h.key.len() - 4..];
    assert_eq!(
        paths,
        [
            "/api/v1/orders/…cdef".to_owned(),
            format!(
                "/api/v1/packages/{}…{last4}",
                &h.key[..h.key.rfind('_').unwrap() + 1]
            ),
        ],
        "newest first"
    );
}

/// `POST /api/leaks`: the running server's `scan --db --revoke`. A token reads findings of
/// the stores it covers (Stores:View) and stops them (Stores:Edit); another store's live key
/// is `out_of_scope`, neither named nor stopped; a bad body names every problem.
#[tokio::test]
async fn leaked_credentials_pasted_to_the_management_api_are_named_and_stopped() {
    let h = harness();
    let (other, other_key) = h
        .engine
        .create_store(&Actor::admin("t"), NewStore::named("Other"))
        .unwrap();
    let text = format!(
        "key: {}\nsomeone else's: {}\n",
        h.key,
        other_key.credential()
    );
    let issue = |permissions: &[&str]| {
        let token = jwt::issue(
            SECRET,
            "owner",
            permissions,
            json!([h.store]),
            time::OffsetDateTime::now_utc().unix_timestamp(),
            600,
        )
        .unwrap();
        format!("Bearer {token}")
    };
    let viewer = issue(&["Stores:View"]);
    let editor = issue(&["Stores:View", "Stores:Edit"]);
    let post = |bearer: &str, body: Value| {
        let bearer = bearer.to_owned();
        let h = &h;
        async move {
            h.call(
                "POST",
                "/api/leaks",
                &[("Authorization", &bearer)],
                Some(body),
            )
            .await
        }
    };

    let read = post(&viewer, json!({"text": text})).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_wrapper(&read);
    let shown = read.body.to_string();
    assert!(!shown.contains(&h.key) && !shown.contains(&other_key.credential()));
    let findings = read.body["data"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{}", read.body);
    assert_eq!(findings[0]["status"], "live");
    assert_eq!(findings[0]["store_id"], h.store.as_str());
    assert_eq!(findings[0]["line"], 1);
    assert_eq!(findings[1]["status"], "out_of_scope");
    assert_eq!(findings[1]["key_id"], Value::Null);
    assert_eq!(findings[1]["store_id"], Value::Null);

    let refused = post(&viewer, json!({"text": text, "stop": true})).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(refused.body["message"], "Missing permission Stores:Edit");

    let stopped = post(&editor, json!({"text": text, "stop": true})).await;
    assert_eq!(stopped.status, StatusCode::OK, "{}", stopped.body);
    let findings = stopped.body["data"].as_array().unwrap();
    // The store's default key cannot be revoked: it gets a new secret nobody has seen.
    assert_eq!(findings[0]["status"], "secret_replaced");
    assert_eq!(findings[1]["status"], "out_of_scope");
    let gone = h.keyed("GET", "/api/v1/packages", &h.key, None).await;
    assert_eq!(gone.status, StatusCode::UNAUTHORIZED);
    let event = &h.last_audit().await;
    assert_eq!(
        (&event["action"], &event["reason"], &event["actor"]["id"]),
        (&json!("key_regenerated"), &json!("leaked"), &json!("owner"))
    );
    let untouched = h
        .keyed("GET", "/api/v1/packages", &other_key.credential(), None)
        .await;
    assert_eq!(
        untouched.status,
        StatusCode::OK,
        "another store's key is theirs to stop"
    );
    // A platform token (every store) sees and may stop the other store's key.
    let all = h
        .admin("POST", "/api/leaks", Some(json!({"text": text})))
        .await;
    let findings = all.body["data"].as_array().unwrap();
    assert_eq!(findings[1]["status"], "live");
    assert_eq!(findings[1]["store_id"], other.id.as_str());

    let bad = post(&viewer, json!({"stop": "yes", "extra": 1})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let errors: Vec<&str> = bad.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(
        errors,
        [
            "text: is required",
            "stop: expected true or false",
            "extra: unknown field"
        ]
    );
}
