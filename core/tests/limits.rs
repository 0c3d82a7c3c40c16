//! Rate limits inside verify (SPEC §4, §5), on a fake clock: no test sleeps.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use common::*;
use latchkey::{
    Action, Algorithm, Clock, CreatedKey, Decision, DenyCode, Engine, EngineOptions, FakeClock,
    IpScope, LimitState, Limiter, LimiterOptions, NewKey, RateLimit, RateOptions, Store,
    StorePatch, VerifyRequest,
};
use proptest::prelude::*;
use serde_json::json;
use time::Duration;
use time::macros::datetime;

fn engine_with(clock: &FakeClock, rates: RateOptions) -> Engine {
    Engine::memory_with(EngineOptions {
        rates,
        ..options(clock)
    })
    .unwrap()
}

/// No per-IP limits: only the key's own limit applies.
fn key_limits_only() -> RateOptions {
    RateOptions {
        ip_scopes: Vec::new(),
        brute_force: None,
        ..RateOptions::default()
    }
}

fn limited_key(engine: &Engine, store: &Store, limit: Option<RateLimit>) -> CreatedKey {
    let mut key = NewKey::new("limited", perms(json!({"Orders": ["View"]})));
    key.rate_limit = limit;
    engine.create_key(store.id.as_str(), &admin(), key).unwrap()
}

fn call(engine: &Engine, credential: &str, ip: &str, path: &str) -> Decision {
    engine.verify(&VerifyRequest {
        credential: Some(credential),
        permission: Some(latchkey::Permission::new(
            latchkey::Area::Orders,
            Action::View,
        )),
        ip: Some(ip.parse().unwrap()),
        path,
    })
}

fn orders(engine: &Engine, credential: &str) -> Decision {
    call(engine, credential, "198.51.100.1", "/api/v1/orders")
}

fn allowed_of(engine: &Engine, credential: &str, tries: u32) -> u32 {
    (0..tries)
        .filter(|_| orders(engine, credential).allowed())
        .count() as u32
}

fn limit(limit: u32, window_seconds: u32, algorithm: Algorithm) -> RateLimit {
    RateLimit {
        limit,
        window_seconds,
        algorithm,
    }
}

/// A clock on an exact minute boundary.
fn minute_clock() -> FakeClock {
    FakeClock::new(datetime!(2026-11-23 12:00 UTC))
}

#[test]
fn fixed_window_admits_exactly_the_limit_per_aligned_window() {
    let clock = minute_clock();
    let engine = engine_with(&clock, key_limits_only());
    let (store, _) = store(&engine);
    let key = limited_key(&engine, &store, Some(limit(30, 60, Algorithm::FixedWindow)));
    let cred = key.credential();
    clock.advance(Duration::seconds(20));

    let first = orders(&engine, &cred);
    let state = first.limit().unwrap();
    let minute_end = datetime!(2026-11-23 12:01 UTC).unix_timestamp();
    assert_eq!(
        (state.limit, state.remaining, state.reset_at),
        (30, 29, minute_end)
    );
    assert_eq!(allowed_of(&engine, &cred, 40), 29);

    let refused = orders(&engine, &cred);
    assert_eq!(refused.code(), Some(DenyCode::RateLimited));
    assert_eq!(
        (refused.status(), &*refused.message()),
        (429, "Rate limit exceeded")
    );
    assert_eq!(refused.key_id(), Some(key.key.id.as_str()));
    let headers = refused.headers();
    assert!(headers.contains(&("X-RateLimit-Remaining", "0".into())));
    assert!(
        headers.contains(&("Retry-After", "40".into())),
        "{headers:?}"
    );

    // The window boundary: one millisecond before it, still refused; on it, a new window.
    clock.set(datetime!(2026-11-23 12:00:59.999 UTC));
    let last = orders(&engine, &cred);
    assert_eq!(
        last.limit().unwrap().retry_after,
        Some(1),
        "never below one second"
    );
    clock.set(datetime!(2026-11-23 12:01 UTC));
    assert_eq!(allowed_of(&engine, &cred, 40), 30);
}

#[test]
fn sliding_window_counts_the_rolling_minute() {
    let clock = minute_clock();
    let engine = engine_with(&clock, key_limits_only());
    let (store, _) = store(&engine);
    let key = limited_key(&engine, &store, Some(RateLimit::per_minute(10)));
    let cred = key.credential();
    assert_eq!(allowed_of(&engine, &cred, 5), 5);
    clock.advance(Duration::seconds(40));
    assert_eq!(allowed_of(&engine, &cred, 10), 5);
    // Across the minute boundary the first five are still within the last 60 s.
    clock.advance(Duration::seconds(25));
    assert_eq!(allowed_of(&engine, &cred, 10), 0);
    // Once they are more than a minute (and a sub-window) old, their five come back.
    clock.advance(Duration::seconds(6));
    assert_eq!(allowed_of(&engine, &cred, 10), 5);
}

#[test]
fn token_bucket_bursts_then_refills_steadily() {
    let clock = minute_clock();
    let engine = engine_with(&clock, key_limits_only());
    let (store, _) = store(&engine);
    let key = limited_key(&engine, &store, Some(limit(60, 60, Algorithm::TokenBucket)));
    let cred = key.credential();
    assert_eq!(allowed_of(&engine, &cred, 100), 60);
    let refused = orders(&engine, &cred);
    assert_eq!(refused.limit().unwrap().retry_after, Some(1));
    clock.advance(Duration::seconds(10));
    assert_eq!(allowed_of(&engine, &cred, 100), 10);
}

/// A token bucket keeps its rate's constants with its state; a new limit must bring new ones.
#[test]
fn a_token_bucket_follows_its_store_default_when_it_changes() {
    let clock = minute_clock();
    let engine = engine_with(&clock, key_limits_only());
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let set_default = |per_minute| {
        let patch = StorePatch {
            default_rate_limit: latchkey::Patch::Set(limit(per_minute, 60, Algorithm::TokenBucket)),
            ..Default::default()
        };
        engine.update_store(sid, &admin(), patch).unwrap();
    };
    set_default(60);
    let cred = limited_key(&engine, &store, None).credential();
    assert_eq!(allowed_of(&engine, &cred, 9), 9);
    assert_eq!(orders(&engine, &cred).limit().unwrap().remaining, 50);
    // Ten tokens of a second each are spent; at 120 a minute the next charge is half a
    // second, and the bucket holds 60 seconds: 49.5 seconds free, 99 tokens.
    set_default(120);
    let next = orders(&engine, &cred);
    assert_eq!(next.limit().unwrap().limit, 120);
    assert_eq!(next.limit().unwrap().remaining, 99);
}

#[test]
fn precedence_is_key_then_store_then_server_default() {
    let clock = minute_clock();
    let rates = RateOptions {
        default_limit: RateLimit::per_minute(7),
        ..key_limits_only()
    };
    let engine = engine_with(&clock, rates);
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let plain = limited_key(&engine, &store, None);
    let own = limited_key(&engine, &store, Some(RateLimit::per_minute(3)));
    assert_eq!(
        orders(&engine, &plain.credential()).limit().unwrap().limit,
        7
    );

    let patch = StorePatch {
        default_rate_limit: latchkey::Patch::Set(RateLimit::per_minute(5)),
        ..Default::default()
    };
    engine.update_store(sid, &admin(), patch).unwrap();
    assert_eq!(
        orders(&engine, &plain.credential()).limit().unwrap().limit,
        5
    );
    assert_eq!(orders(&engine, &own.credential()).limit().unwrap().limit, 3);
    assert_eq!(allowed_of(&engine, &own.credential(), 10), 2);

    // Regenerating the key gives it a new secret, not a new budget.
    let regenerated = engine
        .regenerate_key(sid, &admin(), &own.key.id, time::Duration::ZERO)
        .unwrap();
    assert_eq!(
        orders(&engine, &regenerated.credential()).code(),
        Some(DenyCode::RateLimited)
    );
}

#[test]
fn a_key_budget_follows_the_key_and_is_forgotten_when_idle() {
    let clock = minute_clock();
    let engine = engine_with(&clock, key_limits_only());
    let (store, _) = store(&engine);
    let sid = store.id.as_str();
    let key = limited_key(&engine, &store, Some(limit(5, 60, Algorithm::FixedWindow)));
    let idle = limited_key(&engine, &store, None);
    assert_eq!(allowed_of(&engine, &key.credential(), 3), 3);
    assert_eq!(
        engine.rate_limit_entries().0,
        1,
        "only a charged key holds a budget"
    );

    // A change that keeps the secret keeps the budget, as regeneration does.
    let rename = latchkey::KeyPatch {
        name: Some("renamed".into()),
        ..Default::default()
    };
    engine
        .update_key(sid, &admin(), &key.key.id, rename)
        .unwrap();
    assert_eq!(allowed_of(&engine, &key.credential(), 5), 2);
    let regenerated = engine
        .regenerate_key(sid, &admin(), &key.key.id, time::Duration::ZERO)
        .unwrap();
    assert_eq!(allowed_of(&engine, &regenerated.credential(), 5), 0);
    assert_eq!(
        allowed_of(&engine, &key.credential(), 1),
        0,
        "the old secret is gone"
    );

    // A budget that is all back is forgotten by a sweep; one in use is kept.
    assert_eq!(allowed_of(&engine, &idle.credential(), 1), 1);
    assert_eq!(engine.rate_limit_entries().0, 2);
    clock.advance(Duration::seconds(61));
    assert_eq!(
        engine.sweep_rate_limits(),
        1,
        "the sliding minute of the other key"
    );
    assert_eq!(engine.rate_limit_entries().0, 1);
    clock.advance(Duration::seconds(61));
    assert_eq!(engine.sweep_rate_limits(), 0);
    // Forgetting changed nothing: the key has its whole budget again.
    assert_eq!(allowed_of(&engine, &regenerated.credential(), 10), 5);
}

#[test]
fn two_threads_on_a_frozen_clock_admit_exactly_the_limit() {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ] {
        let clock = minute_clock();
        let engine = Arc::new(engine_with(&clock, key_limits_only()));
        let (store, _) = store(&engine);
        let key = limited_key(&engine, &store, Some(limit(500, 60, algorithm)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (engine, cred) = (engine.clone(), key.credential());
                std::thread::spawn(move || allowed_of(&engine, &cred, 400))
            })
            .collect();
        let admitted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(admitted, 500, "{algorithm:?}");
    }
}

#[test]
fn limits_are_charged_all_or_none() {
    let clock = minute_clock();
    let rates = RateOptions {
        ip_scopes: vec![IpScope::new(
            "/api/v1/",
            limit(3, 60, Algorithm::FixedWindow),
        )],
        brute_force: None,
        ..RateOptions::default()
    };
    let engine = engine_with(&clock, rates);
    let (store, _) = store(&engine);
    let a = limited_key(&engine, &store, Some(RateLimit::per_minute(5)));
    let b = limited_key(&engine, &store, Some(RateLimit::per_minute(5)));

    // The IP allows 3; the third request leaves the key 2 of 5 and the IP 0 of 3, so the
    // header shows the tighter limit.
    assert_eq!(allowed_of(&engine, &a.credential(), 2), 2);
    let third = orders(&engine, &a.credential());
    assert_eq!(third.limit().unwrap().limit, 3);
    assert_eq!(third.limit().unwrap().remaining, 0);
    // The IP refuses: key `a` is not charged for the refused request.
    for _ in 0..5 {
        assert_eq!(
            orders(&engine, &a.credential()).code(),
            Some(DenyCode::RateLimited)
        );
    }
    let elsewhere = call(&engine, &a.credential(), "198.51.100.2", "/api/v1/orders");
    assert!(elsewhere.allowed());
    assert_eq!(
        elsewhere.limit().unwrap().remaining,
        1,
        "key a used 4 of 5, not 9"
    );

    // A refusal for another reason charges nothing either.
    let forbidden = engine.verify(&VerifyRequest {
        credential: Some(&b.credential()),
        permission: Some(latchkey::Permission::new(
            latchkey::Area::Coupons,
            Action::Edit,
        )),
        ip: Some("198.51.100.3".parse().unwrap()),
        path: "/api/v1/coupons",
    });
    assert_eq!(forbidden.code(), Some(DenyCode::Forbidden));
    assert_eq!(
        forbidden.limit().unwrap().remaining,
        2,
        "peeked, not charged"
    );
    let fresh = call(&engine, &b.credential(), "198.51.100.3", "/api/v1/orders");
    assert_eq!(fresh.limit().unwrap().remaining, 2, "the IP's first charge");

    // Key `a` refuses: the IP is not charged.
    assert!(call(&engine, &a.credential(), "198.51.100.4", "/api/v1/orders").allowed());
    let over_key = call(&engine, &a.credential(), "198.51.100.4", "/api/v1/orders");
    assert_eq!(over_key.code(), Some(DenyCode::RateLimited));
    assert_eq!(
        over_key.limit().unwrap().limit,
        5,
        "the limit that refused is shown"
    );
    let ip4 = call(&engine, &b.credential(), "198.51.100.4", "/api/v1/orders");
    assert_eq!(
        ip4.limit().unwrap().remaining,
        1,
        "one charge from .4, not two"
    );
}

#[test]
fn exempt_routes_skip_the_key_limit_but_not_the_ip_limit() {
    let clock = minute_clock();
    let rates = RateOptions {
        ip_scopes: vec![IpScope::new(
            "/api/v1/",
            limit(50, 60, Algorithm::FixedWindow),
        )],
        ..RateOptions::default()
    };
    let engine = engine_with(&clock, rates);
    let (store, _) = store(&engine);
    let key = limited_key(&engine, &store, Some(RateLimit::per_minute(2)));
    let cred = key.credential();
    let products = |ip: &str| call(&engine, &cred, ip, "/api/v1/products/7");
    for _ in 0..20 {
        assert!(products("198.51.100.9").allowed());
    }
    assert_eq!(products("198.51.100.9").limit().unwrap().limit, 50);
    // The per-key limit still holds elsewhere.
    assert_eq!(allowed_of(&engine, &cred, 5), 2);
    // And the IP limit holds on the exempt route.
    let admitted = (0..100)
        .filter(|_| products("198.51.100.10").allowed())
        .count();
    assert_eq!(admitted, 50);
}

#[test]
fn route_scopes_and_ipv6_subnets() {
    let clock = minute_clock();
    let engine = engine_with(&clock, RateOptions::default());
    let ip_v4: IpAddr = "192.0.2.1".parse().unwrap();
    // The defaults of SPEC §5: 10 per 15 min on /api/v1/auth/, 5,000 on the storefront.
    let auth: Vec<_> = (0..12)
        .map(|_| engine.check_ip(ip_v4, "/api/v1/auth/login").unwrap())
        .collect();
    assert_eq!(auth[0].limit, 10);
    assert_eq!(auth.iter().filter(|s| s.retry_after.is_none()).count(), 10);
    let storefront = engine
        .check_ip(ip_v4, "/api/v1/storefront/packages")
        .unwrap();
    assert_eq!((storefront.limit, storefront.remaining), (5_000, 4_999));
    assert_eq!(engine.check_ip(ip_v4, "/healthz"), None);

    // One /64 is one client; the next /64 is another.
    let v6 = |text: &str| -> IpAddr { text.parse::<Ipv6Addr>().unwrap().into() };
    for i in 0..10 {
        let ip = v6(&format!("2001:db8:1:2::{i:x}"));
        assert!(
            engine
                .check_ip(ip, "/api/v1/auth/x")
                .unwrap()
                .retry_after
                .is_none()
        );
    }
    let same_64 = engine
        .check_ip(v6("2001:db8:1:2:ffff::1"), "/api/v1/auth/x")
        .unwrap();
    assert!(same_64.retry_after.is_some());
    let next_64 = engine
        .check_ip(v6("2001:db8:1:3::1"), "/api/v1/auth/x")
        .unwrap();
    assert!(next_64.retry_after.is_none());
    // An IPv4-mapped address is the IPv4 client.
    let mapped = engine
        .check_ip(v6("::ffff:192.0.2.1"), "/api/v1/auth/x")
        .unwrap();
    assert!(mapped.retry_after.is_some());
}

#[test]
fn failed_authentications_lock_the_ip_out_until_the_window_passes() {
    let clock = minute_clock();
    let engine = engine_with(&clock, RateOptions::default());
    let (store, _) = store(&engine);
    let key = limited_key(&engine, &store, None);
    let cred = key.credential();
    let attacker = "203.0.113.66";
    let mut wrong = cred.clone();
    // A different character (1 in 62 keys already has a `Q` there).
    let at = wrong.len() - 10;
    let other = if &wrong[at..=at] == "Q" { "R" } else { "Q" };
    wrong.replace_range(at..=at, other);
    for i in 0..100 {
        let d = call(&engine, &wrong, attacker, "/api/v1/orders");
        assert_eq!(d.status(), 401, "attempt {i}");
        assert_eq!(d.limit().unwrap().remaining, 99 - i);
    }
    let missing = engine.verify(&VerifyRequest {
        credential: None,
        permission: None,
        ip: Some(attacker.parse().unwrap()),
        path: "/api/v1/orders",
    });
    assert_eq!(missing.code(), Some(DenyCode::RateLimited));
    // Even the right key is refused from that IP: guessing learns nothing more.
    let right = call(&engine, &cred, attacker, "/api/v1/orders");
    assert_eq!(right.code(), Some(DenyCode::RateLimited));
    assert_eq!(right.key_id(), None, "the credential was not looked at");
    assert!(right.limit().unwrap().retry_after.unwrap() >= 1);
    // Public routes too.
    let public = engine
        .check_ip(attacker.parse().unwrap(), "/api/v1/storefront/x")
        .unwrap();
    assert!(public.retry_after.is_some());
    // Another IP is unaffected.
    assert!(call(&engine, &cred, "203.0.113.67", "/api/v1/orders").allowed());
    // After the 15-minute window, the IP may try again.
    clock.advance(Duration::minutes(15));
    assert!(call(&engine, &cred, attacker, "/api/v1/orders").allowed());
}

#[test]
fn clock_steps_never_panic_or_give_budget_back() {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
    ] {
        let clock = minute_clock();
        let engine = engine_with(&clock, key_limits_only());
        let (store, _) = store(&engine);
        let key = limited_key(&engine, &store, Some(limit(10, 60, algorithm)));
        let cred = key.credential();
        assert_eq!(allowed_of(&engine, &cred, 20), 10, "{algorithm:?}");

        // An hour back: the spent budget stays spent.
        clock.advance(Duration::hours(-1));
        let back = orders(&engine, &cred);
        assert_eq!(back.code(), Some(DenyCode::RateLimited), "{algorithm:?}");
        let state = back.limit().unwrap();
        // At most a window (and, sliding, a sub-window) away.
        assert!(
            (1..=66).contains(&state.retry_after.unwrap()),
            "{algorithm:?} {state:?}"
        );
        assert!(state.reset_at > clock.now_secs(), "{algorithm:?}");
        // Time then passes normally from where it stood.
        clock.advance(Duration::seconds(70));
        assert_eq!(allowed_of(&engine, &cred, 20), 10, "{algorithm:?}");

        // An hour forward: indistinguishable from an hour passing; the budget is back.
        assert_eq!(allowed_of(&engine, &cred, 1), 0);
        clock.advance(Duration::hours(1));
        let forward = orders(&engine, &cred);
        assert!(forward.allowed(), "{algorithm:?}");
        assert!(forward.limit().unwrap().reset_at > clock.now_secs());

        // The far ends of time saturate instead of overflowing.
        clock.set(time::OffsetDateTime::UNIX_EPOCH);
        let _ = orders(&engine, &cred);
        clock.advance(Duration::MAX);
        let _ = orders(&engine, &cred);
    }
}

#[test]
fn a_million_distinct_ips_stay_within_the_cap() {
    let clock = minute_clock();
    let cap = 1 << 16;
    let rates = RateOptions {
        ips: LimiterOptions {
            shards: 64,
            capacity: cap,
        },
        ..RateOptions::default()
    };
    let engine = engine_with(&clock, rates);
    // A client that keeps using its budget survives the flood.
    let steady: IpAddr = "192.0.2.200".parse().unwrap();
    for _ in 0..500 {
        engine.check_ip(steady, "/api/v1/orders");
    }
    for i in 0..1_000_000u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i));
        engine.check_ip(ip, "/api/v1/orders");
        if i % 100_000 == 0 {
            engine.check_ip(steady, "/api/v1/orders");
        }
    }
    let (_, tracked) = engine.rate_limit_entries();
    assert!(tracked <= cap, "{tracked} > {cap}");
    assert!(tracked > cap / 2, "the cap is used, not emptied: {tracked}");
    let state = engine.check_ip(steady, "/api/v1/orders").unwrap();
    assert!(
        state.remaining < 1_000 - 500,
        "the heavy client's count was kept: {state:?}"
    );
    // Once the window has passed, a sweep forgets everything idle.
    clock.advance(Duration::minutes(16));
    assert_eq!(engine.sweep_rate_limits(), 0);
}

#[test]
fn limiter_memory_per_entry_is_bounded() {
    let clock = minute_clock();
    let cap = 1 << 17;
    let limiter: Limiter<u64> = Limiter::new(
        LimiterOptions {
            shards: 64,
            capacity: cap,
        },
        Arc::new(clock.clone()),
    );
    for algorithm in [Algorithm::FixedWindow, Algorithm::TokenBucket] {
        let l = limit(100, 60, algorithm);
        for key in 0..cap as u64 * 2 {
            limiter.check(key, &l);
        }
        assert!(limiter.len() <= cap);
        let per_entry = limiter.allocated_bytes() / limiter.len();
        // 8 B of key, 8 B of state, one control byte, at worst 7/16 full.
        assert!(
            per_entry <= 8 + 48,
            "{algorithm:?}: {per_entry} B per entry"
        );
        clock.advance(Duration::hours(1));
        limiter.sweep();
        assert_eq!(limiter.len(), 0);
    }
}

#[test]
fn options_are_validated_before_anything_is_opened() {
    let clock = minute_clock();
    let rates = RateOptions {
        default_limit: RateLimit::per_minute(20_000),
        ip_scopes: vec![IpScope::new("api", limit(0, 60, Algorithm::FixedWindow))],
        ..RateOptions::default()
    };
    let err = Engine::memory_with(EngineOptions {
        rates,
        ..options(&clock)
    })
    .unwrap_err();
    let problems = err.problems().join("\n");
    assert!(problems.contains("rates.default_limit"), "{problems}");
    assert!(problems.contains("rates.ip_scopes[0].prefix"), "{problems}");
    assert!(
        problems.contains("rates.ip_scopes[0].limit.limit"),
        "{problems}"
    );
}

fn limit_state_allows(state: &LimitState) -> bool {
    state.retry_after.is_none()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// SPEC §5: a sliding window never admits more than `limit` in any interval of
    /// `window_seconds`, whatever the arrival times.
    #[test]
    fn sliding_window_never_exceeds_the_limit_in_any_rolling_interval(
        limit_n in 1u32..20,
        window in 1u32..120,
        gaps in proptest::collection::vec(0u64..5_000, 1..400),
    ) {
        let clock = minute_clock();
        let limiter: Limiter<u8> = Limiter::new(LimiterOptions::default(), Arc::new(clock.clone()));
        let l = limit(limit_n, window, Algorithm::SlidingWindow);
        let mut admitted: Vec<i64> = Vec::new();
        for gap in gaps {
            clock.advance(Duration::milliseconds(gap as i64 * i64::from(window) / 10));
            if limit_state_allows(&limiter.check(0, &l)) {
                admitted.push(clock.now_nanos());
            }
        }
        let window_ns = i64::from(window) * 1_000_000_000;
        for (i, &end) in admitted.iter().enumerate() {
            let inside = admitted[..=i].iter().filter(|&&t| t > end - window_ns).count();
            prop_assert!(inside as u32 <= limit_n, "{inside} in a window ending at admission {i}");
        }
    }
}
