//! `cargo bench -p latchkey --bench entities`
//!
//! - `entities/create_package`, `entities/create_order`: one create each, on the in-memory
//!   database (validation, id, reference checks, the write transaction; no disk).
//! - `entities/create_package_durable`: the same on a database file, with the `fsync` of an
//!   immediate-durability commit (what a server acknowledges).
//! - `entities/list_50_of_100k_packages`, `entities/list_50_of_100k_orders`: one page of 50
//!   from the middle of 100,000 (by cursor).
//! - `entities/list_json_50_of_100k_packages_after_a_write`, `…_kept`: the same page of
//!   packages as JSON text (what the server sends), read right after a write to the store (so
//!   read from the database and joined), and read again with no write between (kept).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use latchkey::{Actor, Area, Engine, EngineOptions, NewStore, Scope};
use serde_json::{Value, json};

fn setup(engine: &Engine) -> (Scope, String, String) {
    let (store, _) = engine
        .create_store(&Actor::admin("bench"), NewStore::named("Bench"))
        .expect("store");
    let scope = Scope::new(store.id, "live");
    let package = engine
        .create_entity(
            &scope,
            Area::Packages,
            &json!({"name": "VIP", "price": {"amount": 999, "currency": "USD"}}),
        )
        .expect("package");
    let customer = engine
        .create_entity(&scope, Area::Customers, &json!({"email": "b@example.com"}))
        .expect("customer");
    let id = |v: &Value| v["id"].as_str().expect("id").to_owned();
    (scope, id(&package), id(&customer))
}

fn package_body(i: u64) -> Value {
    json!({"name": format!("Package {i}"), "price": {"amount": 100 + i, "currency": "USD"}})
}

fn order_body(package: &str, customer: &str) -> Value {
    json!({"customer_id": customer, "items": [{"package_id": package, "quantity": 2}]})
}

/// A cursor halfway through 100,000 entities of `area`.
fn middle(engine: &Engine, scope: &Scope, area: Area) -> String {
    let mut cursor = None;
    for _ in 0..500 {
        let page = engine
            .list_entities(scope, area, Some(100), cursor.as_deref())
            .expect("page");
        cursor = page.next_cursor;
    }
    cursor.expect("more than 50,000")
}

fn benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("entities");
    let engine = Engine::memory().expect("engine");
    let (scope, package, customer) = setup(&engine);
    let mut i = 0;
    group.bench_function("create_package", |b| {
        b.iter(|| {
            i += 1;
            engine.create_entity(&scope, Area::Packages, &package_body(i))
        })
    });
    group.bench_function("create_order", |b| {
        b.iter(|| engine.create_entity(&scope, Area::Orders, &order_body(&package, &customer)))
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let durable =
        Engine::open_with(dir.path().join("bench.redb"), EngineOptions::default()).expect("file");
    let (durable_scope, _, _) = setup(&durable);
    group.bench_function("create_package_durable", |b| {
        b.iter(|| {
            i += 1;
            durable.create_entity(&durable_scope, Area::Packages, &package_body(i))
        })
    });

    // Lists: exactly 100,000 of each in a fresh store (built on first use).
    let big = Engine::memory().expect("engine");
    let mut lists: Option<(Scope, String, String)> = None;
    group.bench_function("list_50_of_100k_packages", |b| {
        let (scope, packages, _) = lists.get_or_insert_with(|| build(&big));
        b.iter(|| big.list_entities(scope, Area::Packages, Some(50), Some(black_box(packages))))
    });
    group.bench_function("list_50_of_100k_orders", |b| {
        let (scope, _, orders) = lists.get_or_insert_with(|| build(&big));
        b.iter(|| big.list_entities(scope, Area::Orders, Some(50), Some(black_box(orders))))
    });
    // The page as the server sends it (JSON text): first read after a write to the store, and
    // then kept until the next one.
    group.bench_function("list_json_50_of_100k_packages_after_a_write", |b| {
        let (scope, packages, _) = lists.get_or_insert_with(|| build(&big));
        let first = big
            .list_entities(scope, Area::Packages, Some(1), None)
            .expect("page")
            .items[0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let mut n = 0;
        b.iter_batched(
            || {
                n += 1;
                let rename = json!({"name": format!("Package {n}")});
                big.update_entity(scope, Area::Packages, &first, &rename)
                    .expect("update");
            },
            |()| big.list_entities_json(scope, Area::Packages, Some(50), Some(black_box(packages))),
            BatchSize::PerIteration,
        )
    });
    group.bench_function("list_json_50_of_100k_packages_kept", |b| {
        let (scope, packages, _) = lists.get_or_insert_with(|| build(&big));
        b.iter(|| {
            big.list_entities_json(scope, Area::Packages, Some(50), Some(black_box(packages)))
        })
    });
    group.finish();
}

fn build(engine: &Engine) -> (Scope, String, String) {
    let (scope, package, customer) = setup(engine);
    for i in 1..100_000 {
        engine
            .create_entity(&scope, Area::Packages, &package_body(i))
            .expect("package");
    }
    for _ in 0..100_000 {
        engine
            .create_entity(&scope, Area::Orders, &order_body(&package, &customer))
            .expect("order");
    }
    let packages = middle(engine, &scope, Area::Packages);
    let orders = middle(engine, &scope, Area::Orders);
    (scope, packages, orders)
}

criterion_group!(entities, benches);
criterion_main!(entities);
