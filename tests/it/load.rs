//! Load on the built daemon: many concurrent and short-lived readers, exact
//! counters, and bounded memory.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Daemon, Reader, assert_no_repeated_stretch, fuse_available, fuse_total, on_both_transports,
    read_blocks, read_concurrently, wait_until,
};

/// 64 readers at once, half on the file with reads from 1 byte to 1 MiB,
/// half on the FIFO: each gets exactly what it asked for, no 32-byte stretch
/// is handed out twice, and the FUSE byte counter matches exactly.
#[test]
fn sixty_four_concurrent_readers_get_exact_distinct_bytes() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&[]);
    const FUSE_BLOCKS: [usize; 8] = [1, 17, 512, 4096, 65536, 100_000, 131_072, 1 << 20];
    const FIFO_BLOCKS: [usize; 4] = [333, 4096, 65536, 1 << 20];
    // Tiny reads move little, large ones up to two blocks; about 40 MiB in
    // all.
    let mut plan = Vec::new();
    for i in 0..32 {
        let block = FUSE_BLOCKS[i % FUSE_BLOCKS.len()];
        plan.push(Reader {
            path: d.bits(),
            block,
            total: (block * 256).clamp(8 << 10, 1 << 20).max(2 * block),
            fuse: true,
        });
        plan.push(Reader {
            path: d.fifo.clone(),
            block: FIFO_BLOCKS[i % FIFO_BLOCKS.len()],
            total: 512 << 10,
            fuse: false,
        });
    }
    read_concurrently(&plan);
    let fifo_total: usize = plan.iter().filter(|r| !r.fuse).map(|r| r.total).sum();
    let stats = d.stats();
    assert_eq!(stats["bytes_served_fuse"], fuse_total(&plan));
    assert!(stats["bytes_served_fifo"] >= fifo_total as u64);
}

/// Hundreds of FIFO readers in a row, each opening, reading a few bytes and
/// closing, get exactly their bytes: what one leaves in the pipe is the
/// next one's, never lost and never repeated.
#[test]
fn hundreds_of_short_fifo_readers_in_a_row() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&[]);
    let mut got = Vec::new();
    for i in 0..500 {
        let n = 1 + (i * 7) % 64;
        let mut buf = vec![0u8; n];
        File::open(&d.fifo).unwrap().read_exact(&mut buf).unwrap();
        got.push(buf);
    }
    let total: usize = got.iter().map(Vec::len).sum();
    assert_no_repeated_stretch(&[got.concat()]);
    assert!(d.stats()["bytes_served_fifo"] >= total as u64);
}

/// Reads of at most this many bytes become exactly one FUSE read request,
/// wherever the buffer lies: the kernel splits direct I/O into requests of
/// at most 256 pages (1 MiB), counting the pages the user buffer touches, so
/// an unaligned read of a whole 1 MiB touches 257 pages and becomes two.
const ONE_REQUEST: usize = (1 << 20) - 4096;

on_both_transports! {
    /// With only the FUSE file, `bytes_served_fuse` and `fuse_reads` match what
    /// readers did exactly, and once the queue is full again every generated
    /// byte is accounted for: served or queued.
    fn fuse_counters_are_exact(t: Transport) {
        if !fuse_available() {
            return;
        }
        let d = Daemon::start_on(t, &["--no-fifo"]);
        const SIZES: [usize; 8] = [1, 100, 4096, 5000, 65536, 131_072, 1_000_000, ONE_REQUEST];
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let bits = d.bits();
                thread::spawn(move || {
                    let mut f = File::open(bits).unwrap();
                    let mut buf = vec![0u8; ONE_REQUEST];
                    let (mut bytes, mut reads) = (0u64, 0u64);
                    for _ in 0..3 {
                        for size in SIZES {
                            assert_eq!(f.read(&mut buf[..size]).unwrap(), size);
                            bytes += size as u64;
                            reads += 1;
                        }
                    }
                    (bytes, reads)
                })
            })
            .collect();
        let (bytes, reads) = readers
            .into_iter()
            .map(|r| r.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let s = d.stats();
        assert_eq!(s["bytes_served_fuse"], bytes);
        assert_eq!(s["fuse_reads"], reads);

        // A page-aligned 8 MiB read: still exact bytes, but several requests.
        const BIG: usize = 8 << 20;
        let mut big = vec![0u8; BIG + 4096];
        let at = big.as_ptr().align_offset(4096);
        let mut f = File::open(d.bits()).unwrap();
        assert_eq!(f.read(&mut big[at..at + BIG]).unwrap(), BIG);
        let s = d.stats();
        assert_eq!(s["bytes_served_fuse"], bytes + BIG as u64);
        assert!(s["fuse_reads"] >= reads + 8, "a request above 1 MiB: {s:?}");

        // Every byte generated has been served or is queued, whenever no batch
        // is being filled (the generator counts a batch just before it queues
        // it): wait for such a moment, then the identity must be exact. A byte
        // lost or counted twice would keep it from ever holding.
        let mut last = d.stats();
        let balanced = wait_until(Duration::from_secs(10), || {
            last = d.stats();
            last["bytes_generated"] == last["bytes_served_fuse"] + last["queue_bytes"]
        });
        assert!(balanced, "generated != served + queued: {last:?}");
        assert!(last["queue_bytes"] > 0, "{last:?}");
    }
}

/// Bytes currently in the pipe of `f` (a FIFO opened for reading).
fn bytes_in_pipe(f: &File) -> u64 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points
    // to a live c_int; the fd is open for as long as `f` is borrowed.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(r, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    n as u64
}

/// `bytes_served_fifo` counts bytes written into the pipe: exactly what the
/// reader took plus what is still in the pipe, once the writer is idle.
#[test]
fn fifo_counter_is_exact() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&["--pipe-size", "64K"]);
    let mut f = File::open(&d.fifo).unwrap();
    let mut taken = 0u64;
    for n in [1usize, 4095, 65536, 100_000, 123, 1 << 20] {
        let mut buf = vec![0u8; n];
        f.read_exact(&mut buf).unwrap();
        taken += n as u64;
    }
    // Two equal readings of the counter around the pipe's fill mean no
    // write happened in between, so the three numbers belong together.
    let served = || d.stats()["bytes_served_fifo"];
    let mut last = (0, 0);
    let settled = wait_until(Duration::from_secs(10), || {
        let before = served();
        let queued = bytes_in_pipe(&f);
        last = (before, queued);
        served() == before && before == taken + queued
    });
    assert!(settled, "served, in pipe = {last:?}; taken {taken}");
    let s = d.stats();
    assert!(s["fifo_writev_calls"] > 0);
    assert!(s["fifo_partial_writes"] <= s["fifo_writev_calls"]);
}

on_both_transports! {
    /// The daemon's peak RSS (VmHWM) stays under 64 MiB at default settings
    /// while up to 2 GiB (or 15 s worth) go through both interfaces with reads
    /// from 4 KiB to 8 MiB; benches/soak.sh checks the same over tens of GiB.
    fn peak_rss_stays_bounded(t: Transport) {
        if !fuse_available() {
            return;
        }
        const LIMIT: u64 = 64 << 20;
        const BUDGET: u64 = 2 << 30;
        let d = Daemon::start_on(t, &[]);
        let moved = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let plan = [
            (d.bits(), 8 << 20),
            (d.bits(), 1 << 20),
            (d.bits(), 128 << 10),
            (d.bits(), 4096),
            (d.fifo.clone(), 64 << 10),
            (d.fifo.clone(), 1 << 20),
        ];
        let started = Instant::now();
        let readers: Vec<_> = plan
            .into_iter()
            .map(|(path, block)| {
                let (moved, stop) = (moved.clone(), stop.clone());
                thread::spawn(move || {
                    let mut f = File::open(path).unwrap();
                    let mut buf = vec![0u8; block];
                    while !stop.load(Ordering::Relaxed) {
                        let n = f.read(&mut buf).unwrap();
                        assert!(n > 0);
                        if moved.fetch_add(n as u64, Ordering::Relaxed) + n as u64 >= BUDGET {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        // Also open and close the file and the stats file over and over.
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(15) {
            let _ = read_blocks(&d.bits(), 1000, 1000, true);
            let _ = d.stats();
            thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
        let kib = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {status}"))
        };
        let peak = kib("VmHWM:") << 10;
        let total = moved.load(Ordering::Relaxed);
        eprintln!(
            "moved {} MiB in {:.1} s; daemon VmHWM {} KiB, VmRSS {} KiB",
            total >> 20,
            started.elapsed().as_secs_f64(),
            peak >> 10,
            kib("VmRSS:")
        );
        assert!(
            peak < LIMIT,
            "peak RSS {} KiB after {total} bytes",
            peak >> 10
        );
    }
}
