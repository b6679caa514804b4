//! Finding a 32-byte stretch that occurs twice in some outputs of the device.
//! Shared by the tests (`common::assert_no_repeated_stretch`) and by
//! `benches/dupcheck.rs`, the soak script's checker.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by the first 8 bytes of a stretch, hashed by [`Mix`].
pub type Index<V> = HashMap<u64, V, BuildHasherDefault<Mix>>;

/// The hash of an [`Index`]: splitmix64's finaliser of the key. Its keys
/// are bytes the device made or the daemon's memory, never chosen to
/// collide, so SipHash's defence against that buys nothing, and in the
/// tests' build this makes the searches about four times as fast.
#[derive(Default)]
pub struct Mix(u64);

impl Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("an Index hashes u64 keys only");
    }
    fn write_u64(&mut self, key: u64) {
        let z = (key ^ (key >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        self.0 = z ^ (z >> 31);
    }
}

/// Length of the stretches compared.
pub const STRETCH: usize = 32;

/// A stretch found twice: (output, offset) of each copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    pub first: (usize, usize),
    pub second: (usize, usize),
}

/// Looks for any `STRETCH`-byte stretch occurring twice across (or within)
/// `outputs`.
///
/// Every block at an offset that is a multiple of 32 in each output is
/// indexed; then a window slides over every offset of every output. Any
/// repeated stretch of 63 bytes or more contains an indexed block of one copy
/// and is found, wherever the other copy lies. Shorter coincidences between
/// random streams have probability around n^2 * 2^-256. Blocks are indexed by
/// their first 8 bytes; should two different blocks share those (chance
/// around n^2 * 2^-65), the second is left out of the index, which can only
/// hide a repeat shorter than 95 bytes.
pub fn find_repeated_stretch<T: AsRef<[u8]>>(outputs: &[T]) -> Option<Repeat> {
    let key = |b: &[u8]| u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    let block = |(o, start): (usize, usize)| &outputs[o].as_ref()[start..start + STRETCH];
    let mut index: Index<(usize, usize)> = Index::default();
    for (o, out) in outputs.iter().enumerate() {
        let out = out.as_ref();
        for start in (0..out.len().saturating_sub(STRETCH - 1)).step_by(STRETCH) {
            match index.entry(key(&out[start..])) {
                Entry::Vacant(v) => {
                    v.insert((o, start));
                }
                Entry::Occupied(e) => {
                    if block(*e.get()) == block((o, start)) {
                        return Some(Repeat {
                            first: *e.get(),
                            second: (o, start),
                        });
                    }
                }
            }
        }
    }
    for (o, out) in outputs.iter().enumerate() {
        let out = out.as_ref();
        for start in 0..out.len().saturating_sub(STRETCH - 1) {
            if let Some(&hit) = index.get(&key(&out[start..]))
                && hit != (o, start)
                && block(hit) == &out[start..start + STRETCH]
            {
                return Some(Repeat {
                    first: hit,
                    second: (o, start),
                });
            }
        }
    }
    None
}
