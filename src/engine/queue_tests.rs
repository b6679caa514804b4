//! The chunk queue on its own: generated operation sequences against a
//! model, and real threads.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::queue::{Chunk, ChunkQueue, Closed, Order, REFILL, SMALL_READ, Waiting};
use crate::units::low_byte;
use proptest::prelude::*;

/// The reference byte stream: byte `i` of the little-endian encoding of the
/// words 0, 1, 2, ...; any replayed or skipped stretch shows up.
fn stream_byte(i: usize) -> u8 {
    (i / 4).to_le_bytes()[i % 4]
}

#[derive(Debug, Clone)]
enum Op {
    /// Reserve up to n chunks, fill all held chunks with the next stream
    /// bytes, push them.
    Produce(usize),
    /// Reserve up to n chunks but do not push until the next `Produce` (a
    /// slow producer).
    ReserveOnly(usize),
    /// `take_exact` of n bytes (only when that many are queued).
    Take(usize),
    /// `take_front` of as many bytes as the front chunk holds (`true`) or
    /// of n bytes (`false`, mostly a length it must refuse).
    TakeFront(bool, usize),
    /// `take_chunks` wanting n bytes, then hand out `consume` of them, keeping
    /// the rest pending like the FIFO writer does.
    TakeChunks(usize, usize),
    /// A VM fork: the FIFO-style consumer wipes what it holds, the queue is
    /// wiped, and chunks reserved meanwhile must never come out.
    Wipe,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..4).prop_map(Op::Produce),
        1 => (1usize..3).prop_map(Op::ReserveOnly),
        3 => (1usize..700).prop_map(Op::Take),
        2 => (any::<bool>(), 1usize..400).prop_map(|(f, n)| Op::TakeFront(f, n)),
        2 => (1usize..900, 0usize..900).prop_map(|(w, c)| Op::TakeChunks(w, c)),
        1 => Just(Op::Wipe),
    ]
}

/// The queue's ready list as the model sees it: the unread bytes of each
/// chunk, the next to be read first, kept by the rule the module docs give.
struct Ready {
    chunks: VecDeque<Vec<u8>>,
    order: Order,
    chunk_size: usize,
}

impl Ready {
    fn push(&mut self, chunk: Vec<u8>) {
        match self.order {
            Order::Made => self.chunks.push_back(chunk),
            Order::Freshest => {
                // Only a partly read chunk stays in front of a new one.
                let partly = self
                    .chunks
                    .front()
                    .is_some_and(|c| c.len() < self.chunk_size);
                let at = usize::from(partly);
                self.chunks.insert(at, chunk);
            }
        }
    }

    fn queued(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// The next `n` bytes.
    fn take(&mut self, mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while n > 0 {
            let front = self.chunks.front_mut().expect("the model holds n bytes");
            let k = front.len().min(n);
            out.extend(front.drain(..k));
            n -= k;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// One consumer, any mix of operations, with the chunks allocated up
    /// front or on demand and any number of allocations failing: capacity
    /// is never exceeded, a producer gets exactly as many chunks as the
    /// spares and the allocations left allow, every take hands out what the
    /// model of the ready list says (the freshest chunk first, or the
    /// oldest in `Order::Made`), and the bytes handed out are exactly the
    /// stream, once each (in order, in `Order::Made`), minus what wipes
    /// discarded: the queued and pending bytes at each wipe, and every
    /// chunk reserved before it.
    #[test]
    fn sequences_hand_out_the_stream_once(
        chunk_words in 16usize..80,
        chunks_cap in 1usize..6,
        preallocated in any::<bool>(),
        made in any::<bool>(),
        alloc_budget in prop::option::of(0usize..8),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let chunk_size = chunk_words * 4;
        let capacity = chunk_size * chunks_cap + chunk_size / 2;
        let order = if made { Order::Made } else { Order::Freshest };
        let q = if preallocated {
            ChunkQueue::preallocate(chunk_size, capacity, order).unwrap()
        } else {
            ChunkQueue::with_order(chunk_size, capacity, order)
        };
        let mut model = Ready { chunks: VecDeque::new(), order, chunk_size };
        // Chunks in existence, and allocations still allowed.
        let mut chunks = if preallocated { chunks_cap } else { 0 };
        let mut budget = alloc_budget.unwrap_or(usize::MAX);
        q.limit_allocations(budget);
        let mut epoch = q.epoch();
        let mut produced = 0usize;
        let mut held: Vec<Chunk> = Vec::new();
        // The FIFO-style consumer's pending chunks, everything handed out,
        // and what should be handed out: the stream minus discarded bytes.
        let mut pending: VecDeque<Chunk> = VecDeque::new();
        let mut out: Vec<u8> = Vec::new();
        let mut kept: Vec<u8> = Vec::new();
        let mut discarded = 0;
        for op in ops {
            match op {
                Op::Produce(max) | Op::ReserveOnly(max) => {
                    // reserve() would block when full, or when it can neither
                    // reuse nor allocate a chunk; only call it when the model
                    // says it may proceed, and check what it hands out.
                    let room = (capacity - q.queued_bytes()) / chunk_size - held.len();
                    let ready = q.queued_bytes().div_ceil(chunk_size);
                    let spare = chunks - held.len() - pending.len() - ready;
                    let n = room.min(max).min(spare.saturating_add(budget));
                    if room > 0 && q.queued_bytes() <= capacity - (capacity / 4).min(REFILL) && n > 0 {
                        let before = held.len();
                        q.reserve(max, &mut held).unwrap();
                        prop_assert_eq!(held.len() - before, n);
                        let allocated = n.saturating_sub(spare);
                        chunks += allocated;
                        budget -= allocated;
                        prop_assert!(held.iter().all(|c| c.epoch() <= epoch));
                    }
                    if matches!(op, Op::Produce(_)) {
                        let mut stale = 0;
                        for c in &mut held {
                            c.refill(|b| for (j, x) in b.iter_mut().enumerate() { *x = stream_byte(produced + j) });
                            if c.epoch() == epoch {
                                kept.extend((0..chunk_size).map(|j| stream_byte(produced + j)));
                                model.push(c.unread().to_vec());
                            } else {
                                stale += chunk_size;
                            }
                            produced += chunk_size;
                        }
                        prop_assert_eq!(q.push(&mut held), stale);
                        discarded += stale;
                        prop_assert!(held.is_empty());
                    }
                }
                Op::Wipe => {
                    discarded += q.queued_bytes() + pending.iter().map(Chunk::len).sum::<usize>();
                    // The consumer wipes what it holds, as the FIFO writer does.
                    for c in &mut pending {
                        c.wipe();
                    }
                    q.recycle(pending.drain(..));
                    let queued = q.queued_bytes();
                    let (e, wiped) = q.wipe();
                    prop_assert_eq!((e, wiped), (epoch + 1, queued));
                    prop_assert_eq!(q.queued_bytes(), 0);
                    model.chunks.clear();
                    epoch = e;
                    kept.truncate(out.len());
                }
                Op::Take(n) => {
                    // Pending FIFO bytes were taken earlier, so they come first.
                    flush(&mut pending, &mut out, &q);
                    if q.queued_bytes() >= n {
                        let mut buf = vec![0u8; n];
                        prop_assert_eq!(q.take_exact(&mut buf), Ok(0));
                        prop_assert!(buf == model.take(n), "take_exact({}) off the model", n);
                        out.extend_from_slice(&buf);
                    }
                }
                Op::TakeFront(whole, n) => {
                    flush(&mut pending, &mut out, &q);
                    // Only the front chunk may be partly read.
                    let queued = q.queued_bytes();
                    let front = match queued % chunk_size {
                        0 if queued > 0 => chunk_size,
                        rest => rest,
                    };
                    let len = if whole { front } else { n };
                    match q.take_front(len) {
                        Some(mut c) => {
                            prop_assert!(queued > 0 && len == front);
                            prop_assert_eq!(c.len(), len);
                            prop_assert_eq!(q.queued_bytes(), queued - len);
                            prop_assert!(c.unread() == model.take(len), "take_front off the model");
                            out.extend_from_slice(c.unread());
                            c.consume(len);
                            q.recycle([c]);
                        }
                        None => {
                            prop_assert!(queued == 0 || len != front);
                            prop_assert_eq!(q.queued_bytes(), queued);
                        }
                    }
                }
                Op::TakeChunks(want, consume) => {
                    flush(&mut pending, &mut out, &q);
                    if q.queued_bytes() > 0 {
                        let before = q.queued_bytes();
                        let was_pending = pending.len();
                        let moved = q.take_chunks(want, &mut pending).unwrap();
                        prop_assert!(moved >= want.min(before));
                        prop_assert!(moved > 0);
                        prop_assert_eq!(q.queued_bytes(), before - moved);
                        let taken: Vec<u8> = pending.iter().skip(was_pending).flat_map(|c| c.unread().to_vec()).collect();
                        prop_assert!(taken == model.take(moved), "take_chunks off the model");
                        // Hand out part of it, keep a cursor in the rest.
                        let mut left = consume.min(moved);
                        while left > 0 {
                            let front = pending.front_mut().unwrap();
                            let n = front.len().min(left);
                            out.extend_from_slice(&front.unread()[..n]);
                            front.consume(n);
                            left -= n;
                            if front.is_empty() { q.recycle(pending.pop_front()); }
                        }
                    }
                }
            }
            prop_assert!(q.queued_bytes() + held.len() * chunk_size <= capacity);
            prop_assert_eq!(q.queued_bytes(), model.queued());
        }
        flush(&mut pending, &mut out, &q);
        let rest = q.queued_bytes();
        let mut tail = vec![0u8; rest];
        q.take_exact(&mut tail).unwrap();
        prop_assert!(tail == model.take(rest), "the rest off the model");
        out.extend_from_slice(&tail);
        // Every byte made is handed out or discarded, never both.
        prop_assert_eq!(out.len() + discarded, produced);
        if order == Order::Made {
            prop_assert!(out == kept, "bytes handed out differ from the stream");
        }
        if epoch == 0 {
            prop_assert_eq!(kept.len(), produced);
        }
    }
}

fn flush(pending: &mut VecDeque<Chunk>, out: &mut Vec<u8>, q: &ChunkQueue) {
    for c in pending.iter() {
        out.extend_from_slice(c.unread());
    }
    q.recycle(pending.drain(..));
}

#[test]
fn producers_block_at_capacity_and_wake_at_low_water() {
    let q = Arc::new(ChunkQueue::new(64, 64 * 8));
    for _ in 0..8 {
        push_one(&q, filled(reserve_one(&q).unwrap()));
    }
    assert_eq!(q.queued_bytes(), 512);
    let q2 = q.clone();
    let producer = thread::spawn(move || {
        push_one(&q2, filled(reserve_one(&q2).unwrap()));
    });
    // The producer finds the queue full and waits.
    wait_for(&q, waiting(0, 1));
    assert!(!q.refilling());
    // Taking one chunk is not enough: producers wait for the low-water mark
    // (3/4 of capacity = 384 bytes) so that they refill in batches.
    let mut buf = [0u8; 64];
    q.take_exact(&mut buf).unwrap();
    assert!(
        !q.refilling(),
        "producers may refill above the low-water mark"
    );
    assert_eq!(q.waiting(), waiting(0, 1));
    q.take_exact(&mut buf).unwrap();
    assert!(q.refilling());
    producer.join().unwrap();
    assert_eq!(q.queued_bytes(), 384 + 64);
}

fn waiting(consumers: usize, producers: usize) -> Waiting {
    Waiting {
        consumers,
        producers,
    }
}

/// Waits until exactly `want` threads are blocked in `q` (they block on
/// their own, so this is an event to wait for, not a time).
fn wait_for(q: &ChunkQueue, want: Waiting) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while q.waiting() != want {
        assert!(
            Instant::now() < deadline,
            "waiting {:?}, expected {want:?}",
            q.waiting()
        );
        thread::yield_now();
    }
}

fn filled(mut c: Chunk) -> Chunk {
    c.refill(|b| b.fill(1));
    c
}

fn reserve_one(q: &ChunkQueue) -> Result<Chunk, Closed> {
    let mut v = Vec::new();
    q.reserve(1, &mut v)?;
    assert_eq!(v.len(), 1);
    Ok(v.pop().unwrap())
}

fn push_one(q: &ChunkQueue, c: Chunk) {
    q.push(&mut vec![c]);
}

#[test]
fn close_wakes_blocked_consumers() {
    let q = Arc::new(ChunkQueue::new(64, 64));
    push_one(&q, filled(reserve_one(&q).unwrap()));
    let (q1, q2) = (q.clone(), q.clone());
    // Takes the 64 queued bytes, then waits for more that never come.
    let exact = thread::spawn(move || q1.take_exact(&mut [0u8; 1000]));
    let chunks = thread::spawn(move || -> Result<(), Closed> {
        let mut v = VecDeque::new();
        loop {
            q2.take_chunks(1, &mut v)?;
        }
    });
    wait_for(&q, waiting(2, 0));
    q.close();
    assert_eq!(exact.join().unwrap(), Err(Closed));
    assert_eq!(chunks.join().unwrap(), Err(Closed));
    assert!(reserve_one(&q).is_err());
}

#[test]
fn close_wakes_blocked_producers_and_wipes() {
    let q = Arc::new(ChunkQueue::new(64, 128));
    for _ in 0..2 {
        push_one(&q, filled(reserve_one(&q).unwrap()));
    }
    let q1 = q.clone();
    let producer = thread::spawn(move || reserve_one(&q1).map(drop));
    wait_for(&q, waiting(0, 1));
    q.close();
    assert_eq!(producer.join().unwrap(), Err(Closed));
    assert_eq!(q.queued_bytes(), 0);
    assert_eq!(q.take_exact(&mut [0u8; 1]), Err(Closed));
}

/// Bulk consumers leave the small-read reserve for small reads.
#[test]
fn small_read_reserve_is_kept_from_bulk_consumers() {
    const CHUNK: usize = 4096;
    let q = Arc::new(ChunkQueue::new(CHUNK, 1 << 20));
    assert_eq!(q.small_reserve(), 128 << 10);
    let mut batch = Vec::new();
    while q.queued_bytes() < 1 << 20 {
        q.reserve(256, &mut batch).unwrap();
        batch.iter_mut().for_each(|c| c.refill(|b| b.fill(7)));
        q.push(&mut batch);
    }
    // A large read takes everything above the reserve.
    let mut big = vec![0u8; (1 << 20) - (128 << 10)];
    q.take_exact(&mut big).unwrap();
    assert_eq!(q.queued_bytes(), 128 << 10);
    // More bulk reads wait (no producer runs here)...
    let (q1, q2) = (q.clone(), q.clone());
    let bulk_read = thread::spawn(move || q1.take_exact(&mut vec![0u8; SMALL_READ + 1]));
    let fifo = thread::spawn(move || q2.take_chunks(1, &mut VecDeque::new()));
    wait_for(&q, waiting(2, 0));
    assert!(!bulk_read.is_finished() && !fifo.is_finished());
    // ...while small reads are served at once from the reserve.
    for _ in 0..32 {
        q.take_exact(&mut [0u8; 4096]).unwrap();
    }
    assert_eq!(q.queued_bytes(), 0);
    q.close();
    assert_eq!(bulk_read.join().unwrap(), Err(Closed));
    assert_eq!(fifo.join().unwrap(), Err(Closed));
}

/// Freshest first: on a full queue of old bytes, the batch pushed after a
/// bulk read is what the next reads get, small and bulk, and the old bytes
/// stay behind as the reserve; a partly read chunk is finished before a
/// newer one is started. In `Order::Made` the oldest come first.
#[test]
fn reads_get_the_freshest_bytes_first() {
    const CHUNK: usize = 4096;
    let fill = |q: &ChunkQueue, byte: u8| {
        let mut batch = Vec::new();
        q.reserve(16, &mut batch).unwrap();
        assert_eq!(batch.len(), 16);
        batch.iter_mut().for_each(|c| c.refill(|b| b.fill(byte)));
        q.push(&mut batch);
    };
    let take = |q: &ChunkQueue, n: usize| {
        let mut buf = vec![0u8; n];
        q.take_exact(&mut buf).unwrap();
        buf
    };
    for order in [Order::Freshest, Order::Made] {
        let q = ChunkQueue::with_order(CHUNK, 1 << 20, order);
        for _ in 0..16 {
            fill(&q, 1);
        }
        assert_eq!(q.queued_bytes(), 1 << 20);
        assert!(take(&q, SMALL_READ * 2).iter().all(|&b| b == 1));
        fill(&q, 2);
        let fresh = if order == Order::Freshest { 2 } else { 1 };
        let small = take(&q, 100);
        assert!(small.iter().all(|&b| b == fresh), "{order:?}");
        // The rest of that chunk comes before the next batch.
        fill(&q, 3);
        let rest = take(&q, CHUNK - 100);
        assert!(rest.iter().all(|&b| b == fresh), "{order:?}");
        let bulk = take(&q, SMALL_READ + CHUNK);
        if order == Order::Freshest {
            assert!(bulk[..SMALL_READ].iter().all(|&b| b == 3));
            assert!(bulk[SMALL_READ..].iter().all(|&b| b == 2));
        } else {
            assert!(bulk.iter().all(|&b| b == 1));
        }
        // What is left: in Freshest order, the oldest bytes, at the back.
        let mut left = Vec::new();
        while q.queued_bytes() > 0 {
            left.extend(take(&q, CHUNK));
        }
        let runs: &[(u8, usize)] = match order {
            Order::Freshest => &[(2, 14), (1, 224)],
            Order::Made => &[(1, 206), (2, 16), (3, 16)],
        };
        let expected: Vec<u8> = runs
            .iter()
            .flat_map(|&(byte, chunks)| vec![byte; chunks * CHUNK])
            .collect();
        assert!(left == expected, "{order:?}");
    }
}

/// A 1 MiB read that finds the queue empty sleeps until the queue holds the
/// whole read above the small-read reserve, not until the next batch: it
/// neither wakes nor takes a byte while 64 KiB batches arrive, then takes
/// its 1 MiB at one wake-up. When producers stop (here: the queue is full
/// below that mark) it is woken anyway and takes what is there.
#[test]
fn a_bulk_read_wakes_once_it_can_be_served() {
    const BATCH: usize = 16;
    const CHUNK: usize = 4096;
    let q = Arc::new(ChunkQueue::new(CHUNK, 16 << 20));
    let reserve = q.small_reserve();
    assert_eq!(reserve, 1 << 20);
    let produce = |q: &ChunkQueue, batches: usize| {
        let mut batch = Vec::new();
        for _ in 0..batches {
            q.reserve(BATCH, &mut batch).unwrap();
            assert_eq!(batch.len(), BATCH);
            batch.iter_mut().for_each(|c| c.refill(|b| b.fill(3)));
            q.push(&mut batch);
        }
    };
    let q1 = q.clone();
    let read = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        q1.take_exact(&mut buf).map(|_| buf)
    });
    wait_for(&q, waiting(1, 0));
    // Everything but the last batch the read needs: 2 MiB - 64 KiB.
    let batches = (reserve + (1 << 20)) / (BATCH * CHUNK);
    produce(&q, batches - 1);
    assert_eq!(q.queued_bytes(), (batches - 1) * BATCH * CHUNK);
    assert_eq!(q.waiting(), waiting(1, 0));
    assert_eq!(q.consumer_waits(), 1);
    produce(&q, 1);
    let buf = read.join().unwrap().unwrap();
    assert!(buf.iter().all(|&b| b == 3));
    assert_eq!(
        q.consumer_waits(),
        1,
        "the read woke before it could be served"
    );
    assert_eq!(q.queued_bytes(), reserve);

    // A read larger than the queue: woken when the producer finds it full.
    let q = Arc::new(ChunkQueue::new(CHUNK, BATCH * CHUNK * 4));
    let q1 = q.clone();
    let read = thread::spawn(move || q1.take_exact(&mut vec![0u8; 1 << 20]));
    wait_for(&q, waiting(1, 0));
    let q2 = q.clone();
    let producer = thread::spawn(move || {
        let mut batch = Vec::new();
        while q2.reserve(BATCH, &mut batch).is_ok() {
            batch.iter_mut().for_each(|c| c.refill(|b| b.fill(4)));
            q2.push(&mut batch);
        }
    });
    assert_eq!(read.join().unwrap(), Ok(0));
    q.close();
    producer.join().unwrap();
}

/// Several producers and consumers of both kinds on real threads: each
/// consumer gets exactly its quota and no 8-byte word is handed out twice.
#[test]
fn threads_never_hand_out_a_word_twice() {
    const CHUNK: usize = 256;
    let q = Arc::new(ChunkQueue::new(CHUNK, CHUNK * 16));
    let next = Arc::new(AtomicU64::new(0));
    let producers: Vec<_> = (0..3)
        .map(|_| {
            let (q, next) = (q.clone(), next.clone());
            thread::spawn(move || {
                let mut batch = Vec::new();
                while q.reserve(3, &mut batch).is_ok() {
                    for c in &mut batch {
                        c.refill(|b| {
                            for w in b.chunks_mut(8) {
                                w.copy_from_slice(
                                    &next.fetch_add(1, Ordering::Relaxed).to_le_bytes(),
                                );
                            }
                        });
                    }
                    q.push(&mut batch);
                }
            })
        })
        .collect();
    const QUOTA_WORDS: usize = 40_000;
    let fronts = Arc::new(AtomicU64::new(0));
    let consumers: Vec<_> = (0..4usize)
        .map(|k| {
            let (q, fronts) = (q.clone(), fronts.clone());
            thread::spawn(move || {
                let mut words: Vec<u64> = Vec::with_capacity(QUOTA_WORDS);
                let mut pending = VecDeque::new();
                let mut i = 0;
                while words.len() < QUOTA_WORDS {
                    i += 1;
                    let n = ((k * 7 + i) % 37 + 1).min(QUOTA_WORDS - words.len());
                    let front = if k == 2 && i % 2 == 0 {
                        // FUSE-style, a read the front chunk answers whole.
                        q.take_front(CHUNK)
                    } else {
                        None
                    };
                    if let Some(mut c) = front {
                        fronts.fetch_add(1, Ordering::Relaxed);
                        words.extend(
                            c.unread()
                                .chunks(8)
                                .map(|w| u64::from_le_bytes(w.try_into().unwrap())),
                        );
                        c.consume(CHUNK);
                        q.recycle([c]);
                    } else if k % 2 == 0 || QUOTA_WORDS - words.len() < CHUNK / 8 * 2 {
                        // FUSE-style: exact takes of whole words.
                        let mut buf = vec![0u8; n * 8];
                        q.take_exact(&mut buf).unwrap();
                        words.extend(
                            buf.chunks(8)
                                .map(|w| u64::from_le_bytes(w.try_into().unwrap())),
                        );
                    } else {
                        // FIFO-style: whole chunks, handed out in two pieces
                        // (chunks only ever hold whole words here, because
                        // every exact take is a whole number of words).
                        q.take_chunks(n * 8, &mut pending).unwrap();
                        for c in &mut pending {
                            let first = c.len() / 16 * 8;
                            for n in [first, c.len() - first] {
                                words.extend(
                                    c.unread()[..n]
                                        .chunks(8)
                                        .map(|w| u64::from_le_bytes(w.try_into().unwrap())),
                                );
                                c.consume(n);
                            }
                        }
                        q.recycle(pending.drain(..));
                    }
                }
                words
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for c in consumers {
        let words = c.join().unwrap();
        assert!(words.len() >= QUOTA_WORDS);
        for w in words {
            assert!(seen.insert(w), "word {w} handed out twice");
        }
    }
    q.close();
    for p in producers {
        p.join().unwrap();
    }
    let produced = next.load(Ordering::Relaxed);
    assert!(seen.iter().all(|&w| w < produced));
    assert!(
        fronts.load(Ordering::Relaxed) > 0,
        "no read was answered from a whole chunk"
    );
}

/// A chunk of whole pages starts on a page, so that a read answered from
/// it spans as few pages as it can (the kernel pins each one); chunks of
/// other sizes work the same, wherever they lie.
#[test]
fn chunks_of_whole_pages_start_on_a_page() {
    let page = 4096;
    for size in [64, 192, 4032, 6016, 4096, 8192, 65536, 1 << 20] {
        let q = ChunkQueue::with_order(size, size * 4, Order::Made);
        let mut batch = Vec::new();
        q.reserve(4, &mut batch).unwrap();
        assert_eq!(batch.len(), 4);
        for (i, c) in batch.iter_mut().enumerate() {
            c.refill(|b| b.fill(low_byte(i + 1)));
            assert_eq!(c.unread(), vec![low_byte(i + 1); size]);
            let start = c.unread().as_ptr() as usize;
            if size % page == 0 {
                assert_eq!(start % page, 0, "a chunk of {size} bytes at {start:#x}");
            }
        }
        q.push(&mut batch);
        let mut all = vec![0u8; size * 4];
        q.take_exact(&mut all).unwrap();
        assert!(
            all.chunks(size)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == low_byte(i + 1)))
        );
    }
}

/// A producer that cannot allocate a chunk (memory exhausted) waits for one
/// to be recycled instead of aborting, and gets it.
#[test]
fn a_producer_that_cannot_allocate_waits_for_a_recycled_chunk() {
    let q = Arc::new(ChunkQueue::new(64, 64 * 4));
    q.limit_allocations(1);
    push_one(&q, filled(reserve_one(&q).unwrap()));
    // The only chunk leaves with a FIFO-style consumer.
    let mut pending = VecDeque::new();
    assert_eq!(q.take_chunks(1, &mut pending), Ok(64));
    let q1 = q.clone();
    let producer = thread::spawn(move || reserve_one(&q1).map(drop));
    wait_for(&q, waiting(0, 1));
    assert!(!producer.is_finished());
    pending[0].consume(64);
    q.recycle(pending.drain(..));
    assert_eq!(producer.join().unwrap(), Ok(()));
    // A queue allocated up front needs no allocation at all.
    let q = ChunkQueue::preallocate(64, 64 * 4, Order::Freshest).unwrap();
    q.limit_allocations(0);
    let mut batch = Vec::new();
    q.reserve(8, &mut batch).unwrap();
    assert_eq!(batch.len(), 4);
}

/// A wipe drops every queued byte and starts a new epoch; chunks reserved
/// before it are discarded when pushed, never queued.
#[test]
fn wipe_discards_queued_and_stale_chunks() {
    let q = ChunkQueue::new(64, 64 * 8);
    push_one(&q, filled(reserve_one(&q).unwrap()));
    let stale = filled(reserve_one(&q).unwrap());
    assert_eq!((stale.epoch(), q.epoch()), (0, 0));
    assert_eq!(q.wipe(), (1, 64));
    assert_eq!(q.queued_bytes(), 0);
    assert_eq!(q.push(&mut vec![stale]), 64);
    assert_eq!(q.queued_bytes(), 0);
    let fresh = reserve_one(&q).unwrap();
    assert_eq!(fresh.epoch(), 1);
    assert_eq!(q.push(&mut vec![filled(fresh)]), 0);
    assert_eq!(q.queued_bytes(), 64);
}

/// A read that had copied old bytes before waiting for more wipes them and
/// is served only bytes made after the wipe; a waiting chunk taker returns
/// empty-handed so that the FIFO writer can drop what it holds.
#[test]
fn wipe_reaches_waiting_consumers() {
    let q = Arc::new(ChunkQueue::new(64, 64 * 8));
    push_one(&q, filled(reserve_one(&q).unwrap()));
    let q1 = q.clone();
    let read = thread::spawn(move || {
        let mut buf = [0u8; 200];
        let discarded = q1.take_exact(&mut buf);
        (discarded, buf)
    });
    wait_for(&q, waiting(1, 0));
    let q2 = q.clone();
    let chunks = thread::spawn(move || q2.take_chunks(1, &mut VecDeque::new()));
    wait_for(&q, waiting(2, 0));
    assert_eq!(q.wipe(), (1, 0));
    assert_eq!(chunks.join().unwrap(), Ok(0));
    let mut batch = Vec::new();
    while batch.len() < 4 {
        q.reserve(4 - batch.len(), &mut batch).unwrap();
    }
    batch.iter_mut().for_each(|c| c.refill(|b| b.fill(2)));
    q.push(&mut batch);
    let (discarded, buf) = read.join().unwrap();
    assert_eq!(discarded, Ok(64));
    assert!(
        buf.iter().all(|&b| b == 2),
        "bytes from before the wipe served"
    );
}
