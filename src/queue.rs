//! `ChunkQueue`: the one piece of state shared by the generators and every
//! consumer.
//!
//! Producers reserve an empty chunk, fill it outside the lock and push it.
//! Consumers either copy an exact number of bytes out ([`ChunkQueue::take_exact`],
//! used by FUSE reads) or move whole chunks out ([`ChunkQueue::take_chunks`],
//! used by the FIFO writer, which then owns them and keeps its own cursor).
//! Either way a byte leaves the queue exactly once: the cursor of a partly
//! read chunk lives in the chunk itself and moves with it.
//!
//! The queue is bounded in bytes: queued bytes plus chunks being filled never
//! exceed the capacity. Once full, producers sleep until consumers have
//! drained it down to the low-water mark (three quarters of the capacity), so
//! they wake in batches rather than once per read. Emptied chunks are kept on
//! a spare list and reused; their contents are wiped when they are dropped.
//!
//! The last few queued bytes (the small-read reserve, an eighth of the
//! capacity up to 1 MiB) are kept for reads of at most [`SMALL_READ`] bytes:
//! bulk consumers (large reads, the FIFO writer) wait rather than take them.
//! Bulk readers draining as fast as they can would otherwise leave the queue
//! empty, and a small read, such as a program asking for a 16-byte key,
//! would queue behind them for the generator.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use zeroize::Zeroize;

use crate::sync::{Condvar, Mutex, MutexGuard};

/// Reads of at most this many bytes may use the small-read reserve.
pub const SMALL_READ: usize = 64 << 10;

/// Threads blocked in the queue at one moment; see [`ChunkQueue::waiting`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    /// In `take_exact` or `take_chunks`, for bytes.
    pub consumers: usize,
    /// In `reserve`, for room.
    pub producers: usize,
}

/// Returned once the queue has been closed for shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// A fixed-size buffer of random bytes with a read cursor.
///
/// The bytes not yet handed out are `buf[pos..]`. Dropping a chunk wipes it.
pub struct Chunk {
    buf: Box<[u8]>,
    pos: usize,
}

impl Chunk {
    fn empty(size: usize) -> Self {
        Chunk {
            buf: vec![0; size].into_boxed_slice(),
            pos: size,
        }
    }

    /// A chunk whose unread bytes are a copy of `bytes`, for tests (the
    /// queue itself makes chunks with [`ChunkQueue::reserve`]).
    #[cfg(test)]
    pub(crate) fn with_bytes(bytes: &[u8]) -> Self {
        Chunk {
            buf: bytes.into(),
            pos: 0,
        }
    }

    /// Overwrites the whole chunk with `fill` and makes all of it unread.
    pub fn refill(&mut self, fill: impl FnOnce(&mut [u8])) {
        fill(&mut self.buf);
        self.pos = 0;
    }

    /// The bytes not yet handed out.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Number of bytes not yet handed out.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been handed out.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Marks the next `n` unread bytes as handed out.
    ///
    /// # Panics
    /// If `n` exceeds [`Chunk::len`].
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consume({n}) past the end of a chunk");
        self.pos += n;
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

impl fmt::Debug for Chunk {
    // Never print the bytes themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("size", &self.buf.len())
            .field("unread", &self.len())
            .finish()
    }
}

struct State {
    /// Filled chunks in the order they were pushed; only the front one may be
    /// partly read.
    ready: VecDeque<Chunk>,
    /// Unread bytes in `ready`.
    queued: usize,
    /// Chunks handed to producers and not yet pushed back.
    reserved: usize,
    /// Emptied chunks waiting to be refilled.
    spare: Vec<Chunk>,
    /// False from the moment the queue is full until it drains to the
    /// low-water mark: producers sleep meanwhile.
    refilling: bool,
    consumers_waiting: usize,
    producers_waiting: usize,
    closed: bool,
}

/// A byte-bounded queue of random-byte chunks. See the module docs.
pub struct ChunkQueue {
    state: Mutex<State>,
    /// Signalled when bytes arrive (or on close).
    data_ready: Condvar,
    /// Signalled when producers may fill again (or on close).
    space_ready: Condvar,
    chunk_size: usize,
    capacity: usize,
    low_water: usize,
    /// Bytes bulk consumers leave for small reads.
    small_reserve: usize,
    consumer_waits: AtomicU64,
}

impl fmt::Debug for ChunkQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkQueue")
            .field("chunk_size", &self.chunk_size)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl ChunkQueue {
    /// A queue of `chunk_size`-byte chunks holding at most `capacity` bytes.
    ///
    /// # Panics
    /// Unless `0 < chunk_size <= capacity` (the command line checks this first).
    pub fn new(chunk_size: usize, capacity: usize) -> Self {
        assert!(
            chunk_size > 0 && chunk_size <= capacity,
            "chunk size {chunk_size} must be in 1..={capacity}"
        );
        ChunkQueue {
            state: Mutex::new(State {
                ready: VecDeque::new(),
                queued: 0,
                reserved: 0,
                spare: Vec::new(),
                refilling: true,
                consumers_waiting: 0,
                producers_waiting: 0,
                closed: false,
            }),
            data_ready: Condvar::new(),
            space_ready: Condvar::new(),
            chunk_size,
            capacity,
            low_water: capacity - capacity / 4,
            // At most capacity - 2 chunks, so that a full queue always has a
            // whole chunk for bulk consumers (see `take_chunks`).
            small_reserve: (capacity / 8)
                .min(1 << 20)
                .min(capacity.saturating_sub(2 * chunk_size))
                / chunk_size
                * chunk_size,
            consumer_waits: AtomicU64::new(0),
        }
    }

    /// Size of every chunk, in bytes.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Upper bound on queued plus reserved bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes kept for reads of at most [`SMALL_READ`] bytes.
    pub fn small_reserve(&self) -> usize {
        self.small_reserve
    }

    /// Unread bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.lock().queued
    }

    /// How many times a consumer found too few bytes and had to wait.
    pub fn consumer_waits(&self) -> u64 {
        self.consumer_waits.load(Ordering::Relaxed)
    }

    /// How many consumers and producers are waiting right now.
    pub fn waiting(&self) -> Waiting {
        let st = self.lock();
        Waiting {
            consumers: st.consumers_waiting,
            producers: st.producers_waiting,
        }
    }

    /// Whether producers may fill now: false from the moment the queue is
    /// full until it has drained to the low-water mark.
    pub fn refilling(&self) -> bool {
        self.lock().refilling
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave `State` half-updated in a way that
        // matters more than stopping would, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, cv: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        cv.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a producer up to `max` empty chunks to fill (appended to `out`),
    /// waiting while the queue is full, or above its low-water mark after
    /// being full. At least one chunk is handed out on success.
    pub fn reserve(&self, max: usize, out: &mut Vec<Chunk>) -> Result<(), Closed> {
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(Closed);
            }
            let room = (self.capacity - st.queued) / self.chunk_size - st.reserved;
            if room == 0 {
                st.refilling = false;
            }
            if room > 0 && st.refilling {
                let n = room.min(max.max(1));
                st.reserved += n;
                let reused = n.min(st.spare.len());
                let from = st.spare.len() - reused;
                out.extend(st.spare.drain(from..));
                drop(st);
                out.extend((reused..n).map(|_| Chunk::empty(self.chunk_size)));
                return Ok(());
            }
            st.producers_waiting += 1;
            st = self.wait(&self.space_ready, st);
            st.producers_waiting -= 1;
        }
    }

    /// Queues all of `chunks` (obtained from [`ChunkQueue::reserve`] and
    /// filled), leaving `chunks` empty. After close they are dropped (and so
    /// wiped) instead.
    pub fn push(&self, chunks: &mut Vec<Chunk>) {
        let mut st = self.lock();
        st.reserved -= chunks.len();
        if st.closed {
            drop(st);
            chunks.clear();
            return;
        }
        for chunk in chunks.drain(..) {
            st.queued += chunk.len();
            st.ready.push_back(chunk);
        }
        if st.consumers_waiting > 0 {
            self.data_ready.notify_all();
        }
    }

    /// Fills all of `dst` with the next queued bytes, waiting for producers as
    /// needed; reads larger than [`SMALL_READ`] leave the small-read reserve
    /// alone. On `Err(Closed)` the bytes already copied are simply dropped.
    pub fn take_exact(&self, dst: &mut [u8]) -> Result<(), Closed> {
        let floor = if dst.len() <= SMALL_READ {
            0
        } else {
            self.small_reserve
        };
        let mut filled = 0;
        let mut st = self.lock();
        loop {
            if st.closed {
                return Err(Closed);
            }
            let state = &mut *st;
            while filled < dst.len() && state.queued > floor {
                let Some(front) = state.ready.front_mut() else {
                    break;
                };
                let n = front
                    .len()
                    .min(dst.len() - filled)
                    .min(state.queued - floor);
                dst[filled..filled + n].copy_from_slice(&front.unread()[..n]);
                front.consume(n);
                filled += n;
                state.queued -= n;
                if front.is_empty() {
                    let empty = state.ready.pop_front().expect("front exists");
                    state.spare.push(empty);
                }
            }
            self.after_take(&mut st);
            if filled == dst.len() {
                return Ok(());
            }
            st = self.wait_for_data(st);
        }
    }

    /// Moves whole chunks (the front one possibly partly read) into `out`
    /// until at least `want` bytes have moved or only the small-read reserve
    /// is left, waiting only if not even one chunk can be moved. Returns the
    /// number of unread bytes moved; the caller now owns them and must give
    /// the emptied chunks back with [`ChunkQueue::recycle`].
    pub fn take_chunks(&self, want: usize, out: &mut VecDeque<Chunk>) -> Result<usize, Closed> {
        let mut st = self.lock();
        // Whether the front chunk can go without touching the reserve.
        let movable = |st: &State| {
            st.ready
                .front()
                .is_some_and(|c| st.queued - c.len() >= self.small_reserve)
        };
        loop {
            if st.closed {
                return Err(Closed);
            }
            if movable(&st) {
                break;
            }
            st = self.wait_for_data(st);
        }
        let mut moved = 0;
        while moved < want && movable(&st) {
            let chunk = st.ready.pop_front().expect("movable means a front chunk");
            st.queued -= chunk.len();
            moved += chunk.len();
            out.push_back(chunk);
        }
        self.after_take(&mut st);
        Ok(moved)
    }

    /// Returns emptied chunks (from [`ChunkQueue::take_chunks`]) for reuse.
    pub fn recycle(&self, chunks: impl IntoIterator<Item = Chunk>) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        for chunk in chunks {
            debug_assert_eq!(chunk.buf.len(), self.chunk_size);
            st.spare.push(chunk);
        }
    }

    /// Wakes every waiter with `Err(Closed)` and wipes all queued and spare
    /// chunks. Chunks held elsewhere are wiped when they are dropped.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queued = 0;
        let ready = std::mem::take(&mut st.ready);
        let spare = std::mem::take(&mut st.spare);
        drop(st);
        self.data_ready.notify_all();
        self.space_ready.notify_all();
        drop(ready);
        drop(spare);
    }

    fn wait_for_data<'a>(&self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.consumer_waits.fetch_add(1, Ordering::Relaxed);
        st.consumers_waiting += 1;
        st = self.wait(&self.data_ready, st);
        st.consumers_waiting -= 1;
        st
    }

    /// Bookkeeping after a consumer removed bytes: pass leftover data on to
    /// the next waiting consumer and wake producers at the low-water mark.
    fn after_take(&self, st: &mut State) {
        if st.queued > 0 && st.consumers_waiting > 0 {
            self.data_ready.notify_one();
        }
        if !st.refilling && st.queued + st.reserved * self.chunk_size <= self.low_water {
            st.refilling = true;
            if st.producers_waiting > 0 {
                self.space_ready.notify_all();
            }
        }
    }
}
