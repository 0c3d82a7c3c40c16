//! `/openapi.json`: the OpenAPI 3.1 document, generated from [`operations`], the table of
//! every route this server answers (a test checks that each entry is served), and the schemas
//! of its request bodies and answers (`tests/schema/` checks the server against them: fuzzed
//! input through schemathesis, and the seeds' flows with real data).

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
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: &'static str,
    pub path: String,
    pub auth: Auth,
    pub summary: String,
    /// The request body's schema (a component name).
    pub body: Option<String>,
    /// Whether a request may leave the body out (it then counts as `{}`).
    pub body_optional: bool,
    /// The success status.
    pub ok: u16,
    /// Query parameters.
    pub query: &'static [Param],
    /// What the success response's `data` holds.
    pub data: Data,
    /// Takes an `Idempotency-Key` header (entity creates).
    pub idempotent: bool,
}

/// A success response's `data`: a component schema, a list of them, or a cursor page
/// (`{items, next_cursor}`) of them.
#[derive(Debug, Clone)]
pub enum Data {
    One(String),
    List(String),
    Page(String),
    /// Not the wrapper (`/metrics`, `/openapi.json`).
    Raw,
}

impl Data {
    fn one(schema: &str) -> Data {
        Data::One(schema.to_owned())
    }

    fn list(schema: &str) -> Data {
        Data::List(schema.to_owned())
    }

    fn page(schema: &str) -> Data {
        Data::Page(schema.to_owned())
    }
}

/// A query parameter and what it accepts (as the handlers check it).
#[derive(Debug, Clone, Copy)]
pub enum Param {
    /// `limit`: 1 to this many.
    Limit(u64),
    /// `cursor`: the `next_cursor` of a previous page.
    Cursor,
    /// A key id to filter by.
    KeyId,
    /// An HTTP status, 100–599.
    Status,
    /// An RFC 3339 date-time bound (`since`, `until`).
    Time(&'static str),
    /// The customer whose portal sessions to end (required).
    CustomerId,
}

impl Param {
    fn name(self) -> &'static str {
        match self {
            Param::Limit(_) => "limit",
            Param::Cursor => "cursor",
            Param::KeyId => "key_id",
            Param::Status => "status",
            Param::Time(name) => name,
            Param::CustomerId => "customer_id",
        }
    }

    fn required(self) -> bool {
        matches!(self, Param::CustomerId)
    }

    fn schema(self) -> Value {
        match self {
            Param::Limit(max) => json!({"type": "integer", "minimum": 1, "maximum": max}),
            Param::Cursor | Param::KeyId => json!({"type": "string"}),
            Param::CustomerId => json!({"type": "string", "minLength": 1}),
            Param::Status => json!({"type": "integer", "minimum": 100, "maximum": 599}),
            Param::Time(_) => json!({"type": "string", "format": "date-time"}),
        }
    }
}

const PAGE: &[Param] = &[Param::Limit(latchkey::MAX_PAGE as u64), Param::Cursor];
const NONE: &[Param] = &[];
const CUSTOMER: &[Param] = &[Param::CustomerId];
const AUDIT: &[Param] = &[Param::Limit(latchkey::MAX_LOG_READ as u64)];
const LOGS: &[Param] = &[
    Param::KeyId,
    Param::Status,
    Param::Time("since"),
    Param::Time("until"),
    Param::Limit(latchkey::MAX_LOG_READ as u64),
];
const USAGE: &[Param] = &[Param::Time("since"), Param::Time("until")];

macro_rules! op {
    ($method:literal, $path:expr, $auth:ident, $ok:literal, $body:expr, $query:expr, $data:expr, $summary:expr) => {
        Operation {
            method: $method,
            path: $path.into(),
            auth: Auth::$auth,
            summary: $summary.into(),
            body: $body.map(str::to_owned),
            body_optional: false,
            ok: $ok,
            query: $query,
            data: $data,
            idempotent: false,
        }
    };
}

/// The routes of one entity area; `patch` and `delete` only where the area offers Edit and
/// Delete, and no `post` for subscriptions (created by orders; SPEC §2).
fn entity(ops: &mut Vec<Operation>, area: latchkey::Area, schema: &str, name: &str) {
    let list = format!("/api/v1/{}", area.route_segment());
    let one = format!("{list}/{{id}}");
    let offers = |action| area.actions().contains(&action);
    ops.push(op!(
        "get",
        list.clone(),
        Key,
        200,
        None,
        PAGE,
        Data::page(schema),
        format!(
            "List {} (cursor pages, oldest first)",
            area.route_segment().replace('-', " ")
        )
    ));
    if offers(latchkey::Action::Edit) && area != latchkey::Area::Subscriptions {
        ops.push(Operation {
            idempotent: true,
            ..op!(
                "post",
                list,
                Key,
                201,
                Some(format!("New{schema}").as_str()),
                NONE,
                Data::one(schema),
                format!("Create a {name}")
            )
        });
    }
    ops.push(op!(
        "get",
        one.clone(),
        Key,
        200,
        None,
        NONE,
        Data::one(schema),
        format!("Read a {name}")
    ));
    if offers(latchkey::Action::Edit) {
        ops.push(op!(
            "patch",
            one.clone(),
            Key,
            200,
            Some(format!("{schema}Patch").as_str()),
            NONE,
            Data::one(schema),
            format!("Change a {name}")
        ));
    }
    if offers(latchkey::Action::Delete) {
        ops.push(op!(
            "delete",
            one,
            Key,
            200,
            None,
            NONE,
            Data::one("Deleted"),
            format!("Delete a {name}")
        ));
    }
}

/// Every route of the server.
pub fn operations() -> Vec<Operation> {
    let deliveries: &[Param] = &[Param::Limit(latchkey::MAX_DELIVERIES as u64)];
    let mut ops = vec![
        op!(
            "get",
            "/healthz",
            Public,
            200,
            None,
            NONE,
            Data::one("Health"),
            "Liveness"
        ),
        op!(
            "get",
            "/api/meta",
            Admin,
            200,
            None,
            NONE,
            Data::one("Meta"),
            "Areas and the actions each offers, key formats, limit algorithms, webhook events"
        ),
        op!(
            "get",
            "/metrics",
            Public,
            200,
            None,
            NONE,
            Data::Raw,
            "Prometheus metrics"
        ),
        op!(
            "get",
            "/openapi.json",
            Public,
            200,
            None,
            NONE,
            Data::Raw,
            "This document"
        ),
        op!(
            "get",
            "/api/v1/api-keys",
            Key,
            200,
            None,
            NONE,
            Data::list("Key"),
            "List the keys of the caller's environment"
        ),
        op!(
            "get",
            latchkey::CURRENT_KEY_PATH,
            Key,
            200,
            None,
            NONE,
            Data::one("Key"),
            "The caller's own key: its permissions, limit, expiry and last use (any valid key may read it)"
        ),
        op!(
            "post",
            "/api/v1/api-keys",
            Key,
            201,
            Some("NewKey"),
            NONE,
            Data::one("CreatedKey"),
            "Create a key (never more powerful than the caller)"
        ),
        op!(
            "delete",
            "/api/v1/api-keys/{id}",
            Key,
            200,
            None,
            NONE,
            Data::one("Revoked"),
            "Revoke a key"
        ),
        Operation {
            body_optional: true,
            ..op!(
                "post",
                "/api/v1/api-keys/{id}/regenerate",
                Key,
                200,
                Some("Regeneration"),
                NONE,
                Data::one("CreatedKey"),
                "Issue a new secret for a key (shown once); the old one stops at once, or after overlap_seconds"
            )
        },
        op!(
            "post",
            "/api/v1/auth/portal-sessions",
            Key,
            201,
            Some("NewPortalSession"),
            NONE,
            Data::one("PortalSession"),
            "Open a customer portal session (Customers:View)"
        ),
        op!(
            "get",
            "/api/v1/portal/orders",
            Portal,
            200,
            None,
            PAGE,
            Data::page("Order"),
            "The session customer's orders"
        ),
        op!(
            "get",
            "/api/v1/portal/subscriptions",
            Portal,
            200,
            None,
            PAGE,
            Data::page("Subscription"),
            "The session customer's subscriptions"
        ),
        op!(
            "get",
            "/api/v1/storefront/{store_id}/packages",
            Public,
            200,
            None,
            PAGE,
            Data::page("Package"),
            "Active packages of a store"
        ),
        op!(
            "get",
            "/api/v1/storefront/{store_id}/categories",
            Public,
            200,
            None,
            PAGE,
            Data::page("Category"),
            "Categories of a store"
        ),
        op!(
            "get",
            "/api/stores",
            Admin,
            200,
            None,
            NONE,
            Data::list("Store"),
            "List the stores the token covers"
        ),
        op!(
            "post",
            "/api/stores",
            Admin,
            201,
            Some("NewStore"),
            NONE,
            Data::one("CreatedStore"),
            "Create a store and its default key"
        ),
        op!(
            "get",
            "/api/stores/{store_id}",
            Admin,
            200,
            None,
            NONE,
            Data::one("Store"),
            "Read a store's settings"
        ),
        op!(
            "patch",
            "/api/stores/{store_id}",
            Admin,
            200,
            Some("StorePatch"),
            NONE,
            Data::one("Store"),
            "Change a store's settings"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/api-keys",
            Admin,
            200,
            None,
            NONE,
            Data::list("Key"),
            "List a store's keys (masked)"
        ),
        op!(
            "post",
            "/api/stores/{store_id}/api-keys",
            Admin,
            201,
            Some("NewKey"),
            NONE,
            Data::one("CreatedKey"),
            "Create a key (secret shown once)"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/api-keys/{key_id}",
            Admin,
            200,
            None,
            NONE,
            Data::one("Key"),
            "Read a key (masked)"
        ),
        op!(
            "patch",
            "/api/stores/{store_id}/api-keys/{key_id}",
            Admin,
            200,
            Some("KeyPatch"),
            NONE,
            Data::one("Key"),
            "Change a key"
        ),
        op!(
            "delete",
            "/api/stores/{store_id}/api-keys/{key_id}",
            Admin,
            200,
            None,
            NONE,
            Data::one("Revoked"),
            "Revoke a key"
        ),
        Operation {
            body_optional: true,
            ..op!(
                "post",
                "/api/stores/{store_id}/api-keys/{key_id}/regenerate",
                Admin,
                200,
                Some("Regeneration"),
                NONE,
                Data::one("CreatedKey"),
                "Issue a new secret for a key (shown once); the old one stops at once, or after overlap_seconds"
            )
        },
        op!(
            "post",
            "/api/leaks",
            Admin,
            200,
            Some("LeakCheck"),
            NONE,
            Data::list("LeakFinding"),
            "Find leaked credentials in a text: which key each names and whether it is live, for the stores the token covers; stop: true (Stores:Edit) stops the live ones"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/logs",
            Admin,
            200,
            None,
            LOGS,
            Data::list("LogEntry"),
            "The request log, newest first"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/audit",
            Admin,
            200,
            None,
            AUDIT,
            Data::list("AuditEvent"),
            "Audit trail (keys, store settings, webhooks), newest first"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/usage",
            Admin,
            200,
            None,
            USAGE,
            Data::one("Usage"),
            format!(
                "Requests per key in a period of at most {} days (default: the day before until, which defaults to now), from the request log",
                latchkey::MAX_USAGE_PERIOD.whole_days()
            )
        ),
        op!(
            "get",
            "/api/stores/{store_id}/webhooks",
            Admin,
            200,
            None,
            NONE,
            Data::list("Webhook"),
            "List webhook endpoints"
        ),
        op!(
            "post",
            "/api/stores/{store_id}/webhooks",
            Admin,
            201,
            Some("NewWebhook"),
            NONE,
            Data::one("CreatedWebhook"),
            "Register an endpoint (secret shown once)"
        ),
        op!(
            "patch",
            "/api/stores/{store_id}/webhooks/{webhook_id}",
            Admin,
            200,
            Some("WebhookPatch"),
            NONE,
            Data::one("Webhook"),
            "Change an endpoint"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/webhooks/{webhook_id}",
            Admin,
            200,
            None,
            NONE,
            Data::one("Webhook"),
            "One endpoint (without its secret)"
        ),
        op!(
            "delete",
            "/api/stores/{store_id}/webhooks/{webhook_id}",
            Admin,
            200,
            None,
            NONE,
            Data::one("Deleted"),
            "Delete an endpoint and its deliveries"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/portal-sessions",
            Admin,
            200,
            None,
            NONE,
            Data::list("PortalSessionInfo"),
            "Live customer portal sessions, soonest to expire first (never their tokens)"
        ),
        op!(
            "delete",
            "/api/stores/{store_id}/portal-sessions",
            Admin,
            200,
            None,
            CUSTOMER,
            Data::one("PortalSessionsEnded"),
            "End every live portal session of one customer (audited; none is not an error)"
        ),
        op!(
            "delete",
            "/api/stores/{store_id}/portal-sessions/{session_id}",
            Admin,
            200,
            None,
            NONE,
            Data::one("PortalSessionsEnded"),
            "End one live portal session (audited)"
        ),
        op!(
            "get",
            "/api/stores/{store_id}/webhooks/{webhook_id}/deliveries",
            Admin,
            200,
            None,
            deliveries,
            Data::list("Delivery"),
            "Deliveries with every attempt, newest first"
        ),
        op!(
            "post",
            "/api/stores/{store_id}/webhooks/{webhook_id}/test",
            Admin,
            200,
            None,
            NONE,
            Data::one("WebhookTest"),
            "Send a signed webhook.test event now: {status_code, body, error, duration_ms}"
        ),
        op!(
            "post",
            "/api/stores/{store_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
            Admin,
            200,
            None,
            NONE,
            Data::one("Delivery"),
            "Send a finished delivery once more, now (409 while it is pending or the endpoint is disabled)"
        ),
        Operation {
            body_optional: true,
            ..op!(
                "post",
                "/api/stores/{store_id}/webhooks/{webhook_id}/rotate-secret",
                Admin,
                200,
                Some("SecretRotation"),
                NONE,
                Data::one("CreatedWebhook"),
                "Replace the signing secret (the new one shown once); the old one also signs for overlap_seconds"
            )
        },
    ];
    use latchkey::Area;
    for (area, schema, name) in [
        (Area::Packages, "Package", "package"),
        (Area::Categories, "Category", "category"),
        (Area::Coupons, "Coupon", "coupon"),
        (Area::Sales, "Sale", "sale"),
        (Area::GiftCards, "GiftCard", "gift card"),
        (Area::Orders, "Order", "order"),
        (Area::Customers, "Customer", "customer"),
        (Area::Bans, "Ban", "ban"),
        (Area::Subscriptions, "Subscription", "subscription"),
        (Area::Products, "Product", "product"),
    ] {
        entity(&mut ops, area, schema, name);
    }
    ops
}

fn string(min: usize, max: usize) -> Value {
    json!({"type": "string", "minLength": min, "maxLength": max})
}

fn nullable(schema: Value) -> Value {
    json!({"anyOf": [schema, {"type": "null"}]})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn time() -> Value {
    json!({"type": "string", "format": "date-time"})
}

/// A request body: the listed fields only (unknown fields are refused with a 400).
fn input(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties,
           "additionalProperties": false})
}

/// A response object: every listed field is always present (null when unset), except
/// those named in `optional`, and no other.
fn output(optional: &[&str], properties: Value) -> Value {
    let required: Vec<&String> = properties
        .as_object()
        .map(|map| {
            map.keys()
                .filter(|k| !optional.contains(&k.as_str()))
                .collect()
        })
        .unwrap_or_default();
    json!({"type": "object", "required": required, "properties": properties,
           "additionalProperties": false})
}

/// Merges the properties of `extra` into the object schema `base` (required where `extra`
/// requires them).
fn extend(mut base: Value, extra: Value) -> Value {
    if let (Some(props), Some(more)) = (
        base["properties"].as_object().cloned(),
        extra["properties"].as_object(),
    ) {
        let mut props = props;
        props.extend(more.clone());
        base["properties"] = Value::Object(props);
    }
    if let (Some(required), Some(more)) = (
        base["required"].as_array().cloned(),
        extra["required"].as_array(),
    ) {
        let mut required = required;
        required.extend(more.iter().cloned());
        base["required"] = Value::Array(required);
    }
    base
}

/// A body for PATCH: the fields of `create`, none required; those in `nullable` may be null
/// to clear them.
fn patch_of(create: &Value, nullable_fields: &[&str]) -> Value {
    let mut patch = create.clone();
    patch["required"] = json!([]);
    if let Some(props) = patch["properties"].as_object_mut() {
        for name in nullable_fields {
            if let Some(schema) = props.get_mut(*name) {
                *schema = nullable(schema.take());
            }
        }
    }
    patch
}

fn money() -> Value {
    input(
        &["amount", "currency"],
        json!({"amount": {"type": "integer", "minimum": 0, "maximum": latchkey::MAX_AMOUNT},
               "currency": {"type": "string", "description": "ISO 4217 code, any case"}}),
    )
}

fn discount() -> Value {
    input(
        &["type", "value"],
        json!({"type": {"enum": ["percentage", "fixed"]},
               "value": {"type": "integer", "minimum": 0, "maximum": latchkey::MAX_AMOUNT,
                         "description": "0–100 for a percentage; minor units for a fixed amount"},
               "currency": {"type": "string", "description": "ISO 4217; fixed discounts only"}}),
    )
}

/// An id of an entity kind (`pkg_…`): the shape only; existence is checked by the route.
fn id_of(prefix: &str) -> Value {
    json!({"type": "string", "pattern": format!("^{prefix}_[A-Za-z0-9]{{20}}$")})
}

fn rate_limit() -> Value {
    json!({"oneOf": [
        {"type": "integer", "minimum": latchkey::MIN_PER_MINUTE, "maximum": latchkey::MAX_PER_MINUTE,
         "description": "requests per minute"},
        input(&["limit"], json!({
            "limit": {"type": "integer", "minimum": 1},
            "window_seconds": {"type": "integer", "minimum": 1, "maximum": latchkey::MAX_WINDOW_SECONDS},
            "algorithm": {"enum": ["fixed_window", "sliding_window", "token_bucket"]}}))],
        "description": "A limit of 1–10,000 requests per minute-equivalent"})
}

fn permissions_input() -> Value {
    json!({"oneOf": [
        {"type": "object", "additionalProperties": {"type": "array", "items": {"enum": ["View", "Edit", "Delete"]}},
         "description": "{Area: [Action]}"},
        {"type": "array", "items": {"type": "string"}, "description": "scope strings: orders:read, orders:write"},
        {"const": "*", "description": "everything"}]})
}

/// Request body schemas.
fn bodies(out: &mut Map<String, Value>) {
    let mut put = |name: &str, schema: Value| {
        out.insert(name.to_owned(), schema);
    };
    let store = input(
        &["name"],
        json!({
            "name": string(1, latchkey::MAX_STORE_NAME_CHARS),
            "api_enabled": {"type": "boolean"},
            "plan": input(&["tier"], json!({"tier": {"enum": ["free", "pro"]}, "expires_at": nullable(time())})),
            "require_pro": {"type": "boolean"},
            "key_prefix": {"type": "string", "pattern": "^[a-z]{2,8}$"},
            "default_rate_limit": nullable(rate_limit()),
            "max_scoped_keys": {"type": "integer", "minimum": 0, "maximum": latchkey::MAX_SCOPED_KEYS_LIMIT},
            "default_key_ttl_days": nullable(json!({"type": "integer", "minimum": 1, "maximum": latchkey::MAX_KEY_TTL_DAYS})),
            "permissions_editable": {"type": "boolean"},
            "environments": {"type": "array", "minItems": 1, "maxItems": latchkey::MAX_ENVIRONMENTS,
                             "items": {"type": "string", "pattern": "^[a-z0-9_-]{1,32}$"}},
            "log_retention_days": {"type": "integer", "minimum": 1, "maximum": latchkey::MAX_LOG_RETENTION_DAYS}}),
    );
    put(
        "StorePatch",
        patch_of(&store, &["default_rate_limit", "default_key_ttl_days"]),
    );
    put("NewStore", store);
    let key = input(
        &["name", "permissions"],
        json!({
            "name": string(1, latchkey::MAX_KEY_NAME_CHARS),
            "description": nullable(string(0, latchkey::MAX_DESCRIPTION_CHARS)),
            "permissions": permissions_input(),
            "format": {"enum": ["token", "hex", "pair"]},
            "environment": {"type": "string"},
            "rate_limit": nullable(rate_limit()),
            "ip_allowlist": nullable(json!({"type": "array", "maxItems": latchkey::MAX_ALLOWLIST_ENTRIES,
                                            "items": {"type": "string", "description": "an address or CIDR"}})),
            "expires_at": nullable(time()),
            "meta": {"type": "object", "description": "at most 4,096 bytes of JSON"},
            "active": {"type": "boolean"}}),
    );
    let mut key_patch = patch_of(&key, &[]);
    if let Some(props) = key_patch["properties"].as_object_mut() {
        // Fixed at creation.
        props.remove("format");
        props.remove("environment");
        let mut overlap_end = nullable(time());
        overlap_end["description"] = json!(
            "ends a regeneration's overlap early: null stops the old secret now; a time may only shorten it"
        );
        props.insert("previous_expires_at".into(), overlap_end);
    }
    put("KeyPatch", key_patch);
    put("NewKey", key);
    put(
        "NewPortalSession",
        input(
            &["customer_id"],
            json!({"customer_id": {"type": "string"},
                   "ttl_seconds": {"type": "integer", "minimum": 60, "maximum": latchkey::MAX_PORTAL_TTL_SECONDS}}),
        ),
    );
    let webhook = input(
        &["url", "events"],
        json!({"url": {"type": "string", "description": "http or https; internal addresses refused"},
               "events": {"type": "array", "minItems": 1, "items": {"enum": latchkey::WEBHOOK_EVENTS}},
               "active": {"type": "boolean"}}),
    );
    put("WebhookPatch", patch_of(&webhook, &[]));
    put("NewWebhook", webhook);
    put(
        "SecretRotation",
        input(
            &[],
            json!({"overlap_seconds": {"type": "integer", "minimum": 0, "maximum": latchkey::MAX_SECRET_OVERLAP_SECONDS,
                   "description": "how long the old secret also signs deliveries (default a day)"}}),
        ),
    );

    put(
        "LeakCheck",
        input(
            &["text"],
            json!({"text": {"type": "string", "description": "text to search: a file, a snippet, a support ticket"},
                   "stop": {"type": "boolean", "description": "stop the live credentials found (default false)"}}),
        ),
    );
    put(
        "Regeneration",
        input(
            &[],
            json!({"overlap_seconds": {"type": "integer", "minimum": 0, "maximum": latchkey::MAX_KEY_OVERLAP.whole_seconds(),
                   "description": "how long the old secret keeps working beside the new one (default 0: it stops at once)"}}),
        ),
    );

    let name = || string(1, latchkey::ENTITY_NAME_MAX_CHARS);
    let description = || string(0, latchkey::ENTITY_DESCRIPTION_MAX_CHARS);
    let category = input(
        &["name"],
        json!({"name": name(), "description": description(), "parent_id": id_of("cat")}),
    );
    put(
        "CategoryPatch",
        patch_of(&category, &["description", "parent_id"]),
    );
    put("NewCategory", category);
    let package = input(
        &["name", "price"],
        json!({"name": name(), "description": description(), "price": money(),
               "category_id": id_of("cat"), "type": {"enum": ["single", "subscription"]},
               "active": {"type": "boolean"}}),
    );
    put(
        "PackagePatch",
        patch_of(&package, &["description", "category_id"]),
    );
    put("NewPackage", package);
    let product = input(
        &["sku", "name", "price"],
        json!({"sku": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "name": name(),
               "price": money(), "stock": {"type": "integer", "minimum": 0, "maximum": latchkey::ENTITY_COUNT_MAX},
               "category_id": id_of("cat"), "active": {"type": "boolean"}}),
    );
    put("ProductPatch", patch_of(&product, &["category_id"]));
    put("NewProduct", product);
    let coupon = input(
        &["code", "discount"],
        json!({"code": {"type": "string", "pattern": "^[A-Za-z0-9_-]{3,32}$"}, "discount": discount(),
               "starts_at": time(), "expires_at": time(),
               "max_uses": {"type": "integer", "minimum": 1, "maximum": latchkey::ENTITY_COUNT_MAX}}),
    );
    put(
        "CouponPatch",
        patch_of(&coupon, &["starts_at", "expires_at", "max_uses"]),
    );
    put("NewCoupon", coupon);
    let sale = input(
        &["name", "discount", "package_ids", "starts_at"],
        json!({"name": name(), "discount": discount(),
               "package_ids": {"type": "array", "minItems": 1, "maxItems": latchkey::SALE_PACKAGES_MAX, "items": id_of("pkg")},
               "starts_at": time(), "ends_at": time()}),
    );
    put("SalePatch", patch_of(&sale, &["ends_at"]));
    put("NewSale", sale);
    let gift_card = input(
        &["balance"],
        json!({"balance": money(), "note": string(0, latchkey::ENTITY_NOTE_MAX_CHARS), "expires_at": time()}),
    );
    let mut gift_card_patch = patch_of(&gift_card, &["note", "expires_at"]);
    gift_card_patch["properties"]["void"] = json!({"type": "boolean"});
    put("GiftCardPatch", gift_card_patch);
    put("NewGiftCard", gift_card);
    let customer = input(
        &["email"],
        json!({"email": {"type": "string", "format": "email"}, "name": name()}),
    );
    put("CustomerPatch", patch_of(&customer, &["name"]));
    put("NewCustomer", customer);
    put(
        "NewBan",
        input(
            &["type", "value"],
            json!({"type": {"enum": ["user", "ip", "email"]},
                   "value": {"type": "string", "description": "a user name (1–200 characters), an address or CIDR, or an email"},
                   "reason": string(0, latchkey::ENTITY_NOTE_MAX_CHARS), "expires_at": time()}),
        ),
    );
    put(
        "BanPatch",
        input(
            &[],
            json!({"reason": nullable(string(0, latchkey::ENTITY_NOTE_MAX_CHARS)), "expires_at": nullable(time())}),
        ),
    );
    put(
        "NewOrder",
        input(
            &["items"],
            json!({"customer_id": id_of("cus"), "email": {"type": "string", "format": "email"},
                   "items": {"type": "array", "minItems": 1, "maxItems": latchkey::ORDER_MAX_ITEMS,
                       "items": input(&["quantity"], json!({
                       "package_id": id_of("pkg"), "product_id": id_of("prd"),
                       "quantity": {"type": "integer", "minimum": 1, "maximum": latchkey::ORDER_MAX_QUANTITY}}))},
                   "coupon_code": {"type": "string"}}),
        ),
    );
    put(
        "OrderPatch",
        input(
            &[],
            json!({"status": {"enum": ["pending", "completed", "cancelled", "refunded"]}}),
        ),
    );
}

/// Response `data` schemas.
fn outputs(out: &mut Map<String, Value>) {
    let mut put = |name: &str, schema: Value| {
        out.insert(name.to_owned(), schema);
    };
    let text = || json!({"type": "string"});
    let maybe_text = || nullable(text());
    let money = || {
        output(
            &[],
            json!({"amount": {"type": "integer"}, "currency": text()}),
        )
    };
    let discount = || {
        output(
            &["currency"],
            json!({"type": {"enum": ["percentage", "fixed"]},
                                                    "value": {"type": "integer"}, "currency": text()}),
        )
    };
    let limit = || {
        nullable(output(
            &[],
            json!({"limit": {"type": "integer"}, "window_seconds": {"type": "integer"},
                                               "algorithm": {"enum": ["fixed_window", "sliding_window", "token_bucket"]}}),
        ))
    };
    put("Health", output(&[], json!({"status": {"const": "ok"}})));
    put(
        "Meta",
        output(
            &[],
            json!({
        "areas": {"type": "array", "items": output(&[], json!({"name": text(), "actions": {"type": "array", "items": text()}}))},
        "formats": {"type": "array", "items": text()},
        "algorithms": {"type": "array", "items": text()},
        "webhook_events": {"type": "array", "items": text()},
        "expiry_notice_seconds": {"type": "integer", "minimum": 0}}),
        ),
    );
    put(
        "Deleted",
        output(&[], json!({"id": text(), "deleted": {"const": true}})),
    );
    put(
        "LeakFinding",
        output(
            &[],
            json!({
        "line": {"type": "integer", "minimum": 1}, "shape": {"enum": ["token", "pair_secret", "hex"]},
        "masked": text(),
        "status": {"enum": ["not_live", "live", "revoked", "overlap_ended", "secret_replaced", "not_stopped", "out_of_scope"]},
        "key_id": maybe_text(), "store_id": maybe_text(), "replaced": {"type": "boolean"},
        "last_used_at": nullable(time()), "last_used_ip": maybe_text(),
        "error": maybe_text()}),
        ),
    );
    put(
        "Revoked",
        output(&[], json!({"id": text(), "revoked": {"const": true}})),
    );
    let store = output(
        &[],
        json!({
        "id": text(), "name": text(), "api_enabled": {"type": "boolean"},
        "plan": output(&[], json!({"tier": {"enum": ["free", "pro"]}, "expires_at": nullable(time())})),
        "require_pro": {"type": "boolean"}, "key_prefix": text(), "default_rate_limit": limit(),
        "max_scoped_keys": {"type": "integer"}, "default_key_ttl_days": nullable(json!({"type": "integer"})),
        "permissions_editable": {"type": "boolean"}, "environments": {"type": "array", "items": text()},
        "log_retention_days": {"type": "integer"}, "created_at": time()}),
    );
    put("Store", store);
    let key = output(
        &["consumer_key"],
        json!({
        "id": text(), "store_id": text(), "name": text(), "description": maybe_text(),
        "kind": {"enum": ["default", "scoped"]}, "format": {"enum": ["token", "hex", "pair"]},
        "environment": text(),
        "permissions": {"type": "object", "additionalProperties": {"type": "array", "items": {"enum": ["View", "Edit", "Delete"]}}},
        "active": {"type": "boolean"}, "masked": text(), "consumer_key": text(), "rate_limit": limit(),
        "ip_allowlist": {"type": "array", "items": text()}, "expires_at": nullable(time()),
        "created_at": time(), "updated_at": time(), "last_used_at": nullable(time()),
        "last_used_ip": maybe_text(), "meta": {"type": "object"},
        "previous_expires_at": nullable(time()), "previous_last_used_at": nullable(time())}),
    );
    let mut created = extend(
        key.clone(),
        json!({"properties": {
        "key": {"type": "string", "description": "the secret (token and hex formats); shown only here"},
        "consumer_secret": {"type": "string", "description": "the secret (pair format); shown only here"}}}),
    );
    created["oneOf"] =
        json!([{"required": ["key"]}, {"required": ["consumer_key", "consumer_secret"]}]);
    put("Key", key);
    put("CreatedKey", created);
    put(
        "CreatedStore",
        output(
            &[],
            json!({"store": reference("Store"), "default_key": reference("CreatedKey")}),
        ),
    );
    put(
        "PortalSession",
        output(&[], json!({"token": text(), "expires_at": time()})),
    );
    put(
        "PortalSessionInfo",
        output(
            &[],
            json!({"id": text(), "environment": text(), "customer_id": text(), "expires_at": time()}),
        ),
    );
    put(
        "PortalSessionsEnded",
        output(&[], json!({"ended": {"type": "array", "items": text()}})),
    );
    put(
        "LogEntry",
        output(
            &[],
            json!({
        "at": time(), "key_id": maybe_text(), "method": text(), "path": text(),
        "status": {"type": "integer"}, "ip": maybe_text(), "code": text(), "latency_us": {"type": "integer"}}),
        ),
    );
    put(
        "AuditEvent",
        output(
            &["webhook_id", "reason"],
            json!({
        "v": {"type": "integer"}, "seq": {"type": "integer"}, "at": time(), "store_id": text(),
        "key_id": maybe_text(), "webhook_id": text(),
        "reason": {"enum": [latchkey::REASON_LEAKED], "description": "why, when known: leaked for a key stopped by a leak check"},
        "action": {"enum": ["key_created", "key_updated", "key_regenerated", "key_revoked",
                            "store_updated", "webhook_created", "webhook_updated", "webhook_deleted",
                            "webhook_secret_rotated", "portal_sessions_ended"]},
        "actor": output(&[], json!({"type": {"enum": ["admin", "key"]}, "id": text()})),
        "changes": {"type": "array", "items": text()}}),
        ),
    );
    let webhook = output(
        &["disabled_reason"],
        json!({
        "id": text(), "url": text(), "events": {"type": "array", "items": text()},
        "active": {"type": "boolean"}, "disabled_reason": maybe_text(), "created_at": time(),
        "previous_secret_expires_at": nullable(time())}),
    );
    put(
        "CreatedWebhook",
        extend(
            webhook.clone(),
            json!({"properties": {"secret": text()}, "required": ["secret"]}),
        ),
    );
    put("Webhook", webhook);
    let count = || json!({"type": "integer", "minimum": 0});
    put(
        "Usage",
        output(
            &[],
            json!({
        "since": time(), "until": time(), "requests": count(),
        "by_status": {"type": "object", "additionalProperties": count(),
                      "propertyNames": {"pattern": "^[1-5]xx$"}},
        "by_code": {"type": "object", "additionalProperties": count()},
        "keys": {"type": "array", "items": output(&[], json!({
            "key_id": maybe_text(), "requests": count(), "errors": count(), "denied": count(),
            "last_at": time(), "average_latency_us": count()}))}}),
        ),
    );
    let attempt = || {
        output(
            &[],
            json!({"at": time(), "status_code": nullable(json!({"type": "integer"})),
                                        "body": text(), "error": maybe_text(), "duration_ms": {"type": "integer"}}),
        )
    };
    put(
        "Delivery",
        output(
            &[],
            json!({
        "id": text(), "webhook_id": text(), "event_id": text(), "event_type": text(),
        "state": {"enum": ["pending", "succeeded", "failed"]},
        "attempts": {"type": "array", "items": attempt()}, "next_attempt_at": nullable(time()),
        "created_at": time(), "payload": {}}),
        ),
    );
    put(
        "WebhookTest",
        output(
            &[],
            json!({"status_code": nullable(json!({"type": "integer"})), "body": text(),
                                         "error": maybe_text(), "duration_ms": {"type": "integer"}, "delivery_id": text()}),
        ),
    );

    let id = text;
    let when = time;
    put(
        "Category",
        output(
            &[],
            json!({"id": id(), "name": text(), "description": maybe_text(),
                                       "parent_id": maybe_text(), "created_at": when(), "updated_at": when()}),
        ),
    );
    put(
        "Package",
        output(
            &[],
            json!({"id": id(), "name": text(), "description": maybe_text(), "price": money(),
                                      "category_id": maybe_text(), "type": {"enum": ["single", "subscription"]},
                                      "active": {"type": "boolean"}, "created_at": when(), "updated_at": when()}),
        ),
    );
    put(
        "Product",
        output(
            &[],
            json!({"id": id(), "sku": text(), "name": text(), "price": money(),
                                      "stock": {"type": "integer"}, "category_id": maybe_text(),
                                      "active": {"type": "boolean"}, "created_at": when(), "updated_at": when()}),
        ),
    );
    put(
        "Coupon",
        output(
            &[],
            json!({"id": id(), "code": text(), "discount": discount(),
                                     "starts_at": nullable(when()), "expires_at": nullable(when()),
                                     "max_uses": nullable(json!({"type": "integer"})), "uses": {"type": "integer"},
                                     "created_at": when()}),
        ),
    );
    put(
        "Sale",
        output(
            &[],
            json!({"id": id(), "name": text(), "discount": discount(),
                                   "package_ids": {"type": "array", "items": text()}, "starts_at": when(),
                                   "ends_at": nullable(when()), "created_at": when()}),
        ),
    );
    put(
        "GiftCard",
        output(
            &["code"],
            json!({"id": id(), "code": {"type": "string", "description": "create response only"},
                                             "masked_code": text(), "balance": money(), "note": maybe_text(),
                                             "expires_at": nullable(when()), "void": {"type": "boolean"},
                                             "created_at": when()}),
        ),
    );
    put(
        "Customer",
        output(
            &[],
            json!({"id": id(), "email": {"type": "string", "description": "masked: j***@example.com"},
                                       "name": maybe_text(), "created_at": when()}),
        ),
    );
    put(
        "Ban",
        output(
            &[],
            json!({"id": id(), "type": {"enum": ["user", "ip", "email"]}, "value": text(),
                                  "reason": maybe_text(), "expires_at": nullable(when()), "created_at": when()}),
        ),
    );
    put(
        "Order",
        output(
            &[],
            json!({"id": id(), "customer_id": text(),
        "items": {"type": "array", "items": output(&["package_id", "product_id"], json!({
            "package_id": text(), "product_id": text(), "name": text(), "quantity": {"type": "integer"},
            "unit_price": {"type": "integer"}, "discount": {"type": "integer"}}))},
        "subtotal": {"type": "integer"}, "discount": {"type": "integer"}, "total": {"type": "integer"},
        "currency": text(), "coupon_code": maybe_text(),
        "status": {"enum": ["pending", "completed", "cancelled", "refunded"]}, "created_at": when()}),
        ),
    );
    put(
        "Subscription",
        output(
            &[],
            json!({"id": id(), "customer_id": text(), "package_id": text(),
                                           "order_id": text(), "status": text(), "started_at": when(),
                                           "next_payment_at": when()}),
        ),
    );
}

fn schemas() -> Map<String, Value> {
    let mut out = Map::new();
    bodies(&mut out);
    outputs(&mut out);
    out.insert(
        "Error".to_owned(),
        output(&[], json!({"success": {"const": false}, "data": {"type": "null"},
                           "message": {"type": "string"}, "errors": {"type": "array", "items": {"type": "string"}},
                           "code": {"type": "string", "description": "stable and machine-readable: VALIDATION, NOT_FOUND, INVALID, …"}})),
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

/// The success body: the wrapper around `data`.
fn success(data: &Data) -> Value {
    let data = match data {
        Data::One(name) => reference(name),
        Data::List(name) => json!({"type": "array", "items": reference(name)}),
        Data::Page(name) => output(
            &[],
            json!({"items": {"type": "array", "items": reference(name)},
                                               "next_cursor": nullable(json!({"type": "string"}))}),
        ),
        Data::Raw => Value::Null,
    };
    output(
        &[],
        json!({"success": {"const": true}, "data": data, "message": {"type": "null"},
                       "errors": {"type": "array", "maxItems": 0}}),
    )
}

impl Operation {
    fn id(&self) -> String {
        format!(
            "{}{}",
            self.method,
            self.path.replace(['/', '{', '}', '-', '.'], "_")
        )
    }

    fn path_params(&self) -> impl Iterator<Item = &str> {
        self.path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
    }
}

/// Links from an operation that creates something to the routes of what it created (the id in
/// its answer fills the route's last parameter; the others come from the request), so clients
/// and schemathesis's stateful phase can follow a create with its reads, changes and deletes.
fn links(op: &Operation, all: &[Operation]) -> Map<String, Value> {
    let mut out = Map::new();
    let Data::One(schema) = &op.data else {
        return out;
    };
    if op.method != "post" || op.path.ends_with('}') {
        return out;
    }
    let id_at = if schema == "CreatedStore" {
        "$response.body#/data/store/id"
    } else {
        "$response.body#/data/id"
    };
    let prefix = format!("{}/{{", op.path);
    for target in all {
        // Only routes whose every other parameter the request already had.
        let Some((created, _)) = target
            .path
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('}'))
            .filter(|(_, after)| !after.contains('{'))
        else {
            continue;
        };
        let mut parameters: Map<String, Value> = op
            .path_params()
            .map(|name| (name.to_owned(), json!(format!("$request.path.{name}"))))
            .collect();
        parameters.insert(created.to_owned(), json!(id_at));
        out.insert(
            target.id(),
            json!({"operationId": target.id(), "parameters": parameters}),
        );
    }
    out
}

/// The headers a response of `op` with `status` carries: every response has its request id
/// (the caller's `X-Request-Id` when well-formed); API responses carry the limit that applied,
/// when one did; a 429 says when to come back.
fn headers(op: &Operation, status: u16) -> Value {
    let mut out = Map::new();
    out.insert(
        "X-Request-Id".into(),
        json!({"required": true, "description": "the caller's X-Request-Id (1-64 of [A-Za-z0-9_-]) or a new one",
               "schema": {"type": "string", "minLength": 1, "maxLength": 64}}),
    );
    if op.path.starts_with("/api/v1/") {
        for (name, description) in [
            ("X-RateLimit-Limit", "the governing limit"),
            ("X-RateLimit-Remaining", "requests left in its window"),
            ("X-RateLimit-Reset", "when the window resets (unix seconds)"),
        ] {
            out.insert(
                name.into(),
                json!({"description": description, "schema": {"type": "integer", "minimum": 0}}),
            );
        }
    }
    if op.idempotent && status == op.ok {
        out.insert(
            "Idempotent-Replayed".into(),
            json!({"description": "`true` when an earlier request with the same Idempotency-Key made the object",
                   "schema": {"type": "string", "enum": ["true"]}}),
        );
    }
    if status == 429 {
        out.insert(
            "Retry-After".into(),
            json!({"required": true, "description": "whole seconds to wait",
                   "schema": {"type": "integer", "minimum": 1}}),
        );
    }
    Value::Object(out)
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths = Map::new();
    let all = operations();
    for op in &all {
        let mut parameters: Vec<Value> = op
            .path_params()
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        parameters.extend(op.query.iter().map(|param| {
            json!({"name": param.name(), "in": "query", "required": param.required(), "schema": param.schema()})
        }));
        if op.idempotent {
            parameters.push(json!({"name": "Idempotency-Key", "in": "header", "required": false,
                "description": format!("makes the create at most once: a retry with the same key within {} hours \
                    answers with what the first made (as it is now) and makes nothing; the key with another body is a 409",
                    latchkey::IDEMPOTENCY_TTL.whole_hours()),
                "schema": {"type": "string", "minLength": 1, "maxLength": latchkey::IDEMPOTENCY_KEY_MAX,
                           "pattern": "^[!-~]+$"}}));
        }
        let mut responses = Map::new();
        let mut ok = match (&op.data, op.path.as_str()) {
            (Data::Raw, "/metrics") => {
                json!({"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}})
            }
            (Data::Raw, _) => {
                json!({"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}})
            }
            (data, _) => {
                json!({"description": "Success", "content": {"application/json": {"schema": success(data)}}})
            }
        };
        let links = links(op, &all);
        if !links.is_empty() {
            ok["links"] = Value::Object(links);
        }
        ok["headers"] = headers(op, op.ok);
        responses.insert(op.ok.to_string(), ok);
        let errors: &[u16] = match op.auth {
            Auth::Public if op.path.starts_with("/api/") => &[400, 404, 429],
            Auth::Public => &[],
            _ => &[400, 401, 403, 404, 405, 409, 413, 415, 429],
        };
        for status in errors {
            responses.insert(
                status.to_string(),
                json!({"description": "Refused", "headers": headers(op, *status),
                       "content": {"application/json": {"schema": reference("Error")}}}),
            );
        }
        let mut operation = json!({
            "summary": op.summary,
            "operationId": op.id(),
            "parameters": parameters,
            "responses": responses,
            "security": security(op.auth),
        });
        if let Some(schema) = &op.body {
            operation["requestBody"] = json!({"required": !op.body_optional, "content": {"application/json": {
                "schema": reference(schema)}}});
        }
        let entry = paths
            .entry(op.path.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[op.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Latchkey", "version": env!("CARGO_PKG_VERSION"),
                 "description": "API keys for commerce platforms (SPEC §7). Every body is the wrapper {success, data, message, errors}; refusals add a stable `code`."},
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
