//! Floods (issue #10, SPEC §5): millions of distinct client addresses against an engine with
//! the default limiter sizing. Tracked per-IP state stays at or under its cap, and the
//! process's resident memory stays bounded once the cap is reached: later millions cost at
//! most one regrowth of the tables, whatever their number. Figures are printed
//! (`cargo test --test flood -- --nocapture`) and recorded in RELIABILITY.md.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use latchkey::{Engine, RateOptions};

/// Resident set size of this process in bytes (Linux), or `None` elsewhere.
fn rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

const MIB: f64 = 1024.0 * 1024.0;

/// One million addresses, half IPv4 and half IPv6 (distinct /64s), each making a keyless
/// request to a limited route.
fn flood(engine: &Engine, round: u32) {
    for i in 0..500_000u32 {
        let n = round * 500_000 + i;
        let v4 = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + n));
        let v6 = IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (n >> 16) as u16,
            n as u16,
            0,
            0,
            0,
            1,
        ));
        engine.check_ip(v4, "/api/v1/storefront/x/packages");
        engine.check_ip(v6, "/api/v1/storefront/x/packages");
    }
}

#[test]
fn three_million_distinct_addresses_keep_per_ip_state_and_memory_bounded() {
    let clock = common::clock();
    let engine = Engine::memory_with(common::options(&clock)).unwrap();
    let cap = RateOptions::default().ips.capacity;
    let mut tracked = Vec::new();
    let mut resident = vec![rss()];
    for round in 0..3 {
        flood(&engine, round);
        tracked.push(engine.rate_limit_entries().1);
        resident.push(rss());
    }
    for (round, &n) in tracked.iter().enumerate() {
        assert!(
            n <= cap,
            "after {} M addresses: {n} tracked > cap {cap}",
            round + 1
        );
    }
    assert!(tracked[2] > cap / 2, "the cap is used: {}", tracked[2]);
    let mib: Vec<f64> = resident.iter().flatten().map(|&b| b as f64 / MIB).collect();
    eprintln!(
        "per-IP entries: cap {cap}; tracked after 1M, 2M, 3M addresses: {tracked:?}; \
         RSS before and after each million: {:.1?} MiB",
        mib
    );
    if let [start, first, ref later @ ..] = mib[..] {
        // Bounded: the first million fills the tables to the cap. Later floods only replace
        // entries, but a table may still grow once (evictions can leave tombstones, and a table
        // out of empty slots that is more than half full grows rather than rehashing in place),
        // and the allocator may place the new table anew: at most the first million's
        // footprint again, whichever million it falls in, and never more.
        let footprint = first - start;
        for (i, &after) in later.iter().enumerate() {
            assert!(
                after - first <= footprint + 4.0,
                "memory kept growing at the cap: {first:.1} MiB after 1M, {after:.1} MiB after {}M",
                i + 2
            );
        }
    }
}
