//! The ChaCha generator that fills chunks.
//!
//! # Seeding
//! Normally the 256-bit key comes from the OS (`getrandom`). With a fixed key
//! (`--seed`) the output is exactly the RFC 8439 ChaCha20 keystream for that
//! key with nonce 0 and block counter 0, which makes runs reproducible and
//! lets tests compare against independent implementations.
//!
//! # Security
//! Like the kernel's own generator, an OS-keyed generator practises fast key
//! erasure: after each batch of output it replaces its key with 32 bytes of
//! its own keystream that are never handed out, and the old state is wiped
//! (`chacha20`'s generators zeroize themselves on drop). Someone who later
//! reads the generator's memory cannot reconstruct bytes it already made.
//! [`Generator::reseed`] mixes a fresh OS seed into a new key the same way.
//! The state is never printed: `Debug` shows nothing of it.

use std::fmt;

use chacha20::{ChaCha8Rng, ChaCha12Rng, ChaCha20Rng};
use rand_core::{Rng, SeedableRng};
use zeroize::Zeroize;

/// A 256-bit ChaCha key. `Debug` never shows it; it is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<hidden>)")
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Key {
    /// 32 fresh bytes from the OS.
    pub fn from_os() -> Result<Key, getrandom::Error> {
        let mut key = Key([0; 32]);
        getrandom::fill(&mut key.0)?;
        Ok(key)
    }
}

/// How many ChaCha rounds: 20 (the default, RFC 8439) or, for users who
/// choose speed, 12 (what `rand`'s `StdRng` uses) or 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Rounds {
    #[default]
    #[value(name = "20")]
    R20,
    #[value(name = "12")]
    R12,
    #[value(name = "8")]
    R8,
}

impl Rounds {
    /// 20, 12 or 8.
    pub fn count(self) -> u8 {
        match self {
            Rounds::R20 => 20,
            Rounds::R12 => 12,
            Rounds::R8 => 8,
        }
    }
}

enum Cipher {
    R20(ChaCha20Rng),
    R12(ChaCha12Rng),
    R8(ChaCha8Rng),
}

impl Cipher {
    fn new(rounds: Rounds, key: &Key) -> Cipher {
        match rounds {
            Rounds::R20 => Cipher::R20(ChaCha20Rng::from_seed(key.0)),
            Rounds::R12 => Cipher::R12(ChaCha12Rng::from_seed(key.0)),
            Rounds::R8 => Cipher::R8(ChaCha8Rng::from_seed(key.0)),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        match self {
            Cipher::R20(c) => c.fill_bytes(buf),
            Cipher::R12(c) => c.fill_bytes(buf),
            Cipher::R8(c) => c.fill_bytes(buf),
        }
    }
}

/// A ChaCha keystream generator.
pub struct Generator {
    cipher: Cipher,
    rounds: Rounds,
    /// Keyed by the user: the keystream must stay exact, so no key erasure
    /// and no reseeding.
    fixed: bool,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Generator { .. }")
    }
}

impl Generator {
    /// A generator keyed with 32 fresh bytes from the OS.
    pub fn from_os(rounds: Rounds) -> Result<Self, getrandom::Error> {
        Ok(Self::from_key_erasing(&Key::from_os()?, rounds))
    }

    /// A generator starting from a secret `key` (from the OS or a
    /// [`Seeder`](crate::seeding::Seeder)), which then practises key erasure
    /// and accepts reseeds.
    pub fn from_key_erasing(key: &Key, rounds: Rounds) -> Self {
        Generator {
            cipher: Cipher::new(rounds, key),
            rounds,
            fixed: false,
        }
    }

    /// A generator whose output is the ChaCha keystream of `key` (nonce 0,
    /// block counter 0) and stays so: it never rekeys or reseeds.
    pub fn from_key(key: &Key, rounds: Rounds) -> Self {
        Generator {
            cipher: Cipher::new(rounds, key),
            rounds,
            fixed: true,
        }
    }

    /// Whether the key came from the user (`--seed`).
    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// Overwrites `buf` with the next keystream bytes.
    ///
    /// # Panics
    /// If `buf.len()` is not a multiple of 4: the generators hand out whole
    /// 32-bit words and drop the unused bytes of the last one, which would
    /// silently skip part of the keystream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        assert!(
            buf.len().is_multiple_of(4),
            "fill of {} bytes: not whole words",
            buf.len()
        );
        self.cipher.fill(buf);
    }

    /// Fast key erasure: rekeys from the generator's own next 32 keystream
    /// bytes, which are never handed out, and wipes the old state. Does
    /// nothing for a fixed key.
    pub fn erase_key(&mut self) {
        self.rekey(None);
    }

    /// Replaces the key with (next 32 keystream bytes XOR `seed`): at least
    /// as unpredictable as either. Does nothing for a fixed key.
    pub fn reseed(&mut self, seed: &Key) {
        self.rekey(Some(seed));
    }

    fn rekey(&mut self, seed: Option<&Key>) {
        if self.fixed {
            return;
        }
        let mut key = Key([0; 32]);
        self.cipher.fill(&mut key.0);
        if let Some(seed) = seed {
            for (k, s) in key.0.iter_mut().zip(seed.0) {
                *k ^= s;
            }
        }
        // The old cipher is dropped here, and zeroizes itself.
        self.cipher = Cipher::new(self.rounds, &key);
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
        Generator::from_key(&Key([0; 32]), Rounds::R20).fill(&mut out);
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
        Generator::from_key(&Key([0; 32]), Rounds::R20).fill(&mut out);
        assert_eq!(out[64..80], expected);
    }

    /// Splitting the output into fills of any whole number of words must not
    /// change the stream.
    #[test]
    fn fills_continue_the_stream() {
        let key = Key(std::array::from_fn(|i| i as u8));
        let mut whole = vec![0u8; 10_000];
        Generator::from_key(&key, Rounds::R20).fill(&mut whole);
        let mut g = Generator::from_key(&key, Rounds::R20);
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
        Generator::from_key(&Key([0; 32]), Rounds::R20).fill(&mut [0u8; 5]);
    }

    #[test]
    fn os_seeded_generators_differ() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        Generator::from_os(Rounds::R20).unwrap().fill(&mut a);
        Generator::from_os(Rounds::R20).unwrap().fill(&mut b);
        // Equal by chance with probability 2^-256.
        assert_ne!(a, b);
    }

    /// `chacha20`'s keystream equals `rand_chacha`'s, an independent
    /// implementation, for every round count and a stretch of many blocks.
    #[test]
    fn matches_rand_chacha_for_every_round_count() {
        use rand_chacha::{ChaCha8Rng, ChaCha12Rng, ChaCha20Rng};
        let key = Key(std::array::from_fn(|i| (i * 7 + 3) as u8));
        let mut reference = vec![0u8; 1 << 16];
        let mut ours = vec![0u8; 1 << 16];
        for rounds in [Rounds::R20, Rounds::R12, Rounds::R8] {
            match rounds {
                Rounds::R20 => ChaCha20Rng::from_seed(key.0).fill_bytes(&mut reference),
                Rounds::R12 => ChaCha12Rng::from_seed(key.0).fill_bytes(&mut reference),
                Rounds::R8 => ChaCha8Rng::from_seed(key.0).fill_bytes(&mut reference),
            }
            Generator::from_key(&key, rounds).fill(&mut ours);
            assert_eq!(ours, reference, "{rounds:?}");
        }
    }

    /// Key erasure and reseeding change the stream of an OS-keyed generator
    /// but never that of a fixed key.
    #[test]
    fn rekeying_applies_only_to_os_keys() {
        let key = Key([9; 32]);
        let mut plain = vec![0u8; 256];
        Generator::from_key(&key, Rounds::R20).fill(&mut plain);
        let mut g = Generator::from_key(&key, Rounds::R20);
        let mut out = vec![0u8; 256];
        g.fill(&mut out[..128]);
        g.erase_key();
        g.reseed(&Key([1; 32]));
        g.fill(&mut out[128..]);
        assert_eq!(out, plain);
        assert!(g.is_fixed());

        // The same key, but treated as an OS key: erasure rekeys from the
        // next 32 keystream bytes (never handed out), reseeding XORs in the
        // seed.
        let mut g = Generator::from_key_erasing(&key, Rounds::R20);
        assert!(!g.is_fixed());
        let mut out = vec![0u8; 256];
        g.fill(&mut out[..128]);
        g.erase_key();
        g.fill(&mut out[128..]);
        assert_eq!(out[..128], plain[..128]);
        let erased_key = Key(plain[128..160].try_into().unwrap());
        let mut expected = vec![0u8; 128];
        Generator::from_key(&erased_key, Rounds::R20).fill(&mut expected);
        assert_eq!(out[128..], expected[..]);

        // Continue the erased generator: its next 32 bytes are at 128 of the
        // erased key's stream; reseed XORs them with the seed.
        let mut after = [0u8; 64];
        g.reseed(&Key([0xff; 32]));
        g.fill(&mut after);
        let mut stream = vec![0u8; 160];
        Generator::from_key(&erased_key, Rounds::R20).fill(&mut stream);
        let reseeded = Key(std::array::from_fn(|i| stream[128 + i] ^ 0xff));
        let mut expected = [0u8; 64];
        Generator::from_key(&reseeded, Rounds::R20).fill(&mut expected);
        assert_eq!(after, expected);
    }

    #[test]
    fn debug_hides_state() {
        let g = Generator::from_key(&Key([7; 32]), Rounds::R20);
        assert_eq!(format!("{g:?}"), "Generator { .. }");
        assert_eq!(format!("{:?}", Key([7; 32])), "Key(<hidden>)");
    }
}
