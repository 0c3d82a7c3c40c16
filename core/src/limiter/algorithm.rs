//! The three counting algorithms, as small `Copy` states and pure decisions.
//!
//! Times are limiter nanoseconds (monotonic, see [`super::Monotonic`]). A decision never
//! mutates: it returns the state to store if the request is charged, so a caller can check
//! several limits and charge all of them or none.

use crate::limits::RateLimit;

pub(crate) const NANOS: i64 = 1_000_000_000;

/// The outcome of one check against one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub allowed: bool,
    pub limit: u32,
    /// Requests left after this one (if it is charged).
    pub remaining: u32,
    /// Nanoseconds until the whole budget is back.
    pub reset_in: i64,
    /// Nanoseconds until a denied request could be admitted; 0 when allowed.
    pub retry_in: i64,
}

/// One algorithm's per-entry state.
pub(crate) trait State: Copy + Send + 'static {
    /// Decides a request at `now` given the stored state (`None`: never seen or forgotten).
    /// Returns the verdict and the state to store if the request is charged.
    fn decide(state: Option<&Self>, limit: &RateLimit, now: i64) -> (Verdict, Self);

    /// True when forgetting this state changes no future decision (its budget is all back).
    fn idle(&self, now: i64) -> bool;

    /// How much budget is in use, to choose what to forget at the cap (smallest first). Only
    /// compared between states of the same algorithm.
    fn weight(&self, now: i64) -> u64;
}

fn window_nanos(limit: &RateLimit) -> i64 {
    i64::from(limit.window_seconds.max(1)) * NANOS
}

/// `fixed_window`: a count per aligned window (windows start at multiples of
/// `window_seconds` since the epoch, so 30/min resets on the minute).
///
/// 8 bytes: the window's end in whole limiter seconds (valid through 2106) and the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fixed {
    end_secs: u32,
    count: u32,
}

fn secs_u32(now: i64) -> u64 {
    // Limiter time never goes below zero in practice; clamping keeps the arithmetic total.
    u64::try_from(now.div_euclid(NANOS)).unwrap_or(0)
}

impl State for Fixed {
    fn decide(state: Option<&Self>, limit: &RateLimit, now: i64) -> (Verdict, Self) {
        let window = u64::from(limit.window_seconds.max(1));
        let current_end = (secs_u32(now) / window + 1) * window;
        let current_end = u32::try_from(current_end).unwrap_or(u32::MAX);
        // A stored window that ends later than the current one can only come from a longer
        // window setting: its count carries over rather than being forgiven.
        let count = match state {
            Some(s) if s.end_secs >= current_end => s.count,
            _ => 0,
        };
        let allowed = count < limit.limit;
        let next = Fixed {
            end_secs: current_end,
            count: count + u32::from(allowed),
        };
        let reset_in = (i64::from(current_end) * NANOS).saturating_sub(now).max(0);
        let verdict = Verdict {
            allowed,
            limit: limit.limit,
            remaining: limit.limit.saturating_sub(next.count),
            reset_in,
            retry_in: if allowed { 0 } else { reset_in },
        };
        (verdict, next)
    }

    fn idle(&self, now: i64) -> bool {
        secs_u32(now) >= u64::from(self.end_secs)
    }

    fn weight(&self, now: i64) -> u64 {
        if self.idle(now) {
            0
        } else {
            u64::from(self.count)
        }
    }
}

/// `token_bucket` as GCRA: `limit` tokens refilled evenly over `window_seconds`, a burst of
/// up to `limit`. 8 bytes: the theoretical arrival time (when the bucket is full again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bucket {
    tat: i64,
}

/// A token bucket's constants for one rate: the emission interval and, when kept for reuse,
/// a reciprocal of it.
///
/// `remaining` needs `free / interval`, and that 64-bit division was the slowest instruction
/// of a check, on its critical path: `limiter/latchkey_1t` ran ~1 ns faster without it. The
/// reciprocal itself costs a division, so only a caller that keeps it across checks (a limiter
/// shard, see `Shard::gcra`) asks for one; a one-off decision divides directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// The limit and window this was computed for (see [`Gcra::rate`]).
    rate: u64,
    interval: i64,
    /// `floor((2^64 - 1) / interval)`, or 0: divide directly.
    inverse: u64,
}

impl Gcra {
    /// The constants of `limit`, without a reciprocal.
    pub(crate) fn direct(limit: &RateLimit) -> Self {
        let n = i64::from(limit.limit.max(1));
        Self {
            rate: Self::rate(limit),
            // One token every `interval` ns; the bucket holds `n` of them.
            interval: (window_nanos(limit) / n).max(1),
            inverse: 0,
        }
    }

    /// The constants of `limit`, with the reciprocal, for reuse.
    pub(crate) fn reusable(limit: &RateLimit) -> Self {
        let direct = Self::direct(limit);
        Self {
            // interval ≥ 1, so this is ≥ 1 (and never the "divide directly" 0).
            inverse: u64::MAX / direct.interval.unsigned_abs(),
            ..direct
        }
    }

    /// Whether these constants are `limit`'s.
    #[inline]
    pub(crate) fn is_for(&self, limit: &RateLimit) -> bool {
        self.rate == Self::rate(limit)
    }

    fn rate(limit: &RateLimit) -> u64 {
        u64::from(limit.limit) | (u64::from(limit.window_seconds) << 32)
    }

    /// `floor(x / interval)` for `x ≥ 0`.
    ///
    /// With the reciprocal: `inverse ≤ 2^64 / d` makes the high half of `x · inverse` at most
    /// `x / d`, and `inverse ≥ (2^64 - d) / d` makes it more than `x / d - x / 2^64 > x / d - 1`
    /// (as `x < 2^63`); so it is the quotient or one short, which the remainder tells.
    #[inline]
    fn quotient(&self, x: i64) -> i64 {
        let x = x.max(0);
        if self.inverse == 0 {
            return x / self.interval;
        }
        let (x, d) = (x.unsigned_abs(), self.interval.unsigned_abs());
        // The high half of a 64 × 64-bit product fits 64 bits.
        #[allow(clippy::cast_possible_truncation)]
        let q = ((u128::from(x) * u128::from(self.inverse)) >> 64) as u64;
        let q = q + u64::from(x - q * d >= d);
        // q ≤ x < 2^63.
        i64::try_from(q).unwrap_or(i64::MAX)
    }
}

impl Bucket {
    /// [`State::decide`] with the rate's constants at hand.
    #[inline]
    pub(crate) fn decide_with(
        state: Option<&Self>,
        limit: &RateLimit,
        gcra: &Gcra,
        now: i64,
    ) -> (Verdict, Self) {
        let n = i64::from(limit.limit.max(1));
        let interval = gcra.interval;
        let capacity = interval.saturating_mul(n);
        let tat = state.map_or(now, |s| s.tat.max(now));
        let next_tat = tat.saturating_add(interval);
        let allowed = next_tat.saturating_sub(now) <= capacity;
        let verdict = if allowed {
            let free = now.saturating_add(capacity).saturating_sub(next_tat);
            Verdict {
                allowed,
                limit: limit.limit,
                remaining: u32::try_from(gcra.quotient(free)).unwrap_or(u32::MAX),
                reset_in: next_tat - now,
                retry_in: 0,
            }
        } else {
            Verdict {
                allowed,
                limit: limit.limit,
                remaining: 0,
                reset_in: tat - now,
                // Admitted once `next_tat - t <= capacity`.
                retry_in: (next_tat - capacity - now).max(1),
            }
        };
        let next = Bucket {
            tat: if allowed { next_tat } else { tat },
        };
        (verdict, next)
    }
}

impl State for Bucket {
    fn decide(state: Option<&Self>, limit: &RateLimit, now: i64) -> (Verdict, Self) {
        Self::decide_with(state, limit, &Gcra::direct(limit), now)
    }

    fn idle(&self, now: i64) -> bool {
        self.tat <= now
    }

    fn weight(&self, now: i64) -> u64 {
        u64::try_from(self.tat.saturating_sub(now)).unwrap_or(0)
    }
}

/// Sub-windows per window for `sliding_window`.
pub(crate) const SUBWINDOWS: i64 = 10;
const SLOTS: usize = SUBWINDOWS as usize + 1;

/// `sliding_window`: counts in sub-windows of a tenth of the window, over the current
/// sub-window and the ten before it.
///
/// Invariant (the guarantee of SPEC §5): never more than `limit` requests are admitted in
/// any interval of `window_seconds`. Any such interval ending at an admission lies inside the
/// eleven counted sub-windows, and an admission needs their sum below `limit`. The price is
/// that a request can be counted for up to a tenth of a window longer than strictly needed.
///
/// 56 bytes: the newest sub-window's index, the window length it was counted with, and eleven
/// counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sliding {
    index: u64,
    window_seconds: u32,
    counts: [u32; SLOTS],
}

impl Sliding {
    fn width(window_seconds: u32) -> i64 {
        i64::from(window_seconds.max(1)) * NANOS / SUBWINDOWS
    }

    fn index_at(window_seconds: u32, now: i64) -> u64 {
        u64::try_from(now.max(0) / Self::width(window_seconds)).unwrap_or(0)
    }

    /// The state moved forward to sub-window `index` (older slots dropped).
    fn advanced(mut self, index: u64) -> Self {
        if index <= self.index {
            return self;
        }
        let shift = index - self.index;
        if shift >= SLOTS as u64 {
            self.counts = [0; SLOTS];
        } else {
            for i in self.index + 1..=index {
                self.counts[(i % SLOTS as u64) as usize] = 0;
            }
        }
        self.index = index;
        self
    }

    fn total(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// Count of the sub-window `back` steps before the newest.
    fn back(&self, back: u64) -> u32 {
        self.counts[((self.index - back.min(self.index)) % SLOTS as u64) as usize]
    }
}

impl State for Sliding {
    fn decide(state: Option<&Self>, limit: &RateLimit, now: i64) -> (Verdict, Self) {
        Self::decide_inlined(state, limit, now)
    }

    fn idle(&self, now: i64) -> bool {
        Self::index_at(self.window_seconds, now) >= self.index + SLOTS as u64
    }

    fn weight(&self, now: i64) -> u64 {
        self.advanced(Self::index_at(self.window_seconds, now))
            .total()
    }
}

impl Sliding {
    /// [`State::decide`], always inlined where it is called directly: inside verify (a key's
    /// own budget, see `HeldState::decide`), where a call passes the 56-byte state and the
    /// verdict through memory and then reads them back in wider loads than they were written
    /// in (store-forwarding stalls: `verify/hot_sliding` 93 → 89 ns). The limiter's tables
    /// call it through [`State::decide`], where inlining bought nothing.
    #[inline(always)]
    pub(super) fn decide_inlined(
        state: Option<&Self>,
        limit: &RateLimit,
        now: i64,
    ) -> (Verdict, Self) {
        let window_seconds = limit.window_seconds.max(1);
        let width = Self::width(window_seconds);
        let current = Self::index_at(window_seconds, now);
        let mut s = match state {
            Some(s) if s.window_seconds == window_seconds => s.advanced(current),
            // A changed window length: the old counts cannot be placed on the new grid, so
            // what is still in flight is kept as if it happened now (never forgiven).
            Some(s) => {
                let mut counts = [0; SLOTS];
                let old = s.advanced(Self::index_at(s.window_seconds, now));
                counts[(current % SLOTS as u64) as usize] =
                    u32::try_from(old.total()).unwrap_or(u32::MAX);
                Sliding {
                    index: current,
                    window_seconds,
                    counts,
                }
            }
            None => Sliding {
                index: current,
                window_seconds,
                counts: [0; SLOTS],
            },
        };
        let used = s.total();
        let allowed = used < u64::from(limit.limit);
        if allowed {
            let slot = &mut s.counts[(s.index % SLOTS as u64) as usize];
            *slot = slot.saturating_add(1);
        }
        let used_after = used + u64::from(allowed);
        let remaining =
            u32::try_from(u64::from(limit.limit).saturating_sub(used_after)).unwrap_or(0);
        // Sub-window `s.index - k` leaves the count when the current index reaches
        // `s.index - k + SLOTS`.
        let leaves_in = |k: u64| {
            let leave_index = (s.index - k.min(s.index)) + SLOTS as u64;
            (i64::try_from(leave_index).unwrap_or(i64::MAX))
                .saturating_mul(width)
                .saturating_sub(now)
                .max(0)
        };
        let newest = (0..SLOTS as u64).find(|&k| s.back(k) > 0);
        let reset_in = newest.map_or(0, leaves_in);
        let retry_in = if allowed {
            0
        } else {
            // Oldest first, until enough has left for one more request.
            let mut over = used + 1 - u64::from(limit.limit);
            let mut at = reset_in;
            for k in (0..SLOTS as u64).rev() {
                let c = u64::from(s.back(k));
                if c == 0 {
                    continue;
                }
                if c >= over {
                    at = leaves_in(k);
                    break;
                }
                over -= c;
            }
            at.max(1)
        };
        let verdict = Verdict {
            allowed,
            limit: limit.limit,
            remaining,
            reset_in,
            retry_in,
        };
        (verdict, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Algorithm;

    fn limit(limit: u32, window_seconds: u32, algorithm: Algorithm) -> RateLimit {
        RateLimit {
            limit,
            window_seconds,
            algorithm,
        }
    }

    /// Runs `count` requests at `now`, charging the allowed ones; returns how many passed.
    fn run<S: State>(state: &mut Option<S>, limit: &RateLimit, now: i64, count: u32) -> u32 {
        let mut passed = 0;
        for _ in 0..count {
            let (verdict, next) = S::decide(state.as_ref(), limit, now);
            if verdict.allowed {
                *state = Some(next);
                passed += 1;
            }
        }
        passed
    }

    const T0: i64 = 1_800_000_000 * NANOS; // aligned to the minute

    #[test]
    fn fixed_window_resets_on_the_boundary() {
        let l = limit(30, 60, Algorithm::FixedWindow);
        let mut s: Option<Fixed> = None;
        assert_eq!(run(&mut s, &l, T0 + 10 * NANOS, 40), 30);
        // One nanosecond before the boundary: still the same window.
        let (v, _) = Fixed::decide(s.as_ref(), &l, T0 + 60 * NANOS - 1);
        assert!(!v.allowed);
        assert_eq!(v.retry_in, 1);
        assert_eq!(v.reset_in, 1);
        // On the boundary: a fresh window.
        assert_eq!(run(&mut s, &l, T0 + 60 * NANOS, 40), 30);
    }

    #[test]
    fn fixed_window_headers() {
        let l = limit(3, 60, Algorithm::FixedWindow);
        let (v, _) = Fixed::decide(None, &l, T0 + 15 * NANOS);
        assert_eq!((v.remaining, v.reset_in), (2, 45 * NANOS));
    }

    #[test]
    fn token_bucket_refills_steadily() {
        let l = limit(60, 60, Algorithm::TokenBucket);
        let mut s: Option<Bucket> = None;
        assert_eq!(run(&mut s, &l, T0, 100), 60, "the burst is the limit");
        let (v, _) = Bucket::decide(s.as_ref(), &l, T0);
        assert!(!v.allowed);
        assert_eq!(v.retry_in, NANOS, "one token per second");
        assert_eq!(run(&mut s, &l, T0 + NANOS, 5), 1);
        assert_eq!(run(&mut s, &l, T0 + 11 * NANOS, 20), 10);
        assert_eq!(run(&mut s, &l, T0 + 200 * NANOS, 100), 60);
    }

    #[test]
    fn sliding_window_counts_the_rolling_window() {
        let l = limit(10, 60, Algorithm::SlidingWindow);
        let mut s: Option<Sliding> = None;
        assert_eq!(run(&mut s, &l, T0, 10), 10);
        // 59 s later the first ten are still inside the window.
        assert_eq!(run(&mut s, &l, T0 + 59 * NANOS, 1), 0);
        let (v, _) = Sliding::decide(s.as_ref(), &l, T0 + 59 * NANOS);
        // They leave once eleven sub-windows (66 s) have passed since theirs began.
        assert_eq!(v.retry_in, 7 * NANOS);
        assert_eq!(run(&mut s, &l, T0 + 66 * NANOS, 20), 10);
    }

    #[test]
    fn sliding_window_changed_length_keeps_what_is_in_flight() {
        let l = limit(10, 60, Algorithm::SlidingWindow);
        let mut s: Option<Sliding> = None;
        assert_eq!(run(&mut s, &l, T0, 8), 8);
        let shorter = limit(10, 30, Algorithm::SlidingWindow);
        assert_eq!(run(&mut s, &shorter, T0 + NANOS, 10), 2);
    }

    #[test]
    fn idle_states_are_forgettable() {
        let l = limit(5, 60, Algorithm::FixedWindow);
        let (_, f) = Fixed::decide(None, &l, T0);
        assert!(!f.idle(T0 + 59 * NANOS) && f.idle(T0 + 60 * NANOS));
        let (_, b) = Bucket::decide(None, &l, T0);
        assert!(!b.idle(T0) && b.idle(T0 + 12 * NANOS));
        let (_, s) = Sliding::decide(None, &l, T0);
        assert!(!s.idle(T0 + 65 * NANOS) && s.idle(T0 + 66 * NANOS));
        assert_eq!(s.weight(T0), 1);
        assert_eq!(s.weight(T0 + 66 * NANOS), 0);
    }

    proptest::proptest! {
        /// The reciprocal's quotient is the division's, over every window and limit a rate
        /// may have and beyond.
        #[test]
        fn gcra_quotient_is_exact(
            limit in 1u32..=u32::MAX,
            window in 1u32..=86_400,
            x in 0i64..=i64::MAX,
        ) {
            let l = RateLimit { limit, window_seconds: window, algorithm: Algorithm::TokenBucket };
            let (direct, reusable) = (Gcra::direct(&l), Gcra::reusable(&l));
            let d = direct.interval;
            for x in [x, x % (d * 4 + 1), x / d * d, (x / d * d).saturating_sub(1)] {
                proptest::prop_assert_eq!(reusable.quotient(x), x / d);
                proptest::prop_assert_eq!(direct.quotient(x), x / d);
            }
        }
    }

    #[test]
    fn gcra_constants_know_their_rate() {
        let l = limit(10_000, 60, Algorithm::TokenBucket);
        let g = Gcra::reusable(&l);
        assert_eq!(g.interval, 6_000_000);
        assert!(g.is_for(&l) && g.is_for(&limit(10_000, 60, Algorithm::SlidingWindow)));
        assert!(!g.is_for(&limit(10_000, 30, Algorithm::TokenBucket)));
        assert!(!g.is_for(&limit(9_999, 60, Algorithm::TokenBucket)));
        assert_eq!(Gcra::direct(&l).interval, g.interval);
    }

    #[test]
    fn states_are_small() {
        assert_eq!(std::mem::size_of::<Fixed>(), 8);
        assert_eq!(std::mem::size_of::<Bucket>(), 8);
        assert_eq!(std::mem::size_of::<Sliding>(), 56);
    }
}
