//! A per-thread memo of the SHA-256 digests of recently presented secrets, so a key that makes
//! many requests is hashed once per thread instead of once per request.
//!
//! The digest is a pure function of the secret: the memo only saves recomputing it. Every
//! decision still looks the digest up in the key index and checks the key there (revoked,
//! expired, regenerated keys are refused as before), so nothing a memo holds can outlive a
//! change to a key.
//!
//! What it costs in secrecy: up to [`SETS`] × [`WAYS`] recently presented secrets stay in this
//! thread's memory (never logged, printed or returned; zeroed when replaced and when the
//! thread ends). A memory disclosure would find them, as it would find the same credentials in
//! the request buffers the server has just read. Comparisons are constant-time over the whole
//! slot, so timing tells an attacker only whether their own exact secret was seen recently.

use std::cell::RefCell;
use std::hash::BuildHasher;

use zeroize::Zeroize;

use crate::secret::Digest;

/// Secrets longer than this (none we issue: token secrets are 32 bytes, consumer secrets 35,
/// hex keys 64) are hashed every time.
const MAX_SECRET: usize = 64;
/// Sets of [`WAYS`] entries: 4,096 secrets per thread, about 450 KiB allocated on the first
/// verify a thread makes. Four ways, so a thousand hot keys fit without two of them taking
/// turns in one place.
const SETS: usize = 1024;
const WAYS: usize = 4;
/// Secrets presented once, as two bits of a Bloom filter (8 KiB): a secret takes an empty
/// entry at once, but replaces a kept one only when presented again, so a stream of keys that
/// each come once (a million keys in random order) does not churn the memo, and costs a hash
/// and a few small-table reads per verify. A filter rather than a table of hashes: two hot
/// secrets that took turns in one table slot would each erase the other's mark and never be
/// kept.
const SEEN_BITS: usize = 1 << 16;
/// Secrets marked before the filter is cleared: at most about 1.4 % of the secrets that come
/// once are then taken for seen (two bits of 65,536, 4,096 marks), and a secret must come
/// twice within about this many others to be kept.
const SEEN_MARKS: u32 = 4096;

#[derive(Clone)]
struct Entry {
    secret: [u8; MAX_SECRET],
    len: usize,
    digest: [u8; 32],
}

const EMPTY: Entry = Entry {
    secret: [0; MAX_SECRET],
    len: 0,
    digest: [0; 32],
};

struct Memo {
    /// Per set and way, the hash of the secret kept there (0: empty; hashes are odd). Small
    /// enough to stay in cache, so a miss does not read the entries.
    tags: Box<[[u64; WAYS]]>,
    entries: Box<[[Entry; WAYS]]>,
    /// Per set, the way to replace next (in turn).
    victim: Box<[u8]>,
    seen: Box<[u64]>,
    /// Marks made in `seen` since it was last cleared.
    marks: u32,
    /// Seeded at random per thread: which set a secret goes to says nothing across threads
    /// or processes.
    hasher: foldhash::fast::RandomState,
}

impl Memo {
    fn new() -> Self {
        Self {
            tags: vec![[0; WAYS]; SETS].into_boxed_slice(),
            entries: vec![[EMPTY; WAYS]; SETS].into_boxed_slice(),
            victim: vec![0; SETS].into_boxed_slice(),
            seen: vec![0; SEEN_BITS / 64].into_boxed_slice(),
            marks: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The secret's tag (its hash, made odd so it is never the empty 0) and its set (the top
    /// bits).
    fn place(&self, secret: &[u8]) -> (u64, usize) {
        let hash = self.hasher.hash_one(secret) | 1;
        // Fits: SETS is a power of two below 2^32.
        #[allow(clippy::cast_possible_truncation)]
        let set = (hash >> (64 - SETS.trailing_zeros())) as usize;
        (hash, set)
    }

    /// The secret's two bits in `seen`, from hash bits below the set's (and above the forced
    /// bottom 1).
    fn marks_of(hash: u64) -> [usize; 2] {
        // Masked to SEEN_BITS (2^16), so they fit.
        #[allow(clippy::cast_possible_truncation)]
        [8, 24].map(|shift| (hash >> shift) as usize & (SEEN_BITS - 1))
    }

    fn was_seen(&self, hash: u64) -> bool {
        Self::marks_of(hash)
            .iter()
            .all(|&bit| self.seen[bit / 64] & (1 << (bit % 64)) != 0)
    }

    fn mark_seen(&mut self, hash: u64) {
        if self.marks == SEEN_MARKS {
            self.seen.fill(0);
            self.marks = 0;
        }
        for bit in Self::marks_of(hash) {
            self.seen[bit / 64] |= 1 << (bit % 64);
        }
        self.marks += 1;
    }

    fn digest(&mut self, secret: &[u8]) -> Digest {
        let mut padded = [0u8; MAX_SECRET];
        padded[..secret.len()].copy_from_slice(secret);
        let (hash, set) = self.place(secret);
        for way in 0..WAYS {
            let kept = &self.entries[set][way];
            if self.tags[set][way] == hash && equal(kept, &padded, secret.len()) {
                return Digest(kept.digest);
            }
        }
        let digest = Digest::of(secret);
        let way = usize::from(self.victim[set]) % WAYS;
        if self.tags[set][way] == 0 || self.was_seen(hash) {
            // Overwrites every byte of the secret it replaces.
            let entry = &mut self.entries[set][way];
            entry.secret = padded;
            entry.len = secret.len();
            entry.digest = digest.0;
            self.tags[set][way] = hash;
            // Below WAYS (4).
            #[allow(clippy::cast_possible_truncation)]
            {
                self.victim[set] = ((way + 1) % WAYS) as u8;
            }
        } else {
            self.mark_seen(hash);
        }
        digest
    }
}

/// Constant-time in the secret's bytes: all of both are read whatever they hold, and the only
/// branch is on the folded result (with the lengths, so a secret and the same with trailing
/// NULs differ).
#[inline]
fn equal(kept: &Entry, padded: &[u8; MAX_SECRET], len: usize) -> bool {
    let mut diff = (kept.len ^ len) as u64;
    for (a, b) in kept.secret.chunks_exact(8).zip(padded.chunks_exact(8)) {
        let a = u64::from_ne_bytes(a.try_into().unwrap_or_default());
        let b = u64::from_ne_bytes(b.try_into().unwrap_or_default());
        diff |= a ^ b;
    }
    std::hint::black_box(diff) == 0
}

impl Drop for Memo {
    fn drop(&mut self) {
        for set in self.entries.iter_mut() {
            for entry in set.iter_mut() {
                entry.secret.zeroize();
            }
        }
    }
}

thread_local! {
    static MEMO: RefCell<Option<Memo>> = const { RefCell::new(None) };
}

/// SHA-256 of `secret`, from this thread's memo when it was presented here recently.
#[inline]
pub(crate) fn digest(secret: &[u8]) -> Digest {
    if secret.is_empty() || secret.len() > MAX_SECRET {
        return Digest::of(secret);
    }
    // `try_with` fails only while the thread is being torn down; `try_borrow_mut` never fails
    // (nothing here re-enters), but a fallback costs nothing.
    MEMO.try_with(|memo| match memo.try_borrow_mut() {
        Ok(mut memo) => memo.get_or_insert_with(Memo::new).digest(secret),
        Err(_) => Digest::of(secret),
    })
    .unwrap_or_else(|_| Digest::of(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Memo {
        fn keeps(&self, secret: &[u8]) -> bool {
            let (hash, set) = self.place(secret);
            let mut padded = [0u8; MAX_SECRET];
            padded[..secret.len()].copy_from_slice(secret);
            (0..WAYS).any(|way| {
                self.tags[set][way] == hash && equal(&self.entries[set][way], &padded, secret.len())
            })
        }
    }

    fn secret(n: usize) -> Vec<u8> {
        format!("{n:032x}").into_bytes()
    }

    #[test]
    fn answers_the_sha256_of_exactly_the_secret_presented() {
        let mut memo = Memo::new();
        let cases: [&[u8]; 5] = [b"a", b"abc", b"abc\0", &[b'x'; 64], &[b'y'; 63]];
        for _ in 0..3 {
            for case in cases {
                assert_eq!(memo.digest(case), Digest::of(case), "{case:?}");
            }
        }
        assert!(memo.keeps(b"abc") && memo.keeps(b"abc\0"));
        // Longer than the memo keeps, and empty: hashed every time, through `digest`.
        assert_eq!(digest(&[b'z'; 65]), Digest::of(&[b'z'; 65]));
        assert_eq!(digest(b""), Digest::of(b""));
    }

    #[test]
    fn a_thousand_hot_secrets_are_all_kept() {
        let mut memo = Memo::new();
        for _ in 0..3 {
            for n in 0..1000 {
                memo.digest(&secret(n));
            }
        }
        let kept = (0..1000).filter(|&n| memo.keeps(&secret(n))).count();
        // A set drawn more than four of them keeps four: about 4 of 1,000 are left out on
        // average, more than 10 for 0.8 % of seeds, more than 20 for none in 20,000.
        assert!(kept >= 980, "{kept} of 1000 kept");
    }

    #[test]
    fn secrets_seen_once_do_not_push_out_hot_ones() {
        let mut memo = Memo::new();
        // Fill every entry, then present 300 hot secrets among a stream of 100,000 that each
        // come once. With 300 hot secrets some pairs share each hash-derived position of the
        // filter, so a doorkeeper that let such a pair erase each other's mark fails here.
        for n in 0..SETS * WAYS * 2 {
            memo.digest(&secret(1_000_000 + n));
        }
        for round in 0..1000 {
            for hot in 0..300 {
                memo.digest(&secret(hot));
            }
            for cold in 0..100 {
                memo.digest(&secret(10_000_000 + round * 100 + cold));
            }
        }
        let kept = (0..300).filter(|&n| memo.keeps(&secret(n))).count();
        // Not all 300: five may share a set of four ways (a few percent of seeds).
        assert!(kept >= 295, "{kept} of 300 hot secrets kept");
    }
}
