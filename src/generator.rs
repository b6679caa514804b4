//! The ChaCha20 generator that fills chunks.
//!
//! # Seeding
//! Normally the 256-bit key comes from the OS (`getrandom`). With a fixed key
//! (`--seed`) the output is exactly the RFC 8439 ChaCha20 keystream for that
//! key with nonce 0 and block counter 0, which makes runs reproducible and
//! lets tests compare against an independent implementation.
//!
//! # Security
//! The generator's state is never printed: `Debug` shows nothing of it.

use std::fmt;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// A 256-bit ChaCha20 key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<hidden>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A ChaCha20 keystream generator.
pub struct Generator {
    rng: ChaCha20Rng,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Generator { .. }")
    }
}

impl Generator {
    /// A generator keyed with 32 fresh bytes from the OS.
    pub fn from_os() -> Result<Self, getrandom::Error> {
        let mut key = Key([0; 32]);
        getrandom::fill(&mut key.0)?;
        Ok(Self::from_key(&key))
    }

    /// A generator whose output is the ChaCha20 keystream of `key` (nonce 0,
    /// block counter 0).
    pub fn from_key(key: &Key) -> Self {
        Generator {
            rng: ChaCha20Rng::from_seed(key.0),
        }
    }

    /// Overwrites `buf` with the next keystream bytes.
    ///
    /// # Panics
    /// If `buf.len()` is not a multiple of 4: `rand_chacha` hands out whole
    /// 32-bit words and drops the unused bytes of the last one, which would
    /// silently skip part of the keystream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        assert!(
            buf.len().is_multiple_of(4),
            "fill of {} bytes: not whole words",
            buf.len()
        );
        self.rng.fill_bytes(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7539 (= RFC 8439), appendix A.1, test vector 1: all-zero key,
    /// all-zero nonce, block counter 0; the whole 64-byte block.
    #[test]
    fn rfc7539_a1_test_vector_1() {
        let expected: [u8; 64] = [
            0x76, 0xb8, 0xe0, 0xad, 0xa0, 0xf1, 0x3d, 0x90, 0x40, 0x5d, 0x6a, 0xe5, 0x53, 0x86,
            0xbd, 0x28, 0xbd, 0xd2, 0x19, 0xb8, 0xa0, 0x8d, 0xed, 0x1a, 0xa8, 0x36, 0xef, 0xcc,
            0x8b, 0x77, 0x0d, 0xc7, 0xda, 0x41, 0x59, 0x7c, 0x51, 0x57, 0x48, 0x8d, 0x77, 0x24,
            0xe0, 0x3f, 0xb8, 0xd8, 0x4a, 0x37, 0x6a, 0x43, 0xb8, 0xf4, 0x15, 0x18, 0xa1, 0x1c,
            0xc3, 0x87, 0xb6, 0x69, 0xb2, 0xee, 0x65, 0x86,
        ];
        let mut out = [0u8; 64];
        Generator::from_key(&Key([0; 32])).fill(&mut out);
        assert_eq!(out, expected);
    }

    /// RFC 7539 appendix A.1, test vector 2: the same key, block counter 1,
    /// which is simply the second block of our stream.
    #[test]
    fn rfc7539_a1_test_vector_2_is_second_block() {
        let expected: [u8; 16] = [
            0x9f, 0x07, 0xe7, 0xbe, 0x55, 0x51, 0x38, 0x7a, 0x98, 0xba, 0x97, 0x7c, 0x73, 0x2d,
            0x08, 0x0d,
        ];
        let mut out = [0u8; 128];
        Generator::from_key(&Key([0; 32])).fill(&mut out);
        assert_eq!(out[64..80], expected);
    }

    /// Splitting the output into fills of any whole number of words must not
    /// change the stream.
    #[test]
    fn fills_continue_the_stream() {
        let key = Key(std::array::from_fn(|i| i as u8));
        let mut whole = vec![0u8; 10_000];
        Generator::from_key(&key).fill(&mut whole);
        let mut g = Generator::from_key(&key);
        let mut pieces = Vec::new();
        for n in [4usize, 60, 64, 68, 252, 4096, 5456] {
            let mut b = vec![0u8; n];
            g.fill(&mut b);
            pieces.extend_from_slice(&b);
        }
        assert_eq!(pieces, whole);
    }

    #[test]
    #[should_panic(expected = "not whole words")]
    fn partial_words_are_refused() {
        Generator::from_key(&Key([0; 32])).fill(&mut [0u8; 5]);
    }

    #[test]
    fn os_seeded_generators_differ() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        Generator::from_os().unwrap().fill(&mut a);
        Generator::from_os().unwrap().fill(&mut b);
        // Equal by chance with probability 2^-256.
        assert_ne!(a, b);
    }

    #[test]
    fn debug_hides_state() {
        let g = Generator::from_key(&Key([7; 32]));
        assert_eq!(format!("{g:?}"), "Generator { .. }");
        assert_eq!(format!("{:?}", Key([7; 32])), "Key(<hidden>)");
    }
}
