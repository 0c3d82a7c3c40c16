//! `cargo bench -p latchkey --bench logs`
//!
//! - `logs/write_16k`: 16,384 request-log entries (what one wake-up of the log writer takes
//!   under load: a quarter of the queue) recorded and written in one batch, on a database file,
//!   as the server's writer thread does. The figure is per batch; per entry, divide by 16,384.
//! - `logs/read_100_newest`: the newest 100 entries of a store's log of 200,000.
//! - `logs/read_rare_key`: the entries of a key that made one request, the store's first, in
//!   that log (a filter that matches almost nothing reads the whole log).
//! - `logs/usage_day`: `Engine::usage` over the same log, all of it within the default day:
//!   every entry decoded and counted.
//!
//! The writer runs on its own thread, beside the threads serving requests: what it costs per
//! entry is CPU the requests do not get (issue #5's keyed route).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use latchkey::{Actor, Engine, EngineOptions, LogEntry, LogQuery, NewStore, StoreId, UsageQuery};
use time::OffsetDateTime;

// The server's allocator, so the writer's allocations cost what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 16_384;

fn entry(store: StoreId, n: usize) -> LogEntry {
    LogEntry::new(
        OffsetDateTime::now_utc(),
        store,
        Some("key_01JD5Q2V8K3M4N5P6Q7R8S"),
        "GET",
        if n % 2 == 0 {
            "/api/v1/packages"
        } else {
            "/api/v1/orders/ord_01JD5Q2V8K3M4N5P6Q7R8S"
        },
        200,
        Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, (n % 250) as u8))),
        "OK",
        90 + (n % 50) as u64,
    )
}

fn benches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    // Written only when the bench asks (`logs()` writes what is queued first): no tick, no
    // early wake-up, so each batch is exactly the entries recorded for it.
    let options = EngineOptions {
        log_flush_at: 0,
        ..EngineOptions::default()
    };
    let engine = Engine::open_with(dir.path().join("bench.redb"), options).expect("engine");
    let (store, _) = engine
        .create_store(&Actor::admin("bench"), NewStore::named("Bench"))
        .expect("store");
    let sid = store.id;
    let newest = LogQuery {
        limit: Some(1),
        ..LogQuery::default()
    };
    let mut group = c.benchmark_group("logs");
    group.sample_size(20);
    group.bench_function("write_16k", |b| {
        b.iter_batched(
            || {
                for n in 0..BATCH {
                    engine.record_request(entry(sid, n));
                }
            },
            |()| engine.logs(sid.as_str(), black_box(&newest)).expect("logs"),
            BatchSize::PerIteration,
        )
    });
    // The reads run on a store of their own holding exactly 200,000 entries, whatever number
    // of batches `write_16k` wrote to the first (it depends on the measurement time).
    let (reads, _) = engine
        .create_store(&Actor::admin("bench"), NewStore::named("Reads"))
        .expect("store");
    let sid = reads.id;
    engine.record_request(LogEntry::new(
        OffsetDateTime::now_utc(),
        sid,
        Some("key_rarely_used_0000000"),
        "GET",
        "/api/v1/packages",
        200,
        None,
        "OK",
        80,
    ));
    let mut written = 1;
    while written < 200_000 {
        let batch = BATCH.min(200_000 - written);
        for n in 0..batch {
            engine.record_request(entry(sid, n));
        }
        written += batch;
        engine.logs(sid.as_str(), &newest).expect("logs");
    }
    let hundred = LogQuery {
        limit: Some(100),
        ..LogQuery::default()
    };
    group.sample_size(100);
    group.bench_function("read_100_newest", |b| {
        b.iter(|| {
            engine
                .logs(sid.as_str(), black_box(&hundred))
                .expect("logs")
        })
    });
    // A key that made one request, before everything else: its page is at the far end.
    let rare = LogQuery {
        key_id: Some("key_rarely_used_0000000".to_owned()),
        limit: Some(100),
        ..LogQuery::default()
    };
    group.sample_size(10);
    group.bench_function("read_rare_key", |b| {
        b.iter(|| engine.logs(sid.as_str(), black_box(&rare)).expect("logs"))
    });
    group.bench_function("usage_day", |b| {
        b.iter(|| {
            let usage = engine
                .usage(sid.as_str(), black_box(&UsageQuery::default()))
                .expect("usage");
            assert_eq!(usage.requests, 200_000);
            usage
        })
    });
    group.finish();
}

criterion_group!(logs, benches);
criterion_main!(logs);
