//! FIPS 140-2 statistical tests (monobit, poker, runs, long run) on output
//! taken through each interface of the real daemon.
//!
//! Each 20,000-bit block is judged with the FIPS 140-2 bounds. For a perfect
//! generator each test's bounds are about four standard deviations wide, and
//! a block fails one of the four with probability about 8e-4 (rngtest, which
//! applies the same tests, reports roughly 1 failure in 1,250 blocks). We
//! judge 200 blocks per interface and allow up to 4 failures: with p = 1e-3
//! per block, P(5 or more fail) = 1 - sum_{k<5} C(200,k) p^k (1-p)^(200-k)
//! ≈ 2.2e-6, the chance that this test fails although the bytes are fine.

use crate::common::{Daemon, fuse_available, read_blocks};

const BLOCK_BYTES: usize = 2500;
const BLOCKS: usize = 200;
const ALLOWED_FAILURES: usize = 4;

/// Which FIPS 140-2 tests one 20,000-bit block fails.
fn fips_140_2(block: &[u8]) -> Vec<&'static str> {
    assert_eq!(block.len(), BLOCK_BYTES);
    let bit = |i: usize| (block[i / 8] >> (7 - i % 8)) & 1;
    let mut failed = Vec::new();

    let ones: u32 = block.iter().map(|b| b.count_ones()).sum();
    if !(9726..=10274).contains(&ones) {
        failed.push("monobit");
    }

    let mut counts = [0u64; 16];
    for b in block {
        counts[(b >> 4) as usize] += 1;
        counts[(b & 15) as usize] += 1;
    }
    let x = 16.0 / 5000.0 * counts.iter().map(|&c| (c * c) as f64).sum::<f64>() - 5000.0;
    if !(x > 2.16 && x < 46.17) {
        failed.push("poker");
    }

    // runs[v][len-1] for run lengths 1..=5 and 6+, of zeros (v=0) and ones.
    let mut runs = [[0u32; 6]; 2];
    let mut longest = 0;
    let mut i = 0;
    while i < 20_000 {
        let v = bit(i);
        let start = i;
        while i < 20_000 && bit(i) == v {
            i += 1;
        }
        let len = i - start;
        longest = longest.max(len);
        runs[v as usize][len.min(6) - 1] += 1;
    }
    const BOUNDS: [(u32, u32); 6] = [
        (2315, 2685),
        (1114, 1386),
        (527, 723),
        (240, 384),
        (103, 209),
        (103, 209),
    ];
    if runs
        .iter()
        .any(|r| r.iter().zip(BOUNDS).any(|(&n, (lo, hi))| n < lo || n > hi))
    {
        failed.push("runs");
    }
    if longest >= 26 {
        failed.push("long run");
    }
    failed
}

fn judge(data: &[u8], what: &str) {
    let failures: Vec<_> = data
        .chunks_exact(BLOCK_BYTES)
        .map(fips_140_2)
        .filter(|f| !f.is_empty())
        .collect();
    assert!(
        failures.len() <= ALLOWED_FAILURES,
        "{what}: {} of {BLOCKS} blocks failed FIPS 140-2: {failures:?}",
        failures.len()
    );
}

#[test]
fn fuse_output_passes_fips_140_2() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&["--no-fifo"]);
    judge(
        &read_blocks(&d.bits(), 4096, BLOCK_BYTES * BLOCKS, true),
        "FUSE",
    );
}

#[test]
fn fifo_output_passes_fips_140_2() {
    let d = Daemon::start(&["--no-fuse"]);
    judge(
        &read_blocks(&d.fifo, 65536, BLOCK_BYTES * BLOCKS, false),
        "FIFO",
    );
}

/// The tests can fail: bias, stuck bits and long runs are caught.
#[test]
fn fips_tests_catch_bad_data() {
    let good: Vec<u8> = {
        let mut v = vec![0u8; BLOCK_BYTES];
        use rand_chacha::rand_core::{Rng, SeedableRng};
        rand_chacha::ChaCha20Rng::from_seed([1; 32]).fill_bytes(&mut v);
        v
    };
    assert!(fips_140_2(&good).is_empty());
    // One bit in 32 forced on: monobit (and more) fails.
    let biased: Vec<u8> = good
        .iter()
        .enumerate()
        .map(|(i, b)| if i % 4 == 0 { b | 1 } else { *b })
        .collect();
    assert!(fips_140_2(&biased).contains(&"monobit"));
    // A repeated nibble pattern fails poker.
    let mut patterned = good.clone();
    for b in patterned.iter_mut().step_by(3) {
        *b = 0x5a;
    }
    assert!(fips_140_2(&patterned).contains(&"poker"));
    // 4 zero bytes in a row: a run of at least 32.
    let mut long = good.clone();
    long[100..104].fill(0);
    assert!(fips_140_2(&long).contains(&"long run"));
    // Alternating bits: no runs longer than 1.
    assert!(fips_140_2(&[0x55; BLOCK_BYTES]).contains(&"runs"));
}
