//! The rate-limit step of verify (SPEC §4, §5): which limits apply to a request, charging
//! them all or none, and the per-IP brute-force limit on failed authentications.
//!
//! A key's own limit state is held in its index entry (see [`HeldState`]), under the index
//! shard's lock; client addresses are counted in the IP [`Limiter`].
//!
//! Lock order: a key's index shard is always locked before a shard of the IP limiter, and at
//! most one shard of each is held, so two requests can never deadlock.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::clock::Clock;
use crate::limiter::{HeldState, Limiter, Monotonic, Verdict, limit_state};
use crate::limits::{RateLimit, RateOptions};
use crate::verify::LimitState;

/// A client address in a limit's terms. IPv6 clients are counted per /64 (one subscriber's
/// allocation), so hopping addresses inside it buys nothing; IPv4-mapped IPv6 counts as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct IpKey {
    bits: u64,
    /// Scope index << 1 | is-IPv6.
    tag: u32,
}

/// The scope index of the brute-force limit.
const BRUTE_FORCE: u16 = u16::MAX;

impl IpKey {
    fn new(scope: u16, ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self {
                bits: u64::from(v4.to_bits()),
                tag: u32::from(scope) << 1,
            },
            IpAddr::V6(v6) => Self {
                bits: (v6.to_bits() >> 64) as u64,
                tag: u32::from(scope) << 1 | 1,
            },
        }
    }
}

/// What the rate step decided.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Charged {
    pub allowed: bool,
    /// The limit to report: the one that refused, or the one with the least left.
    pub state: Option<LimitState>,
}

pub(crate) struct Rates {
    pub options: RateOptions,
    ips: Limiter<IpKey>,
    /// The time base of the IP limiter and of the keys' held states (read once per request).
    time: Arc<Monotonic>,
    /// Wall-clock nanos before which some IP may be over the brute-force limit. Past it no IP
    /// is, so verify skips the check with one load.
    blocked_until: AtomicI64,
}

impl std::fmt::Debug for Rates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rates").field("ips", &self.ips).finish()
    }
}

/// Picks the verdict to report of two: the one that refused, or the one with the least left.
fn report<'v>(a: &'v Verdict, b: &'v Verdict) -> &'v Verdict {
    let first = match (a.allowed, b.allowed) {
        (true, true) => a.remaining <= b.remaining,
        (false, true) => true,
        (true, false) => false,
        (false, false) => a.retry_in >= b.retry_in,
    };
    if first { a } else { b }
}

impl Rates {
    pub(crate) fn new(options: RateOptions, clock: Arc<dyn Clock>) -> Self {
        let time = Arc::new(Monotonic::default());
        Self {
            ips: Limiter::sharing(options.ips, clock, time.clone()),
            options,
            time,
            blocked_until: AtomicI64::new(i64::MIN),
        }
    }

    /// The limit charged to a key: its own, else its store's default, else the server's.
    #[inline]
    pub(crate) fn key_limit(
        &self,
        own: Option<RateLimit>,
        store_default: Option<RateLimit>,
    ) -> RateLimit {
        own.or(store_default).unwrap_or(self.options.default_limit)
    }

    /// The state of `ip` when it is over the brute-force limit (every request refused).
    #[inline]
    pub(crate) fn blocked(&self, ip: Option<IpAddr>, wall: i64) -> Option<LimitState> {
        if wall >= self.blocked_until.load(Ordering::Acquire) {
            return None;
        }
        let (ip, limit) = (ip?, self.options.brute_force.as_ref()?);
        let verdict = self.ips.take(
            IpKey::new(BRUTE_FORCE, ip),
            limit,
            self.time.at(wall),
            false,
        );
        (!verdict.allowed).then(|| limit_state(&verdict, wall))
    }

    /// Counts a failed authentication from `ip`; the brute-force state to report.
    pub(crate) fn failed(&self, ip: Option<IpAddr>, wall: i64) -> Option<LimitState> {
        let (ip, limit) = (ip?, self.options.brute_force.as_ref()?);
        let verdict = self
            .ips
            .take(IpKey::new(BRUTE_FORCE, ip), limit, self.time.at(wall), true);
        if verdict.remaining == 0 {
            let until = wall.saturating_add(verdict.reset_in);
            self.blocked_until.fetch_max(until, Ordering::AcqRel);
        }
        Some(limit_state(&verdict, wall))
    }

    /// Limiter time for a wall-clock reading (the time base of the keys' held states).
    #[inline]
    pub(crate) fn time(&self, wall: i64) -> i64 {
        self.time.at(wall)
    }

    /// Decides the limits of a request that passed every other check: the key's (unless the
    /// route is exempt), given as its held state and limit, and the client IP's route scope
    /// (if any). All are charged, or none; nothing is charged unless `charge`.
    #[inline]
    pub(crate) fn charge(
        &self,
        key: Option<(&mut HeldState, RateLimit)>,
        ip: Option<IpAddr>,
        path: &str,
        wall: i64,
        charge: bool,
    ) -> Charged {
        let key = key.filter(|_| !self.options.exempt(path));
        let scope = ip.and_then(|ip| {
            let (index, limit) = self.options.scope_for(path)?;
            Some((IpKey::new(index, ip), limit))
        });
        let now = self.time.at(wall);
        let (verdict, allowed) = match (key, scope) {
            (None, None) => {
                return Charged {
                    allowed: true,
                    state: None,
                };
            }
            (Some((held, limit)), None) => {
                let (verdict, next) = held.decide(&limit, now);
                if verdict.allowed && charge {
                    *held = next;
                }
                (verdict, verdict.allowed)
            }
            (None, Some((ip_key, limit))) => {
                let verdict = self.ips.take(ip_key, limit, now, charge);
                (verdict, verdict.allowed)
            }
            (Some((held, key_limit)), Some((ip_key, ip_limit))) => {
                let (a, next) = held.decide(&key_limit, now);
                let mut ip_lock = self.ips.lock(ip_key);
                let b = ip_lock.decide(ip_limit, now);
                let allowed = a.allowed && b.verdict.allowed;
                if allowed && charge {
                    *held = next;
                    ip_lock.charge(&b);
                }
                (*report(&a, &b.verdict), allowed)
            }
        };
        Charged {
            allowed,
            state: Some(limit_state(&verdict, wall)),
        }
    }

    /// Charges the route scope of a request that carries no key (public routes); refused
    /// when the IP is over the brute-force limit or its scope's limit.
    pub(crate) fn check_ip(&self, ip: IpAddr, path: &str, wall: i64) -> Charged {
        if let Some(state) = self.blocked(Some(ip), wall) {
            return Charged {
                allowed: false,
                state: Some(state),
            };
        }
        self.charge(None, Some(ip), path, wall, true)
    }

    /// Forgets idle entries of the IP limiter; returns how many are still tracked.
    pub(crate) fn sweep_ips(&self) -> usize {
        self.ips.sweep()
    }

    /// Entries tracked by the IP limiter.
    pub(crate) fn tracked_ips(&self) -> usize {
        self.ips.len()
    }
}
