//! A short run of `benches/soak.sh` with the dev build, and the duplicate
//! finder it relies on.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::stretch::{Repeat, find_repeated_stretch};
use crate::common::{BIN, fuse_available};

/// Pseudo-random bytes (xorshift), distinct enough for planting repeats.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24).to_le_bytes()[0]
        })
        .collect()
}

#[test]
fn finds_planted_repeats_at_any_offset() {
    let a = noise(10_000, 1);
    let b = noise(10_000, 2);
    assert_eq!(find_repeated_stretch(&[&a, &b]), None);
    // 63 bytes is the shortest repeat guaranteed to be found, at any pair
    // of offsets (here neither a multiple of 32).
    let mut c = b.clone();
    c[5001..5001 + 63].copy_from_slice(&a[777..777 + 63]);
    let r = find_repeated_stretch(&[&a, &c]).expect("planted repeat");
    assert_eq!(r.first.0, 0);
    assert_eq!(r.second.0, 1);
    assert_eq!(a[r.first.1..r.first.1 + 32], c[r.second.1..r.second.1 + 32]);
    // Within one output, and at aligned offsets in both copies.
    let mut d = a.clone();
    d[6400..6400 + 64].copy_from_slice(&a[320..320 + 64]);
    assert_eq!(
        find_repeated_stretch(&[&d]),
        Some(Repeat {
            first: (0, 320),
            second: (0, 6400)
        })
    );
    // Outputs shorter than a stretch are fine.
    assert_eq!(find_repeated_stretch(&[&a[..5], &[][..]]), None);
}

/// The dupcheck example next to this test binary (`cargo test` builds
/// examples), building it if this test was run on its own.
fn dupcheck() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let path = profile_dir.join("examples/dupcheck");
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "dupcheck"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

/// 256 MiB through both interfaces with reader churn: the script reports
/// throughput and RSS, finds no repeated stretch and stops the daemon
/// cleanly.
#[test]
fn short_soak_passes() {
    if !fuse_available() {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/soak.sh"))
        .env("PILFERED_RUNDIR", state.path().join("run"))
        .env("SOAK_GIB", "0.25")
        .env("SOAK_INTERVAL", "1")
        .env("SOAK_SAMPLE_MIB", "16")
        .env("PILFERED", BIN)
        .env("DUPCHECK", dupcheck())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("FUSE MiB/s"), "{stdout}");
    assert!(stdout.contains("peak RSS"), "{stdout}");
    assert!(stdout.contains("no repeated 32-byte stretch"), "{stdout}");
    assert!(stdout.ends_with("soak: PASS\n"), "{stdout}");
}
