//! The QEMU guest of `common::qemu`, proven before the handover tests
//! rely on it: it boots, reads what its virtio-rng is given, and the
//! harness sees a stall and QEMU's death for what they are.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::qemu::{CHUNK, Guest};
use crate::common::wait_until;

const MIB: u64 = 1 << 20;

#[test]
fn a_guest_reads_through_virtio_rng_until_qemu_dies() {
    let mut guest = Guest::boot("/dev/urandom".as_ref());
    eprintln!("guest booted in {:?} ({})", guest.boot_time, guest.accel);
    let started = std::time::Instant::now();
    let read = guest.wait_for_more(MIB, Duration::from_secs(120)).unwrap();
    eprintln!(
        "guest read {read} bytes, the last MiB in {:?}",
        started.elapsed()
    );
    assert_eq!(guest.failed_reads(), 0, "{}", guest.console_tail());
    assert!(guest.is_alive());

    kill(
        Pid::from_raw(i32::try_from(guest.pid()).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || !guest.is_alive()));
    let e = guest
        .wait_for_more(CHUNK, Duration::from_secs(10))
        .unwrap_err();
    assert!(e.starts_with("QEMU exited"), "{e}");
}

/// On a FIFO the guest gets what a writer puts in, no more: when the
/// writer pauses, the guest stalls (and the harness says so), and reads
/// on when it resumes.
#[test]
fn a_guest_on_a_fifo_stalls_with_its_writer() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("rng.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let feeding = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let fed = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (fifo, feeding, stop, fed) = (fifo.clone(), feeding.clone(), stop.clone(), fed.clone());
        std::thread::spawn(move || {
            // Non-blocking once open, so that a pause or a stop is seen
            // even while the pipe is full.
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            nix::fcntl::fcntl(
                &w,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .unwrap();
            let zeros = vec![0u8; 4096];
            while !stop.load(Ordering::SeqCst) {
                if !feeding.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                match w.write(&zeros) {
                    Ok(n) => {
                        fed.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    // QEMU is gone (the guest was dropped).
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                    Err(e) => panic!("feeding the FIFO: {e}"),
                }
            }
        })
    };
    let mut guest = Guest::boot(&fifo);
    guest
        .wait_for_more(4 * CHUNK, Duration::from_secs(120))
        .unwrap();

    feeding.store(false, Ordering::SeqCst);
    let paused_at = fed.load(Ordering::SeqCst);
    // What is left in the pipe (64 KiB) and in QEMU may still come; four
    // chunks more cannot.
    let e = guest
        .wait_for_more(4 * CHUNK, Duration::from_secs(5))
        .unwrap_err();
    assert!(e.contains("the guest read"), "{e}");
    assert!(
        guest.bytes_read() <= paused_at,
        "the guest read more than was fed"
    );
    assert!(guest.is_alive());

    feeding.store(true, Ordering::SeqCst);
    guest
        .wait_for_more(4 * CHUNK, Duration::from_secs(120))
        .unwrap();
    assert_eq!(guest.failed_reads(), 0);
    stop.store(true, Ordering::SeqCst);
    drop(guest);
    feeder.join().unwrap();
}

/// The guest on pilfered itself, the FUSE file and the FIFO at once, as a
/// VM host serves its guests.
#[test]
fn guests_read_pilfered_through_fuse_and_the_fifo() {
    if !crate::common::fuse_available() {
        return;
    }
    let d = crate::common::Daemon::start(&[]);
    let (bits, fifo) = (d.bits(), d.fifo.clone());
    let (mut on_fuse, mut on_fifo) = std::thread::scope(|s| {
        let a = s.spawn(|| Guest::boot(&bits));
        let b = s.spawn(|| Guest::boot(&fifo));
        (a.join().unwrap(), b.join().unwrap())
    });
    for (name, guest) in [("FUSE", &mut on_fuse), ("FIFO", &mut on_fifo)] {
        let started = std::time::Instant::now();
        guest.wait_for_more(MIB, Duration::from_secs(120)).unwrap();
        eprintln!("guest on the {name}: 1 MiB in {:?}", started.elapsed());
        assert_eq!(guest.failed_reads(), 0, "{}", guest.console_tail());
    }
}
