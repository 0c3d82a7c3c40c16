//! What the route benches share: an app over an in-memory engine with one store of 20
//! packages, and a key that may list them (`benches/routes.rs`, `examples/route_cost.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::Router;
use latchkey::{
    Actor, Algorithm, Clock, Engine, EngineOptions, NewKey, NewStore, PermissionSet, RateLimit,
    Scope,
};
use latchkey_server::{AppState, Config, app};

/// A clock 10 ms later at each reading, so the key's token bucket never runs dry.
#[derive(Debug)]
struct Stepping(AtomicI64);

impl Clock for Stepping {
    fn now_nanos(&self) -> i64 {
        self.0.fetch_add(10_000_000, Ordering::Relaxed) + 10_000_000
    }
}

/// The app over an in-memory engine with one store of 20 packages, and a key's credential.
pub fn setup() -> (Router, String) {
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
