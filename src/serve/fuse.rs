//! The FUSE file system and its two transports.
//!
//! - [`device`]: the file system itself (`Device`): `bits`, `stats`, the
//!   root, with one error per cause; tested without a mount;
//! - [`proto`]: the wire format of requests and replies;
//! - [`adapter`]: the one translation from requests to `Device` calls and
//!   back, used by both transports;
//! - [`legacy`]: `/dev/fuse` read by threads, a `read` and a `writev` per
//!   request;
//! - [`ring`]: FUSE over io_uring (Linux 6.14+): two threads per kernel
//!   queue, `io_uring_enter` to reply and to wait.
//!
//! [`start`] does the `FUSE_INIT` handshake on `/dev/fuse` itself, asking
//! for `FUSE_OVER_IO_URING` when io_uring is wanted and the kernel offers
//! it, then registers a ring on every kernel queue. Until every queue has
//! an entry, and for interrupts and forgets always, the kernel keeps
//! sending requests through `/dev/fuse`, so a legacy thread serves there in
//! either case. Should io_uring not be had (the kernel does not offer it, or
//! refuses a ring), `auto` serves over `/dev/fuse` and says why in one line;
//! an explicit `io-uring` fails the start.
//!
//! This replaces the `fuser` crate, which has no io_uring transport (its
//! issue 380) and keeps its request parser private: with one parser and one
//! adapter of our own, both transports run the very same request handling.

mod adapter;
mod device;
mod legacy;
mod proto;
mod ring;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;

use log::info;
use nix::errno::Errno;

pub(crate) use adapter::Acl;
pub use adapter::REQUEST_LOG;
pub(crate) use device::{Bits, Device, GROUP_MODE, MODE};
use proto::{InitReply, Op, init};

/// Which transport to serve over, as the preflight decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Want {
    /// `/dev/fuse`: chosen, or (`why`) io_uring cannot be had and `auto`
    /// falls back.
    Legacy { why: Option<String> },
    /// io_uring where the kernel offers it; `required` (an explicit
    /// `--fuse-transport io-uring`) fails the start otherwise.
    IoUring { required: bool },
}

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

/// How to serve.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) want: Want,
    /// Threads reading `/dev/fuse` when it is the transport.
    pub(crate) threads: usize,
    pub(crate) acl: Acl,
}

/// A running file system: its threads, and how they end.
#[derive(Debug)]
pub(crate) struct Server {
    transport: Transport,
    ended: Receiver<io::Result<()>>,
    running: usize,
}

/// Why the server could not start; the connection is left to the caller
/// to unmount.
#[derive(Debug)]
pub(crate) enum StartError {
    /// `/dev/fuse` failed.
    Io(io::Error),
    /// io_uring was required and could not be had (why).
    NoIoUring(String),
}

/// The largest request a connection sends, and reply it takes, in pages:
/// 1 MiB reads, the kernel's own limit (`fs.fuse.max_pages_limit`, 256 by
/// default). A ring entry's payload buffer holds that much.
const MAX_PAGES: u16 = 256;

/// What a handshake settled.
#[derive(Debug)]
struct Negotiated {
    /// `FUSE_OVER_IO_URING` was asked for and granted.
    uring: bool,
    /// Why not, if it was wanted.
    why_not: Option<String>,
}

/// Answers the kernel's `FUSE_INIT` on `fd`, asking for io_uring if `want`
/// says so and the kernel offers it.
fn handshake(fd: &OwnedFd, want_uring: bool) -> io::Result<Negotiated> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match nix::unistd::read(fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN | Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
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
            legacy::write_reply(fd.as_fd(), header.unique, libc::EIO, &[]);
            continue;
        };
        if major != proto::MAJOR {
            legacy::write_reply(fd.as_fd(), header.unique, libc::EPROTO, &[]);
            return Err(io::Error::other(format!(
                "the kernel speaks FUSE protocol {major}, pilfered {}",
                proto::MAJOR
            )));
        }
        let offered = flags & init::OVER_IO_URING != 0;
        let uring = want_uring && offered;
        let mut ask = init::ASYNC_READ | init::BIG_WRITES | init::MAX_PAGES | init::INIT_EXT;
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
        legacy::write_reply(fd.as_fd(), header.unique, 0, &proto::init_out(&reply));
        log::debug!(
            "FUSE_INIT: the kernel speaks {major}.{minor} and offers flags {flags:#x}; granted {:#x}",
            reply.flags
        );
        let why_not = (want_uring && !offered).then(|| {
            "the kernel did not offer FUSE over io_uring for this mount (was /sys/module/fuse/parameters/enable_uring turned off?)".to_string()
        });
        return Ok(Negotiated { uring, why_not });
    }
}

/// Serves `device` on the mounted connection `fd`: the handshake, then the
/// transport's threads. See the module docs.
pub(crate) fn start(
    fd: OwnedFd,
    device: &Arc<Device>,
    opts: &Options,
) -> Result<Server, StartError> {
    let want_uring = matches!(opts.want, Want::IoUring { .. });
    let negotiated = handshake(&fd, want_uring).map_err(StartError::Io)?;
    let fd = Arc::new(fd);
    let (tx, ended) = mpsc::channel();
    let mut server = Server {
        transport: Transport::Legacy { threads: 0 },
        ended,
        running: 0,
    };
    // One thread serves /dev/fuse from the start, whatever comes of io_uring.
    server.spawn_legacy(&fd, device, opts.acl, &tx)?;
    let why_not = if negotiated.uring {
        match start_rings(&fd, device, opts.acl, &tx) {
            Ok(queues) => {
                server.running += queues * ring::THREADS_PER_QUEUE;
                server.transport = Transport::IoUring { queues };
                device
                    .stats()
                    .uring_queues
                    .store(queues as u64, Ordering::Relaxed);
                return Ok(server);
            }
            Err(e) => format!("the kernel refused a ring: {e}"),
        }
    } else {
        match &opts.want {
            Want::Legacy { why } => why.clone().unwrap_or_default(),
            Want::IoUring { .. } => negotiated.why_not.unwrap_or_default(),
        }
    };
    if opts.want == (Want::IoUring { required: true }) {
        return Err(StartError::NoIoUring(why_not));
    }
    if !why_not.is_empty() {
        info!("serving the FUSE file over /dev/fuse, not io_uring: {why_not}");
    }
    for _ in 1..opts.threads {
        server.spawn_legacy(&fd, device, opts.acl, &tx)?;
    }
    server.transport = Transport::Legacy {
        threads: opts.threads.max(1),
    };
    Ok(server)
}

/// Starts and registers [`ring::THREADS_PER_QUEUE`] ring threads on every
/// kernel queue; returns how many queues, or the first refusal (the
/// threads that did start then serve nothing and end with the
/// connection).
fn start_rings(
    fd: &Arc<OwnedFd>,
    device: &Arc<Device>,
    acl: Acl,
    ended: &Sender<io::Result<()>>,
) -> io::Result<usize> {
    let queues = crate::sys::uring::kernel_queues()?;
    let payload = usize::from(MAX_PAGES) * crate::sys::memory::page_size();
    let (ready_tx, ready) = mpsc::channel();
    for qid in 0..queues {
        let q = u16::try_from(qid).map_err(|_| io::Error::other("more than 65536 CPUs"))?;
        for k in 0..ring::THREADS_PER_QUEUE {
            let (fd, device, ended, ready) =
                (fd.clone(), device.clone(), ended.clone(), ready_tx.clone());
            thread::Builder::new()
                .name(format!("fuse-ring-{qid}-{k}"))
                .spawn(move || {
                    ring::pin_to(qid);
                    match ring::register(&fd, q, payload) {
                        Ok(r) => {
                            let _ = ready.send(Ok(()));
                            let _ = ended.send(ring::serve(r, &device, acl));
                        }
                        Err(e) => drop(ready.send(Err(e))),
                    }
                })?;
        }
    }
    drop(ready_tx);
    for _ in 0..queues * ring::THREADS_PER_QUEUE {
        ready
            .recv()
            .map_err(|_| io::Error::other("a ring thread ended before registering"))??;
    }
    Ok(queues)
}

impl Server {
    fn spawn_legacy(
        &mut self,
        session: &Arc<OwnedFd>,
        device: &Arc<Device>,
        acl: Acl,
        ended: &Sender<io::Result<()>>,
    ) -> Result<(), StartError> {
        let fd = legacy::descriptor(session).map_err(StartError::Io)?;
        let (device, ended) = (device.clone(), ended.clone());
        let n = self.running;
        thread::Builder::new()
            .name(format!("fuse-{n}"))
            .spawn(move || drop(ended.send(legacy::serve(&fd, &device, acl))))
            .map_err(StartError::Io)?;
        self.running += 1;
        Ok(())
    }

    /// The transport in use.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// Waits until every thread has ended (the connection ended: unmounted
    /// or aborted), or one failed.
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
