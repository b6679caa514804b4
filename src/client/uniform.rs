//! Uniform integers in `[0, n)` from the device's bytes.
//!
//! [`Uniform::new`]`(n)` draws from the fewest bytes that can hold `n - 1`
//! (`k` bytes, read as a little-endian number `v` in `[0, 2^(8k))`) and uses
//! rejection sampling: with `R = 2^(8k)`, values `v >= R - (R mod n)` (the
//! part above the largest multiple of `n` that fits) are thrown away and the
//! draw is repeated with fresh bytes; an accepted `v` gives `v mod n`. The
//! accepted range holds every residue exactly `R / n` times (rounded down),
//! so each result in `[0, n)` is equally likely: there is no modulo bias.
//!
//! Fewer than half of all draws are rejected (the `R mod n` rejected values
//! are fewer than `n` and at most `R - n`, so fewer than `R / 2`): the
//! expected number of draws is `R / (R - (R mod n))`, below 2 and usually
//! far less (a d6 rejects 4 of 256 byte values, 1.016 draws expected; a d100
//! rejects 56 of 256, 1.28 draws expected). `n = 1` needs no
//! bytes at all; `n = 2^64 - 1` takes 8 bytes and rejects only `2^64 - 1`.

use std::io::Read;

use crate::client::reader::{DeviceReader, ReadError};

/// Uniform integers in `[0, n)` by rejection sampling (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uniform {
    n: u64,
    /// Bytes per draw: the fewest that can hold `n - 1`.
    bytes: usize,
    /// Largest accepted draw: `R - (R mod n) - 1` with `R = 2^(8 * bytes)`.
    max_accepted: u64,
}

impl Uniform {
    /// Integers in `[0, n)`.
    ///
    /// # Panics
    /// If `n` is 0: the range would be empty.
    pub fn new(n: u64) -> Self {
        assert!(n > 0, "Uniform::new(0): the range [0, 0) is empty");
        let bits = 64 - (n - 1).leading_zeros() as usize;
        let bytes = bits.div_ceil(8);
        let range = 1u128 << (8 * bytes);
        let max_accepted = u64::try_from(range - range % u128::from(n) - 1)
            .expect("below 2^64, since range is at most 2^64");
        Uniform {
            n,
            bytes,
            max_accepted,
        }
    }

    /// Bytes read per draw (accepted or not).
    pub fn bytes_per_draw(&self) -> usize {
        self.bytes
    }

    /// The result of one draw of [`Self::bytes_per_draw`] bytes, or `None` if
    /// the draw falls above the largest multiple of `n` and is rejected.
    pub fn accept(&self, draw: &[u8]) -> Option<u64> {
        let mut le = [0u8; 8];
        le[..draw.len()].copy_from_slice(draw);
        let v = u64::from_le_bytes(le);
        (v <= self.max_accepted).then(|| v % self.n)
    }

    /// One uniform integer in `[0, n)`.
    pub fn sample<R: Read>(&self, src: &mut DeviceReader<R>) -> Result<u64, ReadError> {
        let mut value = 0;
        self.sample_each(src, 1, |v| {
            value = v;
            Ok::<_, ReadError>(())
        })?;
        Ok(value)
    }

    /// `count` uniform integers, handed to `each` in order.
    ///
    /// Reads the same bytes as `count` calls of [`Self::sample`] would, but
    /// in batches: first `count` draws at once, then one more for each
    /// rejected draw, until `count` are accepted.
    pub fn sample_each<R: Read, E: From<ReadError>>(
        &self,
        src: &mut DeviceReader<R>,
        count: u64,
        mut each: impl FnMut(u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut missing = count;
        while missing > 0 {
            let mut accepted = 0;
            src.read_each(missing, self.bytes, |draw| {
                if let Some(v) = self.accept(draw) {
                    accepted += 1;
                    each(v)?;
                }
                Ok::<_, E>(())
            })?;
            missing -= accepted;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(bytes: &[u8]) -> DeviceReader<&[u8]> {
        DeviceReader::from_reader("/test/bits", bytes)
    }

    /// `count` values of `u` drawn from `src` in one `sample_each`.
    fn draws(u: &Uniform, src: &mut DeviceReader<&[u8]>, count: u64) -> Vec<u64> {
        let mut got = Vec::with_capacity(usize::try_from(count).unwrap());
        u.sample_each(src, count, |v| {
            got.push(v);
            Ok::<_, ReadError>(())
        })
        .unwrap();
        got
    }

    /// Deterministic bytes that look random enough to exercise rejection.
    fn pseudo_random(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32).to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn bytes_per_draw_is_the_fewest_that_hold_n_minus_1() {
        for (n, k) in [
            (1, 0),
            (2, 1),
            (6, 1),
            (256, 1),
            (257, 2),
            (65_536, 2),
            (65_537, 3),
            (1 << 32, 4),
            ((1 << 32) + 1, 5),
            (1 << 56, 7),
            ((1 << 56) + 1, 8),
            (u64::MAX, 8),
        ] {
            assert_eq!(Uniform::new(n).bytes_per_draw(), k, "n = {n}");
        }
    }

    /// Over every possible draw, each result is accepted equally often and
    /// exactly `R mod n` draws are rejected: no modulo bias, by counting.
    #[test]
    fn every_result_is_equally_likely() {
        for n in [
            2u64, 3, 6, 7, 20, 100, 128, 129, 255, 256, 257, 1000, 65_535,
        ] {
            let u = Uniform::new(n);
            let k = u.bytes_per_draw();
            let range = 1u64 << (8 * k);
            let mut hits = vec![0u64; usize::try_from(n).unwrap()];
            let mut rejected = 0;
            for v in 0..range {
                match u.accept(&v.to_le_bytes()[..k]) {
                    Some(x) => hits[usize::try_from(x).unwrap()] += 1,
                    None => rejected += 1,
                }
            }
            assert!(hits.iter().all(|&h| h == range / n), "n = {n}: {hits:?}");
            assert_eq!(rejected, range % n, "n = {n}");
            assert!(rejected < range / 2, "n = {n}: rejects half or more");
        }
    }

    #[test]
    fn one_needs_no_bytes() {
        let u = Uniform::new(1);
        let mut r = source(&[]);
        assert_eq!(u.sample(&mut r).unwrap(), 0);
        assert_eq!(draws(&u, &mut r, 1000), [0; 1000]);
        assert_eq!(r.consumed(), 0);
    }

    #[test]
    fn two_uses_one_byte_and_never_rejects() {
        let u = Uniform::new(2);
        let mut r = source(&[0, 1, 0xfe, 0xff, 0x80]);
        let got: Vec<u64> = (0..5).map(|_| u.sample(&mut r).unwrap()).collect();
        assert_eq!(got, [0, 1, 0, 1, 0]);
        assert!(u.sample(&mut r).is_err());
    }

    #[test]
    fn largest_n_rejects_only_the_top_value() {
        let n = u64::MAX;
        let u = Uniform::new(n);
        assert_eq!(u.accept(&[0xff; 8]), None);
        assert_eq!(u.accept(&(n - 1).to_le_bytes()), Some(n - 1));
        assert_eq!(u.accept(&[0; 8]), Some(0));
        assert_eq!(u.accept(&[1, 0, 0, 0, 0, 0, 0, 0x80]), Some((1 << 63) + 1));
        // A rejected draw costs its 8 bytes; the next draw decides.
        let bytes = [[0xff; 8], [0xff; 8], 5u64.to_le_bytes()].concat();
        let mut r = source(&bytes);
        assert_eq!(u.sample(&mut r).unwrap(), 5);
        assert_eq!(r.consumed(), 24);
    }

    #[test]
    fn d6_rejects_the_top_four_byte_values() {
        let u = Uniform::new(6);
        // 252 = 42 * 6 is the largest multiple of 6 that fits in a byte.
        let mut r = source(&[252, 253, 254, 255, 251, 0, 6, 11]);
        assert_eq!(u.sample(&mut r).unwrap(), 251 % 6);
        assert_eq!(r.consumed(), 5);
        assert_eq!(draws(&u, &mut r, 3), [0, 0, 5]);
    }

    /// Batched sampling reads the same bytes and gives the same values as
    /// one draw at a time, across batch boundaries and with many rejections.
    #[test]
    fn batches_match_one_draw_at_a_time() {
        let bytes = pseudo_random(400_000);
        for n in [3u64, 6, 100, 129, 1000, 40_000, 1 << 32, u64::MAX] {
            let u = Uniform::new(n);
            let count = (150_000 / u.bytes_per_draw()) as u64;
            let mut one = source(&bytes);
            let expected: Vec<u64> = (0..count).map(|_| u.sample(&mut one).unwrap()).collect();
            let mut batched = source(&bytes);
            let got = draws(&u, &mut batched, count);
            assert_eq!(got, expected, "n = {n}");
            assert_eq!(batched.consumed(), one.consumed(), "n = {n}");
            assert!(got.iter().all(|&v| v < n));
        }
    }

    #[test]
    #[should_panic(expected = "empty")]
    fn zero_is_refused() {
        Uniform::new(0);
    }
}
