//! `cargo bench -p latchkey --bench limiter`
//!
//! Latchkey's keyed limiter against `governor`'s keyed limiter (its `DashMap` state store),
//! same quota (a token bucket of 10,000 per minute, burst 10,000), same 10,000 keys in the
//! same pseudo-random order, same run:
//!
//! - `limiter/latchkey_1t`, `limiter/governor_1t`: one thread.
//! - `limiter/latchkey_2t`, `limiter/governor_2t`: two threads on the same limiter; the time
//!   is wall time per check (total checks over both threads).
//! - `limiter/latchkey_fixed_1t`, `limiter/latchkey_sliding_1t`: the other algorithms.
//!
//! Before the timings it prints the tables' bytes per tracked entry at 1,000,000 entries for
//! each algorithm (keys are `u64`, 8 bytes).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use latchkey::{Algorithm, Limiter, LimiterOptions, RateLimit, SystemClock};

const KEYS: u64 = 10_000;

fn quota(algorithm: Algorithm) -> RateLimit {
    RateLimit {
        limit: 10_000,
        window_seconds: 60,
        algorithm,
    }
}

fn latchkey() -> Limiter<u64> {
    Limiter::new(LimiterOptions::default(), Arc::new(SystemClock))
}

fn governor() -> DefaultKeyedRateLimiter<u64> {
    RateLimiter::keyed(Quota::per_minute(
        NonZeroU32::new(10_000).expect("non-zero"),
    ))
}

/// The key sequence: xorshift over 10,000 keys, a different start per thread.
struct Keys(u64);

impl Keys {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % KEYS
    }
}

/// Runs `check` for `iters` checks split over `threads` threads; the wall time.
fn threaded(threads: u64, iters: u64, check: &(dyn Fn(u64) -> bool + Sync)) -> Duration {
    let barrier = Barrier::new(threads as usize + 1);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let barrier = &barrier;
            scope.spawn(move || {
                let mut keys = Keys(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
                barrier.wait();
                for _ in 0..iters / threads {
                    black_box(check(keys.next()));
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        // The scope joins every thread before returning.
        start
    })
    .elapsed()
}

fn memory() {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::TokenBucket,
        Algorithm::SlidingWindow,
    ] {
        let limiter: Limiter<u64> = Limiter::new(
            LimiterOptions {
                shards: 64,
                capacity: 1 << 21,
            },
            Arc::new(SystemClock),
        );
        let limit = quota(algorithm);
        for key in 0..1_000_000u64 {
            limiter.check(key, &limit);
        }
        let bytes = limiter.allocated_bytes() as f64 / limiter.len() as f64;
        eprintln!(
            "memory/{}: {} entries, {bytes:.1} B per entry including the 8 B key ({:.1} B beyond it)",
            algorithm.as_str(),
            limiter.len(),
            bytes - 8.0
        );
    }
}

fn benches(c: &mut Criterion) {
    memory();
    let mut group = c.benchmark_group("limiter");
    let lk = latchkey();
    let gov = governor();
    let bucket = quota(Algorithm::TokenBucket);
    for key in 0..KEYS {
        lk.check(key, &bucket);
        let _ = gov.check_key(&key);
    }

    group.bench_function("latchkey_1t", |b| {
        let mut keys = Keys(1);
        b.iter(|| lk.check(black_box(keys.next()), &bucket))
    });
    group.bench_function("governor_1t", |b| {
        let mut keys = Keys(1);
        b.iter(|| gov.check_key(&black_box(keys.next())).is_ok())
    });
    group.bench_function("latchkey_2t", |b| {
        b.iter_custom(|iters| {
            threaded(2, iters, &|key| {
                lk.check(key, &bucket).retry_after.is_none()
            })
        })
    });
    group.bench_function("governor_2t", |b| {
        b.iter_custom(|iters| threaded(2, iters, &|key| gov.check_key(&key).is_ok()))
    });

    for (id, algorithm) in [
        ("latchkey_fixed_1t", Algorithm::FixedWindow),
        ("latchkey_sliding_1t", Algorithm::SlidingWindow),
    ] {
        let limit = quota(algorithm);
        for key in 0..KEYS {
            lk.check(key, &limit);
        }
        group.bench_function(id, |b| {
            let mut keys = Keys(1);
            b.iter(|| lk.check(black_box(keys.next()), &limit))
        });
    }
    group.finish();
}

criterion_group!(limiter, benches);
criterion_main!(limiter);
