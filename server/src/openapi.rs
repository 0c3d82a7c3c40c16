//! `/openapi.json`: the OpenAPI 3.1 document, generated from [`OPERATIONS`], the table of
//! every route this server answers (a test checks that each entry is served).

use serde_json::{Map, Value, json};

/// How a route is authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// An API key (`X-Api-Key`, `Authorization: Bearer`, or Basic for pair keys).
    Key,
    /// A management JWT (`Authorization: Bearer`).
    Admin,
    /// A customer portal session token (`Authorization: Bearer cps_…`).
    Portal,
    /// None (public).
    Public,
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub auth: Auth,
    pub summary: &'static str,
    /// The request body's schema (a component name).
    pub body: Option<&'static str>,
    /// The success status.
    pub ok: u16,
    /// Query parameters: name and JSON type.
    pub query: &'static [(&'static str, &'static str)],
}

const PAGE: &[(&str, &str)] = &[("limit", "integer"), ("cursor", "string")];
const NONE: &[(&str, &str)] = &[];

macro_rules! op {
    ($method:literal, $path:expr, $auth:ident, $ok:literal, $body:expr, $query:expr, $summary:expr) => {
        Operation {
            method: $method,
            path: $path,
            auth: Auth::$auth,
            summary: $summary,
            body: $body,
            ok: $ok,
            query: $query,
        }
    };
}

macro_rules! entity {
    ($slug:literal, $schema:literal, $name:literal) => {
        [
            op!(
                "get",
                concat!("/api/v1/", $slug),
                Key,
                200,
                None,
                PAGE,
                concat!("List ", $name, " (cursor pages)")
            ),
            op!(
                "post",
                concat!("/api/v1/", $slug),
                Key,
                201,
                Some($schema),
                NONE,
                concat!("Create a ", $name)
            ),
            op!(
                "get",
                concat!("/api/v1/", $slug, "/{id}"),
                Key,
                200,
                None,
                NONE,
                concat!("Read a ", $name)
            ),
            op!(
                "patch",
                concat!("/api/v1/", $slug, "/{id}"),
                Key,
                200,
                Some("Patch"),
                NONE,
                concat!("Change a ", $name)
            ),
            op!(
                "delete",
                concat!("/api/v1/", $slug, "/{id}"),
                Key,
                200,
                None,
                NONE,
                concat!("Delete a ", $name, " (where the area allows)")
            ),
        ]
    };
}

/// Every route of the server.
pub fn operations() -> Vec<Operation> {
    let mut ops = vec![
        op!("get", "/healthz", Public, 200, None, NONE, "Liveness"),
        op!(
            "get",
            "/api/meta",
            Admin,
            200,
            None,
            NONE,
            "Areas and the actions each offers, key formats, limit algorithms, webhook events"
        ),
        op!(
            "get",
            "/metrics",
            Public,
            200,
            None,
            NONE,
            "Prometheus metrics"
        ),
        op!(
            "get",
            "/openapi.json",
            Public,
            200,
            None,
            NONE,
            "This document"
        ),
        op!(
            "get",
            "/api/v1/api-keys",
            Key,
            200,
            None,
            NONE,
            "List the keys of the caller's environment"
        ),
        op!(
            "post",
            "/api/v1/api-keys",
            Key,
            201,
            Some("NewKey"),
            NONE,
            "Create a key (never more powerful than the caller)"
        ),
        op!(
            "delete",
            "/api/v1/api-keys/{id}",
            Key,
            200,
            None,
            NONE,
            "Revoke a key"
        ),
        op!(
            "post",
            "/api/v1/api-keys/{id}/regenerate",
            Key,
            200,
            None,
            NONE,
            "Issue a new secret for a key"
        ),
        op!(
            "post",
            "/api/v1/auth/portal-sessions",
            Key,
            201,
            Some("PortalSession"),
            NONE,
            "Open a customer portal session (Customers:View)"
        ),
        op!(
            "get",
            "/api/v1/portal/orders",
            Portal,
            200,
            None,
            PAGE,
            "The session customer's orders"
        ),
        op!(
            "get",
            "/api/v1/portal/subscriptions",
            Portal,
            200,
            None,
            PAGE,
            "The session customer's subscriptions"
        ),
        op!(
            "get",
            "/api/v1/storefront/{store_id}/packages",
            Public,
            200,
            None,
            PAGE,
            "Active packages of a store"
        ),
        op!(
            "get",
            "/api/v1/storefront/{store_id}/categories",
            Public,
            200,
            None,
            PAGE,
            "Categories of a store"
        ),
        op!(
            "get",
            "/api/stores",
            Admin,
            200,
            None,
            NONE,
            "List the stores the token covers"
        ),
        op!(
            "post",
            "/api/stores",
            Admin,
            201,
            Some("NewStore"),
            NONE,
            "Create a store and its default key"
        ),
        op!(
            "get",
            "/api/stores/{store_id}",
            Admin,
            200,
            None,
            NONE,
            "Read a store's settings"
        ),
        op!(
            "patch",
            "/api/stores/{store_id}",
            Admin,
            200,
            Some("StorePatch"),
            NONE,
            "Change a store's settings"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/api-keys",
            Admin,
            200,
            None,
            NONE,
            "List a store's keys (masked)"
        ),
        op!(
            "post",
            "/api/stores/{store_id}/api-keys",
            Admin,
            201,
            Some("NewKey"),
            NONE,
            "Create a key (secret shown once)"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/api-keys/{key_id}",
            Admin,
            200,
            None,
            NONE,
            "Read a key (masked)"
        ),
        op!(
            "patch",
            "/api/stores/{store_id}/api-keys/{key_id}",
            Admin,
            200,
            Some("KeyPatch"),
            NONE,
            "Change a key"
        ),
        op!(
            "delete",
            "/api/stores/{store_id}/api-keys/{key_id}",
            Admin,
            200,
            None,
            NONE,
            "Revoke a key"
        ),
        op!(
            "post",
            "/api/stores/{store_id}/api-keys/{key_id}/regenerate",
            Admin,
            200,
            None,
            NONE,
            "Issue a new secret for a key"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/logs",
            Admin,
            200,
            None,
            &[
                ("key_id", "string"),
                ("status", "integer"),
                ("since", "string"),
                ("until", "string"),
                ("limit", "integer")
            ],
            "The request log, newest first"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/audit",
            Admin,
            200,
            None,
            &[("limit", "integer")],
            "Audit trail (keys, store settings, webhooks), newest first"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/webhooks",
            Admin,
            200,
            None,
            NONE,
            "List webhook endpoints"
        ),
        op!(
            "post",
            "/api/stores/{store_id}/webhooks",
            Admin,
            201,
            Some("NewWebhook"),
            NONE,
            "Register an endpoint (secret shown once)"
        ),
        op!(
            "patch",
            "/api/stores/{store_id}/webhooks/{webhook_id}",
            Admin,
            200,
            Some("WebhookPatch"),
            NONE,
            "Change an endpoint"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/webhooks/{webhook_id}",
            Admin,
            200,
            None,
            NONE,
            "One endpoint (without its secret)"
        ),
        op!(
            "delete",
            "/api/stores/{store_id}/webhooks/{webhook_id}",
            Admin,
            200,
            None,
            NONE,
            "Delete an endpoint and its deliveries"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/webhooks/{webhook_id}/deliveries",
            Admin,
            200,
            None,
            &[("limit", "integer")],
            "Deliveries with every attempt, newest first"
        ),
        op!(
            "post",
            "/api/stores/{store_id}/webhooks/{webhook_id}/test",
            Admin,
            200,
            None,
            NONE,
            "Send a signed webhook.test event now: {status_code, body, error, duration_ms}"
        ),
    ];
    for group in [
        entity!("packages", "NewPackage", "package"),
        entity!("categories", "NewCategory", "category"),
        entity!("coupons", "NewCoupon", "coupon"),
        entity!("sales", "NewSale", "sale"),
        entity!("gift-cards", "NewGiftCard", "gift card"),
        entity!("orders", "NewOrder", "order"),
        entity!("customers", "NewCustomer", "customer"),
        entity!("bans", "NewBan", "ban"),
        entity!("subscriptions", "Patch", "subscription"),
        entity!("products", "NewProduct", "product"),
    ] {
        ops.extend(group);
    }
    ops
}

fn money() -> Value {
    json!({"type": "object", "required": ["amount", "currency"], "properties": {
        "amount": {"type": "integer", "minimum": 0}, "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"}}})
}

fn discount() -> Value {
    json!({"type": "object", "required": ["type", "value"], "properties": {
        "type": {"enum": ["percentage", "fixed"]}, "value": {"type": "integer", "minimum": 0},
        "currency": {"type": "string"}}})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// Request body schemas.
fn schemas() -> Map<String, Value> {
    let time = json!({"type": "string", "format": "date-time"});
    let permissions = json!({"oneOf": [
        {"type": "object", "additionalProperties": {"type": "array", "items": {"enum": ["View", "Edit", "Delete"]}}},
        {"type": "array", "items": {"type": "string"}},
        {"const": "*"}]});
    let rate_limit = json!({"oneOf": [{"type": "integer"}, {"type": "null"}, {"type": "object", "required": ["limit"], "properties": {
        "limit": {"type": "integer", "minimum": 1}, "window_seconds": {"type": "integer", "minimum": 1, "maximum": 86400},
        "algorithm": {"enum": ["fixed_window", "sliding_window", "token_bucket"]}}}]});
    let store_settings = json!({
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "api_enabled": {"type": "boolean"},
        "plan": {"type": "object", "properties": {"tier": {"enum": ["free", "pro"]}, "expires_at": time}},
        "require_pro": {"type": "boolean"},
        "key_prefix": {"type": "string", "pattern": "^[a-z]{2,8}$"},
        "default_rate_limit": rate_limit,
        "max_scoped_keys": {"type": "integer", "minimum": 0},
        "default_key_ttl_days": {"type": ["integer", "null"], "minimum": 1},
        "permissions_editable": {"type": "boolean"},
        "environments": {"type": "array", "items": {"type": "string"}},
        "log_retention_days": {"type": "integer", "minimum": 1, "maximum": 365}});
    let key_fields = json!({
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": ["string", "null"]},
        "permissions": permissions,
        "format": {"enum": ["token", "hex", "pair"]},
        "environment": {"type": "string"},
        "rate_limit": rate_limit,
        "ip_allowlist": {"type": "array", "items": {"type": "string"}},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        "meta": {"type": "object"},
        "active": {"type": "boolean"}});
    let mut out = Map::new();
    let mut put = |name: &str, schema: Value| {
        out.insert(name.to_owned(), schema);
    };
    put("Patch", json!({"type": "object"}));
    put("NewStore", object(&["name"], store_settings.clone()));
    put("StorePatch", object(&[], store_settings));
    put(
        "NewKey",
        object(&["name", "permissions"], key_fields.clone()),
    );
    put("KeyPatch", object(&[], key_fields));
    put(
        "PortalSession",
        object(
            &["customer_id"],
            json!({"customer_id": {"type": "string"}, "ttl_seconds": {"type": "integer"}}),
        ),
    );
    put(
        "NewWebhook",
        object(
            &["url", "events"],
            json!({"url": {"type": "string", "format": "uri"},
        "events": {"type": "array", "items": {"enum": latchkey::WEBHOOK_EVENTS}}, "active": {"type": "boolean"}}),
        ),
    );
    put(
        "WebhookPatch",
        object(
            &[],
            json!({"url": {"type": "string", "format": "uri"},
        "events": {"type": "array", "items": {"enum": latchkey::WEBHOOK_EVENTS}}, "active": {"type": "boolean"}}),
        ),
    );
    put(
        "NewCategory",
        object(
            &["name"],
            json!({"name": {"type": "string"}, "description": {"type": "string"}, "parent_id": {"type": "string"}}),
        ),
    );
    put(
        "NewPackage",
        object(
            &["name", "price"],
            json!({"name": {"type": "string"}, "description": {"type": "string"},
        "price": money(), "category_id": {"type": "string"}, "type": {"enum": ["single", "subscription"]}, "active": {"type": "boolean"}}),
        ),
    );
    put(
        "NewProduct",
        object(
            &["sku", "name", "price"],
            json!({"sku": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"},
        "name": {"type": "string"}, "price": money(), "stock": {"type": "integer", "minimum": 0}, "category_id": {"type": "string"}, "active": {"type": "boolean"}}),
        ),
    );
    put(
        "NewCoupon",
        object(
            &["code", "discount"],
            json!({"code": {"type": "string", "pattern": "^[A-Za-z0-9_-]{3,32}$"},
        "discount": discount(), "starts_at": time, "expires_at": time, "max_uses": {"type": "integer", "minimum": 1}}),
        ),
    );
    put(
        "NewSale",
        object(
            &["name", "discount", "package_ids", "starts_at"],
            json!({"name": {"type": "string"},
        "discount": discount(), "package_ids": {"type": "array", "items": {"type": "string"}}, "starts_at": time, "ends_at": time}),
        ),
    );
    put(
        "NewGiftCard",
        object(
            &["balance"],
            json!({"balance": money(), "note": {"type": "string"}, "expires_at": time}),
        ),
    );
    put(
        "NewCustomer",
        object(
            &["email"],
            json!({"email": {"type": "string", "format": "email"}, "name": {"type": "string"}}),
        ),
    );
    put(
        "NewBan",
        object(
            &["type", "value"],
            json!({"type": {"enum": ["user", "ip", "email"]}, "value": {"type": "string"},
        "reason": {"type": "string"}, "expires_at": time}),
        ),
    );
    put(
        "NewOrder",
        object(
            &["items"],
            json!({"customer_id": {"type": "string"}, "email": {"type": "string", "format": "email"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"package_id": {"type": "string"},
            "product_id": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}}}},
        "coupon_code": {"type": "string"}}),
        ),
    );
    put(
        "Wrapper",
        object(
            &["success", "data", "message", "errors"],
            json!({"success": {"type": "boolean"}, "data": {},
        "message": {"type": ["string", "null"]}, "errors": {"type": "array", "items": {"type": "string"}},
        "code": {"type": "string"}}),
        ),
    );
    out
}

fn security(auth: Auth) -> Value {
    match auth {
        Auth::Key => json!([{"apiKey": []}, {"bearerKey": []}, {"basicPair": []}]),
        Auth::Admin => json!([{"adminToken": []}]),
        Auth::Portal => json!([{"portalSession": []}]),
        Auth::Public => json!([]),
    }
}

/// The OpenAPI document.
pub fn document() -> Value {
    let wrapper = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Wrapper"}}});
    let mut paths = Map::new();
    for op in operations() {
        let mut parameters: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(
            op.query
                .iter()
                .map(|(name, kind)| json!({"name": name, "in": "query", "required": false, "schema": {"type": kind}})),
        );
        let mut responses = Map::new();
        let ok = if op.path == "/metrics" {
            json!({"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}})
        } else if op.path == "/openapi.json" {
            json!({"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}})
        } else {
            json!({"description": "Success", "content": wrapper})
        };
        responses.insert(op.ok.to_string(), ok);
        let errors: &[u16] = match op.auth {
            Auth::Public if op.path.starts_with("/api/") => &[400, 404, 429],
            Auth::Public => &[],
            _ => &[400, 401, 403, 404, 405, 409, 413, 429],
        };
        for status in errors {
            responses.insert(
                status.to_string(),
                json!({"description": "Refused", "content": wrapper}),
            );
        }
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '-', '.'], "_")),
            "parameters": parameters,
            "responses": responses,
            "security": security(op.auth),
        });
        if let Some(schema) = op.body {
            operation["requestBody"] = json!({"required": true, "content": {"application/json": {
                "schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
        }
        let entry = paths
            .entry(op.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Latchkey", "version": env!("CARGO_PKG_VERSION"),
                 "description": "API keys for commerce platforms (SPEC §7). Every body is the wrapper {success, data, message, errors, code}."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "bearerKey": {"type": "http", "scheme": "bearer"},
                "basicPair": {"type": "http", "scheme": "basic"},
                "adminToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "portalSession": {"type": "http", "scheme": "bearer"}
            }
        }
    })
}
