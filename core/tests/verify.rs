//! The verify decision: every code of SPEC §4, in order, and its effect across threads.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use latchkey::{
    Action, Area, DenyCode, KeyFormat, KeyPatch, NewKey, Patch, Plan, StorePatch, Tier,
    VerifyRequest,
};
use serde_json::json;

#[test]
fn missing_and_malformed_credentials() {
    let (engine, _) = engine();
    let missing = engine.verify(&VerifyRequest {
        credential: None,
        permission: None,
        ip: None,
        path: "/",
    });
    assert_eq!(missing.code(), Some(DenyCode::Missing));
    assert_eq!(
        (missing.status(), &*missing.message()),
        (401, "API key required")
    );
    let empty = engine.verify(&VerifyRequest {
        credential: Some(""),
        permission: None,
        ip: None,
        path: "/",
    });
    assert_eq!(empty.code(), Some(DenyCode::Missing));
    for bad in ["nonsense", "lk_abcdefgh_short", "ck_12:cs_34", "Bearer"] {
        let d = verify(&engine, bad, Area::Orders, Action::View);
        assert_eq!(d.code(), Some(DenyCode::Invalid), "{bad}");
        assert_eq!((d.status(), &*d.message()), (401, "Invalid API key"));
    }
}

#[test]
fn every_format_verifies_and_carries_its_context() {
    let (engine, _) = engine();
    let (store, default_key) = store(&engine);
    let d = verify(
        &engine,
        &default_key.credential(),
        Area::ApiKeys,
        Action::Delete,
    );
    assert!(d.allowed(), "{d:?}");
    for format in [KeyFormat::Token, KeyFormat::Hex, KeyFormat::Pair] {
        let mut new = NewKey::new(format.as_str(), perms(json!({"Orders": ["View"]})));
        new.format = format;
        new.environment = Some("test".into());
        let created = engine.create_key(store.id.as_str(), &admin(), new).unwrap();
        let d = verify(&engine, &created.credential(), Area::Orders, Action::View);
        assert!(d.allowed(), "{format}: {d:?}");
        assert_eq!((d.status(), d.code_str()), (200, "OK"));
        assert_eq!(d.key_id(), Some(created.key.id.as_str()));
        assert_eq!(d.store_id(), Some(store.id));
        assert_eq!(d.environment(), Some("test"));
        assert_eq!(d.permissions(), Some(perms(json!({"Orders": ["View"]}))));
        // The same three, as one value; equal for every decision naming the key, and
        // different from another key's.
        let identity = d.key_identity().unwrap();
        assert_eq!(
            (
                identity.key_id(),
                identity.store_id(),
                identity.environment()
            ),
            (created.key.id.as_str(), store.id, "test")
        );
        let again = verify(&engine, &created.credential(), Area::Coupons, Action::Edit);
        assert_eq!(again.key_identity(), Some(identity));
        let other = verify(
            &engine,
            &default_key.credential(),
            Area::Orders,
            Action::View,
        );
        assert_ne!(other.key_identity(), Some(identity));
        // Serials: the same entry, the same serial; another key's, another serial.
        let serial = identity.serial().expect("numbered");
        assert_eq!(again.key_identity().unwrap().serial(), Some(serial));
        assert_ne!(other.key_identity().unwrap().serial(), Some(serial));
        // An update rebuilds the entry: the same identity under a new serial.
        let renamed = KeyPatch {
            name: Some(format!("{format} renamed")),
            ..Default::default()
        };
        engine
            .update_key(store.id.as_str(), &admin(), &created.key.id, renamed)
            .unwrap();
        let updated = verify(&engine, &created.credential(), Area::Orders, Action::View);
        let rebuilt = updated.key_identity().unwrap();
        assert_eq!(rebuilt, identity);
        assert_ne!(rebuilt.serial(), Some(serial));
    }
    let unknown = verify(&engine, "nonsense", Area::Orders, Action::View);
    assert_eq!(unknown.key_identity(), None);
}

#[test]
fn one_changed_character_is_invalid_without_a_lookup() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let created = scoped(&engine, &store, json!("*"));
    let token = created.credential();
    let mut bytes = token.clone().into_bytes();
    let last = bytes.len() - 10;
    bytes[last] = if bytes[last] == b'a' { b'b' } else { b'a' };
    let changed = String::from_utf8(bytes).unwrap();
    // The checksum fails, so no index lookup happens: the same answer as for an unknown key.
    assert_eq!(
        verify(&engine, &changed, Area::Orders, Action::View).code(),
        Some(DenyCode::Invalid)
    );
    assert!(!latchkey::is_token(&changed));
    assert!(latchkey::is_token(&token));
}

#[test]
fn unknown_key_and_wrong_secret_are_the_same_answer() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let mut new = NewKey::new("pair", perms(json!("*")));
    new.format = KeyFormat::Pair;
    let pair = engine.create_key(store.id.as_str(), &admin(), new).unwrap();
    let ck = pair.key.consumer_key.clone().unwrap();
    let wrong_secret = format!("{ck}:cs_{}", "0".repeat(32));
    let unknown = format!("ck_{}:cs_{}", "1".repeat(32), "0".repeat(32));
    let a = verify(&engine, &wrong_secret, Area::Orders, Action::View);
    let b = verify(&engine, &unknown, Area::Orders, Action::View);
    assert_eq!(
        (a.code(), a.status(), a.message()),
        (b.code(), b.status(), b.message())
    );
    assert_eq!(a.code(), Some(DenyCode::Invalid));

    // A token from another store with a valid checksum but unknown secret.
    let other = engine
        .create_store(&admin(), latchkey::NewStore::named("Other"))
        .unwrap()
        .1;
    let forged = other
        .credential()
        .replace(other.key.store_id.as_str(), store.id.as_str());
    assert_eq!(
        verify(&engine, &forged, Area::Orders, Action::View).code(),
        Some(DenyCode::Invalid)
    );
    // Hex keys: an unknown one is INVALID.
    assert_eq!(
        verify(&engine, &"ab".repeat(32), Area::Orders, Action::View).code(),
        Some(DenyCode::Invalid)
    );
}

/// `Key::has_expired` (what a caller shows about a key) agrees with verify's `EXPIRED`, to
/// the instant it starts.
#[test]
fn a_key_has_expired_exactly_when_verify_says_so() {
    use latchkey::Clock;
    let (engine, clock) = engine();
    let (store, _) = store(&engine);
    let mut new = NewKey::new("k", perms(json!({"Orders": ["View"]})));
    new.expires_at = Patch::Set(clock.now_plus_days(1));
    let key = engine.create_key(store.id.as_str(), &admin(), new).unwrap();
    let cred = key.credential();
    let expired_now = || {
        let code = verify(&engine, &cred, Area::Orders, Action::View).code();
        (
            key.key.has_expired(clock.now()),
            code == Some(DenyCode::Expired),
        )
    };
    assert_eq!(expired_now(), (false, false));
    clock.advance(time::Duration::days(1) - time::Duration::nanoseconds(1));
    assert_eq!(expired_now(), (false, false));
    clock.advance(time::Duration::nanoseconds(1));
    assert_eq!(expired_now(), (true, true));
}

#[test]
fn expired_then_inactive_then_store_checks_in_order() {
    let (engine, clock) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let mut new = NewKey::new("k", perms(json!({"Orders": ["View"]})));
    new.expires_at = Patch::Set(clock.now_plus_days(1));
    new.ip_allowlist = vec!["10.0.0.0/8".parse().unwrap()];
    let key = engine.create_key(sid, &admin(), new).unwrap();
    let cred = key.credential();
    let code = |ip: &str, area, action| verify_from(&engine, &cred, area, action, ip).code();

    assert_eq!(code("10.1.2.3", Area::Orders, Action::View), None);
    assert_eq!(
        code("10.1.2.3", Area::Orders, Action::Edit),
        Some(DenyCode::Forbidden)
    );
    let d = verify_from(&engine, &cred, Area::Orders, Action::Edit, "10.1.2.3");
    assert_eq!(&*d.message(), "Missing permission Orders:Edit");
    // IP is checked before the permission.
    assert_eq!(
        code("192.168.0.1", Area::Orders, Action::Edit),
        Some(DenyCode::IpNotAllowed)
    );
    // IPv4-mapped IPv6 counts as IPv4.
    assert_eq!(code("::ffff:10.9.9.9", Area::Orders, Action::View), None);

    // Plan, then API switch, each before IP.
    engine
        .update_store(
            sid,
            &admin(),
            StorePatch {
                require_pro: Some(true),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        code("192.168.0.1", Area::Orders, Action::View),
        Some(DenyCode::PlanRequired)
    );
    engine
        .update_store(
            sid,
            &admin(),
            StorePatch {
                api_enabled: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        code("192.168.0.1", Area::Orders, Action::View),
        Some(DenyCode::ApiDisabled)
    );

    set_active(&engine, sid, &key.key.id, false);
    let d = verify_from(&engine, &cred, Area::Orders, Action::View, "192.168.0.1");
    assert_eq!(
        (d.code(), d.status(), &*d.message()),
        (Some(DenyCode::Inactive), 403, "API key is inactive")
    );

    clock.advance(time::Duration::days(1));
    let d = verify_from(&engine, &cred, Area::Orders, Action::View, "192.168.0.1");
    assert_eq!(
        (d.code(), d.status(), &*d.message()),
        (Some(DenyCode::Expired), 401, "API key has expired")
    );
}

#[test]
fn plan_required_lifts_with_an_active_pro_plan_and_returns_when_it_lapses() {
    let (engine, clock) = engine();
    let (store, default_key) = store(&engine);
    let sid = store.id.as_str();
    let cred = default_key.credential();
    let pro_until = clock.now_plus_days(30);
    engine
        .update_store(
            sid,
            &admin(),
            StorePatch {
                require_pro: Some(true),
                plan: Some(Plan {
                    tier: Tier::Pro,
                    expires_at: Some(pro_until),
                }),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(verify(&engine, &cred, Area::Orders, Action::View).allowed());
    clock.advance(time::Duration::days(30));
    let d = verify(&engine, &cred, Area::Orders, Action::View);
    assert_eq!((d.code(), d.status()), (Some(DenyCode::PlanRequired), 403));
    assert_eq!(&*d.message(), "An active Pro subscription is required");
    // Creating or regenerating keys needs the plan too.
    let err = engine
        .create_key(sid, &admin(), NewKey::new("x", perms(json!("*"))))
        .unwrap_err();
    assert_eq!((err.code(), err.http_status()), ("PLAN_REQUIRED", 403));
    let err = engine
        .regenerate_key(sid, &admin(), &default_key.key.id, time::Duration::ZERO)
        .unwrap_err();
    assert_eq!(err.code(), "PLAN_REQUIRED");
}

#[test]
fn a_key_revoked_on_one_thread_fails_on_another_at_once() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    let (store, _) = store(&engine);
    let key = scoped(&engine, &store, json!({"Orders": ["View"]}));
    let cred = key.credential();
    assert!(verify(&engine, &cred, Area::Orders, Action::View).allowed());

    let revoked = Arc::new(AtomicBool::new(false));
    let checker = {
        let (engine, cred, revoked) = (engine.clone(), cred.clone(), revoked.clone());
        std::thread::spawn(move || {
            let mut after = 0;
            while after < 1000 {
                // Read the flag first: if the revoke had returned, this verify must fail.
                let was_revoked = revoked.load(Ordering::SeqCst);
                let allowed = verify(&engine, &cred, Area::Orders, Action::View).allowed();
                if was_revoked {
                    assert!(!allowed, "a verify after revoke returned was allowed");
                    after += 1;
                }
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(20));
    engine
        .revoke_key(store.id.as_str(), &admin(), &key.key.id)
        .unwrap();
    revoked.store(true, Ordering::SeqCst);
    checker.join().unwrap();
}

#[test]
fn regeneration_and_permission_changes_take_effect_at_once() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    allow_permission_edits(&engine, sid);
    let key = scoped(&engine, &store, json!({"Orders": ["View"]}));
    let regenerated = engine
        .regenerate_key(sid, &admin(), &key.key.id, time::Duration::ZERO)
        .unwrap();
    assert_eq!(regenerated.key.id, key.key.id);
    assert_eq!(regenerated.key.permissions, key.key.permissions);
    assert_ne!(regenerated.credential(), key.credential());
    assert_eq!(
        verify(&engine, &key.credential(), Area::Orders, Action::View).code(),
        Some(DenyCode::Invalid)
    );
    let cred = regenerated.credential();
    assert!(verify(&engine, &cred, Area::Orders, Action::View).allowed());

    let patch = KeyPatch {
        permissions: Some(perms(json!({"Bans": ["View"]}))),
        ..Default::default()
    };
    engine
        .update_key(sid, &admin(), &key.key.id, patch)
        .unwrap();
    assert_eq!(
        verify(&engine, &cred, Area::Orders, Action::View).code(),
        Some(DenyCode::Forbidden)
    );
    assert!(verify(&engine, &cred, Area::Bans, Action::View).allowed());
}

/// A secret presented many times (so its digest is memoised on this thread) is refused at once
/// when its key is regenerated or revoked; with the memo off the answers are the same.
#[test]
fn a_memoised_secret_gives_way_to_regeneration_and_revocation() {
    for digest_memo in [true, false] {
        let clock = clock();
        let engine = latchkey::Engine::memory_with(latchkey::EngineOptions {
            digest_memo,
            ..options(&clock)
        })
        .unwrap();
        let (store, _) = store(&engine);
        let sid = store.id.as_str();
        let key = scoped(&engine, &store, json!({"Orders": ["View"]}));
        let hot = |cred: &str| {
            (0..5)
                .map(|_| verify(&engine, cred, Area::Orders, Action::View).code())
                .collect::<Vec<_>>()
        };
        assert_eq!(hot(&key.credential()), vec![None; 5], "memo {digest_memo}");
        let regenerated = engine
            .regenerate_key(sid, &admin(), &key.key.id, time::Duration::ZERO)
            .unwrap();
        assert_eq!(
            hot(&key.credential()),
            vec![Some(DenyCode::Invalid); 5],
            "memo {digest_memo}"
        );
        assert_eq!(hot(&regenerated.credential()), vec![None; 5]);
        engine.revoke_key(sid, &admin(), &key.key.id).unwrap();
        assert_eq!(
            hot(&regenerated.credential()),
            vec![Some(DenyCode::Invalid); 5],
            "memo {digest_memo}"
        );
    }
}

#[test]
fn every_format_regenerates_and_updates_in_place() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    for format in [KeyFormat::Token, KeyFormat::Hex, KeyFormat::Pair] {
        let mut new = NewKey::new(format.as_str(), perms(json!({"Orders": ["View"]})));
        new.format = format;
        let key = engine.create_key(sid, &admin(), new).unwrap();
        let renamed = KeyPatch {
            name: Some("renamed".into()),
            ..Default::default()
        };
        engine
            .update_key(sid, &admin(), &key.key.id, renamed)
            .unwrap();
        assert!(
            verify(&engine, &key.credential(), Area::Orders, Action::View).allowed(),
            "{format}"
        );
        let fresh = engine
            .regenerate_key(sid, &admin(), &key.key.id, time::Duration::ZERO)
            .unwrap();
        assert_eq!(fresh.key.consumer_key, key.key.consumer_key, "{format}");
        assert!(
            verify(&engine, &fresh.credential(), Area::Orders, Action::View).allowed(),
            "{format}"
        );
        let old = verify(&engine, &key.credential(), Area::Orders, Action::View);
        assert_eq!(old.code(), Some(DenyCode::Invalid), "{format}");
        engine.revoke_key(sid, &admin(), &key.key.id).unwrap();
        let gone = verify(&engine, &fresh.credential(), Area::Orders, Action::View);
        assert_eq!(gone.code(), Some(DenyCode::Invalid), "{format}");
    }
}

#[test]
fn updates_do_not_interrupt_concurrent_verifies() {
    let (engine, _) = engine();
    let engine = Arc::new(engine);
    let (store, _) = store(&engine);
    let key = scoped(&engine, &store, json!({"Orders": ["View"]}));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(std::sync::Barrier::new(2));
    let checker = {
        let (engine, cred, stop) = (engine.clone(), key.credential(), stop.clone());
        let started = started.clone();
        std::thread::spawn(move || {
            let mut checks = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // The frozen clock soon exhausts the key's limit; what matters is that the key
                // is found and passes every other check throughout.
                let d = verify(&engine, &cred, Area::Orders, Action::View);
                assert!(
                    d.allowed() || d.code() == Some(DenyCode::RateLimited),
                    "{d:?}"
                );
                checks += 1;
                if checks == 1 {
                    started.wait();
                }
            }
            checks
        })
    };
    // The updates start once the checker is verifying (thread start-up can take longer than
    // fifty in-memory updates).
    started.wait();
    for i in 0..50 {
        let patch = KeyPatch {
            name: Some(format!("renamed {i}")),
            ..Default::default()
        };
        engine
            .update_key(store.id.as_str(), &admin(), &key.key.id, patch)
            .unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    assert!(checker.join().unwrap() > 0);
}

#[test]
fn verify_without_a_permission_only_authenticates() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let key = scoped(&engine, &store, json!({"Orders": ["View"]}));
    let cred = key.credential();
    let d = engine.verify(&VerifyRequest {
        credential: Some(&cred),
        permission: None,
        ip: None,
        path: "/",
    });
    assert!(d.allowed());
    // No IP and no route scope: only the key's limit, the server default of 60/min.
    let limit = d.limit().unwrap();
    assert_eq!((limit.limit, limit.remaining), (60, 59));
}

trait Days {
    fn now_plus_days(&self, days: i64) -> time::OffsetDateTime;
}

impl Days for latchkey::FakeClock {
    fn now_plus_days(&self, days: i64) -> time::OffsetDateTime {
        use latchkey::Clock;
        self.now() + time::Duration::days(days)
    }
}

/// Enough keys to spread over every shard of the index and make each grow several times,
/// then changes of every kind, each seen by the next verify and no other key disturbed.
#[test]
fn thousands_of_keys_stay_exact_through_growth_regeneration_and_revocation() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    engine
        .update_store(
            sid,
            &admin(),
            StorePatch {
                max_scoped_keys: Some(3_000),
                ..Default::default()
            },
        )
        .unwrap();
    let formats = [KeyFormat::Token, KeyFormat::Hex, KeyFormat::Pair];
    let batch = (0..3_000)
        .map(|i| {
            let mut new = NewKey::new(format!("k{i}"), perms(json!({"Orders": ["View"]})));
            new.format = formats[i % 3];
            new
        })
        .collect();
    let keys = engine.create_keys(sid, &admin(), batch).unwrap();
    // No client address: thousands of requests from one would meet its per-IP limit.
    let decide = |cred: &str| {
        engine.verify(&VerifyRequest {
            credential: Some(cred),
            permission: Some(latchkey::Permission::new(Area::Orders, Action::View)),
            ip: None,
            path: "/api/v1/orders",
        })
    };
    let allowed = |cred: &str| decide(cred).allowed();
    assert!(keys.iter().all(|k| allowed(&k.credential())));

    let mut live = Vec::new();
    let mut dead = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let id = &key.key.id;
        if i % 5 == 0 {
            engine.revoke_key(sid, &admin(), id).unwrap();
            dead.push(key.credential());
        } else if i % 3 == 0 {
            let fresh = engine
                .regenerate_key(sid, &admin(), id, time::Duration::ZERO)
                .unwrap();
            dead.push(key.credential());
            live.push(fresh.credential());
        } else {
            live.push(key.credential());
        }
    }
    for cred in &live {
        assert!(allowed(cred), "a live key was lost");
    }
    for cred in &dead {
        let code = decide(cred).code();
        assert_eq!(
            code,
            Some(DenyCode::Invalid),
            "a dead credential still works"
        );
    }
    // Management reads see every surviving key, with its use recorded by verify.
    let listed = engine.list_keys(sid).unwrap();
    assert_eq!(listed.len(), 1 + 3_000 - 600);
    assert!(
        listed
            .iter()
            .filter(|k| k.name.starts_with('k'))
            .all(|k| k.last_used_at.is_some())
    );
}
