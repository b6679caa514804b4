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
//! Nobody copies more than one chunk while holding the lock. `take_exact`
//! moves whole chunks out under the lock, copies them without it and gives
//! them back; a 1 MiB read would otherwise keep the generators and every
//! other reader waiting for its copy. Only the piece that ends a read (at
//! most a chunk, so all of a small read) is copied under the lock, which
//! spares small reads a second trip through it.
//!
//! A consumer that finds too few bytes waits until the queue holds all it
//! still needs, or until the producers stop (the queue is full, or memory
//! is short) and the queue will not grow before someone takes from it; not
//! merely until the next push. Producers push a batch at a time, and
//! waking every reader at every batch made 1 MiB readers wake dozens of
//! times per read and take turns at the lock.
//!
//! The queue is bounded in bytes: queued bytes plus chunks being filled never
//! exceed the capacity. Once full, producers sleep until consumers have
//! drained it down to the low-water mark, [`REFILL`] below full (or a
//! quarter of a smaller queue), so they wake once per two batches of the
//! generator rather than once per read. Emptied chunks are kept on
//! a spare list and reused; their contents are wiped when they are dropped.
//!
//! The last few queued bytes (the small-read reserve, an eighth of the
//! capacity up to 1 MiB) are kept for reads of at most [`SMALL_READ`] bytes:
//! bulk consumers (large reads, the FIFO writer) wait rather than take them.
//! Bulk readers draining as fast as they can would otherwise leave the queue
//! empty, and a small read, such as a program asking for a 16-byte key,
//! would queue behind them for the generator.
//!
//! # Freshest first
//! Consumers take from the front of `ready`, and producers push their
//! chunks onto the front too ([`Order::Freshest`], the default): the bytes
//! handed out next are those made last, still in the CPU's cache, and the
//! oldest sink to the back, where they stay as the reserve until the queue
//! runs low. A queue kept full then costs a bulk reader nothing; taking
//! the oldest first, it copied bytes made a whole queue ago, out of the
//! cache (16 MiB against a 1 MiB L2), and keeping the queue shallow
//! instead would have left small reads without a reserve. Only a partly read chunk stays
//! in front of new ones, so that the front chunk is the only partly read
//! one. Seeded mode, whose output is one keystream in order, pushes to the
//! back ([`Order::Made`]): each byte then leaves in the order it was made.
//!
//! # Epochs: wiping on a VM fork
//! [`ChunkQueue::wipe`] (called when the VM was cloned from a snapshot)
//! starts a new epoch: every queued byte is zeroized and dropped at once,
//! and no byte made before it ever leaves the queue afterwards. Each chunk
//! carries the epoch it was reserved in; a chunk pushed under an older epoch
//! (a batch being filled with the old key when the wipe came) is wiped and
//! recycled instead of queued, and a `take_exact` that had already copied
//! old bytes into its buffer before waiting wipes them and starts over.
//! Producers compare the epoch of the chunks they get with the one they
//! last saw, and rekey before filling when it changed.
//!
//! # Memory
//! Chunks are pieces of memory mappings of their own (`sys::memory`): kept
//! out of core dumps and forked children, and each chunk of whole pages
//! starts on a page, so that a read answered from it spans as few pages as
//! it can (the kernel pins each one). Chunks are cut from one mapping per
//! allocation, not one each: [`ChunkQueue::preallocate`] makes all of them
//! with one mapping, so that starting and stopping a queue of a million
//! chunks costs one `mmap` and one `munmap`. It fails cleanly if memory is
//! short, so that the daemon refuses to start rather than abort later.
//! Every later allocation (chunks held outside the queue by the FIFO writer
//! or a large read can make more than `capacity` bytes of chunks exist; a
//! producer's shortfall is cut from one new mapping) is fallible: a
//! producer that cannot allocate waits for a chunk to be recycled instead
//! of aborting.
//!
//! # Invariants
//! - queued bytes + reserved chunks × chunk size ≤ capacity;
//! - only the front chunk of `ready` may be partly read, so the ready list
//!   holds at most capacity / chunk size chunks;
//! - with [`Order::Made`], `ready` is in the order the chunks were filled
//!   (reserved and pushed by one producer, as seeded mode runs);
//! - every chunk in `ready` belongs to the current epoch;
//! - a byte leaves the queue at most once, and never after a wipe that
//!   found it queued.
//!
//! # Imports
//! The queue imports nothing of this crate but its sibling `super::sync`
//! and `sys::memory`: `tests/queue_shuttle.rs` compiles this very file with
//! shuttle's primitives as `sync` (and the same `sys/memory.rs`), and
//! anything else it named would have to exist there too.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use zeroize::Zeroize;

use super::sync::{Condvar, Mutex, MutexGuard};
use crate::sys::memory::{self, Piece};

/// Whole chunks [`ChunkQueue::take_exact`] takes at a time to copy outside
/// the lock: a 1 MiB read of 4 KiB chunks in one go. (Three under test, so
/// that the model checks see reads of several rounds.) Only reads of more
/// than a chunk hold any: the list is allocated per read, to its size, and
/// a small read allocates and touches nothing for it (a fixed array of 256
/// on the stack, set up and dropped on every read, cost a 32-byte read over
/// io_uring 4 times the null server's time; docs/PERFORMANCE.md).
const HELD: usize = if cfg!(test) { 3 } else { 256 };

/// How far a full queue drains before producers refill it: two of the
/// generator's 64 KiB batches. Refilling in 4 MiB bursts from three
/// quarters of a 16 MiB queue instead left 4 KiB reads over io_uring at
/// 38 % of the null server's speed in the benchmark, against 95 to 96 %.
/// That the queue is then kept full costs bulk readers nothing, as they
/// get the freshest bytes (see "Freshest first" above).
pub(crate) const REFILL: usize = 128 << 10;

/// Reads of at most this many bytes may use the small-read reserve.
pub(crate) const SMALL_READ: usize = 64 << 10;

/// Threads blocked in the queue at one moment; see [`ChunkQueue::waiting`].
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Waiting {
    /// In `take_exact` or `take_chunks`, for bytes.
    pub consumers: usize,
    /// In `reserve`, for room.
    pub producers: usize,
}

/// Which queued bytes consumers get first; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Those made last, still cache-warm.
    Freshest,
    /// Those made first: each byte in the order it was made.
    Made,
}

/// A chunk could not be allocated: memory is exhausted (or limited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

/// Returned once the queue has been closed for shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// A fixed-size buffer of random bytes with a read cursor.
///
/// The bytes not yet handed out are `buf[pos..]`. Dropping a chunk wipes it.
pub(crate) struct Chunk {
    buf: Piece,
    pos: usize,
    /// The queue's epoch when this chunk was handed to a producer.
    epoch: u64,
    /// Whether it was ever filled: a chunk that never was holds only the
    /// kernel's zeros, and wiping it would only touch (and commit) its
    /// pages.
    filled: bool,
}

impl Chunk {
    /// `count` empty chunks of `size` zeroed bytes, cut from one mapping.
    fn empties(size: usize, count: usize) -> Result<impl Iterator<Item = Chunk>, OutOfMemory> {
        let pieces = memory::pieces(size, count).map_err(|_| OutOfMemory)?;
        Ok(pieces.map(move |buf| Chunk {
            buf,
            pos: size,
            epoch: 0,
            filled: false,
        }))
    }

    /// The epoch of the queue when the chunk was reserved.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Zeroizes the whole chunk and marks it empty.
    pub(crate) fn wipe(&mut self) {
        if self.filled {
            self.buf.zeroize();
            self.filled = false;
        }
        self.pos = self.buf.len();
    }

    /// A chunk whose unread bytes are a copy of `bytes`, for tests (the
    /// queue itself makes chunks with [`ChunkQueue::reserve`]).
    #[cfg(test)]
    pub(crate) fn with_bytes(bytes: &[u8]) -> Self {
        let mut chunk = Chunk::empties(bytes.len(), 1)
            .expect("test memory")
            .next()
            .expect("one chunk");
        chunk.refill(|buf| buf.copy_from_slice(bytes));
        chunk
    }

    /// Overwrites the whole chunk with `fill` and makes all of it unread.
    pub(crate) fn refill(&mut self, fill: impl FnOnce(&mut [u8])) {
        self.filled = true;
        fill(&mut self.buf);
        self.pos = 0;
    }

    /// The bytes not yet handed out.
    pub(crate) fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Number of bytes not yet handed out.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether every byte has been handed out.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Marks the next `n` unread bytes as handed out.
    ///
    /// # Panics
    /// If `n` exceeds [`Chunk::len`].
    pub(crate) fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consume({n}) past the end of a chunk");
        self.pos += n;
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.wipe();
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
    /// The fewest queued bytes that would let a waiting consumer go on
    /// (`usize::MAX` when none waits): consumers are woken when the queue
    /// holds that many, or when producers stop (it is full, or memory is
    /// short) and it will not grow until consumers take from it.
    wanted: usize,
    producers_waiting: usize,
    /// Producers (among `producers_waiting`) that could not allocate a chunk
    /// and wait for one to be recycled.
    producers_starved: usize,
    /// Starts at 0; [`ChunkQueue::wipe`] moves it on.
    epoch: u64,
    closed: bool,
}

/// A byte-bounded queue of random-byte chunks. See the module docs.
pub(crate) struct ChunkQueue {
    state: Mutex<State>,
    /// Signalled when bytes arrive (or on close).
    data_ready: Condvar,
    /// Signalled when producers may fill again (or on close).
    space_ready: Condvar,
    chunk_size: usize,
    capacity: usize,
    order: Order,
    low_water: usize,
    /// Bytes bulk consumers leave for small reads.
    small_reserve: usize,
    consumer_waits: AtomicU64,
    /// Chunk allocations still allowed (fault injection for tests).
    alloc_budget: AtomicUsize,
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
    /// A queue of `chunk_size`-byte chunks holding at most `capacity` bytes,
    /// handing out the freshest first.
    ///
    /// # Panics
    /// Unless `0 < chunk_size <= capacity` (the command line checks this first).
    #[cfg(test)]
    pub(crate) fn new(chunk_size: usize, capacity: usize) -> Self {
        Self::with_order(chunk_size, capacity, Order::Freshest)
    }

    /// Like [`ChunkQueue::new`], handing out bytes in `order`.
    pub(crate) fn with_order(chunk_size: usize, capacity: usize, order: Order) -> Self {
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
                wanted: usize::MAX,
                producers_waiting: 0,
                producers_starved: 0,
                epoch: 0,
                closed: false,
            }),
            data_ready: Condvar::new(),
            space_ready: Condvar::new(),
            chunk_size,
            capacity,
            order,
            low_water: capacity - (capacity / 4).min(REFILL),
            // At most capacity - 2 chunks, so that a full queue always has a
            // whole chunk for bulk consumers (see `take_chunks`).
            small_reserve: (capacity / 8)
                .min(1 << 20)
                .min(capacity.saturating_sub(2 * chunk_size))
                / chunk_size
                * chunk_size,
            consumer_waits: AtomicU64::new(0),
            alloc_budget: AtomicUsize::new(usize::MAX),
        }
    }

    /// Like [`ChunkQueue::with_order`], but allocates every chunk (and the
    /// lists that hold them) now, failing cleanly if memory is short; what
    /// was allocated is freed again. The daemon uses this, so that a queue
    /// too large for the memory available refuses the start instead of
    /// aborting later.
    pub(crate) fn preallocate(
        chunk_size: usize,
        capacity: usize,
        order: Order,
    ) -> Result<Self, OutOfMemory> {
        let q = ChunkQueue::with_order(chunk_size, capacity, order);
        let n = capacity / chunk_size;
        {
            let mut st = q.lock();
            st.spare.try_reserve_exact(n).map_err(|_| OutOfMemory)?;
            st.ready.try_reserve_exact(n).map_err(|_| OutOfMemory)?;
            st.spare.extend(q.allocate(n)?);
        }
        Ok(q)
    }

    #[cfg(test)]
    /// Lets only `n` more chunk allocations succeed; later ones fail as if
    /// memory had run out. For tests of the out-of-memory paths.
    pub(crate) fn limit_allocations(&self, n: usize) {
        self.alloc_budget.store(n, Ordering::Relaxed);
    }

    /// Up to `n` (> 0) new empty chunks, all from one mapping: fewer only
    /// if the test budget allows fewer, none if memory is short.
    fn allocate(&self, n: usize) -> Result<impl Iterator<Item = Chunk>, OutOfMemory> {
        let budget = self
            .alloc_budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b - b.min(n)))
            .expect("the update always succeeds");
        match budget.min(n) {
            0 => Err(OutOfMemory),
            granted => Chunk::empties(self.chunk_size, granted),
        }
    }

    /// The current epoch: 0 at first, one more after each
    /// [`ChunkQueue::wipe`].
    pub(crate) fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Size of every chunk, in bytes.
    pub(crate) fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Upper bound on queued plus reserved bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    #[cfg(test)]
    /// Bytes kept for reads of at most [`SMALL_READ`] bytes.
    pub(crate) fn small_reserve(&self) -> usize {
        self.small_reserve
    }

    /// Unread bytes currently queued.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().queued
    }

    /// How many times a consumer found too few bytes and had to wait.
    pub(crate) fn consumer_waits(&self) -> u64 {
        self.consumer_waits.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    /// How many consumers and producers are waiting right now.
    pub(crate) fn waiting(&self) -> Waiting {
        let st = self.lock();
        Waiting {
            consumers: st.consumers_waiting,
            producers: st.producers_waiting,
        }
    }

    #[cfg(test)]
    /// Whether producers may fill now: false from the moment the queue is
    /// full until it has drained to the low-water mark.
    pub(crate) fn refilling(&self) -> bool {
        self.lock().refilling
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave `State` half-updated in a way that
        // matters more than stopping would, so poisoning is ignored.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wait<'a>(&self, cv: &Condvar, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        cv.wait(guard)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands a producer up to `max` empty chunks to fill (appended to `out`),
    /// waiting while the queue is full, or above its low-water mark after
    /// being full. At least one chunk is handed out on success, unless the
    /// queue was wiped while the producer waited: then it returns with none
    /// at once, so that the producer can rekey now. Spare chunks
    /// are used first; should allocating more fail, the producer gets fewer,
    /// and if it got none it waits for a chunk to be recycled. Every chunk
    /// carries the current epoch (see [`Chunk::epoch`]).
    pub(crate) fn reserve(&self, max: usize, out: &mut Vec<Chunk>) -> Result<(), Closed> {
        let mut st = self.lock();
        let mut starved = false;
        let entered = st.epoch;
        loop {
            if st.closed {
                return Err(Closed);
            }
            let room = (self.capacity - st.queued) / self.chunk_size - st.reserved;
            if room == 0 {
                st.refilling = false;
            }
            if room > 0 && st.refilling && !(starved && st.spare.is_empty()) {
                let n = room.min(max.max(1));
                st.reserved += n;
                let epoch = st.epoch;
                let reused = n.min(st.spare.len());
                let from = st.spare.len() - reused;
                let start = out.len();
                out.extend(st.spare.drain(from..));
                drop(st);
                if reused < n
                    && let Ok(chunks) = self.allocate(n - reused)
                {
                    out.extend(chunks);
                }
                for chunk in &mut out[start..] {
                    chunk.epoch = epoch;
                }
                let got = out.len() - start;
                if got == n {
                    return Ok(());
                }
                st = self.lock();
                st.reserved -= n - got;
                if got > 0 {
                    return Ok(());
                }
                starved = true;
                continue;
            }
            // The queue will not grow until consumers take from it: wake
            // those waiting for more than it holds.
            self.wake_consumers(&mut st);
            st.producers_waiting += 1;
            st.producers_starved += usize::from(starved);
            st = self.wait(&self.space_ready, st);
            st.producers_waiting -= 1;
            st.producers_starved -= usize::from(starved);
            if st.epoch != entered && !st.closed {
                return Ok(());
            }
        }
    }

    /// Gives back reserved chunks unfilled (a producer that cannot fill
    /// them safely); they are wiped and kept as spares.
    pub(crate) fn unreserve(&self, chunks: &mut Vec<Chunk>) {
        let mut st = self.lock();
        st.reserved -= chunks.len();
        for mut chunk in chunks.drain(..) {
            chunk.wipe();
            self.to_spare(&mut st, chunk);
        }
    }

    /// Keeps an emptied chunk for reuse (dropping, and so wiping, it if even
    /// the spare list cannot grow), waking producers that wait for one.
    fn to_spare(&self, st: &mut State, chunk: Chunk) {
        if st.closed {
            return;
        }
        if st.spare.try_reserve(1).is_ok() {
            st.spare.push(chunk);
        }
        if st.producers_starved > 0 {
            self.space_ready.notify_all();
        }
    }

    /// Queues all of `chunks` (obtained from [`ChunkQueue::reserve`] and
    /// filled), leaving `chunks` empty. After close they are dropped (and so
    /// wiped) instead. Chunks reserved before the last [`ChunkQueue::wipe`]
    /// are wiped and kept as spares, never queued; returns how many unread
    /// bytes were discarded that way.
    pub(crate) fn push(&self, chunks: &mut Vec<Chunk>) -> usize {
        let mut st = self.lock();
        st.reserved -= chunks.len();
        if st.closed {
            drop(st);
            chunks.clear();
            return 0;
        }
        let mut stale = 0;
        // A partly read front chunk stays in front (see the module docs).
        let partly_read = match self.order {
            Order::Freshest if st.ready.front().is_some_and(|c| c.len() < self.chunk_size) => {
                st.ready.pop_front()
            }
            _ => None,
        };
        for mut chunk in chunks.drain(..) {
            // An unfilled chunk would sit in `ready` with nothing to read,
            // breaking the invariant that only the front one is partly read.
            debug_assert_eq!(chunk.len(), self.chunk_size, "push of an unfilled chunk");
            if chunk.epoch == st.epoch {
                st.queued += chunk.len();
                match self.order {
                    Order::Freshest => st.ready.push_front(chunk),
                    Order::Made => st.ready.push_back(chunk),
                }
            } else {
                stale += chunk.len();
                chunk.wipe();
                self.to_spare(&mut st, chunk);
            }
        }
        if let Some(chunk) = partly_read {
            st.ready.push_front(chunk);
        }
        if st.queued >= st.wanted {
            self.wake_consumers(&mut st);
        }
        stale
    }

    /// Fills all of `dst` with the next queued bytes, waiting for producers as
    /// needed; reads larger than [`SMALL_READ`] leave the small-read reserve
    /// alone. On `Err(Closed)` the bytes already copied are simply dropped.
    ///
    /// Should the queue be wiped while this waits, the bytes already copied
    /// into `dst` are zeroized and the copy starts over with bytes of the new
    /// epoch; returns how many bytes were discarded that way (normally 0).
    pub(crate) fn take_exact(&self, dst: &mut [u8]) -> Result<usize, Closed> {
        let floor = self.floor(dst.len());
        let mut held = Vec::new();
        if dst.len() > self.chunk_size {
            // Should this fail, every chunk is copied under the lock.
            let _ = held.try_reserve_exact(dst.len().div_ceil(self.chunk_size).min(HELD));
        }
        let mut filled = 0;
        let mut discarded = 0;
        let mut st = self.lock();
        let mut epoch = st.epoch;
        loop {
            if filled == dst.len() {
                return Ok(discarded);
            }
            if st.closed {
                return Err(Closed);
            }
            if st.epoch != epoch {
                dst[..filled].zeroize();
                discarded += filled;
                filled = 0;
                epoch = st.epoch;
            }
            let end = self.take_round(&mut st, dst, filled, floor, &mut held);
            if end == filled {
                st = self.wait_for_data(st, floor + dst.len() - filled);
                continue;
            }
            if !held.is_empty() {
                // The chunks taken are ours now: copy them without the
                // lock, so that producers and other consumers need not wait
                // for us, and give them back.
                drop(st);
                let mut at = filled;
                for chunk in &mut held {
                    let n = chunk.len();
                    dst[at..at + n].copy_from_slice(chunk.unread());
                    chunk.consume(n);
                    at += n;
                }
                st = self.lock();
                for chunk in held.drain(..) {
                    self.to_spare(&mut st, chunk);
                }
            }
            filled = end;
        }
    }

    /// The front chunk, if its unread bytes are exactly `len` bytes that a
    /// read of `len` may take now: such a read is answered from the chunk
    /// itself, with no copy. Otherwise (the front chunk holds more or less,
    /// the read would dip into the small-read reserve, or the queue is
    /// closed) `None`, and the read goes through [`ChunkQueue::take_exact`].
    /// The caller owns the chunk's bytes and gives the chunk back with
    /// [`ChunkQueue::recycle`].
    pub(crate) fn take_front(&self, len: usize) -> Option<Chunk> {
        let mut st = self.lock();
        let front = st.ready.front()?;
        if front.len() != len || st.queued < self.floor(len) + len {
            return None;
        }
        let chunk = st.ready.pop_front();
        st.queued -= len;
        self.after_take(&mut st);
        chunk
    }

    /// The queued bytes a read of `len` bytes must leave: reads larger than
    /// [`SMALL_READ`] leave the small-read reserve.
    fn floor(&self, len: usize) -> usize {
        if len <= SMALL_READ {
            0
        } else {
            self.small_reserve
        }
    }

    /// One round of [`ChunkQueue::take_exact`]: takes bytes above `floor`
    /// for `dst[filled..]`. Whole chunks go into `held`, as many as its
    /// capacity takes, to be copied in order to `dst[filled..]` without the
    /// lock; the piece that ends the read (all of a read within the front
    /// chunk, then), the piece that leaves only the floor, and whole chunks
    /// when `held` has no room at all, are copied now. Returns where the
    /// bytes taken end in `dst`.
    fn take_round(
        &self,
        st: &mut State,
        dst: &mut [u8],
        filled: usize,
        floor: usize,
        held: &mut Vec<Chunk>,
    ) -> usize {
        let mut end = filled;
        while end < dst.len() && st.queued > floor {
            let Some(front) = st.ready.front_mut() else {
                break;
            };
            let n = front.len().min(dst.len() - end).min(st.queued - floor);
            let whole = n == front.len() && end + n < dst.len();
            if whole && held.len() < held.capacity() {
                held.push(st.ready.pop_front().expect("the front chunk"));
            } else if whole && !held.is_empty() {
                // Full: the held chunks' bytes come first.
                break;
            } else {
                dst[end..end + n].copy_from_slice(&front.unread()[..n]);
                front.consume(n);
                if front.is_empty() {
                    let chunk = st.ready.pop_front().expect("the front chunk");
                    self.to_spare(st, chunk);
                }
            }
            st.queued -= n;
            end += n;
        }
        self.after_take(st);
        end
    }

    /// Moves whole chunks (the front one possibly partly read) into `out`
    /// until at least `want` bytes have moved or only the small-read reserve
    /// is left, waiting only if not even one chunk can be moved. Returns the
    /// number of unread bytes moved; the caller now owns them and must give
    /// the emptied chunks back with [`ChunkQueue::recycle`]. Returns `Ok(0)`
    /// if the queue was wiped while this waited: the caller then holds only
    /// bytes of an old epoch, and must drop them before writing anything.
    pub(crate) fn take_chunks(
        &self,
        want: usize,
        out: &mut VecDeque<Chunk>,
    ) -> Result<usize, Closed> {
        let mut st = self.lock();
        let epoch = st.epoch;
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
            if st.epoch != epoch {
                return Ok(0);
            }
            let front = st.ready.front().map_or(self.chunk_size, Chunk::len);
            st = self.wait_for_data(st, self.small_reserve + front);
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
    pub(crate) fn recycle(&self, chunks: impl IntoIterator<Item = Chunk>) {
        let mut st = self.lock();
        for chunk in chunks {
            debug_assert_eq!(chunk.buf.len(), self.chunk_size);
            self.to_spare(&mut st, chunk);
        }
    }

    /// Starts a new epoch after a VM fork: zeroizes and drops every queued
    /// byte, so that none made before leaves the queue, and lets producers
    /// refill. Chunks reserved before are discarded when pushed (see
    /// [`ChunkQueue::push`]); waiting consumers wake and drop what they hold
    /// (see [`ChunkQueue::take_exact`] and [`ChunkQueue::take_chunks`]).
    /// Returns the new epoch and the number of queued bytes wiped.
    pub(crate) fn wipe(&self) -> (u64, usize) {
        let mut st = self.lock();
        st.epoch += 1;
        let epoch = st.epoch;
        if st.closed {
            return (epoch, 0);
        }
        let wiped = st.queued;
        st.queued = 0;
        while let Some(mut chunk) = st.ready.pop_front() {
            chunk.wipe();
            self.to_spare(&mut st, chunk);
        }
        st.refilling = true;
        self.wake_consumers(&mut st);
        drop(st);
        self.space_ready.notify_all();
        (epoch, wiped)
    }

    /// Wakes every waiter with `Err(Closed)` and wipes all queued and spare
    /// chunks. Chunks held elsewhere are wiped when they are dropped.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        st.queued = 0;
        self.wake_consumers(&mut st);
        let ready = std::mem::take(&mut st.ready);
        let spare = std::mem::take(&mut st.spare);
        drop(st);
        self.space_ready.notify_all();
        drop(ready);
        drop(spare);
    }

    fn wait_for_data<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        need: usize,
    ) -> MutexGuard<'a, State> {
        self.consumer_waits.fetch_add(1, Ordering::Relaxed);
        st.consumers_waiting += 1;
        st.wanted = st.wanted.min(need);
        st = self.wait(&self.data_ready, st);
        st.consumers_waiting -= 1;
        st
    }

    /// Wakes every waiting consumer, whatever it waits for.
    fn wake_consumers(&self, st: &mut State) {
        st.wanted = usize::MAX;
        if st.consumers_waiting > 0 {
            self.data_ready.notify_all();
        }
    }

    /// Bookkeeping after a consumer removed bytes: pass leftover data on to
    /// waiting consumers and wake producers at the low-water mark.
    fn after_take(&self, st: &mut State) {
        if st.queued >= st.wanted {
            self.wake_consumers(st);
        }
        if !st.refilling && st.queued + st.reserved * self.chunk_size <= self.low_water {
            st.refilling = true;
            if st.producers_waiting > 0 {
                self.space_ready.notify_all();
            }
        }
    }
}
