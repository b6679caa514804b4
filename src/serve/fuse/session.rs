//! One FUSE session: the mounted connection (`/dev/fuse`), its `FUSE_INIT`
//! handshake, who may use the mount, and the threads that serve it.
//!
//! [`Session::start`] answers the kernel's `FUSE_INIT` itself, asking for
//! `FUSE_OVER_IO_URING` when io_uring is wanted and the kernel offers it,
//! then registers a ring on every kernel queue. Until every queue has an
//! entry, and for interrupts and forgets always, the kernel keeps sending
//! requests through `/dev/fuse`, so one legacy thread serves there in
//! either case. Should io_uring not be had, `auto` serves over `/dev/fuse`
//! and says why in one line ([`Downgrade`]); an explicit `io-uring` fails
//! the start.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

use log::info;

use super::adapter::Served;
use super::filesystem::Filesystem;
use super::proto::{self, InitReply, Op, init};
use super::{legacy, ring};
use crate::error::describe;
use crate::serve::config::TransportChoice;
pub(crate) use crate::serve::handover::Init;

/// The largest request a connection sends, and reply it takes, in pages:
/// 1 MiB reads, the kernel's own limit (`fs.fuse.max_pages_limit`, 256 by
/// default). A ring entry's payload buffer holds that much.
const MAX_PAGES: u16 = 256;

/// The module parameter that turns FUSE over io_uring on.
pub(crate) const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// The transport in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Legacy { threads: usize },
    IoUring { queues: usize },
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Legacy { threads } => write!(f, "/dev/fuse, {threads} threads"),
            Transport::IoUring { queues } => write!(f, "io_uring, {queues} queues"),
        }
    }
}

/// Why the FUSE file is served over `/dev/fuse` although io_uring was
/// asked for; [`fmt::Display`] says it, and what would change it, in the
/// user's words.
#[derive(Debug)]
pub(crate) enum Downgrade {
    /// The kernel has no `enable_uring` parameter: older than 6.14, or
    /// built without `CONFIG_FUSE_IO_URING`.
    NotInKernel,
    /// The parameter is off.
    Off,
    /// io_uring itself cannot be set up (`kernel.io_uring_disabled`, a
    /// seccomp filter, a kernel without `IORING_SETUP_SQE128`).
    NoIoUring(io::Error),
    /// `FUSE_INIT` did not offer it for this mount.
    NotOffered,
    /// The kernel refused to register a ring entry.
    RingRefused(io::Error),
}

impl fmt::Display for Downgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Downgrade::NotInKernel => f.write_str(
                "this kernel has no FUSE over io_uring (it came with Linux 6.14, built with CONFIG_FUSE_IO_URING)",
            ),
            Downgrade::Off => write!(
                f,
                "FUSE over io_uring is off in this kernel; turn it on as root with 'echo 1 > {ENABLE_URING}' (or for every boot, {})",
                if fuse_is_a_module() {
                    "the line 'options fuse enable_uring=1' in /etc/modprobe.d/fuse.conf"
                } else {
                    "the kernel command line option fuse.enable_uring=1"
                }
            ),
            Downgrade::NoIoUring(e) => write!(
                f,
                "io_uring cannot be set up here ({}; see the sysctl kernel.io_uring_disabled, and any seccomp filter)",
                describe(e)
            ),
            Downgrade::NotOffered => f.write_str(
                "the kernel did not offer FUSE over io_uring for this mount (was /sys/module/fuse/parameters/enable_uring turned off?)",
            ),
            Downgrade::RingRefused(e) => {
                write!(f, "the kernel refused a ring: {}", describe(e))
            }
        }
    }
}

/// Whether fuse is a loadable module (which `modprobe.d` configures) rather
/// than built into the kernel (configured on its command line): only a
/// module has an `initstate`.
fn fuse_is_a_module() -> bool {
    std::path::Path::new("/sys/module/fuse/initstate").exists()
}

/// Why this kernel would not serve FUSE over io_uring to this process, if
/// it would not: the module parameter, and whether a ring of 128-byte
/// entries can be made. (The fuse module must be loaded: opening
/// `/dev/fuse` loads it.)
pub(crate) fn io_uring_unavailable() -> Option<Downgrade> {
    match std::fs::read_to_string(ENABLE_URING) {
        Err(_) => return Some(Downgrade::NotInKernel),
        Ok(v) if !matches!(v.trim(), "Y" | "1") => return Some(Downgrade::Off),
        Ok(_) => {}
    }
    crate::sys::uring::probe().err().map(Downgrade::NoIoUring)
}

/// How to serve.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) choice: TransportChoice,
    /// Threads reading `/dev/fuse` when it is the transport.
    pub(crate) threads: usize,
    /// Let every user the mount lets in use it (`allow_other`), not only
    /// its owner.
    pub(crate) everyone: bool,
}

/// Why a session could not start; the connection is left to the caller
/// to unmount.
#[derive(Debug)]
pub(crate) enum StartError {
    /// `/dev/fuse` failed, or the handshake.
    Connection(io::Error),
    /// A thread or its memory could not be had here: nothing the kernel
    /// refused.
    Local(io::Error),
    /// io_uring was required and could not be had.
    NoIoUring(Downgrade),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Connection(e) => {
                write!(f, "cannot serve the FUSE file system: {}", describe(e))
            }
            StartError::Local(e) => write!(
                f,
                "cannot start the FUSE threads: {}; this is a limit of this process (threads, memory), not of the kernel's FUSE",
                describe(e)
            ),
            StartError::NoIoUring(why) => write!(f, "--fuse-transport io-uring: {why}"),
        }
    }
}

/// A running session: the connection, what its `FUSE_INIT` settled, and
/// the threads that serve it.
#[derive(Debug)]
pub(crate) struct Session {
    channel: Arc<OwnedFd>,
    init: Init,
    transport: Transport,
    /// Set to make every thread stop between two requests ([`Session::stop`]).
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
    /// How each thread ended, for [`Ended::wait`].
    ended: Option<Receiver<io::Result<()>>>,
}

/// How a session's threads end, waited for apart from the session.
#[derive(Debug)]
pub(crate) struct Ended {
    ended: Receiver<io::Result<()>>,
    running: usize,
}

impl Ended {
    /// Waits until every thread has ended (the connection ended: unmounted
    /// or aborted, or the session was stopped), or one failed.
    pub(crate) fn wait(self) -> io::Result<()> {
        for _ in 0..self.running {
            match self.ended.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(mpsc::RecvError) => break,
            }
        }
        Ok(())
    }
}

impl Session {
    /// Serves `fs` on the newly mounted connection `channel`: the
    /// handshake, then the transport's threads. See the module docs.
    pub(crate) fn start(
        channel: OwnedFd,
        fs: Filesystem,
        opts: Options,
    ) -> Result<Session, StartError> {
        let downgrade = match opts.choice {
            TransportChoice::Legacy => None,
            TransportChoice::Auto | TransportChoice::IoUring => io_uring_unavailable(),
        };
        let want_uring = opts.choice != TransportChoice::Legacy && downgrade.is_none();
        let init = handshake(&channel, want_uring).map_err(StartError::Connection)?;
        let downgrade = match downgrade {
            None if want_uring && !init.uring => Some(Downgrade::NotOffered),
            d => d,
        };
        Session::serve(channel, init, fs, opts, downgrade)
    }

    /// Serves `fs` on `channel`, a connection another daemon served, whose
    /// `FUSE_INIT` settled `init` (the kernel sends it once per
    /// connection). Over io_uring if `init` granted it, and this process
    /// may; then asks the kernel to send again the requests a predecessor
    /// took and never answered (`FUSE_NOTIFY_RESEND`, if `init` has it).
    pub(crate) fn resume(
        channel: OwnedFd,
        init: Init,
        fs: Filesystem,
        opts: Options,
    ) -> Result<Session, StartError> {
        let downgrade = match opts.choice {
            TransportChoice::Legacy => None,
            _ if !init.uring => Some(Downgrade::NotOffered),
            _ => io_uring_unavailable(),
        };
        let session = Session::serve(channel, init, fs, opts, downgrade)?;
        if init.flags & init::HAS_RESEND != 0 {
            let notify = proto::notification(proto::notify::RESEND, 0);
            nix::unistd::write(&*session.channel, &notify)
                .map_err(|e| StartError::Connection(e.into()))?;
        }
        Ok(session)
    }

    /// Starts the threads; io_uring unless `downgrade` says why not.
    fn serve(
        channel: OwnedFd,
        init: Init,
        fs: Filesystem,
        opts: Options,
        downgrade: Option<Downgrade>,
    ) -> Result<Session, StartError> {
        crate::sys::raw::install_wake().map_err(StartError::Local)?;
        let served = Arc::new(Served {
            fs,
            everyone: opts.everyone,
        });
        let (tx, ended) = mpsc::channel();
        let mut session = Session {
            channel: Arc::new(channel),
            init,
            transport: Transport::Legacy { threads: 0 },
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            ended: Some(ended),
        };
        // One thread serves /dev/fuse from the start, whatever comes of io_uring.
        session.spawn_legacy(&served, &tx)?;
        let downgrade = match downgrade {
            None if opts.choice != TransportChoice::Legacy => {
                match session.start_rings(&served, &tx) {
                    Ok(queues) => {
                        session.transport = Transport::IoUring { queues };
                        served.fs.set_uring_queues(queues);
                        return Ok(session);
                    }
                    Err(RingError::Refused(e)) => Some(Downgrade::RingRefused(e)),
                    Err(RingError::Local(e)) => return Err(StartError::Local(e)),
                }
            }
            d => d,
        };
        if let Some(why) = downgrade {
            if opts.choice == TransportChoice::IoUring {
                return Err(StartError::NoIoUring(why));
            }
            info!("serving the FUSE file over /dev/fuse, not io_uring: {why}");
        }
        for _ in 1..opts.threads {
            session.spawn_legacy(&served, &tx)?;
        }
        session.transport = Transport::Legacy {
            threads: opts.threads.max(1),
        };
        Ok(session)
    }

    fn spawn_legacy(
        &mut self,
        served: &Arc<Served>,
        ended: &Sender<io::Result<()>>,
    ) -> Result<(), StartError> {
        let fd = legacy::descriptor(&self.channel).map_err(StartError::Connection)?;
        let (served, ended, stop) = (served.clone(), ended.clone(), self.stop.clone());
        let n = self.threads.len();
        let thread = thread::Builder::new()
            .name(format!("fuse-{n}"))
            .spawn(move || drop(ended.send(legacy::serve(&fd, &served, &stop))))
            .map_err(StartError::Local)?;
        self.threads.push(thread);
        Ok(())
    }

    /// The transport in use.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// The connection (`/dev/fuse`), to hand over.
    pub(crate) fn channel(&self) -> BorrowedFd<'_> {
        self.channel.as_fd()
    }

    /// What the connection's `FUSE_INIT` settled, to hand over.
    pub(crate) fn init(&self) -> Init {
        self.init
    }

    /// How the threads end, to wait for apart from the session; once.
    pub(crate) fn ended(&mut self) -> Ended {
        Ended {
            ended: self.ended.take().expect("taken once"),
            running: self.threads.len(),
        }
    }

    /// Stops every thread between two requests, each one it took answered,
    /// and waits for them: from then on this process takes no request of
    /// the connection, which it still holds. Gives up after `within`.
    pub(crate) fn stop(&mut self, within: std::time::Duration) -> bool {
        self.stop.store(true, Ordering::Release);
        let deadline = std::time::Instant::now() + within;
        // A signal that comes just before a thread blocks is lost: wake
        // each again until it has ended.
        while self.threads.iter().any(|t| !t.is_finished()) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            for t in self.threads.iter().filter(|t| !t.is_finished()) {
                crate::sys::raw::wake(t);
            }
            thread::sleep(std::time::Duration::from_millis(1));
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        true
    }

    /// Starts and registers [`ring::THREADS_PER_QUEUE`] ring threads on
    /// every kernel queue; returns how many queues, or the first failure
    /// (the threads that did start then serve nothing and end with the
    /// connection).
    fn start_rings(
        &mut self,
        served: &Arc<Served>,
        ended: &Sender<io::Result<()>>,
    ) -> Result<usize, RingError> {
        let queues = crate::sys::uring::kernel_queues().map_err(RingError::Local)?;
        let payload = usize::from(MAX_PAGES) * crate::sys::memory::page_size();
        let (ready_tx, ready) = mpsc::channel();
        for qid in 0..queues {
            let q = u16::try_from(qid)
                .map_err(|_| RingError::Local(io::Error::other("more than 65536 CPUs")))?;
            for k in 0..ring::THREADS_PER_QUEUE {
                let (channel, served, ended, ready, stop) = (
                    self.channel.clone(),
                    served.clone(),
                    ended.clone(),
                    ready_tx.clone(),
                    self.stop.clone(),
                );
                let thread = thread::Builder::new()
                    .name(format!("fuse-ring-{qid}-{k}"))
                    .spawn(move || {
                        ring::pin_to(qid);
                        match ring::register(&channel, q, payload) {
                            Ok(r) => {
                                let _ = ready.send(Ok(()));
                                let _ = ended.send(ring::serve(r, &served, &stop));
                            }
                            Err(e) => {
                                let _ = ready.send(Err(e));
                                let _ = ended.send(Ok(()));
                            }
                        }
                    })
                    .map_err(RingError::Local)?;
                self.threads.push(thread);
            }
        }
        drop(ready_tx);
        for _ in 0..queues * ring::THREADS_PER_QUEUE {
            match ready.recv() {
                Ok(Ok(())) => {}
                Ok(Err(ring::RegisterError::Refused(e))) => return Err(RingError::Refused(e)),
                Ok(Err(ring::RegisterError::Local(e))) => return Err(RingError::Local(e)),
                Err(mpsc::RecvError) => {
                    return Err(RingError::Local(io::Error::other(
                        "a ring thread ended before registering",
                    )));
                }
            }
        }
        Ok(queues)
    }
}

/// Answers the kernel's `FUSE_INIT` on `channel`, asking for io_uring if
/// `want_uring` and the kernel offers it; returns what was settled.
fn handshake(channel: &OwnedFd, want_uring: bool) -> io::Result<Init> {
    let mut buf = vec![0u8; legacy::REQUEST_BUFFER];
    let never = AtomicBool::new(false);
    loop {
        let Some(n) = legacy::next_request(channel, &mut buf, &never)? else {
            return Err(io::Error::other("the connection ended before FUSE_INIT"));
        };
        let (header, op_in, payload) = proto::split(&buf[..n])
            .map_err(|proto::Malformed| io::Error::other("a malformed first FUSE request"))?;
        let Ok(Op::Init {
            major,
            minor,
            max_readahead,
            flags,
        }) = proto::parse(header.opcode, op_in, payload)
        else {
            // Nothing comes before INIT; should anything, it is not served yet.
            legacy::write_reply(channel.as_fd(), header.unique, libc::EIO, &[]);
            continue;
        };
        if major != proto::MAJOR {
            legacy::write_reply(channel.as_fd(), header.unique, libc::EPROTO, &[]);
            return Err(io::Error::other(format!(
                "the kernel speaks FUSE protocol {major}, pilfered {}",
                proto::MAJOR
            )));
        }
        let uring = want_uring && flags & init::OVER_IO_URING != 0;
        // HAS_RESEND lets a successor have the requests a crashed daemon
        // took sent again.
        let mut ask = init::ASYNC_READ
            | init::BIG_WRITES
            | init::MAX_PAGES
            | init::INIT_EXT
            | init::HAS_RESEND;
        if uring {
            ask |= init::OVER_IO_URING;
        }
        let reply = InitReply {
            max_readahead,
            // Only what the kernel offered.
            flags: ask & flags,
            max_background: 16,
            congestion_threshold: 12,
            // Nothing is ever written: the least the kernel accepts.
            max_write: 4096,
            max_pages: MAX_PAGES,
        };
        legacy::write_reply(channel.as_fd(), header.unique, 0, &proto::init_out(&reply));
        log::debug!(
            "FUSE_INIT: the kernel speaks {major}.{minor} and offers flags {flags:#x}; granted {:#x}",
            reply.flags
        );
        return Ok(Init {
            minor,
            flags: reply.flags,
            max_readahead,
            max_write: reply.max_write,
            max_pages: reply.max_pages,
            uring,
        });
    }
}

/// Why the rings did not start: the kernel refused one, or this process
/// could not start a thread or map its buffers.
enum RingError {
    Refused(io::Error),
    Local(io::Error),
}
