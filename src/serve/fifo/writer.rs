//! The writer thread. Each round it waits for the pipe to be writable,
//! computes its free space (`F_GETPIPE_SZ` minus `FIONREAD`), makes sure it
//! holds that many bytes taken from the queue, and writes them with one
//! `writev`. What the pipe did not take stays pending, and the next round
//! continues from the cursor inside the first pending chunk: no byte is
//! written twice.
//!
//! The pipe's size is read again every round: a reader of the FIFO may
//! resize the pipe (`F_SETPIPE_SZ`) at any time, and a size read once would
//! leave the writer either spinning on a pipe it thinks full while poll says
//! writable, or holding more bytes than the pipe can take.
//!
//! Before writing anything after a VM fork, it drops what it holds from
//! before, and the pipe's contents with it (see [`super::wipe`]).
//!
//! Readers drive this loop (and may grow the pipe), so it allocates nothing:
//! the lists of chunks it holds are allocated once, at start and fallibly,
//! for as many chunks as the pipe held then, and each round takes at most
//! what they have room for. A pipe grown larger since is filled over more
//! rounds.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::EventFd;
use zeroize::Zeroize;

use super::path::Fifo;
use super::wipe::{WipeHandle, Wiped};
use crate::engine::queue::{Chunk, ChunkQueue, Closed};
use crate::engine::stats::{self, Stats};
use crate::error::{Error, describe};
use crate::sys::raw;

/// Most iovecs one `writev` accepts (`IOV_MAX` on Linux).
pub(crate) const IOV_MAX: usize = 1024;

/// The FIFO with its writer thread running: see [`serve`].
#[derive(Debug)]
pub(crate) struct Writer {
    fifo: Arc<Fifo>,
    stop: Arc<EventFd>,
    wipe: WipeHandle,
    thread: JoinHandle<()>,
}

impl Writer {
    /// Starts moving bytes from `queue` into `fifo` on a thread of its own.
    /// Should the writer stop by itself (only an unexpected pipe error does
    /// that), it hands its result to `on_end`.
    pub(crate) fn start(
        fifo: Fifo,
        queue: Arc<ChunkQueue>,
        stats: Arc<Stats>,
        on_end: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) -> Result<Writer, Error> {
        let fifo = Arc::new(fifo);
        let stop =
            Arc::new(EventFd::new().map_err(|e| Error::runtime(format!("eventfd: {}", e.desc())))?);
        let wipe = WipeHandle::new()?;
        let most = fifo.pipe_size()? / queue.chunk_size() + 2;
        let pending = Pending::new(queue.epoch(), most).ok_or_else(|| {
            Error::runtime(format!(
                "--fifo {}: not enough memory for the FIFO writer's {most} chunk slots",
                fifo.path().display()
            ))
        })?;
        let (f, s, w) = (fifo.clone(), stop.clone(), wipe.clone());
        let thread = std::thread::Builder::new()
            .name("fifo-writer".into())
            .spawn(move || {
                let result = serve(&f, &queue, &stats, &s, &w, pending);
                w.ended();
                on_end(result);
            })
            .map_err(|e| {
                Error::runtime(format!("cannot start the FIFO writer: {}", describe(&e)))
            })?;
        Ok(Writer {
            fifo,
            stop,
            wipe,
            thread,
        })
    }

    /// The handle that asks the writer to wipe after a VM fork.
    pub(crate) fn wipe_handle(&self) -> WipeHandle {
        self.wipe.clone()
    }

    /// The FIFO being served.
    pub(crate) fn fifo(&self) -> &Fifo {
        &self.fifo
    }

    /// Stops the writer between two writes and waits for it, leaving the
    /// FIFO to the daemon it was handed to: what is in the pipe is that
    /// daemon's readers', and what this writer held back is wiped with its
    /// chunks.
    pub(crate) fn hand_over(self) {
        self.fifo.keep();
        self.stop();
    }

    /// Stops the writer and waits for it; then the FIFO is closed, and
    /// removed if we created it.
    pub(crate) fn stop(self) {
        let _ = self.stop.write(1);
        let _ = self.thread.join();
    }
}

/// Reads (and wipes) every byte buffered in the pipe; returns how many.
fn drain_pipe(fd: std::os::fd::BorrowedFd<'_>) -> Result<usize, Errno> {
    let mut buf = [0u8; 16 << 10];
    let mut total = 0;
    let result = loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) | Err(Errno::EAGAIN) => break Ok(total),
            Ok(n) => total += n,
            Err(Errno::EINTR) => continue,
            Err(e) => break Err(e),
        }
    };
    buf.zeroize();
    result
}

/// Fills `iov` with slices over the unread bytes of `pending`, in order,
/// covering at most `free` bytes and at most `iov.len()` chunks. Returns how
/// many iovecs were filled and how many bytes they cover.
pub(crate) fn plan<'a>(
    pending: &'a VecDeque<Chunk>,
    free: usize,
    iov: &mut [IoSlice<'a>],
) -> (usize, usize) {
    let mut bytes = 0;
    let mut count = 0;
    for chunk in pending {
        if bytes == free || count == iov.len() {
            break;
        }
        let unread = chunk.unread();
        let n = unread.len().min(free - bytes);
        if n == 0 {
            continue;
        }
        iov[count] = IoSlice::new(&unread[..n]);
        count += 1;
        bytes += n;
    }
    (count, bytes)
}

/// Marks the first `written` pending bytes as handed out: fully written chunks
/// move to `done`, and the first remaining chunk keeps a cursor at the first
/// unwritten byte.
///
/// # Panics
/// If `written` exceeds the pending bytes.
pub(crate) fn advance(pending: &mut VecDeque<Chunk>, mut written: usize, done: &mut Vec<Chunk>) {
    while written > 0 {
        let front = pending.front_mut().expect("wrote more than was pending");
        let n = front.len().min(written);
        front.consume(n);
        written -= n;
        if front.is_empty() {
            done.push(pending.pop_front().expect("front exists"));
        }
    }
}

/// Moves bytes from `queue` into the FIFO until `stop` is signalled or the
/// queue is closed. Only an unexpected error from the pipe ends it early.
fn serve(
    fifo: &Fifo,
    queue: &ChunkQueue,
    stats: &Stats,
    stop: &EventFd,
    wipe: &WipeHandle,
    mut pending: Pending,
) -> Result<(), Error> {
    let fd = fifo.fd();
    let fail = |what: &str, e: Errno| {
        Error::runtime(format!(
            "{what} on FIFO {}: {}",
            fifo.path().display(),
            e.desc()
        ))
    };
    loop {
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLOUT),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            PollFd::new(wipe.request_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(fail("poll", e)),
        }
        if fds[1].any().unwrap_or(false) {
            return Ok(());
        }
        if fds[2].any().unwrap_or(false) {
            wipe.take_request();
        }
        pending
            .after_fork(queue, stats, fd, wipe)
            .map_err(|e| fail("read", e))?;
        if !fds[0].any().unwrap_or(false) {
            continue;
        }
        // Read every round: readers may resize the pipe at any time.
        let pipe_size = fifo.pipe_size()?;
        let unread = raw::fionread(fd).map_err(|e| fail("FIONREAD", e))?;
        let free = pipe_size.saturating_sub(unread);
        if free == 0 {
            continue;
        }
        let want = pending.room(free.saturating_sub(pending.bytes), queue.chunk_size());
        if want > 0 {
            match queue.take_chunks(want, &mut pending.chunks) {
                Ok(n) => pending.bytes += n,
                Err(Closed) => return Ok(()),
            }
        }
        // The queue may have been wiped while we waited for it.
        pending
            .after_fork(queue, stats, fd, wipe)
            .map_err(|e| fail("read", e))?;
        pending
            .write(fd, free, queue, stats)
            .map_err(|e| fail("writev", e))?;
    }
}

/// The chunks the writer has taken from the queue and not yet written.
struct Pending {
    chunks: VecDeque<Chunk>,
    /// Unread bytes in `chunks`.
    bytes: usize,
    /// Fully written chunks, to recycle.
    done: Vec<Chunk>,
    /// The queue's epoch these bytes belong to.
    epoch: u64,
}

impl Pending {
    /// Room for `most` chunks (at least 2), allocated now; `None` if memory
    /// is short.
    fn new(epoch: u64, most: usize) -> Option<Pending> {
        let most = most.max(2);
        let mut chunks = VecDeque::new();
        chunks.try_reserve_exact(most).ok()?;
        let mut done = Vec::new();
        done.try_reserve_exact(most).ok()?;
        Some(Pending {
            chunks,
            bytes: 0,
            done,
            epoch,
        })
    }

    /// How many of `want` bytes may be taken now without growing `chunks`:
    /// a take of `n` bytes moves at most `n / chunk_size + 1` chunks (the
    /// front one may be partly read), so one slot is kept for that.
    fn room(&self, want: usize, chunk_size: usize) -> usize {
        let free_slots = self.chunks.capacity() - self.chunks.len();
        want.min(free_slots.saturating_sub(1) * chunk_size)
    }

    /// Before anything is written: drops (wipes) what predates a VM fork,
    /// and the pipe's contents with it.
    fn after_fork(
        &mut self,
        queue: &ChunkQueue,
        stats: &Stats,
        fd: BorrowedFd<'_>,
        wipe: &WipeHandle,
    ) -> Result<(), Errno> {
        let now = queue.epoch();
        if now == self.epoch {
            return Ok(());
        }
        let mut wiped = Wiped::default();
        // Pending chunks are in epoch order: the old ones come first. (`done`
        // is empty between rounds, and has room for all of them.)
        while let Some(mut chunk) = self.chunks.pop_front_if(|c| c.epoch() != now) {
            wiped.pending += chunk.len();
            chunk.wipe();
            self.done.push(chunk);
        }
        self.bytes -= wiped.pending;
        queue.recycle(self.done.drain(..));
        wiped.pipe = drain_pipe(fd)?;
        stats::add(&stats.bytes_discarded, (wiped.pending + wiped.pipe) as u64);
        self.epoch = now;
        wipe.acknowledge(now, wiped);
        Ok(())
    }

    /// Writes what fits in `free` bytes of the pipe with one `writev`, and
    /// keeps the cursor where the pipe stopped taking.
    fn write(
        &mut self,
        fd: BorrowedFd<'_>,
        free: usize,
        queue: &ChunkQueue,
        stats: &Stats,
    ) -> Result<(), Errno> {
        let mut iov = [IoSlice::new(&[]); IOV_MAX];
        let (count, planned) = plan(&self.chunks, free, &mut iov);
        let written = match nix::sys::uio::writev(fd, &iov[..count]) {
            Ok(n) => n,
            // The pipe filled up between poll and writev, or a signal came.
            Err(Errno::EAGAIN | Errno::EINTR) => 0,
            Err(e) => return Err(e),
        };
        stats::add(&stats.fifo_writev_calls, 1);
        if written < planned {
            stats::add(&stats.fifo_partial_writes, 1);
        }
        stats::add(&stats.bytes_served_fifo, written as u64);
        advance(&mut self.chunks, written, &mut self.done);
        self.bytes -= written;
        if !self.done.is_empty() {
            queue.recycle(self.done.drain(..));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::low_byte;

    fn chunk(bytes: &[u8], consumed: usize) -> Chunk {
        let mut c = Chunk::with_bytes(bytes);
        c.consume(consumed);
        c
    }

    fn pending(sizes: &[usize]) -> (VecDeque<Chunk>, Vec<u8>) {
        let mut all = Vec::new();
        let mut q = VecDeque::new();
        for &n in sizes {
            let bytes: Vec<u8> = (0..n).map(|i| low_byte(all.len() + i)).collect();
            all.extend_from_slice(&bytes);
            q.push_back(chunk(&bytes, 0));
        }
        (q, all)
    }

    fn planned_bytes(p: &VecDeque<Chunk>, free: usize, max_iov: usize) -> (usize, Vec<u8>) {
        let mut iov = vec![IoSlice::new(&[]); max_iov];
        let (count, bytes) = plan(p, free, &mut iov);
        let flat: Vec<u8> = iov[..count]
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(flat.len(), bytes);
        (count, flat)
    }

    #[test]
    fn plan_covers_exactly_the_free_space() {
        let (p, all) = pending(&[100, 100, 100]);
        assert_eq!(planned_bytes(&p, 250, 8), (3, all[..250].to_vec()));
        assert_eq!(planned_bytes(&p, 100, 8), (1, all[..100].to_vec()));
        assert_eq!(planned_bytes(&p, 1, 8), (1, all[..1].to_vec()));
        assert_eq!(planned_bytes(&p, 0, 8), (0, vec![]));
        // More free space than pending: everything, no more.
        assert_eq!(planned_bytes(&p, 10_000, 8), (3, all.clone()));
    }

    /// Issue 20: however much room a reader makes in the pipe, a round
    /// takes no more chunks than the lists have room for, so the writer
    /// never grows them (growing could abort the daemon when memory is
    /// short).
    #[test]
    fn a_round_never_grows_what_the_writer_holds() {
        let q = ChunkQueue::new(64, 64 << 10);
        let mut batch = Vec::new();
        q.reserve(usize::MAX, &mut batch).unwrap();
        for c in &mut batch {
            c.refill(|b| b.fill(7));
        }
        q.push(&mut batch);
        let mut p = Pending::new(q.epoch(), 10).unwrap();
        let (cap, done_cap) = (p.chunks.capacity(), p.done.capacity());
        // A partly read front chunk: one more chunk per byte count.
        let first = q.take_chunks(1, &mut p.chunks).unwrap();
        p.bytes += first;
        p.chunks[0].consume(63);
        p.bytes -= 63;
        for _ in 0..3 {
            let want = p.room(1 << 30, q.chunk_size());
            assert!(want <= (cap - p.chunks.len()) * 64, "{want}");
            if want > 0 {
                p.bytes += q.take_chunks(want, &mut p.chunks).unwrap();
            }
            assert_eq!(p.chunks.capacity(), cap, "the pending list grew");
            advance(&mut p.chunks, 64 + 1, &mut p.done);
            assert_eq!(p.done.capacity(), done_cap, "the done list grew");
            p.bytes -= 64 + 1;
            q.recycle(p.done.drain(..));
        }
        assert!(p.chunks.len() <= cap);
    }

    #[test]
    fn plan_respects_iov_limit() {
        let (p, all) = pending(&[10; 5]);
        assert_eq!(planned_bytes(&p, 1000, 2), (2, all[..20].to_vec()));
    }

    #[test]
    fn plan_starts_at_the_cursor() {
        let (mut p, all) = pending(&[100, 100]);
        p[0].consume(30);
        assert_eq!(planned_bytes(&p, 120, 8), (2, all[30..150].to_vec()));
    }

    #[test]
    fn advance_keeps_a_cursor_and_releases_written_chunks() {
        let (mut p, all) = pending(&[100, 100, 100]);
        let mut done = Vec::new();
        advance(&mut p, 150, &mut done);
        assert_eq!(done.len(), 1);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].unread(), &all[150..200]);
        advance(&mut p, 50, &mut done);
        assert_eq!(done.len(), 2);
        assert_eq!(p[0].unread(), &all[200..]);
        advance(&mut p, 0, &mut done);
        assert_eq!(p[0].unread(), &all[200..]);
    }

    #[test]
    #[should_panic(expected = "wrote more than was pending")]
    fn advance_past_pending_panics() {
        let (mut p, _) = pending(&[10]);
        advance(&mut p, 11, &mut Vec::new());
    }

    /// Any sequence of partial writes, each of any size the pipe allows,
    /// concatenates to the pending bytes exactly once and in order.
    #[test]
    fn partial_writes_never_replay_or_skip() {
        use proptest::prelude::*;
        proptest!(|(sizes in prop::collection::vec(1usize..300, 1..20),
                    writes in prop::collection::vec((0usize..700, 0usize..=1000), 1..60),
                    max_iov in 1usize..6)| {
            let (mut p, all) = pending(&sizes);
            let mut out = Vec::new();
            let mut done = Vec::new();
            for (free, permille) in writes {
                let (_, planned) = planned_bytes(&p, free, max_iov);
                // The kernel may take any prefix of what was offered.
                let written = planned.len() * permille / 1000;
                out.extend_from_slice(&planned[..written]);
                advance(&mut p, written, &mut done);
            }
            let rest: usize = p.iter().map(Chunk::len).sum();
            prop_assert_eq!(out.len() + rest, all.len());
            prop_assert_eq!(&out[..], &all[..out.len()]);
            prop_assert_eq!(done.len() + p.len(), sizes.len());
        });
    }
}
