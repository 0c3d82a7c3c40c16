//! `cargo bench -p latchkey --bench verify`
//!
//! - `sha256/secret`: one SHA-256 of a token secret — the floor under any verify.
//! - `verify/hot`: one key verified over and over (the index entry stays in cache), with a
//!   limit attached: the key's own (token bucket, 10,000/min) and the client IP's route scope
//!   are both charged on every call. The engine runs on a fake clock that the loop moves 10 ms
//!   per call, so every call is admitted (the figure includes that clock move, timed alone as
//!   `clock/advance`).
//! - `verify/hot_no_limits`: the same key on an exempt route without a client IP, so no limit
//!   applies: the difference to `verify/hot` is the limiter's share.
//! - `verify/1m_keys`: 1,000,000 live keys, verified in random order (cache-cold lookups).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::{
    Action, Actor, Algorithm, Area, Digest, Engine, EngineOptions, FakeClock, IpScope, NewKey,
    NewStore, Permission, PermissionSet, RateLimit, RateOptions, StorePatch, VerifyRequest,
};

const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));

fn request(credential: &str) -> VerifyRequest<'_> {
    request_to(credential, "/api/v1/orders")
}

fn request_to<'a>(credential: &'a str, path: &'a str) -> VerifyRequest<'a> {
    VerifyRequest {
        credential: Some(credential),
        permission: Some(Permission::new(Area::Orders, Action::View)),
        ip: Some(IP),
        path,
    }
}

fn orders_view() -> PermissionSet {
    PermissionSet::from_input(&serde_json::json!({"Orders": ["View"]})).expect("valid permissions")
}

fn hot(c: &mut Criterion) {
    let admin = Actor::admin("bench");
    let clock = FakeClock::new(time::OffsetDateTime::now_utc());
    let step = time::Duration::milliseconds(10);
    let options = EngineOptions {
        clock: Arc::new(clock.clone()),
        rates: RateOptions {
            // 100 calls a second of fake time: 90,000 per 15 minutes.
            ip_scopes: vec![IpScope::new(
                "/api/v1/",
                RateLimit {
                    limit: 100_000,
                    window_seconds: 900,
                    algorithm: Algorithm::FixedWindow,
                },
            )],
            ..RateOptions::default()
        },
        ..EngineOptions::default()
    };
    let engine = Engine::memory_with(options).expect("engine");
    let (store, _) = engine
        .create_store(&admin, NewStore::named("Hot"))
        .expect("store");
    let mut key = NewKey::new("hot", orders_view());
    key.rate_limit = Some(RateLimit {
        limit: 10_000,
        window_seconds: 60,
        algorithm: Algorithm::TokenBucket,
    });
    let hot = engine
        .create_key(store.id.as_str(), &admin, key)
        .expect("key")
        .credential();
    let first = engine.verify(&request(&hot));
    assert!(first.allowed() && first.limit().is_some());

    let secret = hot[hot.len() - 32..].to_owned();
    c.bench_function("sha256/secret", |b| {
        b.iter(|| Digest::of(black_box(secret.as_bytes())))
    });
    c.bench_function("clock/advance", |b| {
        b.iter(|| clock.advance(black_box(step)))
    });
    c.bench_function("verify/hot", |b| {
        b.iter(|| {
            clock.advance(step);
            engine.verify(black_box(&request(black_box(&hot))))
        })
    });
    let last = engine.verify(&request(&hot));
    assert!(last.allowed(), "every call was admitted: {last:?}");
    c.bench_function("verify/hot_no_limits", |b| {
        b.iter(|| {
            clock.advance(step);
            let request = VerifyRequest {
                ip: None,
                ..request_to(black_box(&hot), "/api/v1/products")
            };
            engine.verify(black_box(&request))
        })
    });
}

/// 1,000 stores × (999 scoped + 1 default) keys: an engine and every key's credential.
fn million_keys() -> (Engine, Vec<String>) {
    let admin = Actor::admin("bench");
    let engine = Engine::memory().expect("engine");
    let mut credentials = Vec::with_capacity(1_000_000);
    for s in 0..1_000 {
        let (store, default_key) = engine
            .create_store(&admin, NewStore::named(format!("Store {s}")))
            .expect("store");
        let sid = store.id.as_str();
        engine
            .update_store(
                sid,
                StorePatch {
                    max_scoped_keys: Some(999),
                    ..Default::default()
                },
            )
            .expect("settings");
        credentials.push(default_key.credential());
        let batch = (0..999)
            .map(|i| NewKey::new(format!("k{i}"), orders_view()))
            .collect();
        for created in engine.create_keys(sid, &admin, batch).expect("keys") {
            credentials.push(created.credential());
        }
    }
    assert_eq!(credentials.len(), 1_000_000);
    assert!(
        credentials
            .iter()
            .step_by(9973)
            .all(|c| engine.verify(&request(c)).allowed())
    );
    (engine, credentials)
}

fn million(c: &mut Criterion) {
    // Built on first use, so a filter that skips this benchmark skips the setup too.
    let mut setup: Option<(Engine, Vec<String>)> = None;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    c.bench_function("verify/1m_keys", |b| {
        let (engine, credentials) = setup.get_or_insert_with(million_keys);
        b.iter(|| {
            // xorshift64: a random key each iteration, so lookups miss the cache as in production.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let credential = &credentials[(state % 1_000_000) as usize];
            engine.verify(black_box(&request(credential)))
        })
    });
}

criterion_group!(benches, hot, million);
criterion_main!(benches);
