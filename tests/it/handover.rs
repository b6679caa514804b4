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

use crate::common::{
    Daemon, Transport, assert_no_repeated_stretch, fuse_available, on_both_transports, wait_until,
};

/// A reader that keeps one descriptor open and reads `block` bytes at a
/// time until told to stop, keeping what it read; any error or end of file
/// fails it.
struct Reader {
    stop: Arc<AtomicBool>,
    read: Arc<AtomicU64>,
    thread: JoinHandle<Result<(Vec<u8>, Duration), String>>,
}

impl Reader {
    fn start(path: &Path, block: usize) -> Reader {
        let mut f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (stop, read) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, r) = (stop.clone(), read.clone());
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
                    Err(e) => return Err(format!("{shown}: {e} after {} bytes", got.len())),
                }
            }
            Ok((got, longest))
        });
        Reader { stop, read, thread }
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

    fn finish(self) -> (Vec<u8>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{e}"))
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
        let bits = Reader::start(&d.bits(), 4096);
        let small = Reader::start(&d.bits(), 64);
        let fifo = Reader::start(&d.fifo, 65536);
        for r in [&bits, &small, &fifo] {
            r.reads_on(1 << 16);
        }
        for _ in 0..3 {
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
                let (got, longest) = r.finish();
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
