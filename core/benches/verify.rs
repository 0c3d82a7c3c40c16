//! `cargo bench -p latchkey --bench verify`
//!
//! - `sha256/secret`: one SHA-256 of a token secret — the floor under any verify.
//! - `verify/hot`: one key verified over and over (the index entry stays in cache) with a
//!   limit attached: the key's own token bucket (10,000/min) is charged on every call. No
//!   client address is passed (an in-process caller), so no per-IP limit applies.
//! - `verify/hot_sliding`: the same with a `sliding_window` limit (the server's default
//!   algorithm) instead of a token bucket.
//! - `verify/hot_ip`: the same with the client's address on a route with a per-IP scope, so
//!   two limits are charged on every call, all or none: the key's and the IP's.
//! - `verify/hot_no_limits`: the same key on an exempt route without a client IP, so no limit
//!   applies: the difference to `verify/hot` is the key limit's share.
//! - `verify/1m_keys`: 1,000,000 live keys, verified in random order (cache-cold lookups),
//!   each charged its own limit as in `verify/hot`; every call timed is an admission.
//!
//! The hot benchmarks run on a clock that moves 10 ms at every reading (verify reads it once),
//! so a key limited to 10,000 a minute is admitted on every call: they measure admissions.
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::{
    Action, Actor, Algorithm, Area, Clock, Digest, Engine, EngineOptions, IpScope, NewKey,
    NewStore, Permission, PermissionSet, RateLimit, RateOptions, StorePatch, VerifyRequest,
};

// The allocator the server ships with (server/src/main.rs), so entries are laid out as there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// A clock 10 ms further on at every reading. A load and a store rather than an atomic add:
/// only the benchmark's thread reads it while a measurement runs, and a locked add would time
/// the harness (≈ 10 ns) rather than verify.
#[derive(Debug)]
struct Stepping(AtomicI64);

impl Clock for Stepping {
    fn now_nanos(&self) -> i64 {
        let t = self.0.load(Ordering::Relaxed) + 10_000_000;
        self.0.store(t, Ordering::Relaxed);
        t
    }
}

fn orders_view() -> PermissionSet {
    PermissionSet::from_input(&serde_json::json!({"Orders": ["View"]})).expect("valid permissions")
}

fn hot(c: &mut Criterion) {
    let admin = Actor::admin("bench");
    let start = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let options = EngineOptions {
        clock: Arc::new(Stepping(AtomicI64::new(
            i64::try_from(start).expect("a date this century"),
        ))),
        rates: RateOptions {
            // 100 calls a second of clock time: 90,000 per 15 minutes.
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
    // A key with its own limit of 10,000 a minute under `algorithm`; its credential.
    let limited = |name: &str, algorithm| {
        let mut key = NewKey::new(name, orders_view());
        key.rate_limit = Some(RateLimit {
            limit: 10_000,
            window_seconds: 60,
            algorithm,
        });
        engine
            .create_key(store.id.as_str(), &admin, key)
            .expect("key")
            .credential()
    };
    let hot = limited("hot", Algorithm::TokenBucket);
    // The server's default algorithm (SPEC §5: 60 a minute, sliding), at the same limit.
    let hot_sliding = limited("hot sliding", Algorithm::SlidingWindow);
    let key_only = |credential| VerifyRequest {
        ip: None,
        ..request(credential)
    };
    let no_limits = |credential| VerifyRequest {
        ip: None,
        ..request_to(credential, "/api/v1/products")
    };
    let limits = |request: &VerifyRequest<'_>| {
        let decision = engine.verify(request);
        assert!(decision.allowed(), "admitted: {decision:?}");
        decision.limit().map(|l| l.limit)
    };
    // Each variant charges what its description says, and is admitted.
    assert_eq!(limits(&key_only(&hot)), Some(10_000));
    assert_eq!(limits(&request(&hot)), Some(10_000));
    assert_eq!(limits(&no_limits(&hot)), None);
    assert_eq!(limits(&key_only(&hot_sliding)), Some(10_000));

    let secret = hot[hot.len() - 32..].to_owned();
    c.bench_function("sha256/secret", |b| {
        b.iter(|| Digest::of(black_box(secret.as_bytes())))
    });
    c.bench_function("verify/hot", |b| {
        b.iter(|| engine.verify(black_box(&key_only(black_box(&hot)))))
    });
    c.bench_function("verify/hot_ip", |b| {
        b.iter(|| engine.verify(black_box(&request(black_box(&hot)))))
    });
    c.bench_function("verify/hot_sliding", |b| {
        b.iter(|| engine.verify(black_box(&key_only(black_box(&hot_sliding)))))
    });
    c.bench_function("verify/hot_no_limits", |b| {
        b.iter(|| engine.verify(black_box(&no_limits(black_box(&hot)))))
    });
    assert_eq!(limits(&key_only(&hot)), Some(10_000));
    assert_eq!(limits(&request(&hot)), Some(10_000));
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
                &latchkey::Actor::admin("bench"),
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

/// One credential in a cache line of its own.
#[repr(C, align(64))]
struct Row {
    bytes: [u8; 63],
    len: u8,
}

impl Row {
    fn new(credential: &str) -> Self {
        let mut bytes = [0; 63];
        bytes[..credential.len()].copy_from_slice(credential.as_bytes());
        Self {
            bytes,
            len: u8::try_from(credential.len()).expect("a credential fits a row"),
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("ASCII")
    }
}

fn million(c: &mut Criterion) {
    // Built on first use, so a filter that skips this benchmark skips the setup too.
    let mut setup: Option<(Engine, Vec<Row>)> = None;
    // Kept across criterion's calls of the routine, so every pass goes on through the keys
    // rather than starting again at the first (which would then meet its limit).
    let mut at = 0;
    let mut refused = 0u64;
    c.bench_function("verify/1m_keys", |b| {
        let (engine, rows) = setup.get_or_insert_with(|| {
            let (engine, mut credentials) = million_keys();
            shuffle(&mut credentials);
            (engine, credentials.iter().map(|c| Row::new(c)).collect())
        });
        // The keys come in random order (one fixed random permutation, pass after pass), but
        // the credentials are read in the order they sit in memory: a server verifies a
        // credential it has just read from the request, so the credential itself is in cache.
        // Reading it at random would add the harness's own cache miss to every verify.
        b.iter(|| {
            // The same request as `verify/hot`: the key's own limit (its server default, 60 a
            // minute, which no key nears), no client address. With one address for every
            // request, its per-IP limit would refuse all but the first thousand, and this
            // would time refusals.
            let decision = engine.verify(black_box(&VerifyRequest {
                ip: None,
                ..request(rows[at].as_str())
            }));
            refused += u64::from(!decision.allowed());
            at += 1;
            if at == rows.len() {
                at = 0;
            }
            decision
        });
    });
    assert_eq!(refused, 0, "every verify timed was an admission");
}

/// Fisher–Yates with xorshift64: a fixed random order, so runs are comparable.
fn shuffle<T>(items: &mut [T]) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..items.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = usize::try_from(state % (i as u64 + 1)).expect("an index");
        items.swap(i, j);
    }
}

criterion_group!(benches, hot, million);
criterion_main!(benches);
