//! Restarts and upgrades that no reader notices: `serve --replace` hands
//! the FUSE connection and the FIFO to its successor; under a service
//! manager the connection waits in its store across a restart or a crash.
//! Readers holding one open of `bits` and one of the FIFO read on with no
//! error, no end of file and no byte twice, and there is one mount at all
//! times.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::manager::{Manager, Service};
use crate::common::{
    Daemon, Transport, assert_no_repeated_stretch, fuse_available, on_both_transports,
    uring_available, uring_on, wait_until,
};

/// A reader that keeps one descriptor open and reads `block` bytes at a
/// time until told to stop, keeping what it read; any error or end of file
/// fails it, but for ECANCELED where `canceled` allows it (FUSE over
/// io_uring, see [`canceled_allowed`]), which it counts and reads on.
struct Reader {
    stop: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
    canceled: Arc<AtomicU64>,
    thread: JoinHandle<Result<(Vec<u8>, Duration), String>>,
}

/// Whether a reader of the FUSE file over `t` may see ECANCELED once per
/// handover: over io_uring the kernel has no way for a daemon to withdraw
/// its ring entries, and a request it hands to one in the instant the old
/// daemon's ring closes (or that a crashed daemon held) ends so; the next
/// read works (docs/OPERATIONS.md, "What a reader sees").
fn canceled_allowed(t: Transport) -> bool {
    t == Transport::IoUring
}

impl Reader {
    fn start(path: &Path, block: usize) -> Reader {
        Reader::start_allowing(path, block, false)
    }

    fn start_allowing(path: &Path, block: usize, canceled_ok: bool) -> Reader {
        let mut f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (stop, read) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let canceled = Arc::new(AtomicU64::new(0));
        let (s, r, c) = (stop.clone(), read.clone(), canceled.clone());
        let shown = path.display().to_string();
        let thread = std::thread::spawn(move || {
            let (mut got, mut buf) = (Vec::new(), vec![0u8; block]);
            let (mut last, mut longest) = (Instant::now(), Duration::ZERO);
            while !s.load(Ordering::Relaxed) {
                match f.read(&mut buf) {
                    Ok(0) => return Err(format!("{shown}: end of file after {} bytes", got.len())),
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        r.fetch_add(n as u64, Ordering::Relaxed);
                        longest = longest.max(last.elapsed());
                        last = Instant::now();
                    }
                    Err(e) if canceled_ok && e.raw_os_error() == Some(libc::ECANCELED) => {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return Err(format!("{shown}: {e} after {} bytes", got.len())),
                }
            }
            Ok((got, longest))
        });
        Reader {
            stop,
            read,
            canceled,
            thread,
        }
    }

    /// Waits until it has read `more` bytes beyond what it had.
    fn reads_on(&self, more: u64) {
        let until = self.read.load(Ordering::Relaxed) + more;
        assert!(
            wait_until(Duration::from_secs(20), || self
                .read
                .load(Ordering::Relaxed)
                >= until
                || self.thread.is_finished()),
            "a reader stalled"
        );
    }

    /// Its bytes and longest wait; at most `handovers` ECANCELEDs allowed.
    fn finish(self, handovers: u64) -> (Vec<u8>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let got = self
            .thread
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
        let canceled = self.canceled.load(Ordering::Relaxed);
        assert!(
            canceled <= handovers,
            "{canceled} ECANCELED in {handovers} handovers"
        );
        if canceled > 0 {
            eprintln!("ECANCELED {canceled} times in {handovers} handovers");
        }
        got
    }
}

/// Counts the pilfered mounts at `mount` until stopped; panics if it ever
/// sees none or two (stacked).
struct OneMount {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<u64, String>>,
}

impl OneMount {
    fn watch(mount: &Path) -> OneMount {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, mount) = (stop.clone(), mount.to_path_buf());
        let thread = std::thread::spawn(move || {
            let mut looks = 0;
            while !s.load(Ordering::Relaxed) {
                let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
                let n = pilfered::internal::mounts::parse_mountinfo(&text)
                    .iter()
                    .filter(|m| m.mount_point == mount && m.fs_type == "fuse.pilfered")
                    .count();
                if n != 1 {
                    return Err(format!("{n} pilfered mounts at {}", mount.display()));
                }
                looks += 1;
            }
            Ok(looks)
        });
        OneMount { stop, thread }
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let looks = self
            .thread
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(looks > 0, "the mount table was never read");
    }
}

/// Handovers per test.
const HANDOVERS: u64 = 3;

fn inode(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap();
    (m.dev(), m.ino())
}

fn mount_id(mount: &Path) -> u64 {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = text
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mount.to_str().unwrap()))
        .unwrap_or_else(|| panic!("nothing mounted at {}", mount.display()));
    line.split(' ').next().unwrap().parse().unwrap()
}

on_both_transports! {
    /// Three `--replace`s in a row under readers of both interfaces: each
    /// old daemon exits 0 saying whom it handed over to, the successor
    /// serves the same mount (same mount ID) and the same FIFO (same
    /// inode), and no reader sees an error, an end of file or a byte twice.
    fn replace_hands_over_under_readers(t: Transport) {
        if !fuse_available() {
            return;
        }
        let mut d = Daemon::start_on(t, &[]);
        let (fifo_before, id_before) = (inode(&d.fifo), mount_id(&d.mount));
        let one = OneMount::watch(&d.mount);
        let bits = Reader::start_allowing(&d.bits(), 4096, canceled_allowed(t));
        let small = Reader::start_allowing(&d.bits(), 64, canceled_allowed(t));
        let fifo = Reader::start(&d.fifo, 65536);
        for r in [&bits, &small, &fifo] {
            r.reads_on(1 << 16);
        }
        for _ in 0..HANDOVERS {
            let (status, log) = d.replace();
            assert!(status.success(), "the old daemon exited {status}: {log}");
            assert!(log.contains("handed over to pilfered "), "{log}");
            for r in [&bits, &small, &fifo] {
                r.reads_on(1 << 16);
            }
        }
        let served = d.log_text();
        if t == Transport::IoUring {
            assert!(served.contains("(io_uring, "), "{served}");
        }
        assert_eq!(inode(&d.fifo), fifo_before, "another FIFO");
        assert_eq!(mount_id(&d.mount), id_before, "another mount");
        one.finish();
        let outputs: Vec<Vec<u8>> = [bits, small, fifo]
            .into_iter()
            .map(|r| {
                let (got, longest) = r.finish(HANDOVERS);
                eprintln!("longest wait between two reads: {longest:?}");
                got
            })
            .collect();
        assert_no_repeated_stretch(&outputs);
    }
}

/// `--replace` with no daemon to replace starts as usual, and says so.
#[test]
fn replace_with_nobody_to_replace_starts_as_usual() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&["--replace"]);
    let log = d.log_text();
    assert!(
        log.contains("--replace: no daemon serves these paths; starting as usual"),
        "{log}"
    );
    let mut buf = [0u8; 32];
    File::open(d.bits()).unwrap().read_exact(&mut buf).unwrap();
}

/// A `--replace` with another FIFO is refused by the running daemon, which
/// serves on; nothing of the successor's is left.
#[test]
fn replace_with_other_paths_is_refused() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&[]);
    let other: PathBuf = d.dir.path().join("other.fifo");
    let out = std::process::Command::new(crate::common::BIN)
        .env("PILFERED_RUNDIR", d.dir.path().join("run"))
        .args(["serve", "--replace", "--mount"])
        .arg(&d.mount)
        .arg("--fifo")
        .arg(&other)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let expected = format!(
        "pilfered: --replace: the running daemon refused: the running daemon serves --mount {} --fifo {}, not --mount {} --fifo {}; give --replace the same paths\n",
        d.mount.display(),
        d.fifo.display(),
        d.mount.display(),
        other.display()
    );
    assert!(stderr.ends_with(&expected), "{stderr}");
    assert!(!other.exists(), "the refused successor left its FIFO");
    let mut buf = [0u8; 32];
    File::open(d.bits()).unwrap().read_exact(&mut buf).unwrap();
    assert!(d.child.is_some() && d.is_mounted());
}

/// Detaches whatever is mounted at its path when dropped: a test that
/// fails while a manager holds the connection leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        while pilfered::internal::mounts::mount_at(&self.0)
            .ok()
            .flatten()
            .is_some_and(|m| m.fs_type == "fuse.pilfered")
        {
            if pilfered::internal::mounts::detach(&self.0).is_err() {
                break;
            }
        }
    }
}

/// A service of the stand-in manager: `pilfered serve` on `dir`'s paths,
/// over `t`, its log in `dir/NAME.log`.
fn start_service(m: &Manager, dir: &Path, t: Transport, name: &str) -> Service {
    let log = File::create(dir.join(format!("{name}.log"))).unwrap();
    let (mount, fifo) = (dir.join("mnt"), dir.join("bits.fifo"));
    let mut args: Vec<&std::ffi::OsStr> = vec!["serve".as_ref(), "--mount".as_ref()];
    args.extend([mount.as_os_str(), "--fifo".as_ref(), fifo.as_os_str()]);
    args.extend(t.args().map(std::ffi::OsStr::new));
    let run = dir.join("run");
    m.start(Path::new(crate::common::BIN), &args, |cmd| {
        cmd.env("PILFERED_RUNDIR", &run)
            .stdout(std::process::Stdio::null())
            .stderr(log);
    })
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// A service under the stand-in manager whose restarts (`how`: SIGUSR1,
/// the unit's RestartKillSignal, or SIGKILL, a crash) no reader notices:
/// the connection waits in the store, and every start takes it over.
fn restarts_under_a_manager(t: Transport, how: Signal) {
    if !fuse_available() {
        return;
    }
    let _uring = (t == Transport::IoUring).then(|| {
        assert!(uring_available(), "no FUSE over io_uring to test");
        uring_on()
    });
    let tmp = tempfile::Builder::new()
        .prefix("pilfered-test")
        .tempdir()
        .unwrap();
    let dir = tmp.path();
    let _unmount = Unmount(dir.join("mnt"));
    let mut m = Manager::new();
    // The socket unit's FIFO, which systemd makes and holds.
    let fifo = dir.join("bits.fifo");
    m.listen_fifo(&fifo);

    let mut service = start_service(&m, dir, t, "start-0");
    m.await_ready(&mut service)
        .unwrap_or_else(|e| panic!("{e}: {}", log_of(dir, "start-0")));
    let mut stored = m.stored();
    stored.sort_unstable();
    assert_eq!(
        stored,
        ["fuse", "fuse-dir", "fuse-state"],
        "{}",
        log_of(dir, "start-0")
    );
    let id_before = mount_id(&dir.join("mnt"));
    let one = OneMount::watch(&dir.join("mnt"));
    // Over io_uring a crash strands the requests the dead daemon's ring
    // entries held: the kernel cannot send them again, and their readers
    // wait for good (docs/OPERATIONS.md). There the FUSE file is read by
    // fresh opens after each restart instead of by readers held open.
    let stranding = t == Transport::IoUring && how == Signal::SIGKILL;
    let bits_path = dir.join("mnt/bits");
    let allowed = canceled_allowed(t);
    let held = |block| (!stranding).then(|| Reader::start_allowing(&bits_path, block, allowed));
    let (bits, small) = (held(4096), held(64));
    let piped = Reader::start(&fifo, 65536);
    let readers = || {
        [bits.as_ref(), small.as_ref(), Some(&piped)]
            .into_iter()
            .flatten()
    };
    let fresh = |got: &mut Vec<Vec<u8>>| {
        let mut buf = vec![0u8; 1 << 16];
        File::open(&bits_path)
            .unwrap()
            .read_exact(&mut buf)
            .unwrap();
        got.push(buf);
    };
    let mut fresh_reads = Vec::new();
    for r in readers() {
        r.reads_on(1 << 16);
    }
    for round in 1..=HANDOVERS {
        let status = service.stop(how, Duration::from_secs(10));
        let name = format!("start-{round}");
        if how == Signal::SIGUSR1 {
            assert!(
                status.success(),
                "{status}: {}",
                log_of(dir, &format!("start-{}", round - 1))
            );
        }
        service = start_service(&m, dir, t, &name);
        let notes = m
            .await_ready(&mut service)
            .unwrap_or_else(|e| panic!("{e}: {}", log_of(dir, &name)));
        let log = log_of(dir, &name);
        assert!(
            !notes.iter().any(|n| n.contains("FDSTORE=1")),
            "a start given the connection stored it again: {notes:?}"
        );
        if t == Transport::IoUring {
            assert!(log.contains("(io_uring, "), "{log}");
        }
        for r in readers() {
            r.reads_on(1 << 16);
        }
        fresh(&mut fresh_reads);
    }
    assert_eq!(mount_id(&dir.join("mnt")), id_before, "another mount");
    one.finish();
    let mut outputs: Vec<Vec<u8>> = [bits, small, Some(piped)]
        .into_iter()
        .flatten()
        .map(|r| {
            let (got, longest) = r.finish(HANDOVERS);
            eprintln!("longest wait between two reads: {longest:?}");
            got
        })
        .collect();
    outputs.extend(fresh_reads);
    assert_no_repeated_stretch(&outputs);
    // A stop (systemctl stop: SIGTERM) still unmounts and empties the store.
    let status = service.stop(Signal::SIGTERM, Duration::from_secs(10));
    assert!(
        status.success(),
        "{status}: {}",
        log_of(dir, &format!("start-{HANDOVERS}"))
    );
    while !m.stored().is_empty() {
        m.receive()
            .unwrap_or_else(|e| panic!("{e}; still stored: {:?}", m.stored()));
    }
    assert!(
        pilfered::internal::mounts::mount_at(&dir.join("mnt"))
            .unwrap()
            .is_none(),
        "the mount stayed after a stop"
    );
}

on_both_transports! {
    /// `systemctl restart`: the unit's RestartKillSignal (SIGUSR1) makes
    /// the daemon let go to the store, and the next start serves on.
    fn a_restart_under_systemd_keeps_the_mount(t: Transport) {
        restarts_under_a_manager(t, Signal::SIGUSR1);
    }
}

on_both_transports! {
    /// A crash (kill -9) while the manager holds the connection: the next
    /// start takes it over and has the kernel resend what the dead daemon
    /// had taken (FUSE_NOTIFY_RESEND), so no reader gets an error.
    fn a_crash_under_systemd_keeps_the_mount(t: Transport) {
        restarts_under_a_manager(t, Signal::SIGKILL);
    }
}

/// A real long-lived client: QEMU guests whose virtio-rng reads `bits`
/// (QEMU aborts the guest on one failed read) and the FIFO (it spins on end
/// of file) read on across two `--replace`s.
#[test]
fn qemu_guests_read_on_across_replaces() {
    use crate::common::qemu::Guest;
    if !fuse_available() {
        return;
    }
    let mut d = Daemon::start(&["--fuse-transport", "legacy"]);
    let mut guests = [Guest::boot(&d.bits()), Guest::boot(&d.fifo)];
    let within = Duration::from_secs(120);
    for g in &mut guests {
        g.wait_for_more(64 << 10, within).unwrap();
    }
    for _ in 0..2 {
        let (status, log) = d.replace();
        assert!(status.success(), "{status}: {log}");
        for g in &mut guests {
            g.wait_for_more(64 << 10, within)
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    for g in &mut guests {
        assert!(g.is_alive(), "{}", g.console_tail());
        assert_eq!(g.failed_reads(), 0, "{}", g.console_tail());
    }
}
