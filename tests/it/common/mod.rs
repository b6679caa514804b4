//! Helpers for tests that run the real daemon: temporary paths, a guard that
//! stops the daemon and removes its mount even when a test panics, and
//! checks on the bytes readers got.

pub(crate) mod manager;
pub(crate) mod qemu;
pub(crate) mod stretch;
mod transport;
mod wait;

pub(crate) use transport::{
    ENABLE_URING, Switch, Transport, kernel_queues, on_both_transports, uring_available, uring_off,
    uring_on,
};

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pilfered::internal::mounts;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_pilfered");

/// Fails the test unless FUSE can be used here. Outside CI a developer may
/// opt out with PILFERED_SKIP_FUSE_TESTS=1, and the test then says so.
pub fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = std::env::var("PILFERED_SKIP_FUSE_TESTS").is_ok_and(|v| v == "1");
    if skip && !ci {
        eprintln!("SKIPPED: /dev/fuse is missing and PILFERED_SKIP_FUSE_TESTS=1");
        return false;
    }
    panic!("/dev/fuse is missing: FUSE tests cannot run (CI={})", ci);
}

/// A running `pilfered serve` on temporary paths. Dropping it stops the
/// daemon (SIGTERM, then SIGKILL after a deadline) and clears any mount left.
pub struct Daemon {
    pub dir: TempDir,
    pub mount: PathBuf,
    pub fifo: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
    fuse: bool,
    /// Holds FUSE over io_uring on while the daemon serves over it.
    uring: Option<Switch>,
    /// The options it was started with, besides the paths.
    extra: Vec<String>,
    /// Daemons started so far on these paths, to name their logs.
    generation: usize,
}

impl Daemon {
    /// Starts the daemon with both interfaces (unless `extra` says
    /// otherwise) and waits until they are ready.
    pub fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("pilfered-test")
            .tempdir()
            .unwrap();
        let mount = dir.path().join("mnt");
        let fifo = dir.path().join("bits.fifo");
        Self::start_at(dir, mount, fifo, extra)
    }

    pub fn start_at(dir: TempDir, mount: PathBuf, fifo: PathBuf, extra: &[&str]) -> Daemon {
        Self::start_at_with_stdin(dir, mount, fifo, extra, Stdio::null(), |_| {})
    }

    /// [`Daemon::start`] with `prepare` applied to the command first (to
    /// start the daemon in a sandbox, say).
    pub fn start_prepared(extra: &[&str], prepare: impl FnOnce(&mut Command)) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("pilfered-test")
            .tempdir()
            .unwrap();
        let (mount, fifo) = (dir.path().join("mnt"), dir.path().join("bits.fifo"));
        Self::start_at_with_stdin(dir, mount, fifo, extra, Stdio::null(), prepare)
    }

    /// [`Daemon::start`] with `stdin` as the daemon's standard input.
    pub fn start_with_stdin(extra: &[&str], stdin: Stdio) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("pilfered-test")
            .tempdir()
            .unwrap();
        let (mount, fifo) = (dir.path().join("mnt"), dir.path().join("bits.fifo"));
        Self::start_at_with_stdin(dir, mount, fifo, extra, stdin, |_| {})
    }

    /// [`Daemon::start`] serving the FUSE file over `transport`; over
    /// io_uring it holds the kernel's switch on, and checks that every
    /// kernel queue has its ring.
    pub fn start_on(transport: Transport, extra: &[&str]) -> Daemon {
        let mut args = transport.args().to_vec();
        args.extend_from_slice(extra);
        Daemon::start(&args)
    }

    fn start_at_with_stdin(
        dir: TempDir,
        mount: PathBuf,
        fifo: PathBuf,
        extra: &[&str],
        stdin: Stdio,
        prepare: impl FnOnce(&mut Command),
    ) -> Daemon {
        let fuse = !extra.contains(&"--no-fuse");
        let with_fifo = !extra.contains(&"--no-fifo");
        let over_uring = extra.windows(2).any(|w| w == Transport::IoUring.args());
        let uring = (fuse && over_uring).then(|| {
            assert!(uring_available(), "no FUSE over io_uring to test");
            uring_on()
        });
        let log = dir.path().join("daemon.log");
        // Its own state directory, so that what a killed daemon recorded
        // does not pile up in /run/pilfered.
        let mut cmd = Command::new(BIN);
        cmd.env("PILFERED_RUNDIR", dir.path().join("run"))
            .arg("serve")
            .arg("--mount")
            .arg(&mount)
            .arg("--fifo")
            .arg(&fifo)
            .args(extra)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        prepare(&mut cmd);
        let child = cmd.spawn().expect("start pilfered");
        let mut d = Daemon {
            dir,
            mount,
            fifo,
            child: Some(child),
            log,
            fuse,
            uring,
            extra: extra.iter().map(|a| (*a).to_string()).collect(),
            generation: 0,
        };
        let ready = wait_until(Duration::from_secs(20), || {
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("pilfered exited early ({status}): {}", d.log_text());
            }
            // A dead mount left at the path is in the mount table too: wait
            // until the daemon answers (statfs is never served from cache).
            (!fuse || (d.is_mounted() && nix::sys::statvfs::statvfs(&d.mount).is_ok()))
                && (!with_fifo || d.fifo.exists())
        });
        assert!(
            ready,
            "pilfered not ready after 20 s; log: {}\nmounts: {}",
            d.log_text(),
            std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
        );
        // The rings register while /dev/fuse already serves.
        if d.uring.is_some() {
            let queues = kernel_queues();
            assert!(
                wait_until(Duration::from_secs(10), || d.stats()["fuse_uring_queues"]
                    == queues),
                "not every kernel queue has a ring; log: {}",
                d.log_text()
            );
        }
        // The serving line, logged when both interfaces serve (as READY=1
        // is sent), may come a little after the paths answer.
        assert!(
            wait_until(Duration::from_secs(10), || d
                .log_text()
                .contains("] serving: ")),
            "no serving line; log: {}",
            d.log_text()
        );
        d
    }

    /// Starts `pilfered serve --replace` with the very options of this
    /// daemon, and waits until this one has exited and the successor
    /// serves; from then on this guard is the successor's. Returns how the
    /// old daemon exited, and its log.
    pub fn replace(&mut self) -> (ExitStatus, String) {
        self.generation += 1;
        let log = self
            .dir
            .path()
            .join(format!("daemon-{}.log", self.generation));
        let child = Command::new(BIN)
            .env("PILFERED_RUNDIR", self.dir.path().join("run"))
            .arg("serve")
            .arg("--mount")
            .arg(&self.mount)
            .arg("--fifo")
            .arg(&self.fifo)
            .args(&self.extra)
            .arg("--replace")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start pilfered --replace");
        let old_log = std::mem::replace(&mut self.log, log);
        let mut old = self.child.replace(child).expect("a daemon to replace");
        let mut status = None;
        let done = wait_until(Duration::from_secs(20), || {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "the successor exited ({s}): {}\nthe old daemon: {}",
                    self.log_text(),
                    std::fs::read_to_string(&old_log).unwrap_or_default()
                );
            }
            if status.is_none() {
                status = old.try_wait().unwrap();
            }
            status.is_some() && self.log_text().contains("] serving: ")
        });
        let old_text = std::fs::read_to_string(&old_log).unwrap_or_default();
        if !done {
            let _ = old.kill();
        }
        // Reaped in every case (at once if it exited).
        let _ = old.wait();
        if !done {
            panic!(
                "no handover within 20 s; the successor: {}\nthe old daemon: {old_text}",
                self.log_text()
            );
        }
        (status.expect("exited"), old_text)
    }

    /// Hands back the paths without stopping anything or clearing the
    /// mount: for tests that kill the daemon and start another on the same
    /// paths. The caller's next guard cleans up.
    pub fn abandon(mut self) -> (TempDir, PathBuf, PathBuf) {
        self.child = None;
        self.fuse = false;
        self.uring = None;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.mount.clone(), self.fifo.clone())
    }

    pub fn bits(&self) -> PathBuf {
        self.mount.join("bits")
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    pub fn is_mounted(&self) -> bool {
        mounts::mount_at(&self.mount)
            .unwrap()
            .is_some_and(|m| m.fs_type == "fuse.pilfered")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` and waits (up to `within`) for the daemon to exit.
    pub fn stop_with(&mut self, sig: Signal, within: Duration) -> ExitStatus {
        kill(self.pid(), sig).unwrap();
        self.stop_with_nothing(within)
    }

    /// Waits up to `within` for the daemon to exit of its own accord.
    pub fn stop_with_nothing(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pilfered still running after {within:?}; log: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `stats` file as a map.
    pub fn stats(&self) -> HashMap<String, u64> {
        parse_stats(&std::fs::read_to_string(self.mount.join("stats")).unwrap())
    }
}

/// A `stats` file as a map from counter name to value, parsed by the
/// daemon's own parser (so a malformed file fails the test).
pub fn parse_stats(text: &str) -> HashMap<String, u64> {
    let snapshot = pilfered::internal::Snapshot::parse(text).expect("a stats file");
    snapshot
        .fields()
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let done = wait_until(Duration::from_secs(5), || {
                child.try_wait().unwrap().is_some()
            });
            if !done {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if self.fuse && self.is_mounted() {
            let _ = mounts::detach(&self.mount);
        }
    }
}

/// A temporary directory others may enter (tempfile makes them 0700).
pub fn open_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("pilfered-test")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    wait::poll_until(limit, Duration::from_millis(10), cond)
}

/// The thread of `pid` named `name`: its `/proc/PID/task/TID` directory
/// (waiting for it: the FIFO exists before its writer thread starts).
pub fn thread_named(pid: u32, name: &str) -> std::path::PathBuf {
    let find = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|t| std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == name))
    };
    let mut found = None;
    wait_until(Duration::from_secs(10), || {
        found = find();
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no thread named {name} in process {pid}"))
}

/// Reads exactly `n` bytes from `path` with reads of `block` bytes, checking
/// that every `read` returns the whole block (FUSE: never a short read).
pub fn read_blocks(path: &Path, block: usize, n: usize, require_full_reads: bool) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        let want = block.min(n - got);
        let r = f.read(&mut out[got..got + want]).unwrap();
        assert!(r > 0, "end of file from {}", path.display());
        if require_full_reads {
            assert_eq!(r, want, "short read from {}", path.display());
        }
        got += r;
    }
    out
}

/// One reader of [`read_concurrently`]: `total` bytes from `path` in reads
/// of `block` bytes; FUSE reads must each return the whole block.
#[derive(Debug, Clone)]
pub struct Reader {
    pub path: PathBuf,
    pub block: usize,
    pub total: usize,
    pub fuse: bool,
}

/// Runs every reader on its own thread, all released at once by a barrier;
/// checks that each got exactly its bytes and that no 32-byte stretch was
/// handed out twice across all of them. Returns the outputs, in order.
pub fn read_concurrently(plan: &[Reader]) -> Vec<Vec<u8>> {
    let start = std::sync::Arc::new(std::sync::Barrier::new(plan.len()));
    let threads: Vec<_> = plan
        .iter()
        .cloned()
        .map(|r| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                read_blocks(&r.path, r.block, r.total, r.fuse)
            })
        })
        .collect();
    let outputs: Vec<Vec<u8>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (out, r) in outputs.iter().zip(plan) {
        assert_eq!(out.len(), r.total, "{r:?}");
        assert!(out.iter().any(|&b| b != 0), "all zeros: {r:?}");
    }
    assert_no_repeated_stretch(&outputs);
    outputs
}

/// Bytes the FUSE readers of `plan` asked for, in all.
pub fn fuse_total(plan: &[Reader]) -> u64 {
    plan.iter().filter(|r| r.fuse).map(|r| r.total as u64).sum()
}

/// Waits until process `pid` has read at least one byte (its `rchar` in
/// `/proc/PID/io` moved): a reader that has really started.
pub fn wait_until_reading(pid: u32) {
    let read = || {
        std::fs::read_to_string(format!("/proc/{pid}/io"))
            .ok()
            .and_then(|io| {
                io.lines()
                    .find_map(|l| l.strip_prefix("rchar: "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    let before = read();
    assert!(
        wait_until(Duration::from_secs(10), || read() > before),
        "process {pid} never read"
    );
}

/// Panics if any 32-byte stretch occurs twice across (or within) `outputs`
/// (see [`stretch::find_repeated_stretch`] for what is guaranteed to be found).
pub fn assert_no_repeated_stretch(outputs: &[Vec<u8>]) {
    if let Some(r) = stretch::find_repeated_stretch(outputs) {
        panic!(
            "32 bytes at output {} offset {} repeat output {} offset {}",
            r.second.0, r.second.1, r.first.0, r.first.1
        );
    }
}

/// The ChaCha20 keystream of `key_hex` (nonce 0, counter 0) from openssl.
pub fn openssl_keystream(key_hex: &str, n: usize) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl enc -chacha20 -K {key_hex} -iv 00000000000000000000000000000000 < /dev/zero | head -c {n}"
        ))
        .output()
        .expect("run openssl (package openssl)");
    assert_eq!(
        out.stdout.len(),
        n,
        "openssl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `pilfered ARGS` to completion, with a state directory of its own
/// (never the machine's `/run/pilfered`); returns (status code, stdout,
/// stderr). Whatever it did, it must have left no record behind.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let state = tempfile::tempdir().unwrap();
    let rundir = state.path().join("run");
    let out = Command::new(BIN)
        .args(args)
        .env("PILFERED_RUNDIR", &rundir)
        .output()
        .unwrap();
    let left: Vec<_> = std::fs::read_dir(&rundir)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "pilfered {args:?} left {left:?} in its state directory"
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `pilfered ARGS` expecting failure with exactly `line` on stderr,
/// status `code` and nothing on stdout.
pub fn refused(args: &[&str], code: i32, line: &str) {
    let (status, stdout, stderr) = run(args);
    assert_eq!(stderr, format!("pilfered: {line}\n"), "args {args:?}");
    assert_eq!(status, code, "args {args:?}");
    assert_eq!(stdout, "", "args {args:?}");
}

/// The user nobody and the group `users` (gid 100), with which the tests
/// share the device by `--group users`: as a member of it, or as nobody
/// else's member.
pub const SHARED_GROUP: &str = "users";
pub const MEMBER: [&str; 3] = ["--reuid=65534", "--regid=65534", "--groups=100"];
pub const NON_MEMBER: [&str; 3] = ["--reuid=65534", "--regid=65534", "--clear-groups"];

/// Reads `n` bytes of `path` with `head -c` as the user `setpriv` makes of
/// `who`: the bytes, or the error head printed.
pub fn read_as(who: &[&str], path: &Path, n: usize) -> Result<Vec<u8>, String> {
    let out = Command::new("setpriv")
        .args(who)
        .arg("head")
        .arg("-c")
        .arg(n.to_string())
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    if out.status.success() && out.stdout.len() == n {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Mounts a tmpfs on `dir` (read-only if asked); the caller unmounts it.
pub fn mount_tmpfs(dir: &Path, read_only: bool) {
    let flags = if read_only {
        nix::mount::MsFlags::MS_RDONLY
    } else {
        nix::mount::MsFlags::empty()
    };
    nix::mount::mount(Some("tmpfs"), dir, Some("tmpfs"), flags, None::<&str>).unwrap();
}
