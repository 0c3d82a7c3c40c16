//! Every reader of outside input answers arbitrary JSON with a value or a validation error,
//! never a panic.

use std::sync::OnceLock;

use latchkey::{Actor, Area, Engine, KeyPatch, NewKey, NewStore, PermissionSet, Scope, StorePatch};
use proptest::prelude::*;
use serde_json::{Value, json};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        "\\PC{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "name",
            "*",
            "orders:read",
            "token",
            "pair",
            "live",
            "10.0.0.0/8",
            "2027-01-01T00:00:00Z",
            "fixed_window",
            "pro",
            "View",
            "Orders",
            "USD",
            "percentage",
            "fixed",
            "subscription",
            "ip",
            "email",
            "a@example.com",
            "pkg_000000000000aaaaaaaa",
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let keys = prop::sample::select(vec![
            "name",
            "permissions",
            "format",
            "environment",
            "rate_limit",
            "ip_allowlist",
            "expires_at",
            "meta",
            "active",
            "description",
            "plan",
            "tier",
            "limit",
            "window_seconds",
            "algorithm",
            "key_prefix",
            "environments",
            "max_scoped_keys",
            "default_key_ttl_days",
            "Orders",
            "other",
            "price",
            "amount",
            "currency",
            "discount",
            "type",
            "value",
            "code",
            "items",
            "package_id",
            "product_id",
            "quantity",
            "email",
            "customer_id",
            "coupon_code",
            "package_ids",
            "starts_at",
            "ends_at",
            "balance",
            "sku",
            "stock",
            "parent_id",
            "category_id",
            "status",
            "void",
        ]);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys.prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn readers_never_panic(value in any_json()) {
        for result in [
            NewKey::from_json(&value).map(|_| ()),
            KeyPatch::from_json(&value).map(|_| ()),
            StorePatch::from_json(&value).map(|_| ()),
            NewStore::from_json(&value).map(|_| ()),
        ] {
            if let Err(err) = result {
                prop_assert_eq!(err.http_status(), 400);
                prop_assert!(!err.problems().is_empty());
            }
        }
        let _ = PermissionSet::from_input(&value);
    }
}

/// One engine for every case, so each case only pays for its own writes.
/// An engine, a scope, and one entity of each area to apply updates to.
type Fixture = (Engine, Scope, Vec<(Area, String)>);

fn shared() -> &'static Fixture {
    static ENGINE: OnceLock<Fixture> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let engine = Engine::memory().unwrap();
        let (store, _) = engine
            .create_store(&Actor::admin("fuzz"), NewStore::named("Fuzz"))
            .unwrap();
        let scope = Scope::new(store.id, "live");
        let usd = json!({"amount": 500, "currency": "USD"});
        let mut made = Vec::new();
        let mut make = |area: Area, body: Value| {
            let entity = engine.create_entity(&scope, area, &body).unwrap();
            let id = entity["id"].as_str().unwrap().to_owned();
            made.push((area, id.clone()));
            id
        };
        make(Area::Categories, json!({"name": "C"}));
        let package = make(Area::Packages, json!({"name": "P", "price": usd}));
        make(
            Area::Products,
            json!({"sku": "S", "name": "P", "price": usd, "stock": 5}),
        );
        make(
            Area::Coupons,
            json!({"code": "FUZZ", "discount": {"type": "percentage", "value": 5}}),
        );
        make(
            Area::Sales,
            json!({"name": "S", "discount": {"type": "percentage", "value": 5},
            "package_ids": [package], "starts_at": "2026-01-01T00:00:00Z"}),
        );
        make(Area::GiftCards, json!({"balance": usd}));
        let customer = make(Area::Customers, json!({"email": "f@example.com"}));
        make(Area::Bans, json!({"type": "user", "value": "u"}));
        make(
            Area::Orders,
            json!({"customer_id": customer, "items": [{"package_id": package}]}),
        );
        (engine, scope, made)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every entity body, created or applied as an update, gets an answer and never a panic
    /// or a server error.
    #[test]
    fn entity_bodies_never_panic(value in any_json()) {
        let (engine, scope, made) = shared();
        for area in Area::ALL.iter().copied() {
            if let Err(err) = engine.create_entity(scope, area, &value) {
                prop_assert!(err.http_status() < 500, "{:?}: {}", area, err);
            }
        }
        for (area, id) in made {
            if let Err(err) = engine.update_entity(scope, *area, id, &value) {
                prop_assert!(err.http_status() < 500, "{:?}: {}", area, err);
            }
        }
    }
}
