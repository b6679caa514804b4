//! The longest read stall a held reader sees across each kind of handover:
//! `stall PILFERED HANDOVERS TRANSPORT...` runs, for each transport given
//! (`io-uring`, `legacy`), HANDOVERS handovers of each kind on a daemon of
//! its own (temporary paths):
//!   - `replace`: `pilfered serve --replace` with the same options;
//!   - `restart`: under a stand-in for systemd (tests/it/common/manager.rs:
//!     its notify socket, fd store and socket unit's FIFO), SIGUSR1 (the
//!     unit's RestartKillSignal, as `systemctl restart` sends it) and a new
//!     start at once;
//!   - `crash`: the same with SIGKILL, the manager starting the next daemon
//!     as soon as it has reaped the dead one.
//!
//! Three readers hold one open each and read all the time: `bits` in 4 KiB
//! and in 64-byte reads, and the FIFO in 64 KiB reads. For each handover,
//! from just before it starts until each reader has read 256 KiB past the
//! successor's readiness, it takes each reader's longest gap between two
//! reads that returned; before the first, the same over one quiet second.
//! Prints one line per transport, kind and reader:
//! `TRANSPORT KIND READER QUIET_MS MEDIAN_MS MAX_MS ERRORS STRANDED`, where
//! ERRORS counts failed reads and STRANDED the handovers after which the
//! reader did not read on within 5 s (it is then left out). Used by
//! `benches/handover.sh`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

#[path = "../tests/it/common/manager.rs"]
#[allow(dead_code)]
mod manager;

use manager::{Manager, Service};

#[path = "../tests/it/common/wait.rs"]
mod wait;

/// What the manager's waits poll at: fine enough not to add to a stall.
pub fn wait_until(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    wait::poll_until(limit, Duration::from_millis(1), cond)
}

/// How long a reader may take to read on after a handover before it
/// counts as stranded.
const READ_ON: Duration = Duration::from_secs(5);

/// A reader holding one open of its path: its progress, its longest gap
/// since the last [`Reader::take_longest`], and its failed reads.
struct Reader {
    name: &'static str,
    read: Arc<AtomicU64>,
    longest_ns: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    ended: Arc<AtomicBool>,
    stranded: bool,
}

impl Reader {
    fn start(name: &'static str, path: &Path, block: usize, stop: &Arc<AtomicBool>) -> Reader {
        let mut f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let read = Arc::new(AtomicU64::new(0));
        let longest_ns = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(AtomicBool::new(false));
        let (r, l, e, end, stop) = (
            read.clone(),
            longest_ns.clone(),
            errors.clone(),
            ended.clone(),
            stop.clone(),
        );
        let shown = path.display().to_string();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; block];
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match f.read(&mut buf) {
                    Ok(0) => {
                        eprintln!("stall: {shown}: end of file");
                        break;
                    }
                    Ok(n) => {
                        let now = Instant::now();
                        let gap = u64::try_from((now - last).as_nanos()).unwrap_or(u64::MAX);
                        l.fetch_max(gap, Ordering::Relaxed);
                        last = now;
                        r.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(err) => {
                        e.fetch_add(1, Ordering::Relaxed);
                        eprintln!("stall: a read of {shown}: {err}");
                        // A mount that is gone for good ends the reader.
                        if err.raw_os_error() == Some(libc::ENOTCONN) {
                            break;
                        }
                    }
                }
            }
            end.store(true, Ordering::Relaxed);
        });
        Reader {
            name,
            read,
            longest_ns,
            errors,
            ended,
            stranded: false,
        }
    }

    /// The longest gap since the last call, in milliseconds, and a fresh
    /// start.
    fn take_longest(&self) -> f64 {
        self.longest_ns.swap(0, Ordering::Relaxed) as f64 / 1e6
    }

    /// Waits until it has read `more` bytes past what it has now; false if
    /// it did not within [`READ_ON`].
    fn reads_on(&self, more: u64) -> bool {
        let until = self.read.load(Ordering::Relaxed) + more;
        wait_until(READ_ON, || {
            self.read.load(Ordering::Relaxed) >= until || self.ended.load(Ordering::Relaxed)
        }) && !self.ended.load(Ordering::Relaxed)
    }
}

/// One daemon (or one service under the manager) on its own paths.
struct Setup {
    dir: tempfile::TempDir,
    bin: PathBuf,
    transport: String,
    generation: u32,
    child: Option<Child>,
    manager: Option<(Manager, Service)>,
}

impl Setup {
    fn mount(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    fn fifo(&self) -> PathBuf {
        self.dir.path().join("bits.fifo")
    }
    fn log(&self, generation: u32) -> PathBuf {
        self.dir.path().join(format!("daemon-{generation}.log"))
    }

    /// `serve` with this setup's paths and transport.
    fn args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "serve".into(),
            "--mount".into(),
            self.mount().into_os_string(),
            "--fifo".into(),
            self.fifo().into_os_string(),
            "--fuse-transport".into(),
            self.transport.clone().into(),
        ]
    }

    /// A plain start of the daemon, logging to this generation's log.
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("PILFERED_RUNDIR", self.dir.path().join("run"))
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.log(self.generation)).unwrap());
        cmd
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log(self.generation)).unwrap_or_default()
    }

    /// A plain daemon (`managed` false) or a service of a fresh manager
    /// holding the socket unit's FIFO, serving.
    fn start(bin: &Path, transport: &str, managed: bool) -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("pilfered-stall")
            .tempdir()
            .unwrap();
        let mut s = Setup {
            dir,
            bin: bin.to_path_buf(),
            transport: transport.to_string(),
            generation: 0,
            child: None,
            manager: None,
        };
        if managed {
            let mut m = Manager::new();
            m.listen_fifo(&s.fifo());
            let service = s.start_service(&m);
            s.manager = Some((m, service));
            s.await_service();
        } else {
            s.child = Some(s.command().spawn().expect("start pilfered"));
            s.await_serving();
        }
        let log = s.log_text();
        if transport == "io-uring" {
            assert!(
                log.contains("(io_uring, "),
                "not serving over io_uring: {log}"
            );
        }
        s
    }

    fn start_service(&self, m: &Manager) -> Service {
        let args = self.args();
        let args: Vec<&OsStr> = args.iter().map(std::ffi::OsString::as_os_str).collect();
        let log = File::create(self.log(self.generation)).unwrap();
        let run = self.dir.path().join("run");
        m.start(&self.bin, &args, |c| {
            c.env("PILFERED_RUNDIR", &run)
                .stdout(Stdio::null())
                .stderr(log);
        })
    }

    fn await_service(&mut self) {
        let (m, service) = self.manager.as_mut().unwrap();
        if let Err(e) = m.await_ready(service) {
            panic!("{e}: {}", self.log_text());
        }
    }

    fn await_serving(&mut self) {
        let ok = wait_until(Duration::from_secs(20), || {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("pilfered exited ({s}): {}", self.log_text());
            }
            self.log_text().contains("] serving: ")
        });
        assert!(ok, "pilfered did not serve: {}", self.log_text());
    }

    /// One handover of `kind`, returned once the successor serves.
    fn hand_over(&mut self, kind: &str) {
        self.generation += 1;
        match kind {
            "replace" => {
                let next = self
                    .command()
                    .arg("--replace")
                    .spawn()
                    .expect("start pilfered --replace");
                let mut old = self.child.replace(next).unwrap();
                self.await_serving();
                let status = old.wait().unwrap();
                assert!(status.success(), "the old daemon exited {status}");
            }
            "restart" | "crash" => {
                let how = if kind == "crash" {
                    Signal::SIGKILL
                } else {
                    Signal::SIGUSR1
                };
                let (m, mut service) = self.manager.take().unwrap();
                let status = service.stop(how, Duration::from_secs(10));
                assert!(how == Signal::SIGKILL || status.success(), "{status}");
                let next = self.start_service(&m);
                self.manager = Some((m, next));
                self.await_service();
            }
            _ => unreachable!(),
        }
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                Signal::SIGTERM,
            );
            let _ = child.wait();
        }
        if let Some((_, mut service)) = self.manager.take() {
            service.stop(Signal::SIGTERM, Duration::from_secs(10));
        }
        // Whatever the manager's store kept mounted goes with it.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount())
            .stderr(Stdio::null())
            .status();
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[(v.len() - 1) / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: stall PILFERED HANDOVERS TRANSPORT...");
        std::process::exit(2);
    }
    let bin = PathBuf::from(&args[1]);
    let handovers: usize = args[2].parse().expect("HANDOVERS is a number");
    for transport in &args[3..] {
        for kind in ["replace", "restart", "crash"] {
            let mut setup = Setup::start(&bin, transport, kind != "replace");
            let stop = Arc::new(AtomicBool::new(false));
            let bits = setup.mount().join("bits");
            let mut readers = [
                Reader::start("bits-4KiB", &bits, 4096, &stop),
                Reader::start("bits-64B", &bits, 64, &stop),
                Reader::start("fifo-64KiB", &setup.fifo(), 65536, &stop),
            ];
            for r in &readers {
                assert!(r.reads_on(1 << 18), "{} does not read", r.name);
            }
            for r in &readers {
                r.take_longest();
            }
            std::thread::sleep(Duration::from_secs(1));
            let quiet: Vec<f64> = readers.iter().map(Reader::take_longest).collect();
            let mut stalls = vec![Vec::new(); readers.len()];
            for _ in 0..handovers {
                setup.hand_over(kind);
                for (r, stall) in readers.iter_mut().zip(&mut stalls) {
                    if r.stranded {
                        continue;
                    }
                    if r.reads_on(1 << 18) {
                        stall.push(r.take_longest());
                    } else {
                        r.stranded = true;
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
            for ((r, stall), quiet) in readers.iter().zip(&mut stalls).zip(quiet) {
                let (med, max) = if stall.is_empty() {
                    (f64::NAN, f64::NAN)
                } else {
                    let max = stall.iter().copied().fold(0.0, f64::max);
                    (median(stall), max)
                };
                println!(
                    "{transport} {kind} {} {quiet:.1} {med:.1} {max:.1} {} {}",
                    r.name,
                    r.errors.load(Ordering::Relaxed),
                    handovers - stall.len()
                );
            }
            drop(setup);
        }
    }
}
