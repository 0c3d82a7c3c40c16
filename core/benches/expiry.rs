//! `cargo bench -p latchkey --bench expiry`
//!
//! - `expiry/scan_100k`: `Engine::notify_expiring_keys` over 100,000 keys (ten stores of
//!   10,000, each expiring in a year) of which none is due: the periodic scan's usual case.
//!   It runs on the webhook worker's thread, not on a request's.
//! - `expiry/create_1000_keys`: 1,000 keys made in one commit (a new store each time), each
//!   with an expiry, so each is indexed for its notice as it is written.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey::{Actor, Engine, NewKey, NewStore, PermissionSet, StorePatch};

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(dir.path().join("bench.redb")).expect("engine");
    let admin = Actor::admin("bench");
    let everything = PermissionSet::from_input(&serde_json::json!("*")).expect("permissions");
    for s in 0..10 {
        let (store, _) = engine
            .create_store(&admin, NewStore::named(format!("Store {s}")))
            .expect("store");
        let sid = store.id.as_str();
        let wide =
            StorePatch::from_json(&serde_json::json!({"max_scoped_keys": 10_000})).expect("patch");
        engine.update_store(sid, &admin, wide).expect("update");
        let keys = (0..9_999)
            .map(|k| NewKey::new(format!("key {k}"), everything))
            .collect();
        engine.create_keys(sid, &admin, keys).expect("keys");
    }
    let mut group = c.benchmark_group("expiry");
    group.sample_size(10);
    group.bench_function("scan_100k", |b| {
        b.iter(|| {
            let written = engine.notify_expiring_keys().expect("scan");
            assert_eq!(written, 0);
            black_box(written)
        })
    });
    let mut n = 0;
    group.bench_function("create_1000_keys", |b| {
        b.iter(|| {
            n += 1;
            let (store, _) = engine
                .create_store(&admin, NewStore::named(format!("Batch {n}")))
                .expect("store");
            let wide = StorePatch::from_json(&serde_json::json!({"max_scoped_keys": 1000}))
                .expect("patch");
            engine
                .update_store(store.id.as_str(), &admin, wide)
                .expect("update");
            let keys = (0..1000)
                .map(|k| NewKey::new(format!("key {k}"), everything))
                .collect();
            black_box(
                engine
                    .create_keys(store.id.as_str(), &admin, keys)
                    .expect("keys"),
            )
        })
    });
    group.finish();
}

criterion_group!(expiry, benches);
criterion_main!(expiry);
