//! Every reader of outside input answers arbitrary JSON with a value or a validation error,
//! never a panic.

use latchkey::{KeyPatch, NewKey, NewStore, PermissionSet, StorePatch};
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
