//! The request log (seed 004): recorded without a write per request, read with filters,
//! kept per store for its retention.

mod common;

use std::net::IpAddr;

use common::*;
use latchkey::{LOG_BUFFER, LOG_FLUSH_AT, LogEntry, LogQuery, StorePatch};
use proptest::prelude::*;

fn entry(
    engine: &latchkey::Engine,
    store: latchkey::StoreId,
    key: &str,
    path: &str,
    status: u16,
) -> LogEntry {
    let ip: IpAddr = "198.51.100.4".parse().unwrap();
    let code = if status == 200 { "OK" } else { "FORBIDDEN" };
    LogEntry::new(
        engine.clock().now(),
        store,
        Some(key),
        "GET",
        path,
        status,
        Some(ip),
        code,
        120,
    )
}

#[test]
fn entries_are_read_newest_first_with_filters() {
    let (engine, clock) = engine();
    let (store, _) = store(&engine);
    let (other, _) = other_store(&engine);
    for i in 0..6 {
        let key = if i % 2 == 0 {
            "key_aaaaaaaaaaaaaaaa"
        } else {
            "key_bbbbbbbbbbbbbbbb"
        };
        let status = if i < 4 { 200 } else { 403 };
        engine.record_request(entry(
            &engine,
            store.id,
            key,
            &format!("/api/v1/orders/{i}?api_key=lk_secret"),
            status,
        ));
        clock.advance(time::Duration::seconds(1));
    }
    engine.record_request(entry(
        &engine,
        other.id,
        "key_cccccccccccccccc",
        "/api/v1/packages",
        200,
    ));

    // Readable at once (the buffer is written first), newest first, this store only.
    let all = engine
        .logs(store.id.as_str(), &LogQuery::default())
        .unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(
        all[0].path, "/api/v1/orders/5",
        "query strings are never stored"
    );
    assert!(all.windows(2).all(|w| w[0].at >= w[1].at));

    let by_key = LogQuery {
        key_id: Some("key_bbbbbbbbbbbbbbbb".into()),
        ..Default::default()
    };
    assert_eq!(engine.logs(store.id.as_str(), &by_key).unwrap().len(), 3);
    let denied = LogQuery {
        status: Some(403),
        ..Default::default()
    };
    let denied = engine.logs(store.id.as_str(), &denied).unwrap();
    assert_eq!(denied.len(), 2);
    assert!(denied.iter().all(|e| e.code == "FORBIDDEN"));
    let window = LogQuery {
        since: Some(all[4].at),
        until: Some(all[2].at),
        limit: Some(2),
        ..Default::default()
    };
    let page = engine.logs(store.id.as_str(), &window).unwrap();
    assert_eq!(
        page.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["/api/v1/orders/3", "/api/v1/orders/2"]
    );

    let bad = LogQuery {
        limit: Some(0),
        since: Some(all[0].at),
        until: Some(all[5].at),
        ..Default::default()
    };
    let err = engine.logs(store.id.as_str(), &bad).unwrap_err();
    assert_eq!(err.problems().len(), 2, "{err}");
    assert_eq!(
        engine
            .logs("nosuchst", &LogQuery::default())
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );
}

/// Entries recorded in the same nanosecond (the clock stands still here), two stores
/// interleaved, read back in the order they were recorded (newest recorded first) in each
/// store: the writer sorts each batch by store and time, and must keep ties in that order.
#[test]
fn entries_of_one_instant_keep_the_order_they_were_recorded_in() {
    let (engine, _clock) = engine();
    let (store, _) = store(&engine);
    let (other, _) = other_store(&engine);
    for i in 0..40 {
        let (id, key) = if i % 3 == 0 {
            (other.id, "key_cccccccccccccccc")
        } else {
            (store.id, "key_aaaaaaaaaaaaaaaa")
        };
        engine.record_request(entry(&engine, id, key, &format!("/api/v1/orders/{i}"), 200));
    }
    for (id, modulo) in [(store.id, false), (other.id, true)] {
        let read = engine.logs(id.as_str(), &LogQuery::default()).unwrap();
        let expected: Vec<String> = (0..40)
            .rev()
            .filter(|i| (i % 3 == 0) == modulo)
            .map(|i| format!("/api/v1/orders/{i}"))
            .collect();
        let paths: Vec<String> = read.into_iter().map(|e| e.path).collect();
        assert_eq!(paths, expected);
    }
}

#[test]
fn each_store_keeps_its_log_for_its_retention() {
    let (engine, clock) = engine();
    let (store, _) = store(&engine);
    let patch = StorePatch {
        log_retention_days: Some(7),
        ..Default::default()
    };
    engine
        .update_store(store.id.as_str(), &admin(), patch)
        .unwrap();
    engine.record_request(entry(
        &engine,
        store.id,
        "key_aaaaaaaaaaaaaaaa",
        "/old",
        200,
    ));
    engine.flush().unwrap();
    clock.advance(time::Duration::days(8));
    engine.record_request(entry(
        &engine,
        store.id,
        "key_aaaaaaaaaaaaaaaa",
        "/new",
        200,
    ));
    let kept = engine
        .logs(store.id.as_str(), &LogQuery::default())
        .unwrap();
    assert_eq!(
        kept.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
        ["/new"]
    );
    let err = engine
        .update_store(
            store.id.as_str(),
            &admin(),
            StorePatch {
                log_retention_days: Some(0),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(err.problems()[0].contains("log_retention_days"));
}

/// An engine whose log is written only at the tick (an hour away) or on a flush: its queue
/// fills as under a load faster than the disk.
fn written_only_at_ticks() -> latchkey::Engine {
    latchkey::Engine::memory_with(latchkey::EngineOptions {
        log_flush_at: 0,
        ..options(&clock())
    })
    .unwrap()
}

#[test]
fn a_full_buffer_drops_the_oldest_and_counts_them() {
    let engine = written_only_at_ticks();
    let (store, _) = store(&engine);
    for i in 0..LOG_BUFFER + 10 {
        engine.record_request(entry(
            &engine,
            store.id,
            "key_aaaaaaaaaaaaaaaa",
            &format!("/{i}"),
            200,
        ));
    }
    assert_eq!(engine.dropped_log_entries(), 10);
    let newest = engine
        .logs(
            store.id.as_str(),
            &LogQuery {
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(newest[0].path, format!("/{}", LOG_BUFFER + 9));
}

/// Entries recorded on many threads at once are all written, each thread's in the order it
/// recorded them.
#[test]
fn entries_recorded_on_many_threads_are_all_written() {
    let engine = written_only_at_ticks();
    let (store, _) = store(&engine);
    let threads = 8;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let engine = &engine;
            scope.spawn(move || {
                for i in 0..1000 {
                    let key = format!("key_thread{t:011}");
                    engine.record_request(entry(engine, store.id, &key, &format!("/{t}/{i}"), 200));
                }
            });
        }
    });
    assert_eq!(engine.pending_log_entries(), threads * 1000);
    engine.flush().unwrap();
    assert_eq!(engine.pending_log_entries(), 0);
    assert_eq!(engine.dropped_log_entries(), 0);
    for t in 0..threads {
        let read = engine
            .logs(
                store.id.as_str(),
                &LogQuery {
                    key_id: Some(format!("key_thread{t:011}")),
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .unwrap();
        let paths: Vec<String> = read.into_iter().map(|e| e.path).collect();
        let expected: Vec<String> = (0..1000).rev().map(|i| format!("/{t}/{i}")).collect();
        assert_eq!(paths, expected, "thread {t}");
    }
}

/// The bound holds with many recording threads: every entry is either waiting or counted as
/// dropped, and the buffer holds what it may and no more.
#[test]
fn a_full_buffer_stays_bounded_across_threads() {
    let engine = written_only_at_ticks();
    let (store, _) = store(&engine);
    let threads = 4;
    let each = LOG_BUFFER / 2;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let engine = &engine;
            scope.spawn(move || {
                for i in 0..each {
                    engine.record_request(entry(
                        engine,
                        store.id,
                        "key_aaaaaaaaaaaaaaaa",
                        &format!("/{i}"),
                        200,
                    ));
                }
            });
        }
    });
    let waiting = engine.pending_log_entries();
    let dropped = usize::try_from(engine.dropped_log_entries()).unwrap();
    assert_eq!(waiting + dropped, threads * each);
    assert_eq!(waiting, LOG_BUFFER);
}

#[test]
fn paths_are_bounded_and_clean() {
    let (engine, _) = engine();
    let (store, _) = store(&engine);
    let long = format!("/{}\u{7}é", "a".repeat(600));
    let e = entry(&engine, store.id, "key_aaaaaaaaaaaaaaaa", &long, 200);
    assert!(e.path.len() <= 512 + '…'.len_utf8());
    assert!(!e.path.contains('\u{7}'));
    assert!(e.path.ends_with('…'));
}

/// Load above what one tick's queue holds is written, not dropped: a quarter-full queue wakes
/// the writer (the tick here is an hour away).
#[test]
fn a_quarter_full_queue_is_written_before_the_tick() {
    let (engine, _clock) = engine();
    let (store, _) = store(&engine);
    // More entries in all than the queue holds.
    let rounds = LOG_BUFFER / LOG_FLUSH_AT + 1;
    let mut last = String::new();
    for round in 0..rounds {
        // Until a quarter is waiting: the writer's previous drain may still be taking the
        // first entries of this round off the queue (it stops when it finds it empty), and
        // a queue that never reaches the mark is written at the tick, by design.
        let mut i = 0;
        while engine.pending_log_entries() < LOG_FLUSH_AT {
            last = format!("/api/v1/orders/{round}/{i}");
            engine.record_request(entry(&engine, store.id, "key_aaaaaaaaaaaaaaaa", &last, 200));
            i += 1;
        }
        let waited = std::time::Instant::now();
        while engine.pending_log_entries() > 0 {
            assert!(
                waited.elapsed() < std::time::Duration::from_secs(60),
                "round {round}: {} entries still waiting; the writer was not woken",
                engine.pending_log_entries()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    assert_eq!(engine.dropped_log_entries(), 0);
    let newest = engine
        .logs(store.id.as_str(), &LogQuery::default())
        .unwrap();
    assert_eq!(newest[0].path, last);
}

#[test]
fn a_wake_mark_beyond_the_queue_is_refused() {
    let clock = clock();
    let err = latchkey::Engine::memory_with(latchkey::EngineOptions {
        log_flush_at: LOG_BUFFER + 1,
        usage_flush_interval: std::time::Duration::ZERO,
        ..options(&clock)
    })
    .unwrap_err();
    let problems = err.problems().join("\n");
    assert!(problems.contains("log_flush_at"), "{problems}");
    assert!(problems.contains("usage_flush_interval"), "{problems}");

    // Checked before the database file is made: a refused open leaves nothing behind.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refused.redb");
    let err = latchkey::Engine::open_with(
        &path,
        latchkey::EngineOptions {
            cache_bytes: 1024,
            ..options(&clock)
        },
    )
    .unwrap_err();
    assert!(err.problems()[0].contains("cache_bytes"), "{err}");
    assert!(!path.exists());
    // The smallest cache allowed works.
    let small = latchkey::Engine::open_with(
        &path,
        latchkey::EngineOptions {
            cache_bytes: 1 << 20,
            ..options(&clock)
        },
    )
    .unwrap();
    let (store, _) = store(&small);
    small.record_request(entry(&small, store.id, "key_aaaaaaaaaaaaaaaa", "/a", 200));
    assert_eq!(
        small
            .logs(store.id.as_str(), &LogQuery::default())
            .unwrap()
            .len(),
        1
    );
}

const KEYS: [&str; 3] = [
    "key_aaaaaaaaaaaaaaaa",
    "key_bbbbbbbbbbbbbbbb",
    "key_cccccccccccccccc",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However entries arrive (out of time order, many in one nanosecond, in several writes
    /// whose times overlap) the log reads as everything recorded, this store's only, sorted
    /// newest first (the later recorded first within a nanosecond), filtered and cut at the
    /// limit. Times spread over 3 s, so rows are split by their 1 s span, or (`dense`) over
    /// 0.3 s, so they are split by count (128 entries) too.
    #[test]
    fn the_log_reads_as_what_was_recorded_sorted_and_filtered(
        writes in prop::collection::vec(
            prop::collection::vec((0i64..3_000, 0usize..3, any::<bool>(), any::<bool>()), 0..300),
            1..5,
        ),
        since in prop::option::of(0i64..3_000),
        span in 0i64..3_000,
        bounded in any::<bool>(),
        key in prop::option::of(0usize..3),
        status in prop::option::of(any::<bool>()),
        limit in 1usize..60,
        dense in any::<bool>(),
    ) {
        let (engine, _) = engine();
        let (store, _) = store(&engine);
        let (other, _) = other_store(&engine);
        let base = engine.clock().now();
        let ms = |n: i64| base + time::Duration::milliseconds(if dense { n / 10 } else { n });
        // (time, recorded position, key, status) of this store's entries.
        let mut recorded = Vec::new();
        for write in &writes {
            for &(at, k, ok, elsewhere) in write {
                let n = recorded.len();
                let status = if ok { 200 } else { 403 };
                let code = if ok { "OK" } else { "FORBIDDEN" };
                let sid = if elsewhere { other.id } else { store.id };
                engine.record_request(LogEntry::new(
                    ms(at), sid, Some(KEYS[k]), "GET", &format!("/{n}"), status, None, code, 1,
                ));
                recorded.push((ms(at), n, k, status, elsewhere));
            }
            engine.flush().unwrap();
        }
        let query = LogQuery {
            key_id: key.map(|k| KEYS[k].to_owned()),
            status: status.map(|ok| if ok { 200 } else { 403 }),
            since: since.map(ms),
            until: (bounded).then(|| ms(since.unwrap_or(0) + span)),
            limit: Some(limit),
        };
        let mut expected: Vec<_> = recorded
            .iter()
            .filter(|(at, _, k, status, elsewhere)| {
                !elsewhere
                    && query.since.is_none_or(|s| *at >= s)
                    && query.until.is_none_or(|u| *at <= u)
                    && key.is_none_or(|key| key == *k)
                    && query.status.is_none_or(|s| s == *status)
            })
            .collect();
        expected.sort_by_key(|(at, n, ..)| std::cmp::Reverse((*at, *n)));
        let expected: Vec<String> = expected
            .iter()
            .take(limit)
            .map(|(_, n, ..)| format!("/{n}"))
            .collect();
        let read: Vec<String> = engine
            .logs(store.id.as_str(), &query)
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        prop_assert_eq!(read, expected);
    }
}

#[test]
fn usage_counts_each_keys_requests_in_the_period() {
    use latchkey::UsageQuery;
    let (engine, clock) = engine();
    let (store, _) = store(&engine);
    let (other, _) = other_store(&engine);
    let start = engine.clock().now();
    // Two days of traffic: a busy key, a quiet one that was refused once, another store's.
    for hour in 0..48 {
        engine.record_request(entry(&engine, store.id, "key_aaaaaaaaaaaaaaaa", "/a", 200));
        if hour % 12 == 0 {
            let status = if hour == 36 { 403 } else { 200 };
            engine.record_request(entry(
                &engine,
                store.id,
                "key_bbbbbbbbbbbbbbbb",
                "/b",
                status,
            ));
        }
        engine.record_request(entry(&engine, other.id, "key_cccccccccccccccc", "/c", 200));
        clock.advance(time::Duration::hours(1));
    }
    // The default period is the day before now.
    let day = engine
        .usage(store.id.as_str(), &UsageQuery::default())
        .unwrap();
    assert_eq!(day.until - day.since, time::Duration::days(1));
    let counts: Vec<_> = day
        .keys
        .iter()
        .map(|k| (k.key_id.as_deref().unwrap(), k.requests, k.errors, k.denied))
        .collect();
    assert_eq!(
        counts,
        [
            ("key_aaaaaaaaaaaaaaaa", 24, 0, 0),
            ("key_bbbbbbbbbbbbbbbb", 2, 1, 1),
        ]
    );
    assert_eq!(day.requests, 26);
    assert_eq!(day.by_status.get("2xx"), Some(&25));
    assert_eq!(day.by_status.get("4xx"), Some(&1));
    assert_eq!(day.by_code.get("FORBIDDEN"), Some(&1));
    assert_eq!(day.keys[0].average_latency_us, 120);
    assert_eq!(day.keys[0].last_at, start + time::Duration::hours(47));

    // An explicit period, both ends included; an inverted one is refused.
    let first_hours = UsageQuery {
        since: Some(start),
        until: Some(start + time::Duration::hours(2)),
    };
    let early = engine.usage(store.id.as_str(), &first_hours).unwrap();
    assert_eq!((early.requests, early.keys.len()), (4, 2));
    let inverted = UsageQuery {
        since: first_hours.until,
        until: first_hours.since,
    };
    assert_eq!(
        engine
            .usage(store.id.as_str(), &inverted)
            .unwrap_err()
            .problems(),
        ["until: must not be before since"]
    );
    // A month and a day is refused; exactly the longest period is not.
    let longest = UsageQuery {
        since: Some(start - latchkey::MAX_USAGE_PERIOD),
        until: Some(start),
    };
    assert!(engine.usage(store.id.as_str(), &longest).is_ok());
    let too_long = UsageQuery {
        since: Some(start - latchkey::MAX_USAGE_PERIOD - time::Duration::days(1)),
        ..longest
    };
    assert_eq!(
        engine
            .usage(store.id.as_str(), &too_long)
            .unwrap_err()
            .problems(),
        ["since: the period may be at most 31 days"]
    );
    assert_eq!(
        UsageQuery::from_json(&serde_json::json!({"since": "yesterday", "by": 1}))
            .unwrap_err()
            .problems()
            .len(),
        2
    );
}
