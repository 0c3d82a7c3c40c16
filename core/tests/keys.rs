//! Stores and the key lifecycle through the engine: rules, secrecy, audit and durability.

mod common;

use common::*;
use latchkey::{
    Action, Actor, Area, AuditAction, DenyCode, Engine, KeyFormat, KeyKind, KeyPatch, NewKey,
    NewStore, Patch, StorePatch,
};
use serde_json::json;

/// A store created under a chosen id (`serve --dev`'s `devstore`) is a store like any other,
/// its default key works at once, and the id cannot be taken twice.
#[test]
fn a_store_may_be_created_under_a_chosen_id_once() {
    let (engine, _) = engine();
    let id = latchkey::StoreId::parse("devstore").unwrap();
    let (store, key) = engine
        .create_store_with_id(&admin(), id, NewStore::named("Dev"))
        .unwrap();
    assert_eq!(store.id.as_str(), "devstore");
    assert_eq!(engine.get_store("devstore").unwrap().settings.name, "Dev");
    assert!(verify(&engine, &key.credential(), Area::Orders, Action::View).allowed());
    let err = engine
        .create_store_with_id(&admin(), id, NewStore::named("Again"))
        .unwrap_err();
    assert_eq!(err.http_status(), 409);
    assert_eq!(engine.get_store("devstore").unwrap().settings.name, "Dev");
    assert_eq!(engine.list_keys("devstore").unwrap().len(), 1);
}

#[test]
fn a_store_comes_with_one_full_access_default_key() {
    let (engine, clock) = engine();
    let (store, default_key) = store(&engine);
    assert_eq!(store.id.as_str().len(), 8);
    assert_eq!(default_key.key.kind, KeyKind::Default);
    assert_eq!(default_key.key.permissions, latchkey::PermissionSet::all());
    assert_eq!(default_key.key.expires_at, None);
    assert_eq!(default_key.key.environment, "live");
    assert!(
        default_key
            .credential()
            .starts_with(&format!("lk_{}_", store.id))
    );
    assert_eq!(engine.get_store(store.id.as_str()).unwrap(), store);
    assert_eq!(store.created_at, {
        use latchkey::Clock;
        clock.now()
    });

    let err = engine
        .revoke_key(store.id.as_str(), &admin(), &default_key.key.id)
        .unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("CONFLICT", 409));
    let keys = engine.list_keys(store.id.as_str()).unwrap();
    assert_eq!(
        keys.iter().filter(|k| k.kind == KeyKind::Default).count(),
        1
    );

    // It can be deactivated and regenerated.
    let sid = store.id.as_str();
    set_active(&engine, sid, &default_key.key.id, false);
    assert_eq!(
        verify(
            &engine,
            &default_key.credential(),
            Area::Orders,
            Action::View
        )
        .code(),
        Some(DenyCode::Inactive)
    );
    let fresh = engine
        .regenerate_key(sid, &admin(), &default_key.key.id, time::Duration::ZERO)
        .unwrap();
    assert_eq!(fresh.key.kind, KeyKind::Default);
    let patch = KeyPatch {
        permissions: Some(perms(json!({"Orders": ["View"]}))),
        ..Default::default()
    };
    allow_permission_edits(&engine, sid);
    assert_eq!(
        code_of(engine.update_key(sid, &admin(), &default_key.key.id, patch)),
        "CONFLICT"
    );
}

#[test]
fn stores_list_and_update_with_validation() {
    let (engine, _) = engine();
    let (a, _) = store(&engine);
    let (b, _) = engine
        .create_store(&admin(), NewStore::named("Second"))
        .unwrap();
    let ids: Vec<_> = engine
        .list_stores()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a.id) && ids.contains(&b.id));

    let err = engine
        .update_store(
            a.id.as_str(),
            &admin(),
            StorePatch {
                name: Some(String::new()),
                key_prefix: Some("X".into()),
                max_scoped_keys: Some(1_000_000),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(err.problems().len(), 3, "{:?}", err.problems());
    assert_eq!(
        engine.get_store(a.id.as_str()).unwrap(),
        a,
        "nothing written"
    );
    assert_eq!(code_of(engine.get_store("nosuchid")), "NOT_FOUND");
    assert_eq!(code_of(engine.get_store("../etc")), "NOT_FOUND");

    let renamed = engine
        .update_store(
            a.id.as_str(),
            &admin(),
            StorePatch {
                name: Some("Renamed".into()),
                key_prefix: Some("shop".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(renamed.settings.name, "Renamed");
    let key = scoped(&engine, &renamed, json!("*"));
    assert!(key.credential().starts_with(&format!("shop_{}_", a.id)));
}

#[test]
fn store_json_input_names_unknown_settings() {
    let err = NewStore::from_json(&json!({"name": "S", "colour": "red", "api_enabled": "yes"}))
        .unwrap_err();
    assert_eq!(err.problems().len(), 2, "{:?}", err.problems());
    assert_eq!(err.http_status(), 400);
}

#[test]
fn an_environment_in_use_cannot_be_removed() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let mut new = NewKey::new("t", perms(json!("*")));
    new.environment = Some("test".into());
    let key = engine.create_key(store.id.as_str(), &admin(), new).unwrap();
    let drop_test = || StorePatch {
        environments: Some(vec!["live".into()]),
        ..Default::default()
    };
    assert_eq!(
        code_of(engine.update_store(store.id.as_str(), &admin(), drop_test())),
        "CONFLICT"
    );
    engine
        .revoke_key(store.id.as_str(), &admin(), &key.key.id)
        .unwrap();
    engine
        .update_store(store.id.as_str(), &admin(), drop_test())
        .unwrap();
}

#[test]
fn scoped_keys_are_capped_per_store() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let keys: Vec<_> = (0..5)
        .map(|_| scoped(&engine, &store, json!(["orders:read"])))
        .collect();
    let err = engine
        .create_key(sid, &admin(), NewKey::new("sixth", perms(json!("*"))))
        .unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("CONFLICT", 409));
    engine.revoke_key(sid, &admin(), &keys[0].key.id).unwrap();
    scoped(&engine, &store, json!("*"));
    assert_eq!(
        engine.list_keys(sid).unwrap().len(),
        6,
        "5 scoped + default"
    );
    // A batch over the cap writes nothing.
    engine
        .update_store(
            sid,
            &admin(),
            StorePatch {
                max_scoped_keys: Some(6),
                ..Default::default()
            },
        )
        .unwrap();
    let batch = vec![
        NewKey::new("a", perms(json!("*"))),
        NewKey::new("b", perms(json!("*"))),
    ];
    assert!(engine.create_keys(sid, &admin(), batch).is_err());
    assert_eq!(engine.list_keys(sid).unwrap().len(), 6);
}

#[test]
fn the_scoped_key_cap_counts_live_keys_per_store_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.redb");
    let clock = clock();
    let (sid, other, first) = {
        let engine = Engine::open_with(&path, options(&clock)).unwrap();
        let (store, _) = store(&engine);
        let (other, _) = other_store(&engine);
        let keys: Vec<_> = (0..5)
            .map(|_| scoped(&engine, &store, json!("*")))
            .collect();
        // Another store's keys and a failed batch count for nothing here.
        scoped(&engine, &other, json!("*"));
        let over = vec![NewKey::new("x", perms(json!("*")))];
        assert_eq!(
            code_of(engine.create_keys(store.id.as_str(), &admin(), over)),
            "CONFLICT"
        );
        (store.id, other.id, keys[0].key.id.clone())
    };
    // The count is rebuilt from the file: still full, and a revocation frees one place.
    let engine = Engine::open_with(&path, options(&clock)).unwrap();
    let new = || NewKey::new("again", perms(json!("*")));
    assert_eq!(
        code_of(engine.create_key(sid.as_str(), &admin(), new())),
        "CONFLICT"
    );
    engine.revoke_key(sid.as_str(), &admin(), &first).unwrap();
    engine.create_key(sid.as_str(), &admin(), new()).unwrap();
    assert_eq!(
        code_of(engine.create_key(sid.as_str(), &admin(), new())),
        "CONFLICT"
    );
    // The other store had one: four more fit.
    let batch = (0..4).map(|_| new()).collect();
    assert_eq!(
        engine
            .create_keys(other.as_str(), &admin(), batch)
            .unwrap()
            .len(),
        4
    );
}

#[test]
fn expiry_defaults_to_the_store_ttl_and_can_be_none() {
    let (engine, clock) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let now = {
        use latchkey::Clock;
        clock.now()
    };
    let default = scoped(&engine, &store, json!("*"));
    assert_eq!(
        default.key.expires_at,
        Some(now + time::Duration::days(365))
    );
    let mut never = NewKey::new("never", perms(json!("*")));
    never.expires_at = Patch::Null;
    assert_eq!(
        engine
            .create_key(sid, &admin(), never)
            .unwrap()
            .key
            .expires_at,
        None
    );
    engine
        .update_store(
            sid,
            &admin(),
            StorePatch {
                default_key_ttl_days: Patch::Null,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(scoped(&engine, &store, json!("*")).key.expires_at, None);
}

#[test]
fn bad_input_is_rejected_whole_and_nothing_is_written() {
    let (engine, clock) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let before_keys = engine.list_keys(sid).unwrap().len();
    let before_audit = engine.audit(sid, 100).unwrap().len();

    let mut new = NewKey::new("x".repeat(201), perms(json!("*")));
    new.environment = Some("staging".into());
    new.expires_at = Patch::Set(
        {
            use latchkey::Clock;
            clock.now()
        } - time::Duration::hours(1),
    );
    new.rate_limit = Some(latchkey::RateLimit::per_minute(20_000));
    let err = engine.create_key(sid, &admin(), new.clone()).unwrap_err();
    assert_eq!(err.code(), "VALIDATION");
    // Context-free problems are reported first; fix them and the store-context ones remain.
    assert_eq!(err.problems().len(), 2, "{:?}", err.problems());
    new.name = "ok".into();
    new.rate_limit = None;
    let err = engine.create_key(sid, &admin(), new).unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("staging") && problems[1].contains("expires_at"),
        "{problems:?}"
    );

    let err = NewKey::from_json(&json!({
        "name": "", "permissions": {"Nope": ["View"]}, "format": "jwt", "environment": 3,
        "ip_allowlist": ["300.1.1.1"], "expires_at": "yesterday", "rate_limit": {"limit": 0}, "extra": true
    }))
    .unwrap_err();
    assert_eq!(err.problems().len(), 8, "{:?}", err.problems());

    assert_eq!(engine.list_keys(sid).unwrap().len(), before_keys);
    assert_eq!(engine.audit(sid, 100).unwrap().len(), before_audit);
    assert_eq!(
        engine
            .create_key("zzzzzzzz", &admin(), NewKey::new("k", perms(json!("*"))))
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );
}

#[test]
fn permissions_are_immutable_unless_the_store_allows_edits() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let key = scoped(&engine, &store, json!({"Orders": ["View"]}));
    let patch = || KeyPatch {
        permissions: Some(perms(json!({"Orders": ["View", "Edit"]}))),
        ..Default::default()
    };
    let err = engine
        .update_key(sid, &admin(), &key.key.id, patch())
        .unwrap_err();
    assert_eq!(err.code(), "CONFLICT");
    allow_permission_edits(&engine, sid);
    let updated = engine
        .update_key(sid, &admin(), &key.key.id, patch())
        .unwrap();
    assert_eq!(
        updated.permissions,
        perms(json!({"Orders": ["View", "Edit"]}))
    );
}

#[test]
fn a_key_that_creates_keys_cannot_escalate() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let manager = scoped(
        &engine,
        &store,
        json!({"ApiKeys": ["View", "Edit"], "Orders": ["View"]}),
    );
    let as_manager = Actor::Key(manager.key.id.clone());

    let ok = engine
        .create_key(
            sid,
            &as_manager,
            NewKey::new("sub", perms(json!({"Orders": ["View"]}))),
        )
        .unwrap();
    assert_eq!(ok.key.environment, "live");
    let err = engine
        .create_key(
            sid,
            &as_manager,
            NewKey::new(
                "up",
                perms(json!({"Orders": ["View", "Edit"], "Bans": ["View"]})),
            ),
        )
        .unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("FORBIDDEN", 403));
    assert!(
        err.to_string().contains("Orders:Edit") && err.to_string().contains("Bans:View"),
        "{err}"
    );

    // It cannot touch a more powerful key, nor delete without ApiKeys:Delete.
    let default_id = engine
        .list_keys(sid)
        .unwrap()
        .into_iter()
        .find(|k| k.kind == KeyKind::Default)
        .unwrap()
        .id;
    assert_eq!(
        code_of(engine.regenerate_key(sid, &as_manager, &default_id, time::Duration::ZERO)),
        "FORBIDDEN"
    );
    assert_eq!(
        code_of(engine.revoke_key(sid, &as_manager, &ok.key.id)),
        "FORBIDDEN"
    );
    // Another environment is out of reach.
    let mut elsewhere = NewKey::new("t", perms(json!({"Orders": ["View"]})));
    elsewhere.environment = Some("test".into());
    assert_eq!(
        code_of(engine.create_key(sid, &as_manager, elsewhere)),
        "FORBIDDEN"
    );
    // A deactivated manager can do nothing.
    let patch = KeyPatch {
        active: Some(false),
        ..Default::default()
    };
    engine
        .update_key(sid, &admin(), &manager.key.id, patch)
        .unwrap();
    assert_eq!(
        engine
            .create_key(
                sid,
                &as_manager,
                NewKey::new("x", perms(json!({"Orders": ["View"]})))
            )
            .unwrap_err()
            .code(),
        "FORBIDDEN"
    );
    set_active(&engine, sid, &manager.key.id, true);
    // A key without ApiKeys:Edit cannot create keys at all; a key of another store neither.
    let reader = Actor::Key(ok.key.id.clone());
    assert_eq!(
        engine
            .create_key(
                sid,
                &reader,
                NewKey::new("x", perms(json!({"Orders": ["View"]})))
            )
            .unwrap_err()
            .code(),
        "FORBIDDEN"
    );
    let (other, _) = other_store(&engine);
    assert_eq!(
        engine
            .create_key(
                other.id.as_str(),
                &as_manager,
                NewKey::new("x", perms(json!({"Orders": ["View"]})))
            )
            .unwrap_err()
            .code(),
        "FORBIDDEN"
    );
}

#[test]
fn lists_are_masked_and_no_secret_appears_in_debug_lists_or_errors() {
    let (engine, _) = engine();
    let (store, default_key) = store(&engine);
    let sid = store.id.as_str();
    let mut secrets = vec![default_key.secret.expose().to_owned()];
    for format in [KeyFormat::Token, KeyFormat::Hex, KeyFormat::Pair] {
        let mut new = NewKey::new(format.as_str(), perms(json!("*")));
        new.format = format;
        let created = engine.create_key(sid, &admin(), new).unwrap();
        let secret = created.secret.expose().to_owned();
        let debug = format!("{created:?}");
        assert!(
            !debug.contains(&secret),
            "Debug of CreatedKey shows the secret"
        );
        assert!(created.key.masked.ends_with(&secret[secret.len() - 4..]));
        assert!(created.key.masked.contains('…'));
        if format == KeyFormat::Token {
            assert_eq!(
                created.key.masked,
                format!("lk_{}_…{}", store.id, &secret[secret.len() - 4..])
            );
        }
        if format == KeyFormat::Pair {
            assert!(
                created
                    .key
                    .consumer_key
                    .as_deref()
                    .unwrap()
                    .starts_with("ck_")
            );
        }
        secrets.push(secret);
        let d = verify(&engine, &created.credential(), Area::Orders, Action::View);
        assert!(!format!("{d:?}").contains(&secrets[secrets.len() - 1]));
    }
    let listed = engine.list_keys(sid).unwrap();
    let texts = [
        format!("{listed:?}"),
        serde_json::to_string(&listed).unwrap(),
        format!("{:?}", engine.audit(sid, 100).unwrap()),
        format!("{engine:?}"),
        format!("{:?}", engine.get_key(sid, &listed[0].id).unwrap()),
    ];
    for secret in &secrets {
        // The secret part of a token is its last 32 characters.
        let needle = &secret[secret.len() - 24..];
        for text in &texts {
            assert!(!text.contains(needle), "secret leaked into {text}");
        }
    }
    // Errors about a presented key never echo it.
    for secret in &secrets {
        let err = engine
            .update_key(sid, &admin(), secret, KeyPatch::default())
            .unwrap_err();
        assert_eq!(err.code(), "NOT_FOUND");
        assert!(
            !format!("{err} {err:?}").contains(&secret[secret.len() - 24..]),
            "{err:?}"
        );
    }
}

#[test]
fn audit_records_who_did_what_newest_first() {
    let (engine, _) = engine();
    let (store, default_key) = store(&engine);
    let sid = store.id.as_str();
    let key = scoped(&engine, &store, json!("*"));
    engine
        .update_key(
            sid,
            &admin(),
            &key.key.id,
            KeyPatch {
                name: Some("n".into()),
                active: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    engine
        .regenerate_key(
            sid,
            &Actor::Key(default_key.key.id.clone()),
            &key.key.id,
            time::Duration::ZERO,
        )
        .unwrap();
    engine.revoke_key(sid, &admin(), &key.key.id).unwrap();
    let events = engine.audit(sid, 10).unwrap();
    let actions: Vec<_> = events.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            AuditAction::KeyRevoked,
            AuditAction::KeyRegenerated,
            AuditAction::KeyUpdated,
            AuditAction::KeyCreated,
            AuditAction::KeyCreated,
        ]
    );
    assert_eq!(events[1].actor, Actor::Key(default_key.key.id.clone()));
    assert_eq!(events[2].changes, ["name", "active"]);
    assert_eq!(events[0].actor, admin());
    assert!(events.windows(2).all(|w| w[0].seq > w[1].seq));
    assert_eq!(engine.audit(sid, 2).unwrap().len(), 2);
    // The read limit is the request log's: 1 to MAX_LOG_READ, refused outside it, whoever asks.
    for limit in [0, latchkey::MAX_LOG_READ + 1] {
        let refused = engine.audit(sid, limit).unwrap_err();
        assert_eq!(refused.code(), "VALIDATION");
        assert_eq!(
            refused.problems(),
            [format!(
                "limit: must be between 1 and {}",
                latchkey::MAX_LOG_READ
            )]
        );
    }
    assert_eq!(engine.audit(sid, latchkey::MAX_LOG_READ).unwrap().len(), 5);
    // Another store's audit is separate.
    let (other, _) = other_store(&engine);
    assert_eq!(engine.audit(other.id.as_str(), 10).unwrap().len(), 1);
    // A revoked key is gone from reads.
    assert_eq!(code_of(engine.get_key(sid, &key.key.id)), "NOT_FOUND");

    // The store's settings: who switched the REST API off, and what else changed with it.
    let ops = Actor::admin("ops");
    let patch = StorePatch::from_json(&json!({"api_enabled": false, "name": "Renamed"})).unwrap();
    engine.update_store(sid, &ops, patch).unwrap();
    // A patch that changes nothing (the same value again) leaves no event.
    let same = StorePatch::from_json(&json!({"api_enabled": false})).unwrap();
    engine.update_store(sid, &ops, same).unwrap();
    // Nor does one that is refused (`live` still has the default key).
    let bad = StorePatch::from_json(&json!({"environments": ["test"], "name": "X"})).unwrap();
    assert_eq!(code_of(engine.update_store(sid, &ops, bad)), "CONFLICT");
    let events = engine.audit(sid, 10).unwrap();
    assert_eq!(events.len(), 6);
    let latest = &events[0];
    assert_eq!(latest.action, AuditAction::StoreUpdated);
    assert_eq!((latest.key_id.as_deref(), &latest.actor), (None, &ops));
    assert_eq!(latest.changes, ["api_enabled", "name"]);
    let shown = serde_json::to_value(latest).unwrap();
    assert_eq!(
        (shown["action"].clone(), shown["key_id"].clone()),
        (json!("store_updated"), json!(null))
    );
    assert_eq!(events[1].key_id.as_deref(), Some(key.key.id.as_str()));
}

#[test]
fn last_use_is_tracked_in_memory_and_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.redb");
    let clock = clock();
    let (sid, key) = {
        let engine = Engine::open_with(&path, options(&clock)).unwrap();
        let (store, _) = store(&engine);
        let key = scoped(&engine, &store, json!("*"));
        assert_eq!(key.key.last_used_at, None);
        verify_from(
            &engine,
            &key.credential(),
            Area::Orders,
            Action::View,
            "203.0.113.9",
        );
        let read = engine.get_key(store.id.as_str(), &key.key.id).unwrap();
        assert_eq!(read.last_used_ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(
            read.last_used_at,
            Some({
                use latchkey::Clock;
                clock.now()
            })
        );
        // Within the minute nothing changes; a minute later it moves.
        clock.advance(time::Duration::seconds(61));
        verify_from(
            &engine,
            &key.credential(),
            Area::Orders,
            Action::View,
            "203.0.113.10",
        );
        engine.flush().unwrap();
        (store.id, key)
    };
    let engine = Engine::open_with(&path, options(&clock)).unwrap();
    let read = engine.get_key(sid.as_str(), &key.key.id).unwrap();
    assert_eq!(read.last_used_ip, Some("203.0.113.10".parse().unwrap()));
    assert_eq!(
        read.last_used_at,
        Some({
            use latchkey::Clock;
            clock.now()
        })
    );
}

#[test]
fn reopening_the_database_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.redb");
    let clock = clock();
    let (store, default_key, kept, revoked, inactive) = {
        let engine = Engine::open_with(&path, options(&clock)).unwrap();
        let (store, default_key) = store(&engine);
        let sid = store.id.as_str();
        let mut pair = NewKey::new("pair", perms(json!({"Orders": ["View"]})));
        pair.format = KeyFormat::Pair;
        pair.ip_allowlist = vec!["127.0.0.0/8".parse().unwrap()];
        let kept = engine.create_key(sid, &admin(), pair).unwrap();
        let revoked = scoped(&engine, &store, json!("*"));
        engine.revoke_key(sid, &admin(), &revoked.key.id).unwrap();
        let inactive = scoped(&engine, &store, json!("*"));
        set_active(&engine, sid, &inactive.key.id, false);
        engine
            .update_store(
                sid,
                &admin(),
                StorePatch {
                    name: Some("Kept".into()),
                    ..Default::default()
                },
            )
            .unwrap();
        (store, default_key, kept, revoked, inactive)
    };
    let engine = Engine::open_with(&path, options(&clock)).unwrap();
    let sid = store.id.as_str();
    assert_eq!(engine.get_store(sid).unwrap().settings.name, "Kept");
    assert!(
        verify(
            &engine,
            &default_key.credential(),
            Area::Bans,
            Action::Delete
        )
        .allowed()
    );
    assert!(verify(&engine, &kept.credential(), Area::Orders, Action::View).allowed());
    assert_eq!(
        verify_from(
            &engine,
            &kept.credential(),
            Area::Orders,
            Action::View,
            "10.0.0.1"
        )
        .code(),
        Some(DenyCode::IpNotAllowed)
    );
    assert_eq!(
        verify(&engine, &revoked.credential(), Area::Orders, Action::View).code(),
        Some(DenyCode::Invalid)
    );
    assert_eq!(
        verify(&engine, &inactive.credential(), Area::Orders, Action::View).code(),
        Some(DenyCode::Inactive)
    );
    assert_eq!(engine.list_keys(sid).unwrap().len(), 3);
    // Five key creations (the default key's too), a revocation, an update, the rename.
    assert_eq!(engine.audit(sid, 100).unwrap().len(), 7);
}

#[test]
fn json_key_input_round_trip_through_the_engine() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let new = NewKey::from_json(&json!({
        "name": "ERP", "description": "orders sync", "permissions": ["orders:read", "orders:write"],
        "format": "hex", "environment": "test", "ip_allowlist": ["10.0.0.0/8", "2001:db8::/32"],
        "rate_limit": {"limit": 30, "window_seconds": 60, "algorithm": "fixed_window"},
        "meta": {"team": "ops"}
    }))
    .unwrap();
    let created = engine.create_key(store.id.as_str(), &admin(), new).unwrap();
    let json = serde_json::to_value(&created.key).unwrap();
    assert_eq!(json["permissions"], json!({"Orders": ["View", "Edit"]}));
    assert_eq!(json["format"], "hex");
    assert_eq!(json["kind"], "scoped");
    assert_eq!(json["ip_allowlist"], json!(["10.0.0.0/8", "2001:db8::/32"]));
    assert_eq!(json["rate_limit"]["algorithm"], "fixed_window");
    assert_eq!(json["meta"]["team"], "ops");
    assert!(json["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(json.get("key").is_none() && json.get("secret").is_none());
}

#[test]
fn dropping_the_engine_flushes_last_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.redb");
    let clock = clock();
    let (sid, key) = {
        let engine = Engine::open_with(&path, options(&clock)).unwrap();
        let (store, _) = store(&engine);
        let key = scoped(&engine, &store, json!("*"));
        verify_from(
            &engine,
            &key.credential(),
            Area::Orders,
            Action::View,
            "2001:db8::7",
        );
        (store.id, key)
    };
    let engine = Engine::open_with(&path, options(&clock)).unwrap();
    let read = engine.get_key(sid.as_str(), &key.key.id).unwrap();
    assert_eq!(read.last_used_ip, Some("2001:db8::7".parse().unwrap()));
    assert!(read.last_used_at.is_some());
}

#[test]
fn a_key_lists_only_the_keys_of_its_own_environment() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let mut manager = NewKey::new("manager", perms(json!({"ApiKeys": ["View", "Edit"]})));
    manager.environment = Some("test".into());
    let manager = engine.create_key(sid, &admin(), manager).unwrap();
    let mut sibling = NewKey::new("sibling", perms(json!({"Orders": ["View"]})));
    sibling.environment = Some("test".into());
    engine.create_key(sid, &admin(), sibling).unwrap();
    let as_key = engine
        .list_keys_as(sid, &latchkey::Actor::Key(manager.key.id.clone()))
        .unwrap();
    assert_eq!(as_key.len(), 2);
    assert!(as_key.iter().all(|k| k.environment == "test"));
    assert_eq!(
        engine.list_keys_as(sid, &admin()).unwrap().len(),
        3,
        "the admin sees the live default key too"
    );
    let (other, _) = other_store(&engine);
    let err = engine
        .list_keys_as(
            other.id.as_str(),
            &latchkey::Actor::Key(manager.key.id.clone()),
        )
        .unwrap_err();
    assert_eq!(err.code(), "FORBIDDEN");
}

#[test]
fn a_regeneration_with_an_overlap_keeps_the_old_secret_working_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.redb");
    let clock = clock();
    let hour = time::Duration::hours(1);
    let engine = Engine::open_with(&path, options(&clock)).unwrap();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let view_orders = |credential: &str| verify(&engine, credential, Area::Orders, Action::View);
    let mut pairs = Vec::new();
    for format in [KeyFormat::Token, KeyFormat::Hex, KeyFormat::Pair] {
        let mut new = NewKey::new("rolled", perms(json!({"Orders": ["View"]})));
        new.format = format;
        new.rate_limit = Some(latchkey::RateLimit {
            limit: 2,
            window_seconds: 60,
            algorithm: latchkey::Algorithm::FixedWindow,
        });
        let old = engine.create_key(sid, &admin(), new).unwrap();
        let new = engine
            .regenerate_key(sid, &admin(), &old.key.id, hour)
            .unwrap();
        assert_eq!(new.key.previous_expires_at, Some(clock_now(&clock) + hour));
        assert_eq!(new.key.previous_last_used_at, None);
        // Both secrets are the same key: same id, same permissions, one budget of 2.
        let first = view_orders(&old.credential());
        let shown = engine.get_key(sid, &old.key.id).unwrap();
        assert_eq!(
            shown.previous_last_used_at,
            Some(clock_now(&clock)),
            "{format:?}"
        );
        assert!(
            first.allowed(),
            "{format:?}: the old secret during the overlap"
        );
        assert_eq!(first.key_id(), Some(old.key.id.as_str()));
        assert!(view_orders(&new.credential()).allowed());
        assert_eq!(
            view_orders(&old.credential()).code(),
            Some(DenyCode::RateLimited)
        );
        assert_eq!(
            verify(&engine, &old.credential(), Area::Coupons, Action::View).code(),
            Some(DenyCode::Forbidden)
        );
        assert_eq!(
            engine.identify(&old.credential()),
            Some(latchkey::Identified {
                store_id: store.id,
                key_id: old.key.id.clone(),
                replaced: true
            })
        );
        assert_eq!(
            engine
                .identify(&new.credential())
                .map(|found| found.replaced),
            Some(false)
        );
        pairs.push((old, new));
    }
    clock.advance(time::Duration::minutes(1));

    // A change to the key applies to the old secret too.
    let (old, new) = &pairs[0];
    set_active(&engine, sid, &old.key.id, false);
    assert_eq!(
        view_orders(&old.credential()).code(),
        Some(DenyCode::Inactive)
    );
    set_active(&engine, sid, &old.key.id, true);
    // The replaced secret's last use (the refused request above counts: it was presented)
    // outlives the change that reactivated the key.
    let shown = engine.get_key(sid, &old.key.id).unwrap();
    assert_eq!(shown.previous_last_used_at, Some(clock_now(&clock)));

    // The overlap is durable: a reopened engine still takes the old secret, and still knows
    // when it was last presented (written with the key's own last use).
    let used_at = clock_now(&clock);
    drop(engine);
    clock.advance(time::Duration::minutes(1));
    let engine = Engine::open_with(&path, options(&clock)).unwrap();
    let shown = engine.get_key(sid, &old.key.id).unwrap();
    assert_eq!(shown.previous_last_used_at, Some(used_at));
    let view_orders = |credential: &str| verify(&engine, credential, Area::Orders, Action::View);
    assert!(view_orders(&old.credential()).allowed());
    assert!(view_orders(&new.credential()).allowed());

    // A regeneration during the overlap ends it: only the secret it replaced stays. That
    // secret's last use is its own: none is carried over from the secret before, in memory
    // or from the usage table (written here with the earlier secret's use) after a reopen.
    engine.flush().unwrap();
    clock.advance(time::Duration::minutes(1));
    let newest = engine
        .regenerate_key(sid, &admin(), &old.key.id, hour)
        .unwrap();
    let previous_use = |engine: &Engine| {
        engine
            .get_key(sid, &old.key.id)
            .unwrap()
            .previous_last_used_at
    };
    assert_eq!(previous_use(&engine), None);
    drop(engine);
    let engine = Engine::open_with(&path, options(&clock)).unwrap();
    assert_eq!(previous_use(&engine), None);
    let view_orders = |credential: &str| verify(&engine, credential, Area::Orders, Action::View);
    assert_eq!(
        view_orders(&old.credential()).code(),
        Some(DenyCode::Invalid)
    );
    assert!(view_orders(&new.credential()).allowed());
    assert!(view_orders(&newest.credential()).allowed());

    // Out-of-range overlaps are refused and change nothing.
    clock.advance(time::Duration::minutes(1));
    for bad in [
        time::Duration::seconds(-1),
        latchkey::MAX_KEY_OVERLAP + time::Duration::SECOND,
    ] {
        let err = engine
            .regenerate_key(sid, &admin(), &old.key.id, bad)
            .unwrap_err();
        assert_eq!(
            err.problems(),
            ["overlap_seconds: must be from 0 to 604800 seconds"]
        );
    }
    assert!(view_orders(&newest.credential()).allowed());
    let problems = latchkey::regeneration_overlap(&json!({"overlap_seconds": "1h", "x": 1}))
        .unwrap_err()
        .problems();
    assert_eq!(problems.len(), 2, "{problems:?}");

    // An overlap can be shortened or ended early, never extended.
    let (old_hex, new_hex) = &pairs[1];
    let patch = |body: serde_json::Value| {
        let patch = KeyPatch::from_json(&body).unwrap();
        engine.update_key(sid, &admin(), &old_hex.key.id, patch)
    };
    let end = new_hex.key.previous_expires_at.unwrap();
    let later = end + time::Duration::SECOND;
    let at = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    assert_eq!(
        patch(json!({"previous_expires_at": at(later)}))
            .unwrap_err()
            .problems(),
        ["previous_expires_at: an overlap can be shortened, not extended"]
    );
    let sooner = clock_now(&clock) + time::Duration::minutes(5);
    let shortened = patch(json!({"previous_expires_at": at(sooner)})).unwrap();
    assert_eq!(shortened.previous_expires_at, Some(sooner));
    assert!(view_orders(&old_hex.credential()).allowed());
    let ended = patch(json!({"previous_expires_at": null})).unwrap();
    assert_eq!(ended.previous_expires_at, None);
    assert_eq!(
        view_orders(&old_hex.credential()).code(),
        Some(DenyCode::Invalid)
    );
    assert!(view_orders(&new_hex.credential()).allowed());
    assert_eq!(
        patch(json!({"previous_expires_at": at(sooner)}))
            .unwrap_err()
            .problems(),
        ["previous_expires_at: the key has no replaced secret in an overlap"]
    );
    assert_eq!(
        engine.audit(sid, 1).unwrap()[0].changes,
        ["previous_expires_at"]
    );
    // Stopping an overlap that is already over changes and records nothing.
    let seq = engine.audit(sid, 1).unwrap()[0].seq;
    let again = patch(json!({"previous_expires_at": null})).unwrap();
    assert_eq!(again.previous_expires_at, None);
    assert_eq!(engine.audit(sid, 1).unwrap()[0].seq, seq);

    // When the overlap ends, the old secret is refused like any unknown one, and the key no
    // longer shows an overlap.
    clock.advance(hour);
    for (old, new) in &pairs[1..] {
        assert_eq!(
            view_orders(&old.credential()).code(),
            Some(DenyCode::Invalid)
        );
        assert!(view_orders(&new.credential()).allowed());
        assert_eq!(
            engine
                .get_key(sid, &old.key.id)
                .unwrap()
                .previous_expires_at,
            None
        );
    }
    assert_eq!(
        view_orders(&new.credential()).code(),
        Some(DenyCode::Invalid)
    );

    // Revoking the key ends an overlap with it.
    let (old, _) = &pairs[2];
    let again = engine
        .regenerate_key(sid, &admin(), &old.key.id, hour)
        .unwrap();
    let replaced = &pairs[2].1;
    assert!(view_orders(&replaced.credential()).allowed());
    engine.revoke_key(sid, &admin(), &old.key.id).unwrap();
    for credential in [replaced.credential(), again.credential()] {
        assert_eq!(view_orders(&credential).code(), Some(DenyCode::Invalid));
    }
}

fn clock_now(clock: &latchkey::FakeClock) -> time::OffsetDateTime {
    use latchkey::Clock;
    clock.now()
}

/// `stop_leaked` (the CLI's `scan --revoke`) stops each kind of live credential in the way
/// that kind allows, and leaves the others working.
#[test]
fn a_leaked_credential_is_stopped_as_its_key_allows() {
    use latchkey::Stopped;
    let (engine, _clock) = engine();
    let (store, default_key) = store(&engine);
    let sid = store.id.as_str();
    let scoped_key = scoped(&engine, &store, json!({"Orders": ["View"]}));
    let rotated = scoped(&engine, &store, json!({"Orders": ["View"]}));
    let old_secret = rotated.credential();
    let renewed = engine
        .regenerate_key(sid, &admin(), &rotated.key.id, time::Duration::hours(1))
        .unwrap();
    let works =
        |credential: &str| verify(&engine, credential, Area::Orders, Action::View).allowed();
    assert!(works(&old_secret) && works(&renewed.credential()));

    let stop = |credential: &str| {
        let (found, how) = engine.stop_leaked(credential, &admin()).expect("live");
        (found.key_id, how.unwrap())
    };
    assert_eq!(
        stop(&scoped_key.credential()),
        (scoped_key.key.id.clone(), Stopped::Revoked)
    );
    // The replaced secret stops; the clients already on the new one are not cut off.
    assert_eq!(
        stop(&old_secret),
        (rotated.key.id.clone(), Stopped::OverlapEnded)
    );
    assert!(!works(&old_secret) && works(&renewed.credential()));
    // The default key cannot be revoked: it keeps its id and access under a secret no one has.
    assert_eq!(
        stop(&default_key.credential()),
        (default_key.key.id.clone(), Stopped::SecretReplaced)
    );
    assert!(!works(&default_key.credential()) && !works(&scoped_key.credential()));
    // The audit trail says why each was stopped; a routine change gives no reason.
    let events = engine.audit(sid, 4).unwrap();
    let why: Vec<_> = events
        .iter()
        .map(|e| (e.action, e.reason.as_deref()))
        .collect();
    assert_eq!(
        why,
        [
            (AuditAction::KeyRegenerated, Some("leaked")),
            (AuditAction::KeyUpdated, Some("leaked")),
            (AuditAction::KeyRevoked, Some("leaked")),
            (AuditAction::KeyRegenerated, None),
        ]
    );
    assert!(
        !serde_json::to_string(&events[3])
            .unwrap()
            .contains("reason")
    );
    let kept = engine.get_key(sid, &default_key.key.id).unwrap();
    assert_eq!((kept.kind, kept.active), (KeyKind::Default, true));
    // Stopped credentials authenticate nothing, so a second pass finds nothing live.
    for credential in [
        scoped_key.credential(),
        old_secret,
        default_key.credential(),
    ] {
        assert!(engine.stop_leaked(&credential, &admin()).is_none());
    }
}

/// What a scanner finds in a file, in every format, names its live key: a pair's consumer
/// secret alone too (the consumer key is public; the secret is the leak), and a hex digest
/// that is no key names nothing.
#[test]
fn credentials_found_in_text_are_identified_and_stopped_in_every_format() {
    use latchkey::{LeakShape, LeakStatus};
    let (engine, _clock) = engine();
    let (store, _default_key) = store(&engine);
    let sid = store.id.as_str();
    let create = |format: KeyFormat| {
        let mut new = NewKey::new(format.as_str(), perms(json!({"Orders": ["View"]})));
        new.format = format;
        engine.create_key(sid, &admin(), new).unwrap()
    };
    let token = create(KeyFormat::Token);
    let hex = create(KeyFormat::Hex);
    let pair = create(KeyFormat::Pair);
    let lone_secret = create(KeyFormat::Pair);
    let digest = latchkey::hex_lower(&[7u8; 32]);
    let text = format!(
        "TOKEN={}\nHEX={}\nWC={}\nSECRET=\"{}\"\nsha256 {digest}\n",
        token.credential(),
        hex.credential(),
        pair.credential(),
        lone_secret.secret.expose(),
    );
    let shapes: Vec<_> = latchkey::find_leaks(&text)
        .map(|l| (l.line, l.shape))
        .collect();
    assert_eq!(
        shapes,
        [
            (1, LeakShape::Token),
            (2, LeakShape::Hex),
            (3, LeakShape::PairSecret),
            (4, LeakShape::PairSecret),
            (5, LeakShape::Hex),
        ]
    );
    let summary = |stop: bool| -> Vec<_> {
        let findings = engine.check_leaks(&text, stop, &admin());
        let shown = format!("{findings:?} {}", serde_json::to_string(&findings).unwrap());
        for key in [&token, &hex, &pair, &lone_secret] {
            assert!(!shown.contains(key.secret.expose()), "{shown}");
        }
        findings
            .into_iter()
            .map(|f| (f.line, f.status, f.key_id))
            .collect()
    };
    // Whether a leak may have been used: the token was, from one address; the hex key not.
    let from = "203.0.113.9";
    assert!(
        verify_from(
            &engine,
            &token.credential(),
            Area::Orders,
            Action::View,
            from
        )
        .allowed()
    );
    let findings = engine.check_leaks(&text, false, &admin());
    let used = |f: &latchkey::Finding| (f.last_used_at.is_some(), f.last_used_ip);
    assert_eq!(used(&findings[0]), (true, Some(from.parse().unwrap())));
    assert_eq!(used(&findings[1]), (false, None));
    let ids = [&token, &hex, &pair, &lone_secret].map(|k| Some(k.key.id.clone()));
    // The digest on line 5 names no key: left out. A pair's consumer secret alone names its key.
    let live: Vec<_> = (1..=4)
        .map(|line| (line, LeakStatus::Live, ids[line - 1].clone()))
        .collect();
    assert_eq!(summary(false), live);
    assert_eq!(
        engine.list_keys(sid).unwrap().len(),
        5,
        "a check changes nothing"
    );
    let revoked: Vec<_> = (1..=4)
        .map(|line| (line, LeakStatus::Revoked, ids[line - 1].clone()))
        .collect();
    assert_eq!(summary(true), revoked);
    for key in [&token, &hex, &pair, &lone_secret] {
        let decision = verify(&engine, &key.credential(), Area::Orders, Action::View);
        assert_eq!(
            decision.code(),
            Some(DenyCode::Invalid),
            "{:?}",
            key.key.format
        );
    }
    // Once stopped, the token and pair secrets are reported as not live; the hex key, which
    // no longer names a key, is no longer told from a digest.
    let not_live: Vec<_> = [1, 3, 4]
        .map(|line| (line, LeakStatus::NotLive, None))
        .into();
    assert_eq!(summary(false), not_live);
    assert_eq!(summary(true), not_live);
}
