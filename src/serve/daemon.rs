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
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::sys::signal::{SigSet, Signal};

use crate::cli::ServeConfig;
use crate::engine::generator::{self, Generator, ReseedPolicy};
use crate::engine::queue::{ChunkQueue, Order, OutOfMemory};
use crate::engine::seeding::{Key, Seed, Seeder};
use crate::engine::stats::{Report, Stats};
use crate::error::{Error, describe};
use crate::serve::fifo::{self, Fifo};
use crate::serve::fuse::{self, Bits, Device, StartError};
use crate::serve::preflight::{self, MountPlan, Plan};
use crate::serve::vmfork;
use crate::sys::mountdir::MountDir;
use crate::sys::mounts::{self, FuseMount, Unmounted};
use crate::sys::records;
use crate::units::format_size;

/// How long shutdown waits for the FUSE threads to finish after an unmount
/// that ended the connection, before the process exits anyway (exiting
/// closes /dev/fuse, which ends the connection for good).
const FUSE_STOP_GRACE: Duration = Duration::from_millis(1500);

enum Event {
    Signal(Signal),
    FuseEnded(io::Result<()>),
    FifoEnded(Result<(), Error>),
    /// Our mount left the mount table without the session ending: it was
    /// detached from outside (`umount -l`) while a reader held a file open.
    MountGone,
}

/// Runs the daemon until a signal or an outside unmount; see the module docs.
pub(crate) fn serve(cfg: &ServeConfig) -> Result<(), Error> {
    // Blocked first, so that a signal during start-up waits for start-up to
    // finish and then takes everything down in order.
    let signals = block_signals()?;
    let plan = preflight::plan(cfg)?;
    // All of the queue now, before anything is created or mounted: memory
    // too short for it refuses the start instead of aborting later.
    // Seeded mode's output is its keystream, in order.
    let order = if cfg.seed.is_some() {
        Order::Made
    } else {
        Order::Freshest
    };
    let queue = ChunkQueue::preallocate(cfg.chunk_size, cfg.queue_capacity, order)
        .map_err(|OutOfMemory| queue_oom(cfg.queue_capacity))?;
    let (tx, events) = mpsc::channel();
    let signal_tx = tx.clone();
    spawn("signals", move || {
        if let Ok(sig) = signals.wait() {
            let _ = signal_tx.send(Event::Signal(sig));
        }
    })?;
    let mut daemon = Daemon {
        queue: Arc::new(queue),
        stats: Arc::new(Stats::default()),
        generators: Vec::new(),
        vmfork: None,
        fifo: None,
        fuse: None,
        events,
    };
    let outcome = match daemon.start(cfg, plan, &tx) {
        Ok(()) => daemon.wait(cfg.report_every),
        Err(e) => Err(e),
    };
    let mount = daemon.fuse.as_ref().map(|f| f.dir.path.clone());
    daemon.shutdown();
    if let Some(mount) = mount {
        records::stopped(&mount, outcome.is_ok());
    }
    outcome
}

struct Daemon {
    queue: Arc<ChunkQueue>,
    stats: Arc<Stats>,
    generators: Vec<JoinHandle<()>>,
    vmfork: Option<vmfork::Watcher>,
    fifo: Option<fifo::Writer>,
    fuse: Option<FusePart>,
    events: Receiver<Event>,
}

struct FusePart {
    mount: FuseMount,
    /// Claimed (locked) until the daemon exits.
    dir: MountDir,
    session_ended: bool,
    /// The thread watching for the mount to be detached.
    watch: mounts::Watch,
    /// How the FUSE file is served.
    transport: fuse::Transport,
}

impl Daemon {
    /// Starts the generators, then the FIFO, then the mount.
    fn start(&mut self, cfg: &ServeConfig, plan: Plan, tx: &Sender<Event>) -> Result<(), Error> {
        if cfg.seed.is_some() {
            warn!(
                "--seed: serving the predictable ChaCha20 keystream of the given key; never use these bytes for secrets"
            );
        }
        if matches!(cfg.seed, Some(Seed::Argv(_))) {
            warn!(
                "--seed: every user can read the key in /proc/{}/cmdline; use --seed-file instead",
                std::process::id()
            );
        }
        let seeder = Arc::new(plan.seeder);
        self.start_generators(cfg, plan.seed.as_ref(), &seeder)?;
        if let Some(p) = plan.fifo {
            let fifo = Fifo::open(p.spot, cfg.fifo_mode, plan.group.as_ref(), p.pipe_size)?;
            let tx = tx.clone();
            let on_end = move |result| drop(tx.send(Event::FifoEnded(result)));
            let (queue, stats) = (self.queue.clone(), self.stats.clone());
            self.fifo = Some(fifo::Writer::start(fifo, queue, stats, on_end)?);
        }
        let fifo = self.fifo.as_ref().map(fifo::Writer::wipe_handle);
        let (queue, stats) = (self.queue.clone(), self.stats.clone());
        let (watcher, vmfork) = vmfork::watch(queue, stats, fifo, cfg.seed.is_some())?;
        self.vmfork = watcher;
        if let Some(mount) = plan.mount {
            let gid = plan.group.as_ref().map(|g| g.gid);
            let fuse = self.mount(mount, gid, cfg, tx)?;
            records::serving(&fuse.dir.path);
            self.fuse = Some(fuse);
        }
        self.log_serving(cfg, &seeder, &vmfork);
        // Type=notify: the unit is started once both interfaces serve.
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            warn!(
                "NOTIFY_SOCKET: cannot tell systemd the device is ready: {}",
                describe(&e)
            );
        }
        Ok(())
    }

    /// Starts `cfg.generators` generator threads: keyed by `seed` (seeded
    /// mode, which runs one), else each from `seeder`.
    fn start_generators(
        &mut self,
        cfg: &ServeConfig,
        seed: Option<&Key>,
        seeder: &Arc<Seeder>,
    ) -> Result<(), Error> {
        let policy = ReseedPolicy {
            interval: cfg.reseed_interval,
            bytes: cfg.reseed_bytes,
        };
        for i in 0..cfg.generators {
            let generator = match seed {
                Some(key) => Generator::from_key(key, cfg.rounds),
                None => Generator::from_key_erasing(&seeder.key()?, cfg.rounds),
            };
            let (queue, stats, seeder) = (self.queue.clone(), self.stats.clone(), seeder.clone());
            self.generators
                .push(spawn(&format!("generator-{i}"), move || {
                    generator.run(&queue, &stats, &seeder, policy)
                })?);
        }
        Ok(())
    }

    /// The one line that says what is being served, with which settings.
    fn log_serving(&self, cfg: &ServeConfig, seeder: &Seeder, vmfork: &str) {
        let fuse = self.fuse.as_ref().map_or("off".into(), |f| {
            let bits = f.dir.path.join("bits");
            format!("{} ({})", bits.display(), f.transport)
        });
        let fifo = self.fifo.as_ref().map_or("off".into(), |f| {
            let size = f.fifo().pipe_size().map(|n| format_size(n as u64));
            format!(
                "{} (pipe {}{})",
                f.fifo().path().display(),
                size.unwrap_or_default(),
                if f.fifo().held_by_systemd() {
                    ", from systemd"
                } else {
                    ""
                }
            )
        });
        // Seeded mode's generator never takes a key from the OS.
        let sources = match cfg.seed {
            Some(Seed::Argv(_)) => "the --seed key (predictable)".into(),
            Some(Seed::File(_)) => "the --seed-file key (predictable)".into(),
            None => seeder.describe(),
        };
        info!(
            "serving: FUSE {fuse}, FIFO {fifo}; chunk {}, queue {}, {} ChaCha{} ({}) generator(s) keyed from {sources}; VM-fork detection {vmfork}",
            format_size(cfg.chunk_size as u64),
            format_size(cfg.queue_capacity as u64),
            cfg.generators,
            cfg.rounds.count(),
            generator::backend(),
        );
    }

    /// Claims the mount point, mounts, and starts the session and the
    /// thread that notices an outside detach. With `group`, the files are
    /// that group's and readable by it alone.
    fn mount(
        &self,
        plan: MountPlan,
        group: Option<u32>,
        cfg: &ServeConfig,
        tx: &Sender<Event>,
    ) -> Result<FusePart, Error> {
        let dir = MountDir::claim(plan.parent, plan.name, plan.create)?;
        let shown = dir.path.display().to_string();
        let failed = |e: io::Error| {
            dir.remove_if_made();
            Error::runtime(format!(
                "--mount {shown}: cannot mount the FUSE file system: {}; run with --no-fuse to serve only the FIFO",
                describe(&e)
            ))
        };
        let (fd, mount) =
            mounts::mount_fuse(&dir.dir, &dir.path, cfg.allow_other).map_err(failed)?;
        let uid = nix::unistd::geteuid().as_raw();
        let (gid, mode) = match group {
            Some(gid) => (gid, fuse::GROUP_MODE),
            None => (nix::unistd::getegid().as_raw(), fuse::MODE),
        };
        let device = Device::new(
            Bits::Queue(self.queue.clone()),
            self.stats.clone(),
            uid,
            gid,
            mode,
        );
        let options = fuse::Options {
            want: plan.transport,
            threads: cfg.fuse_threads,
            acl: fuse::Acl {
                owner: uid,
                everyone: cfg.allow_other,
            },
        };
        let started = fuse::start(fd, &Arc::new(device), &options)
            .map_err(|e| match e {
                StartError::Io(e) => format!("cannot serve the FUSE file system: {}", describe(&e)),
                StartError::NoIoUring(why) => format!("--fuse-transport io-uring: {why}"),
            })
            .and_then(|server| {
                let transport = server.transport();
                let tx = tx.clone();
                spawn("fuse-session", move || {
                    let _ = tx.send(Event::FuseEnded(server.wait()));
                })
                .map(|_| transport)
                .map_err(|e| e.to_string())
            })
            .and_then(|transport| {
                let tx = tx.clone();
                mounts::Watch::start(mount.id, move || drop(tx.send(Event::MountGone)))
                    .map(|watch| (transport, watch))
                    .map_err(|e| e.to_string())
            });
        match started {
            Ok((transport, watch)) => Ok(FusePart {
                mount,
                dir,
                session_ended: false,
                watch,
                transport,
            }),
            Err(why) => {
                let _ = mount.unmount();
                dir.remove_if_made();
                Err(Error::runtime(format!("--mount {shown}: {why}")))
            }
        }
    }

    /// Waits for the event that ends the daemon, logging throughput every
    /// `report_every` meanwhile; returns how it ended.
    fn wait(&mut self, report_every: Option<Duration>) -> Result<(), Error> {
        let mut report = report_every.map(|every| Report::new(&self.stats, &self.queue, every));
        let event = loop {
            let Some(r) = report.as_mut() else {
                break self.events.recv();
            };
            match self.events.recv_timeout(r.every) {
                Err(RecvTimeoutError::Timeout) => r.log(&self.stats, &self.queue),
                Err(RecvTimeoutError::Disconnected) => break Err(mpsc::RecvError),
                Ok(event) => break Ok(event),
            }
        };
        match event {
            Ok(Event::Signal(sig)) => {
                info!("{sig}: shutting down");
                Ok(())
            }
            Ok(Event::FuseEnded(result)) => {
                if let Some(f) = self.fuse.as_mut() {
                    f.session_ended = true;
                }
                result.map_err(|e| {
                    Error::runtime(format!("FUSE session failed: {}", describe(&e)))
                })?;
                info!("the FUSE file system was unmounted: shutting down");
                Ok(())
            }
            Ok(Event::FifoEnded(result)) => {
                result.and(Err(Error::runtime("the FIFO writer stopped unexpectedly")))
            }
            Ok(Event::MountGone) => {
                info!("the FUSE file system was unmounted or detached from outside: shutting down");
                Ok(())
            }
            Err(mpsc::RecvError) => Err(Error::runtime("internal error: event channel closed")),
        }
    }

    /// Takes everything down; safe to call on a half-started daemon.
    fn shutdown(mut self) {
        if let Some(watcher) = self.vmfork.take() {
            watcher.stop();
        }
        self.queue.close();
        if let Some(writer) = self.fifo.take() {
            writer.stop();
        }
        if let Some(f) = self.fuse.take() {
            f.watch.stop();
            if !f.session_ended && f.mount.is_attached().unwrap_or(false) {
                // Only this very mount, never another one at the same path.
                match f.mount.unmount() {
                    // The connection ends with the mount: its threads are
                    // done in moments.
                    Ok(Unmounted::Gone) => self.await_fuse_end(),
                    // A reader holds a file open, so the connection lives
                    // on until the process exits: nothing to wait for.
                    Ok(Unmounted::Detached | Unmounted::NotThere) => {}
                    Err(e) => warn!(
                        "could not unmount {}: {}",
                        f.dir.path.display(),
                        describe(&e)
                    ),
                }
            }
            f.dir.remove_if_made();
        }
        for g in self.generators.drain(..) {
            let _ = g.join();
        }
    }

    /// Gives the FUSE session [`FUSE_STOP_GRACE`] to end after unmounting.
    fn await_fuse_end(&self) {
        let deadline = Instant::now() + FUSE_STOP_GRACE;
        loop {
            match self
                .events
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::FuseEnded(_)) => return,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    debug!("FUSE session still busy; exiting ends it");
                    return;
                }
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

fn queue_oom(capacity: usize) -> Error {
    Error::runtime(format!(
        "--queue-capacity {}: not enough memory for the queue; choose a smaller --queue-capacity or raise the memory limit ('ulimit -v', or MemoryMax= in a systemd unit)",
        format_size(capacity as u64)
    ))
}
