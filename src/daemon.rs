//! `pilfered serve`: wiring the generator, the queue and both interfaces
//! together, and taking them down in order.
//!
//! Start-up checks everything it can before changing anything, so a refused
//! start leaves no FIFO, directory or mount behind. Shutdown (on SIGINT,
//! SIGTERM, SIGHUP, an outside unmount or a fatal FIFO error) closes the queue
//! first, which wakes every waiter: blocked FUSE reads fail with EIO and the
//! FIFO writer returns. Then the FUSE file system is unmounted (lazily if a
//! reader still holds `bits` open), the FIFO removed if we created it, and
//! the process exits.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use fuser::{Session, SessionUnmounter};
use log::{debug, info, warn};
use nix::sys::eventfd::EventFd;
use nix::sys::signal::{SigSet, Signal};

use crate::cli::ServeConfig;
use crate::error::{Error, describe};
use crate::fifo::{self, Fifo, KERNEL_MAX_PIPE_SIZE};
use crate::fs::{self, Device, Fs};
use crate::generator::{self, Generator, ReseedPolicy};
use crate::mounts;
use crate::queue::ChunkQueue;
use crate::seeding::Seeder;
use crate::stats::{Report, Stats};
use crate::units::format_size;

/// How long shutdown waits for the FUSE session to finish after unmounting
/// before the process exits anyway (exiting closes /dev/fuse, which ends the
/// connection for any reader still holding the file open).
const FUSE_STOP_GRACE: Duration = Duration::from_millis(1500);

enum Event {
    Signal(Signal),
    FuseEnded(io::Result<()>),
    FifoEnded(Result<(), Error>),
}

/// Runs the daemon until a signal or an outside unmount; see the module docs.
pub fn serve(cfg: ServeConfig) -> Result<(), Error> {
    // Checks with no side effects come first.
    let fifo_found = cfg.fifo.as_deref().map(fifo::inspect).transpose()?;
    let pipe_size = match cfg.fifo {
        Some(_) => Some(resolve_pipe_size(cfg.pipe_size)?),
        None => None,
    };
    let mount_plan = cfg.mount.as_deref().map(plan_mount).transpose()?;
    if cfg.allow_other && cfg.mount.is_some() {
        check_allow_other()?;
    }
    let seeder = Arc::new(Seeder::new(&cfg.sources)?);
    if cfg.mlock {
        lock_memory(&cfg)?;
    }

    let signals = block_signals()?;
    let (tx, events) = mpsc::channel();
    {
        let tx = tx.clone();
        thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Ok(sig) = signals.wait() {
                    let _ = tx.send(Event::Signal(sig));
                }
            })
            .map_err(|e| Error::runtime(format!("cannot start a thread: {}", describe(&e))))?;
    }

    let mut daemon = Daemon {
        queue: Arc::new(ChunkQueue::new(cfg.chunk_size, cfg.queue_capacity)),
        stats: Arc::new(Stats::default()),
        generators: Vec::new(),
        fifo: None,
        fuse: None,
        events,
    };
    let started = daemon.start(&cfg, &seeder, fifo_found, pipe_size, mount_plan, &tx);
    if let Err(e) = started {
        daemon.shutdown();
        return Err(e);
    }

    let mut report = cfg
        .report_every
        .map(|every| Report::new(&daemon.stats, &daemon.queue, every));
    let event = loop {
        let Some(r) = report.as_mut() else {
            break daemon.events.recv();
        };
        match daemon.events.recv_timeout(r.every) {
            Err(RecvTimeoutError::Timeout) => r.log(&daemon.stats, &daemon.queue),
            Err(RecvTimeoutError::Disconnected) => break Err(mpsc::RecvError),
            Ok(event) => break Ok(event),
        }
    };
    let outcome = match event {
        Ok(Event::Signal(sig)) => {
            info!("{sig}: shutting down");
            Ok(())
        }
        Ok(Event::FuseEnded(result)) => {
            if let Some(f) = daemon.fuse.as_mut() {
                f.session_ended = true;
            }
            match result {
                Ok(()) => {
                    info!("the FUSE file system was unmounted: shutting down");
                    Ok(())
                }
                Err(e) => Err(Error::runtime(format!(
                    "FUSE session failed: {}",
                    describe(&e)
                ))),
            }
        }
        Ok(Event::FifoEnded(result)) => {
            if let Some(f) = daemon.fifo.as_mut() {
                f.thread_ended = true;
            }
            result.and(Err(Error::runtime("the FIFO writer stopped unexpectedly")))
        }
        Err(mpsc::RecvError) => Err(Error::runtime("internal error: event channel closed")),
    };
    daemon.shutdown();
    outcome
}

struct Daemon {
    queue: Arc<ChunkQueue>,
    stats: Arc<Stats>,
    generators: Vec<JoinHandle<()>>,
    fifo: Option<FifoPart>,
    fuse: Option<FusePart>,
    events: Receiver<Event>,
}

struct FifoPart {
    fifo: Arc<Fifo>,
    stop: Arc<EventFd>,
    thread: JoinHandle<()>,
    thread_ended: bool,
}

struct FusePart {
    mount_point: PathBuf,
    unmounter: SessionUnmounter,
    created_dir: bool,
    session_ended: bool,
}

/// Where to mount and whether the directory must be made.
struct MountPlan {
    path: PathBuf,
    create: bool,
}

impl Daemon {
    fn start(
        &mut self,
        cfg: &ServeConfig,
        seeder: &Arc<Seeder>,
        fifo_found: Option<fifo::Existing>,
        pipe_size: Option<usize>,
        mount_plan: Option<MountPlan>,
        tx: &Sender<Event>,
    ) -> Result<(), Error> {
        if cfg.seed.is_some() {
            warn!(
                "--seed: serving the predictable ChaCha20 keystream of the given key; never use these bytes for secrets"
            );
        }
        let policy = ReseedPolicy {
            interval: cfg.reseed_interval,
            bytes: cfg.reseed_bytes,
        };
        for i in 0..cfg.generators {
            let generator = match &cfg.seed {
                Some(key) => Generator::from_key(key, cfg.rounds),
                None => Generator::from_key_erasing(&seeder.key()?, cfg.rounds),
            };
            let (queue, stats, seeder) = (self.queue.clone(), self.stats.clone(), seeder.clone());
            self.generators
                .push(spawn(&format!("generator-{i}"), move || {
                    generator.run(&queue, &stats, &seeder, policy)
                })?);
        }

        if let (Some(path), Some(found), Some(pipe_size)) = (&cfg.fifo, fifo_found, pipe_size) {
            let fifo = Arc::new(Fifo::open(path, found, cfg.fifo_mode, pipe_size)?);
            let stop = Arc::new(
                EventFd::new().map_err(|e| Error::runtime(format!("eventfd: {}", e.desc())))?,
            );
            let (f, s, q, st, tx) = (
                fifo.clone(),
                stop.clone(),
                self.queue.clone(),
                self.stats.clone(),
                tx.clone(),
            );
            let thread = spawn("fifo-writer", move || {
                let _ = tx.send(Event::FifoEnded(fifo::serve(&f, &q, &st, &s)));
            })?;
            self.fifo = Some(FifoPart {
                fifo,
                stop,
                thread,
                thread_ended: false,
            });
        }

        if let Some(plan) = mount_plan {
            self.fuse = Some(self.mount(plan, cfg.fuse_threads, cfg.allow_other, tx)?);
        }

        info!(
            "serving: FUSE {}, FIFO {}; chunk {}, queue {}, {} ChaCha{} generator(s), {} FUSE thread(s)",
            self.fuse.as_ref().map_or("off".into(), |f| f
                .mount_point
                .join("bits")
                .display()
                .to_string()),
            self.fifo.as_ref().map_or("off".into(), |f| {
                let size = f
                    .fifo
                    .pipe_size()
                    .map(|n| format_size(n as u64))
                    .unwrap_or_default();
                format!("{} (pipe {size})", f.fifo.path().display())
            }),
            format_size(cfg.chunk_size as u64),
            format_size(cfg.queue_capacity as u64),
            cfg.generators,
            cfg.rounds.count(),
            cfg.fuse_threads,
        );
        Ok(())
    }

    fn mount(
        &self,
        plan: MountPlan,
        threads: usize,
        allow_other: bool,
        tx: &Sender<Event>,
    ) -> Result<FusePart, Error> {
        let shown = plan.path.display().to_string();
        if plan.create {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&plan.path)
                .map_err(|e| {
                    Error::runtime(format!(
                        "--mount {shown}: cannot create it: {}",
                        describe(&e)
                    ))
                })?;
        }
        let remove_dir = || {
            if plan.create {
                let _ = std::fs::remove_dir(&plan.path);
            }
        };
        let device = Device::new(
            self.queue.clone(),
            self.stats.clone(),
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        let config = fs::mount_config(threads, allow_other);
        let mut session = match Session::new(Fs(device), &plan.path, &config) {
            Ok(s) => s,
            Err(e) => {
                remove_dir();
                return Err(mount_error(&shown, &e));
            }
        };
        let unmounter = session.unmount_callable();
        let tx = tx.clone();
        let spawned = spawn("fuse-session", move || {
            let _ = tx.send(Event::FuseEnded(session.run()));
        });
        let mut part = FusePart {
            mount_point: plan.path.clone(),
            unmounter,
            created_dir: plan.create,
            session_ended: false,
        };
        if let Err(e) = spawned {
            part.unmount();
            remove_dir();
            return Err(e);
        }
        Ok(part)
    }

    /// Takes everything down; safe to call on a half-started daemon.
    fn shutdown(mut self) {
        self.queue.close();
        if let Some(f) = self.fifo.take() {
            let _ = f.stop.write(1);
            if !f.thread_ended {
                // Its FifoEnded event is of no interest any more.
                let _ = f.thread.join();
            }
            drop(f.fifo); // closes the FIFO and removes it if we created it
        }
        if let Some(mut f) = self.fuse.take() {
            if !f.session_ended {
                f.unmount();
                let deadline = Instant::now() + FUSE_STOP_GRACE;
                loop {
                    match self
                        .events
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    {
                        Ok(Event::FuseEnded(_)) => break,
                        Ok(_) => continue,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                            debug!("FUSE session still busy; exiting ends it");
                            break;
                        }
                    }
                }
            }
            if f.created_dir
                && let Err(e) = std::fs::remove_dir(&f.mount_point)
            {
                debug!("leaving {}: {}", f.mount_point.display(), describe(&e));
            }
        }
        for g in self.generators.drain(..) {
            let _ = g.join();
        }
    }
}

impl FusePart {
    /// Unmounts; if readers still hold files open, detaches lazily instead.
    fn unmount(&mut self) {
        if let Err(e) = self.unmounter.unmount() {
            debug!(
                "unmount {}: {}; detaching",
                self.mount_point.display(),
                describe(&e)
            );
            if let Err(e) = mounts::detach(&self.mount_point) {
                warn!(
                    "could not unmount {}: {}",
                    self.mount_point.display(),
                    describe(&e)
                );
            }
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| Error::runtime(format!("cannot start thread {name}: {}", describe(&e))))
}

/// Refuses --allow-other early when fusermount3 would refuse it.
fn check_allow_other() -> Result<(), Error> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let allowed = std::fs::read_to_string("/etc/fuse.conf")
        .map(|text| text.lines().any(|l| l.trim() == "user_allow_other"))
        .unwrap_or(false);
    if allowed {
        Ok(())
    } else {
        Err(Error::usage(
            "--allow-other: a normal user may use it only if /etc/fuse.conf contains the line 'user_allow_other'; add it (as root) or run as root",
        ))
    }
}

/// `--mlock`: locks all current and future memory, after checking that the
/// locked-memory limit can hold what the daemon will allocate.
fn lock_memory(cfg: &ServeConfig) -> Result<(), Error> {
    use nix::sys::mman::{MlockAllFlags, mlockall};
    use nix::sys::resource::{Resource, getrlimit};
    // The queue, the generators' batches, a 1 MiB read buffer and a 2 MiB
    // stack per thread, and slack for the program itself.
    let threads = cfg.generators + cfg.fuse_threads + 4;
    let need = cfg.queue_capacity as u64
        + (cfg.generators * generator::BATCH_BYTES) as u64
        + threads as u64 * (3 << 20)
        + (32 << 20);
    let (limit, _) = getrlimit(Resource::RLIMIT_MEMLOCK)
        .map_err(|e| Error::runtime(format!("--mlock: getrlimit: {}", e.desc())))?;
    if !nix::unistd::geteuid().is_root() && limit < need {
        return Err(Error::runtime(format!(
            "--mlock: the locked-memory limit is {} but the daemon needs about {}; raise it ('ulimit -l', or LimitMEMLOCK= in a systemd unit), run as root, or drop --mlock",
            format_size(limit),
            format_size(need.next_multiple_of(1 << 20))
        )));
    }
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(|e| {
        Error::runtime(format!(
            "--mlock: cannot lock memory: {}; raise the locked-memory limit ('ulimit -l') or drop --mlock",
            e.desc()
        ))
    })
}

/// Blocks the termination signals in this thread (and so in every thread
/// started after it); the returned set is waited for by one thread.
fn block_signals() -> Result<SigSet, Error> {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(sig);
    }
    set.thread_block()
        .map_err(|e| Error::runtime(format!("cannot block signals: {}", e.desc())))?;
    Ok(set)
}

/// The pipe size to ask for: `--pipe-size`, else the system's maximum.
fn resolve_pipe_size(requested: Option<usize>) -> Result<usize, Error> {
    match requested {
        Some(n) if n > KERNEL_MAX_PIPE_SIZE => Err(Error::usage(format!(
            "--pipe-size {}: the kernel allows at most {}",
            format_size(n as u64),
            format_size(KERNEL_MAX_PIPE_SIZE as u64)
        ))),
        Some(n) => Ok(n),
        None => fifo::system_pipe_max_size()
            .map_err(|e| Error::runtime(format!("/proc/sys/fs/pipe-max-size: {}", describe(&e)))),
    }
}

/// Checks `--mount` without changing anything.
fn plan_mount(path: &Path) -> Result<MountPlan, Error> {
    let shown = path.display();
    let abs = std::path::absolute(path)
        .map_err(|e| Error::usage(format!("--mount {shown}: {}", describe(&e))))?;
    match std::fs::symlink_metadata(&abs) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = abs.parent().unwrap_or(Path::new("/"));
            match std::fs::metadata(parent) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::usage(format!(
                        "--mount {shown}: cannot create it: {} is not a directory",
                        parent.display()
                    )));
                }
                Err(e) => {
                    return Err(Error::usage(format!(
                        "--mount {shown}: cannot create it: {}: {}",
                        parent.display(),
                        describe(&e)
                    )));
                }
            }
            check_fuse_available(&shown.to_string())?;
            Ok(MountPlan {
                path: abs,
                create: true,
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            clear_stale_mount(&abs, &shown.to_string())?;
            plan_mount(&abs)
        }
        Err(e) => Err(Error::usage(format!("--mount {shown}: {}", describe(&e)))),
        Ok(meta) if !meta.is_dir() => Err(Error::usage(format!(
            "--mount {shown}: {}, not a directory",
            if meta.file_type().is_symlink() {
                "is a symbolic link"
            } else {
                "is a regular file"
            }
        ))),
        Ok(_) => {
            let canonical = abs
                .canonicalize()
                .map_err(|e| Error::usage(format!("--mount {shown}: {}", describe(&e))))?;
            let mounted = mounts::mount_at(&canonical)
                .map_err(|e| Error::runtime(format!("/proc/self/mountinfo: {}", describe(&e))))?;
            if let Some(m) = mounted {
                // A dead pilfered mount may still answer stat from cached
                // attributes; statfs always asks the daemon.
                if m.fs_type == fs::FS_TYPE
                    && nix::sys::statvfs::statvfs(&canonical) == Err(nix::errno::Errno::ENOTCONN)
                {
                    clear_stale_mount(&canonical, &shown.to_string())?;
                    return plan_mount(&canonical);
                }
                return Err(Error::usage(format!(
                    "--mount {shown}: {} ({}) is already mounted there; unmount it first or choose another directory",
                    m.source, m.fs_type
                )));
            }
            check_fuse_available(&shown.to_string())?;
            Ok(MountPlan {
                path: canonical,
                create: false,
            })
        }
    }
}

/// A FUSE mount whose daemon died answers "Transport endpoint is not
/// connected". If it was a pilfered mount, detach it; anything else is not
/// ours to touch.
fn clear_stale_mount(path: &Path, shown: &str) -> Result<(), Error> {
    let mounted = mounts::mount_at(path)
        .map_err(|e| Error::runtime(format!("/proc/self/mountinfo: {}", describe(&e))))?;
    match mounted {
        Some(m) if m.fs_type == fs::FS_TYPE => {
            warn!("--mount {shown}: clearing the stale mount of a pilfered daemon that is gone");
            mounts::detach(path).map_err(|e| {
                Error::runtime(format!(
                    "--mount {shown}: cannot clear the stale mount there: {}",
                    describe(&e)
                ))
            })
        }
        Some(m) => Err(Error::usage(format!(
            "--mount {shown}: a dead {} mount is there (Transport endpoint is not connected); unmount it first ('fusermount3 -u {shown}' or 'umount -l {shown}')",
            m.fs_type
        ))),
        None => Err(Error::usage(format!(
            "--mount {shown}: Transport endpoint is not connected"
        ))),
    }
}

/// Fails early, with advice, when a FUSE mount cannot work here.
fn check_fuse_available(shown: &str) -> Result<(), Error> {
    const HINT: &str = "or run with --no-fuse to serve only the FIFO";
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::runtime(format!(
                "--mount {shown}: /dev/fuse does not exist; load the fuse module ('modprobe fuse'), {HINT}"
            )));
        }
        Err(e) => {
            return Err(Error::runtime(format!(
                "--mount {shown}: cannot open /dev/fuse: {}; run as root or get read-write access to it, {HINT}",
                describe(&e)
            )));
        }
    }
    if !nix::unistd::geteuid().is_root() && find_in_path("fusermount3").is_none() {
        return Err(Error::runtime(format!(
            "--mount {shown}: mounting as a normal user needs fusermount3, which is not installed; install the fuse3 package, run as root, {HINT}"
        )));
    }
    Ok(())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn mount_error(shown: &str, e: &io::Error) -> Error {
    Error::runtime(format!(
        "--mount {shown}: cannot mount the FUSE file system: {}; run with --no-fuse to serve only the FIFO",
        describe(e)
    ))
}
