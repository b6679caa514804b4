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
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use nix::sys::signal::{SigSet, Signal};

use crate::engine::queue::{ChunkQueue, Order, OutOfMemory};
use crate::engine::seeding::Seed;
use crate::engine::stats::{Report, Stats};
use crate::error::{Error, describe};
use crate::serve::config::{Bits, Config};
use crate::serve::fifo::{self, Fifo};
use crate::serve::fuse::Source;
use crate::serve::mounted::{self, FusePart};
use crate::serve::preflight::{self, Plan};
use crate::serve::startup::{self, spawn};
use crate::serve::vmfork;
use crate::serve::{handover, successor};
use crate::sys::records;

/// How long shutdown waits for the FUSE threads to finish after an unmount
/// that ended the connection, before the process exits anyway (exiting
/// closes /dev/fuse, which ends the connection for good).
const FUSE_STOP_GRACE: Duration = Duration::from_millis(1500);

enum Event {
    Signal(Signal),
    /// The FUSE session's threads ended: the connection is gone, unmounted
    /// or aborted, or (an error) it failed.
    FuseEnded(io::Result<()>),
    FifoEnded(Result<(), Error>),
    /// Our mount left the mount table without the session ending: it was
    /// detached from outside (`umount -l`) while a reader held a file open.
    MountGone,
    /// A `--replace` successor asks for what we serve.
    Successor(handover::Pending),
}

/// How the daemon ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Take everything down: unmount, remove what we made.
    Stop,
    /// Leave the mount and the FIFO to the daemon that takes them over (a
    /// `--replace` successor, or the next start of the service, which
    /// systemd's store passes them to), with the queue wiped.
    LetGo,
}

/// The signal systemd sends for a restart (`RestartKillSignal=` in the
/// unit): let go, leaving the connection in systemd's store.
const RESTART: Signal = Signal::SIGUSR1;

/// Runs the daemon until a signal or an outside unmount; see the module docs.
pub(crate) fn serve(cfg: &Config) -> Result<(), Error> {
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
        .map_err(|OutOfMemory| startup::queue_oom(cfg.queue_capacity))?;
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
        successors: None,
        events,
    };
    let outcome = match daemon.start(cfg, plan, &tx) {
        Ok(()) => daemon.wait(cfg.report_every),
        Err(e) => Err(e),
    };
    let mount = daemon.fuse.as_ref().map(|f| f.path().to_path_buf());
    daemon.shutdown(*outcome.as_ref().unwrap_or(&Ending::Stop));
    if let Some(mount) = mount {
        records::stopped(&mount, outcome.is_ok());
    }
    outcome.map(drop)
}

struct Daemon {
    queue: Arc<ChunkQueue>,
    stats: Arc<Stats>,
    generators: Vec<JoinHandle<()>>,
    vmfork: Option<vmfork::Watcher>,
    fifo: Option<fifo::Writer>,
    fuse: Option<FusePart>,
    /// Where a `--replace` successor asks for what we serve.
    successors: Option<successor::Watch>,
    events: Receiver<Event>,
}

impl Daemon {
    /// Starts the generators, then the FIFO, then the mount.
    fn start(&mut self, cfg: &Config, plan: Plan, tx: &Sender<Event>) -> Result<(), Error> {
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
        if cfg.bits == Bits::Random {
            self.generators =
                startup::generators(cfg, plan.seed.as_ref(), &seeder, &self.queue, &self.stats)?;
        }
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
            let source = match cfg.bits {
                Bits::Random => Source::Queue(self.queue.clone()),
                Bits::Zeros => Source::Zeros,
            };
            let gid = plan.group.as_ref().map(|g| g.gid);
            let (ended, gone) = (tx.clone(), tx.clone());
            let fuse = FusePart::start(
                mount,
                mounted::files(source, self.stats.clone(), gid),
                cfg,
                move |result| drop(ended.send(Event::FuseEnded(result))),
                move || drop(gone.send(Event::MountGone)),
            )?;
            records::serving(fuse.path());
            self.fuse = Some(fuse);
        }
        info!(
            "{}",
            startup::serving_line(
                cfg,
                self.fuse.as_ref(),
                self.fifo.as_ref(),
                &seeder,
                &vmfork
            )
        );
        // Both interfaces serve: the daemon we replace may let go.
        if let Some(p) = plan.predecessor
            && let Err(e) = p.ack()
        {
            warn!("{e}");
        }
        if let Some(f) = self.fuse.as_mut() {
            f.store();
        }
        let on_successor = tx.clone();
        self.successors = successor::Watch::start(cfg, move |p| {
            drop(on_successor.send(Event::Successor(p)));
        })?;
        // Type=notify: the unit is started once both interfaces serve.
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            warn!(
                "NOTIFY_SOCKET: cannot tell systemd the device is ready: {}",
                describe(&e)
            );
        }
        Ok(())
    }

    /// Waits for the event that ends the daemon, logging throughput every
    /// `report_every` meanwhile; returns how it ends.
    fn wait(&mut self, report_every: Option<Duration>) -> Result<Ending, Error> {
        let mut report = report_every.map(|every| Report::new(&self.stats, &self.queue, every));
        loop {
            let event = match report.as_mut() {
                None => self.events.recv(),
                Some(r) => match self.events.recv_timeout(r.every) {
                    Err(RecvTimeoutError::Timeout) => {
                        r.log(&self.stats, &self.queue);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => Err(mpsc::RecvError),
                    Ok(event) => Ok(event),
                },
            };
            if let Some(ending) = self.handle(event)? {
                return Ok(ending);
            }
        }
    }

    /// What `event` means: the end of the daemon, or (`None`) serve on.
    fn handle(&mut self, event: Result<Event, mpsc::RecvError>) -> Result<Option<Ending>, Error> {
        let stored = self.fuse.as_ref().is_some_and(FusePart::stored);
        match event {
            Ok(Event::Signal(RESTART)) if stored => {
                info!("{RESTART}: restarting: the next start takes the mount over from systemd");
                Ok(Some(Ending::LetGo))
            }
            Ok(Event::Signal(sig)) => {
                info!("{sig}: shutting down");
                Ok(Some(Ending::Stop))
            }
            Ok(Event::Successor(p)) => {
                let pid = p.pid();
                let offered = match &self.successors {
                    Some(w) => w.offer(p, self.fuse.as_ref(), self.fifo.as_ref()),
                    None => Err(Error::runtime("handover: no socket to answer on")),
                };
                match offered {
                    Ok(()) => {
                        info!("handed over to pilfered {pid}: exiting");
                        Ok(Some(Ending::LetGo))
                    }
                    Err(e) => {
                        warn!("{e}; serving on");
                        Ok(None)
                    }
                }
            }
            Ok(Event::FuseEnded(result)) => {
                // Unmounted, the connection ends with the mount; if the
                // mount is still there, the connection was aborted or
                // failed under it, and shutdown detaches the dead mount.
                let mounted = self.fuse.as_ref().is_some_and(FusePart::is_attached);
                match (result, mounted) {
                    (Err(e), _) => Err(Error::runtime(format!(
                        "the FUSE session failed: {}; detaching the mount",
                        describe(&e)
                    ))),
                    (Ok(()), true) => Err(Error::runtime(
                        "the FUSE connection was aborted (/sys/fs/fuse/connections/N/abort) while mounted; detaching the dead mount",
                    )),
                    (Ok(()), false) => {
                        info!("the FUSE file system was unmounted: shutting down");
                        Ok(Some(Ending::Stop))
                    }
                }
            }
            Ok(Event::FifoEnded(result)) => {
                result.and(Err(Error::runtime("the FIFO writer stopped unexpectedly")))
            }
            Ok(Event::MountGone) => {
                info!("the FUSE file system was unmounted or detached from outside: shutting down");
                Ok(Some(Ending::Stop))
            }
            Err(mpsc::RecvError) => Err(Error::runtime("internal error: event channel closed")),
        }
    }

    /// Takes everything down, or lets go of it; safe to call on a
    /// half-started daemon.
    fn shutdown(mut self, ending: Ending) {
        self.successors.take();
        if let Some(watcher) = self.vmfork.take() {
            watcher.stop();
        }
        if ending == Ending::LetGo {
            // The FUSE threads first, while the generators still run: a
            // read waiting for bytes gets them, and every request taken
            // is answered. Then nothing of ours is served again: the queue
            // is wiped, and what the FIFO writer held back with it.
            if let Some(f) = self.fuse.take() {
                f.let_go();
            }
            if let Some(writer) = self.fifo.take() {
                writer.hand_over();
            }
            self.queue.wipe();
        }
        self.queue.close();
        if let Some(writer) = self.fifo.take() {
            writer.stop();
        }
        if let Some(f) = self.fuse.take()
            && f.take_down()
        {
            self.await_fuse_end();
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

/// Blocks the termination signals in this thread (and so in every thread
/// started after it); the returned set is waited for by one thread.
fn block_signals() -> Result<SigSet, Error> {
    let mut set = SigSet::empty();
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, RESTART] {
        set.add(sig);
    }
    set.thread_block()
        .map_err(|e| Error::runtime(format!("cannot block signals: {}", e.desc())))?;
    Ok(set)
}
