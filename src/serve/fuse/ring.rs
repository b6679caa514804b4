//! The io_uring transport: [`THREADS_PER_QUEUE`] threads per kernel queue
//! (one queue per possible CPU), pinned to its CPU, each with its own ring
//! holding one entry of that queue (`sys::uring`). A request that a reader
//! on CPU *n* makes is served by a thread of queue *n*, on the same CPU,
//! with two `io_uring_enter` calls: one hands back the reply (so that the
//! payload buffer can be wiped before the thread waits, see `sys::uring`),
//! one waits for the next request. The kernel could take both in one call;
//! the wipe is why this does not.
//!
//! Replies are written into the entry's payload buffer, and a read that the
//! queue does not answer with one whole chunk is copied straight from the
//! queue into it. See `sys::uring` for when that buffer is wiped.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use log::warn;
use zeroize::Zeroize;

use super::adapter::{self, Reply, Served};
use super::filesystem::{FsError, Out};
use super::proto::{self, InHeader};
use super::proto::{REQUEST_OP, REQUEST_PAYLOAD, RING_ENTRY};
use crate::engine::stats;
use crate::sys::uring::{Ended, Fetched, Ring};

/// Ring entries per thread. A thread serves one request at a time, so one
/// entry is all it can use: a second one would wait in the thread's own
/// ring while the thread works.
pub(crate) const DEPTH: usize = 1;

/// Threads (each with its own ring of [`DEPTH`] entries) per kernel queue.
/// A bulk read may wait in its thread for the generator; the kernel then
/// hands the next request of that CPU, a 4 KiB read say, to the other
/// thread's entry instead of queueing it behind. With one thread per
/// queue, 4 KiB reads while a 1 MiB reader and a FIFO reader drained the
/// queue had a p99 latency of 0.09 to 1.6 ms in four rounds, against 0.09
/// to 0.11 ms with two (docs/PERFORMANCE.md, "Small reads over io_uring").
pub(crate) const THREADS_PER_QUEUE: usize = 2;

/// Why a ring could not be registered.
#[derive(Debug)]
pub(crate) enum RegisterError {
    /// This process could not make the ring or map its buffers.
    Local(io::Error),
    /// The kernel refused the registration.
    Refused(io::Error),
}

/// A ring set up for queue `qid` and registered with the kernel; what the
/// thread of that queue then serves ([`serve`]).
pub(crate) fn register(fuse: &OwnedFd, qid: u16, payload: usize) -> Result<Ring, RegisterError> {
    use std::os::fd::AsFd;
    let mut ring =
        Ring::new(fuse.as_fd(), RING_ENTRY, qid, DEPTH, payload).map_err(RegisterError::Local)?;
    ring.register().map_err(RegisterError::Refused)?;
    Ok(ring)
}

/// Pins the calling thread to CPU `cpu`, where the requests of its queue
/// come from; a CPU that cannot take it (offline, outside the cgroup's
/// set) leaves the thread where the scheduler puts it.
pub(crate) fn pin_to(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    if set.set(cpu).is_ok() {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
    }
}

/// Serves the requests of `ring` until the connection ends, or until
/// `stop` is set and the thread woken: then it serves what the kernel has
/// already handed over, without waiting, and returns once there is none,
/// every request it took answered. Dropping the ring then hands its idle
/// entries back to the kernel. (A request the kernel hands to an entry in
/// the instant between the last look and that drop ends with ECANCELED:
/// FUSE over io_uring has no way to withdraw an entry; docs/OPERATIONS.md.)
pub(crate) fn serve(mut ring: Ring, served: &Served, stop: &AtomicBool) -> io::Result<()> {
    let mut request = Vec::new();
    loop {
        let next = if stop.load(Ordering::Acquire) {
            ring.next_now()?
        } else {
            ring.next()?
        };
        let mut fetched = match next {
            Ok(fetched) => fetched,
            Err(Ended::Disconnected | Ended::Idle) => return Ok(()),
            Err(Ended::Interrupted) => continue,
        };
        fetched.copy_request(&mut request);
        let header = InHeader::parse(&request[..REQUEST_OP]);
        let Some(header) = header else {
            return Err(io::Error::other(
                "a ring entry came back without a request header",
            ));
        };
        let mut reply = RingReply {
            fetched: &mut fetched,
            answer: None,
            used: 0,
        };
        match proto::parse(
            header.opcode,
            &request[REQUEST_OP..REQUEST_PAYLOAD],
            &request[REQUEST_PAYLOAD..],
        ) {
            Ok(op) => adapter::handle(served, &header, &op, &mut reply),
            Err(proto::Malformed) => reply.error(libc::EIO),
        }
        let (errno, len) = reply.answer.unwrap_or_else(|| {
            // Only FORGET has no reply, and it never comes over a ring;
            // the entry must go back all the same.
            warn!(
                "FUSE request {} (opcode {}) over io_uring had no reply",
                header.unique, header.opcode
            );
            (libc::EIO, 0)
        });
        stats::add(&served.fs.stats().fuse_uring_requests, 1);
        fetched.commit(&proto::out_header(header.unique, errno, len), len)?;
    }
}

/// A reply going into a ring entry's payload buffer.
struct RingReply<'f, 'r> {
    fetched: &'f mut Fetched<'r>,
    /// The errno and the body's length, once answered.
    answer: Option<(i32, usize)>,
    /// How much of the buffer a filled read wrote.
    used: usize,
}

impl Out for RingReply<'_, '_> {
    fn send(&mut self, bytes: &[u8]) {
        let buffer = self.fetched.reply_buffer();
        match buffer.get_mut(..bytes.len()) {
            Some(body) => {
                body.copy_from_slice(bytes);
                self.answer = Some((0, bytes.len()));
            }
            // More than the kernel can ask for at once: cannot happen.
            None => self.answer = Some((libc::EIO, 0)),
        }
    }

    fn buffer(&mut self, len: usize) -> Result<&mut [u8], FsError> {
        self.used = len;
        self.fetched
            .reply_buffer()
            .get_mut(..len)
            .ok_or(FsError::OutOfMemory)
    }

    fn send_filled(&mut self, len: usize) {
        self.answer = Some((0, len));
    }
}

impl Reply for RingReply<'_, '_> {
    fn error(&mut self, errno: i32) {
        // A read that failed half-way leaves bytes nobody will be sent.
        let used = std::mem::take(&mut self.used);
        if let Some(part) = self.fetched.reply_buffer().get_mut(..used) {
            part.zeroize();
        }
        self.answer = Some((errno, 0));
    }
}
