//! `cargo bench -p latchkey-server --bench routes`
//!
//! What one request costs the thread that serves it, through `app()` in process: no socket,
//! no other thread, so the figures are the user-space work of the HTTP stack and the route,
//! steady from run to run where `bench/http.sh`'s request rates move by 10-20 % on two shared
//! cores. Issue #5 compares the two routes it loads:
//!
//! - `routes/healthz`: `GET /healthz`.
//! - `routes/keyed_list_20`: `GET /api/v1/packages?limit=20` with an API key, on a store of
//!   20 packages (the keyed load of `bench/http.sh`): verify, the limiter, the page, the
//!   rate-limit headers and the request's log entry. The log writer is not woken by requests
//!   here; once the queue is full its oldest entries are dropped, freed on this thread where
//!   the server's writer thread would free them.
//!
//! Each request is built outside the measured time; its response body is read to the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use latchkey::{
    Actor, Algorithm, Clock, Engine, EngineOptions, NewKey, NewStore, PermissionSet, RateLimit,
    Scope,
};
use latchkey_server::{AppState, Config, app};
use tower::ServiceExt;

// The server's allocator (see `src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A clock 10 ms later at each reading, so the key's token bucket never runs dry.
#[derive(Debug)]
struct Stepping(AtomicI64);

impl Clock for Stepping {
    fn now_nanos(&self) -> i64 {
        self.0.fetch_add(10_000_000, Ordering::Relaxed) + 10_000_000
    }
}

/// The app over an in-memory engine with one store of 20 packages, and a key's credential.
fn setup() -> (Router, String) {
    let start = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let options = EngineOptions {
        clock: Arc::new(Stepping(AtomicI64::new(
            i64::try_from(start).expect("now fits"),
        ))),
        // The writer is not woken by requests (only by the maintenance tick), so it does not
        // take the other core in bursts while a sample is measured.
        log_flush_at: 0,
        ..EngineOptions::default()
    };
    let engine = Arc::new(Engine::memory_with(options).expect("engine"));
    let admin = Actor::admin("bench");
    let (store, _) = engine
        .create_store(&admin, NewStore::named("Bench"))
        .expect("store");
    let scope = Scope::new(store.id, "live");
    for i in 1..=20 {
        let package = serde_json::json!({
            "name": format!("Package {i}"),
            "price": {"amount": i * 100, "currency": "USD"},
        });
        engine
            .create_entity(&scope, latchkey::Area::Packages, &package)
            .expect("package");
    }
    let mut key = NewKey::new(
        "bench",
        PermissionSet::from_input(&serde_json::json!({"Packages": ["View"]})).expect("perms"),
    );
    key.rate_limit = Some(RateLimit {
        limit: 10_000,
        window_seconds: 60,
        algorithm: Algorithm::TokenBucket,
    });
    let credential = engine
        .create_key(store.id.as_str(), &admin, key)
        .expect("key")
        .credential();
    let state = AppState::new(
        engine,
        Config::new(b"bench-secret-of-at-least-32-bytes".to_vec()),
    );
    (app(state), credential)
}

fn routes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (app, credential) = setup();
    let serve = |request: Request<Body>| {
        runtime.block_on(async {
            let response = app.clone().oneshot(request).await.expect("infallible");
            assert!(response.status().is_success(), "{}", response.status());
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes()
        })
    };
    let mut group = c.benchmark_group("routes");
    group.bench_function("healthz", |b| {
        b.iter_batched(
            || {
                Request::get("/healthz")
                    .body(Body::empty())
                    .expect("request")
            },
            serve,
            BatchSize::SmallInput,
        )
    });
    group.bench_function("keyed_list_20", |b| {
        b.iter_batched(
            || {
                Request::get("/api/v1/packages?limit=20")
                    .header("x-api-key", &credential)
                    .body(Body::empty())
                    .expect("request")
            },
            serve,
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, routes);
criterion_main!(benches);
