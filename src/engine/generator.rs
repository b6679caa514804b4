//! The ChaCha generators that fill the queue's chunks.
//!
//! # Seeding
//! Normally each generator's 256-bit key comes from a
//! [`Seeder`] (the OS, plus any extra sources). With a fixed key (`--seed`)
//! the output is the ChaCha20 keystream for that key with nonce 0 and a
//! 64-bit block counter starting at 0. For its first 2^32 blocks (256 GiB)
//! that is exactly the RFC 8439 keystream (nonce 0); after that the counter
//! carries into the first nonce word, as in the original ChaCha and in
//! OpenSSL, where RFC 8439 defines nothing. Seeded runs are reproducible and
//! tests compare them with independent implementations.
//!
//! # Security
//! Like the kernel's own generator, an OS-keyed generator practises fast key
//! erasure: after each batch of output it replaces its key with 32 bytes of
//! its own keystream that are never handed out, and the old state is wiped
//! (`chacha20`'s cores zeroize themselves on drop, and so does our one-block
//! tail buffer, whose bytes are also wiped as they are handed out). Someone
//! who later reads the generator's memory cannot reconstruct bytes it
//! already made. [`Generator::reseed`] mixes a fresh seed into a new key the same way.
//! The state is never printed: `Debug` shows nothing of it.
//!
//! # VM forks
//! When the queue was wiped because the VM was cloned from a snapshot (its
//! epoch moved on, see `queue`), a generator reseeds from its [`Seeder`]
//! before it fills another byte: every clone holds the same generator state,
//! but each gets its own seed from its (reseeded) kernel. Should the seeder
//! fail then, the generator fills nothing and tries again a moment later. A
//! fixed key (`--seed`) is kept, as its output is predictable by design; the
//! queue is wiped all the same.
//!
//! # Speed
//! The keystream comes from `chacha20`'s block function, written in whole
//! 64-byte blocks straight into the chunks, so that its fastest backend for
//! this CPU (AVX-512 when built with `--cfg chacha20_avx512`, as
//! `.cargo/config.toml` does; else AVX2) makes 16 blocks at a time.
//! `chacha20`'s RNG type stops at AVX2 and 4 blocks. [`backend`] names the
//! backend in use.

use std::fmt;
use std::time::{Duration, Instant};

use chacha20::cipher::StreamCipherCore;
use chacha20::cipher::array::Array;
use chacha20::cipher::consts::U64;
use chacha20::variants::Legacy;
use chacha20::{ChaChaCore, R8, R12, R20};
use log::warn;
use rand_core::SeedableRng;
use zeroize::Zeroize;

use crate::engine::queue::ChunkQueue;
use crate::engine::seeding::{Key, Seeder};
use crate::engine::stats::{self, Stats};

/// How many ChaCha rounds: 20 (the default, RFC 8439) or, for users who
/// choose speed, 12 (what `rand`'s `StdRng` uses) or 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounds {
    #[default]
    R20,
    R12,
    R8,
}

impl Rounds {
    /// Every choice, the default first.
    pub(crate) const ALL: [Rounds; 3] = [Rounds::R20, Rounds::R12, Rounds::R8];

    /// 20, 12 or 8.
    pub fn count(self) -> u8 {
        match self {
            Rounds::R20 => 20,
            Rounds::R12 => 12,
            Rounds::R8 => 8,
        }
    }
}

/// Which implementation of the ChaCha block function makes the keystream on
/// this CPU: "AVX-512", "AVX2", "SSE2", "NEON" or "portable".
///
/// `chacha20` picks its backend at run time, once per key, by the same
/// test: AVX-512 (AVX-512F and VL) if the crate was built with
/// `--cfg chacha20_avx512` (as `.cargo/config.toml` does), else AVX2, else
/// SSE2; its `chacha20_backend` cfg forces one instead.
pub(crate) fn backend() -> &'static str {
    if cfg!(chacha20_backend = "soft") {
        return "portable";
    }
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if cfg!(all(chacha20_avx512, chacha20_backend = "avx512")) {
            "AVX-512"
        } else if cfg!(chacha20_backend = "avx2") {
            "AVX2"
        } else if cfg!(chacha20_backend = "sse2") {
            "SSE2"
        } else if cfg!(chacha20_avx512)
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
        {
            "AVX-512"
        } else if is_x86_feature_detected!("avx2") {
            "AVX2"
        } else if is_x86_feature_detected!("sse2") {
            "SSE2"
        } else {
            "portable"
        }
    }
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    {
        "NEON"
    }
    #[cfg(not(any(
        target_arch = "x86",
        target_arch = "x86_64",
        all(target_arch = "aarch64", target_feature = "neon")
    )))]
    {
        "portable"
    }
}

/// One ChaCha block.
const BLOCK: usize = 64;

/// The keystream of one key: `chacha20`'s block function (with the 64-bit
/// block counter and 64-bit nonce of the original ChaCha, nonce 0), written
/// straight into the caller's buffer in whole blocks, so that the fastest
/// backend makes up to 16 blocks at a time. Only a fill that ends inside a
/// block goes through `tail`, whose bytes are wiped as they are handed out.
struct Keystream<R: chacha20::Rounds> {
    core: ChaChaCore<R, Legacy>,
    /// The current block; its bytes not yet handed out are `tail[used..]`.
    tail: Array<u8, U64>,
    used: usize,
}

impl<R: chacha20::Rounds> Keystream<R> {
    fn new(key: &Key) -> Self {
        // `from_seed` takes its seed by value: wipe our copy afterwards.
        let mut seed = *key.as_bytes();
        let core = ChaChaCore::<R, Legacy>::from_seed(seed);
        seed.zeroize();
        Keystream {
            core,
            tail: Array::default(),
            used: BLOCK,
        }
    }

    fn fill(&mut self, mut buf: &mut [u8]) {
        if self.used < BLOCK {
            let n = buf.len().min(BLOCK - self.used);
            let (head, rest) = buf.split_at_mut(n);
            let left = &mut self.tail[self.used..self.used + n];
            head.copy_from_slice(left);
            left.zeroize();
            self.used += n;
            buf = rest;
        }
        let (blocks, rest) = Array::<u8, U64>::slice_as_chunks_mut(buf);
        self.core.write_keystream_blocks(blocks);
        if !rest.is_empty() {
            self.core.write_keystream_block(&mut self.tail);
            let n = rest.len();
            rest.copy_from_slice(&self.tail[..n]);
            self.tail[..n].zeroize();
            self.used = n;
        }
    }

    #[cfg(test)]
    fn set_block_pos(&mut self, block: u64) {
        self.core.set_block_pos(block);
        self.tail.as_mut_slice().zeroize();
        self.used = BLOCK;
    }
}

impl<R: chacha20::Rounds> Drop for Keystream<R> {
    fn drop(&mut self) {
        // `core` wipes its own state (chacha20's `zeroize` feature).
        self.tail.as_mut_slice().zeroize();
    }
}

enum Cipher {
    R20(Keystream<R20>),
    R12(Keystream<R12>),
    R8(Keystream<R8>),
}

impl Cipher {
    fn new(rounds: Rounds, key: &Key) -> Cipher {
        match rounds {
            Rounds::R20 => Cipher::R20(Keystream::new(key)),
            Rounds::R12 => Cipher::R12(Keystream::new(key)),
            Rounds::R8 => Cipher::R8(Keystream::new(key)),
        }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        match self {
            Cipher::R20(c) => c.fill(buf),
            Cipher::R12(c) => c.fill(buf),
            Cipher::R8(c) => c.fill(buf),
        }
    }

    #[cfg(test)]
    fn set_block_pos(&mut self, block: u64) {
        match self {
            Cipher::R20(c) => c.set_block_pos(block),
            Cipher::R12(c) => c.set_block_pos(block),
            Cipher::R8(c) => c.set_block_pos(block),
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
    /// A generator starting from a secret `key` (from a `Seeder`), which
    /// then practises key erasure and accepts reseeds.
    pub fn from_key_erasing(key: &Key, rounds: Rounds) -> Self {
        Generator {
            cipher: Cipher::new(rounds, key),
            rounds,
            fixed: false,
        }
    }

    /// A generator whose output is the ChaCha keystream of `key` (nonce 0,
    /// block counter 0) and stays so: it never rekeys or reseeds.
    pub(crate) fn from_key(key: &Key, rounds: Rounds) -> Self {
        Generator {
            cipher: Cipher::new(rounds, key),
            rounds,
            fixed: true,
        }
    }

    /// Overwrites `buf`, of any length, with the next keystream bytes: a
    /// fill that ends inside a block leaves the rest of that block for the
    /// next fill, so fills of any sizes make one continuous stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
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
    pub(crate) fn reseed(&mut self, seed: &Key) {
        self.rekey(Some(seed));
    }

    fn rekey(&mut self, seed: Option<&Key>) {
        if self.fixed {
            return;
        }
        let mut key = Key::zeroed();
        self.cipher.fill(key.bytes_mut());
        if let Some(seed) = seed {
            for (k, s) in key.bytes_mut().iter_mut().zip(seed.as_bytes()) {
                *k ^= s;
            }
        }
        // The old cipher is dropped here, and zeroizes itself; so is `key`.
        self.cipher = Cipher::new(self.rounds, &key);
    }

    /// Fills chunks from `queue` until it is closed, reseeding from `seeder`
    /// as `policy` says and erasing the key after every batch.
    pub(crate) fn run(
        mut self,
        queue: &ChunkQueue,
        stats: &Stats,
        seeder: &Seeder,
        policy: ReseedPolicy,
    ) {
        let mut batch = Vec::new();
        let max = (BATCH_BYTES / queue.chunk_size()).max(1);
        let mut last_seed = Instant::now();
        let mut since_seed = 0u64;
        // The queue epoch our key belongs to; a newer one means a VM fork.
        let mut epoch = queue.epoch();
        while queue.reserve(max, &mut batch).is_ok() {
            // All chunks of one reserve share its epoch; none came if the
            // queue was wiped while we waited.
            let now = batch
                .first()
                .map_or_else(|| queue.epoch(), super::queue::Chunk::epoch);
            let forked = now != epoch;
            if forked && self.fixed {
                epoch = now;
            }
            // Checked before filling, so that a generator waking after a long
            // idle spell (or in a cloned VM) reseeds before it makes anything.
            if !self.fixed
                && (forked || last_seed.elapsed() >= policy.interval || since_seed >= policy.bytes)
            {
                match seeder.key() {
                    Ok(key) => {
                        self.reseed(&key);
                        stats::add(&stats.reseeds, 1);
                        epoch = now;
                    }
                    Err(e) if forked => {
                        // The old key is every clone's key: fill nothing.
                        warn!("reseeding after a VM fork failed ({e}); retrying");
                        queue.unreserve(&mut batch);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    Err(e) => warn!("reseeding failed ({e}); keeping the current key"),
                }
                last_seed = Instant::now();
                since_seed = 0;
            }
            if batch.is_empty() {
                continue;
            }
            let mut bytes = 0;
            for chunk in &mut batch {
                chunk.refill(|buf| self.fill(buf));
                bytes += chunk.len();
            }
            // Bytes already made cannot be recomputed from the state left behind.
            self.erase_key();
            since_seed += bytes as u64;
            stats::add(&stats.bytes_generated, bytes as u64);
            // A batch reserved before a VM fork is wiped, not queued.
            let stale = queue.push(&mut batch);
            stats::add(&stats.bytes_discarded, stale as u64);
        }
    }
}

/// Bytes a generator fills per queue round trip: large enough that locking
/// and waking consumers is rare, small enough to stay in cache.
pub const BATCH_BYTES: usize = 64 << 10;
// The queue refills a full queue from two batches below full.
const _: () = assert!(super::queue::REFILL == 2 * BATCH_BYTES);

/// When a generator takes a fresh key from its [`Seeder`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReseedPolicy {
    /// After this much time...
    pub(crate) interval: Duration,
    /// ...or this many bytes, whichever comes first.
    pub(crate) bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::low_byte;
    use rand_core::Rng;

    fn key(bytes: [u8; 32]) -> Key {
        let mut k = Key::zeroed();
        *k.bytes_mut() = bytes;
        k
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The 64-byte block number `block` of `key`'s keystream.
    fn block(key: &Key, rounds: Rounds, block: u64) -> Vec<u8> {
        let mut g = Generator::from_key(key, rounds);
        g.cipher.set_block_pos(block);
        let mut out = vec![0u8; 64];
        g.fill(&mut out);
        out
    }

    /// RFC 8439 (= RFC 7539), appendix A.1, test vectors 1 to 4: whole
    /// 64-byte blocks for the all-zero key at blocks 0 and 1, and for two
    /// non-zero keys at blocks 1 and 2 (all with nonce 0).
    #[test]
    fn rfc8439_a1_test_vectors() {
        let zero = key([0; 32]);
        let mut last_bit = [0; 32];
        last_bit[31] = 1;
        let mut second_byte = [0; 32];
        second_byte[1] = 0xff;
        for (name, key, at, expected) in [
            (
                "#1",
                &zero,
                0,
                "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7\
                 da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586",
            ),
            (
                "#2",
                &zero,
                1,
                "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed\
                 29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f",
            ),
            (
                "#3",
                &key(last_bit),
                1,
                "3aeb5224ecf849929b9d828db1ced4dd832025e8018b8160b82284f3c949aa5a\
                 8eca00bbb4a73bdad192b5c42f73f2fd4e273644c8b36125a64addeb006c13a0",
            ),
            (
                "#4",
                &key(second_byte),
                2,
                "72d54dfbf12ec44b362692df94137f328fea8da73990265ec1bbbea1ae9af0ca\
                 13b25aa26cb4a648cb9b9d1be65b2c0924a66c54d545ec1b7374f4872e99f096",
            ),
        ] {
            assert_eq!(block(key, Rounds::R20, at), hex(expected), "{name}");
        }
        // Positioned blocks are the stream itself: #2 is the second block.
        let mut stream = vec![0u8; 128];
        Generator::from_key(&zero, Rounds::R20).fill(&mut stream);
        assert_eq!(stream[64..], block(&zero, Rounds::R20, 1));
    }

    /// draft-strombergson-chacha-test-vectors-01, TC1 (all-zero 256-bit key
    /// and IV), first block, for 8 and 12 rounds.
    #[test]
    fn chacha8_and_chacha12_test_vectors() {
        let zero = key([0; 32]);
        assert_eq!(
            block(&zero, Rounds::R8, 0),
            hex(
                "3e00ef2f895f40d67f5bb8e81f09a5a12c840ec3ce9a7f3b181be188ef711a1e\
                 984ce172b9216f419f445367456d5619314a42a3da86b001387bfdb80e0cfe42"
            )
        );
        assert_eq!(
            block(&zero, Rounds::R12, 0),
            hex(
                "9bf49a6a0755f953811fce125f2683d50429c3bb49e074147e0089a52eae155f\
                 0564f879d27ae3c02ce82834acfa8c793a629f2ca0de6919610be82f411326be"
            )
        );
    }

    /// Past 2^32 blocks (256 GiB) the block counter carries into the first
    /// nonce word, as in `rand_chacha` (an independent implementation) and
    /// in OpenSSL: `openssl enc -chacha20 -iv ffffffff000000000000000000000000`
    /// gives the same two blocks.
    #[test]
    fn the_block_counter_is_64_bits() {
        let k: [u8; 32] = std::array::from_fn(low_byte);
        let mut g = Generator::from_key(&key(k), Rounds::R20);
        g.cipher.set_block_pos(u32::MAX as u64);
        let mut ours = vec![0u8; 128];
        g.fill(&mut ours);
        let mut reference = rand_chacha::ChaCha20Rng::from_seed(k);
        reference.set_word_pos(u128::from(u32::MAX) * 16);
        let mut expected = vec![0u8; 128];
        reference.fill_bytes(&mut expected);
        assert_eq!(ours, expected);
        assert_eq!(
            ours[64..72],
            hex("d838fb09536e2e3a"),
            "block 2^32, as openssl computes it"
        );
    }

    /// Splitting the output into fills of any sizes must not change the
    /// stream. The sizes cross block boundaries and make the backend run
    /// every path: 16 blocks at once, and 1 to 15 blocks; the odd ones end
    /// inside a block and inside a 32-bit word, and the next fill must go on
    /// from the very next byte.
    #[test]
    fn fills_continue_the_stream() {
        let words = [
            4usize, 60, 64, 68, 252, 4096, 5456, 1024, 128, 192, 256, 320, 448, 512, 960, 1028, 12,
            2048, 3000,
        ];
        let odd = [
            1usize, 3, 5, 63, 65, 2, 127, 1, 1023, 4097, 7, 0, 1, 66, 3001,
        ];
        let key = key(std::array::from_fn(low_byte));
        for sizes in [&words[..], &odd[..]] {
            let mut whole = vec![0u8; sizes.iter().sum()];
            Generator::from_key(&key, Rounds::R20).fill(&mut whole);
            let mut g = Generator::from_key(&key, Rounds::R20);
            let mut pieces = Vec::new();
            for &n in sizes {
                let mut b = vec![0u8; n];
                g.fill(&mut b);
                pieces.extend_from_slice(&b);
            }
            assert_eq!(pieces, whole, "{sizes:?}");
        }
    }

    #[test]
    fn os_seeded_generators_differ() {
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        Generator::from_key_erasing(&Key::from_os().unwrap(), Rounds::R20).fill(&mut a);
        Generator::from_key_erasing(&Key::from_os().unwrap(), Rounds::R20).fill(&mut b);
        // Equal by chance with probability 2^-256.
        assert_ne!(a, b);
    }

    /// `chacha20`'s keystream equals `rand_chacha`'s, an independent
    /// implementation, for every round count and a stretch of many blocks.
    #[test]
    fn matches_rand_chacha_for_every_round_count() {
        use rand_chacha::{ChaCha8Rng, ChaCha12Rng, ChaCha20Rng};
        let k: [u8; 32] = std::array::from_fn(|i| low_byte(i * 7 + 3));
        let mut reference = vec![0u8; 1 << 16];
        let mut ours = vec![0u8; 1 << 16];
        for rounds in [Rounds::R20, Rounds::R12, Rounds::R8] {
            match rounds {
                Rounds::R20 => ChaCha20Rng::from_seed(k).fill_bytes(&mut reference),
                Rounds::R12 => ChaCha12Rng::from_seed(k).fill_bytes(&mut reference),
                Rounds::R8 => ChaCha8Rng::from_seed(k).fill_bytes(&mut reference),
            }
            Generator::from_key(&key(k), rounds).fill(&mut ours);
            assert_eq!(ours, reference, "{rounds:?}");
        }
    }

    /// Key erasure and reseeding change the stream of an OS-keyed generator
    /// but never that of a fixed key.
    #[test]
    fn rekeying_applies_only_to_os_keys() {
        let fixed = key([9; 32]);
        let mut plain = vec![0u8; 256];
        Generator::from_key(&fixed, Rounds::R20).fill(&mut plain);
        let mut g = Generator::from_key(&fixed, Rounds::R20);
        let mut out = vec![0u8; 256];
        g.fill(&mut out[..128]);
        g.erase_key();
        g.reseed(&key([1; 32]));
        g.fill(&mut out[128..]);
        assert_eq!(out, plain);
        assert!(g.fixed);

        // The same key, but treated as an OS key: erasure rekeys from the
        // next 32 keystream bytes (never handed out), reseeding XORs in the
        // seed.
        let mut g = Generator::from_key_erasing(&fixed, Rounds::R20);
        assert!(!g.fixed);
        let mut out = vec![0u8; 256];
        g.fill(&mut out[..128]);
        g.erase_key();
        g.fill(&mut out[128..]);
        assert_eq!(out[..128], plain[..128]);
        let erased_key = key(plain[128..160].try_into().unwrap());
        let mut expected = vec![0u8; 128];
        Generator::from_key(&erased_key, Rounds::R20).fill(&mut expected);
        assert_eq!(out[128..], expected[..]);

        // Continue the erased generator: its next 32 bytes are at 128 of the
        // erased key's stream; reseed XORs them with the seed.
        let mut after = [0u8; 64];
        g.reseed(&key([0xff; 32]));
        g.fill(&mut after);
        let mut stream = vec![0u8; 160];
        Generator::from_key(&erased_key, Rounds::R20).fill(&mut stream);
        let reseeded = key(std::array::from_fn(|i| stream[128 + i] ^ 0xff));
        let mut expected = [0u8; 64];
        Generator::from_key(&reseeded, Rounds::R20).fill(&mut expected);
        assert_eq!(after, expected);
    }

    /// `backend()` names what the CPU offers, read independently from
    /// `/proc/cpuinfo`: AVX-512 only in a build with `chacha20_avx512`.
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn the_backend_is_the_fastest_the_cpu_has() {
        let forced = cfg!(any(
            chacha20_backend = "soft",
            chacha20_backend = "sse2",
            chacha20_backend = "avx2",
            chacha20_backend = "avx512"
        ));
        if forced {
            return;
        }
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let flags: Vec<&str> = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("flags"))
            .and_then(|l| l.split(':').nth(1))
            .expect("a flags line")
            .split_whitespace()
            .collect();
        let has = |f| flags.contains(&f);
        let expected = if cfg!(chacha20_avx512) && has("avx512f") && has("avx512vl") {
            "AVX-512"
        } else if has("avx2") {
            "AVX2"
        } else {
            "SSE2"
        };
        assert_eq!(backend(), expected, "CPU flags: {flags:?}");
    }

    #[test]
    fn debug_hides_state() {
        let g = Generator::from_key(&key([7; 32]), Rounds::R20);
        assert_eq!(format!("{g:?}"), "Generator { .. }");
        assert_eq!(format!("{:?}", key([7; 32])), "Key(<hidden>)");
    }
}
