//! Secrets and their digests.
//!
//! Invariant: a [`Secret`] is only ever shown by [`Secret::expose`]; its `Debug` and `Display`
//! are redacted, it is not `Serialize`, and the engine stores only [`Digest`]s of it.

use std::fmt;

use rand::TryRng;
use rand::rngs::SysRng;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A credential secret (API key, consumer secret, webhook secret, gift card code) in clear.
///
/// Returned once by the call that creates it. `Debug`/`Display` print `Secret(<redacted>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret in clear. Call this only to hand it to its owner, once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The SHA-256 digest of a secret: what is stored and indexed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub(crate) [u8; 32]);

impl Digest {
    /// SHA-256 of `data`.
    ///
    /// Inputs of up to 119 bytes (every secret we issue) are padded on the stack and fed
    /// straight to the compression function, skipping the streaming hasher's buffering; the
    /// result is the same SHA-256 (tested against the streaming form).
    #[inline]
    pub fn of(data: &[u8]) -> Self {
        const IV: [u32; 8] = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        let len = data.len();
        if len > 119 {
            return Self(Sha256::digest(data).into());
        }
        // One block holds up to 55 bytes of message (plus 0x80 and the 8-byte length).
        let blocks_needed = if len <= 55 { 1 } else { 2 };
        let mut blocks = [[0u8; 64]; 2];
        {
            let flat = blocks.as_flattened_mut();
            flat[..len].copy_from_slice(data);
            flat[len] = 0x80;
            let end = blocks_needed * 64;
            flat[end - 8..end].copy_from_slice(&((len as u64) * 8).to_be_bytes());
        }
        let mut state = IV;
        sha2::block_api::compress256(&mut state, &blocks[..blocks_needed]);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        Self(out)
    }

    /// Constant-time equality, for comparing a presented secret's digest to a stored one:
    /// every byte is compared, and the only branch is on the folded result.
    #[inline]
    pub fn ct_eq(&self, other: &Digest) -> bool {
        let mut diff = 0u64;
        for (a, b) in self.0.chunks_exact(8).zip(other.0.chunks_exact(8)) {
            let a = u64::from_ne_bytes(a.try_into().unwrap_or_default());
            let b = u64::from_ne_bytes(b.try_into().unwrap_or_default());
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }

    pub(crate) fn to_hex(self) -> String {
        hex_lower(&self.0)
    }

    /// The first 8 bytes: enough to tell this digest from the others of one key, where a
    /// record is already found by the key's id (never to find a key by).
    pub(crate) fn tag(&self) -> [u8; 8] {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&self.0[..8]);
        tag
    }

    pub(crate) fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        decode_hex(text, &mut out).then_some(Self(out))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A digest is not a secret, but a short form is all a reader of logs needs.
        write!(f, "Digest({}…)", &hex_lower(&self.0[..4]))
    }
}

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn fill_random(buf: &mut [u8]) -> Result<()> {
    SysRng.try_fill_bytes(buf).map_err(|_| Error::Entropy)
}

pub(crate) const BASE62: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters drawn uniformly from `alphabet` (rejection sampling: no modulo bias).
pub(crate) fn random_chars(alphabet: &[u8], len: usize) -> Result<String> {
    debug_assert!(!alphabet.is_empty() && alphabet.len() <= 256);
    // The largest multiple of the alphabet size that fits in a byte; bytes above it are redrawn.
    let limit = 256 - (256 % alphabet.len());
    let mut out = String::with_capacity(len);
    let mut pool = [0u8; 64];
    while out.len() < len {
        fill_random(&mut pool)?;
        for &byte in &pool {
            if usize::from(byte) < limit {
                out.push(char::from(alphabet[usize::from(byte) % alphabet.len()]));
                if out.len() == len {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// `bytes` as lowercase hex, two digits a byte.
pub fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// Decodes lowercase hex into `out`; false if the text is not exactly `2 * out.len()` lowercase
/// hex digits.
pub(crate) fn decode_hex(text: &str, out: &mut [u8]) -> bool {
    /// The value of a lowercase hex digit, and whether it was one, without a branch on the
    /// character: parsing a consumer key must take the same time whatever its digits are
    /// (tests/timing.rs).
    fn nibble(c: u8) -> (u8, bool) {
        let digit = c.wrapping_sub(b'0');
        let letter = c.wrapping_sub(b'a');
        let is_digit = digit < 10;
        let is_letter = letter < 6;
        let value = (digit & 0u8.wrapping_sub(u8::from(is_digit)))
            | (letter.wrapping_add(10) & 0u8.wrapping_sub(u8::from(is_letter)));
        (value, is_digit | is_letter)
    }
    let bytes = text.as_bytes();
    if bytes.len() != out.len() * 2 {
        return false;
    }
    let mut valid = true;
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, hi_ok) = nibble(pair[0]);
        let (lo, lo_ok) = nibble(pair[1]);
        *slot = hi << 4 | lo;
        valid &= hi_ok & lo_ok;
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_and_display_are_redacted() {
        let secret = Secret::new("lk_abcdefgh_supersecretvalue".into());
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert!(!format!("{:?}", Some(&secret)).contains("supersecret"));
        assert_eq!(secret.expose(), "lk_abcdefgh_supersecretvalue");
    }

    #[test]
    fn digest_matches_known_sha256() {
        assert_eq!(
            Digest::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let d = Digest::of(b"x");
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert!(d.ct_eq(&Digest::of(b"x")));
        assert!(!d.ct_eq(&Digest::of(b"y")));
    }

    proptest::proptest! {
        #[test]
        fn fast_digest_is_sha256(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let expected: [u8; 32] = Sha256::digest(&data).into();
            proptest::prop_assert_eq!(Digest::of(&data).0, expected);
        }
    }

    #[test]
    fn digest_at_block_boundaries() {
        for len in [0, 1, 31, 32, 35, 55, 56, 63, 64, 65, 119, 120, 128] {
            let data = vec![0xabu8; len];
            let expected: [u8; 32] = Sha256::digest(&data).into();
            assert_eq!(Digest::of(&data).0, expected, "{len}");
        }
    }

    #[test]
    fn random_chars_uses_only_the_alphabet() {
        let s = random_chars(BASE62, 500).unwrap();
        assert_eq!(s.len(), 500);
        assert!(s.bytes().all(|b| BASE62.contains(&b)));
        assert_ne!(s, random_chars(BASE62, 500).unwrap());
    }

    #[test]
    fn hex_round_trip_rejects_uppercase_and_wrong_length() {
        let mut out = [0u8; 2];
        assert!(decode_hex("0aff", &mut out));
        assert_eq!(out, [0x0a, 0xff]);
        assert!(!decode_hex("0AFF", &mut out));
        assert!(!decode_hex("0af", &mut out));
        assert_eq!(hex_lower(&[0x0a, 0xff]), "0aff");
    }
}
