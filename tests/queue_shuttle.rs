//! The chunk queue under shuttle's randomized schedulers: the same
//! `src/engine/queue.rs`, compiled here against `shuttle::sync`, so every lock,
//! wait and notify is a point where shuttle may switch threads. A lost
//! wake-up shows up as a deadlock report; a replayed byte as a failed assert.

use std::collections::{HashSet, VecDeque};

use shuttle::sync::Arc;
use shuttle::thread;

/// `src/engine/` as this file compiles it: the queue, and in place of its
/// sibling `sync` shuttle's primitives.
#[path = "../src/engine"]
mod engine {
    pub(crate) mod sync {
        pub(crate) use shuttle::sync::{Condvar, Mutex, MutexGuard};
    }
    #[allow(dead_code, reason = "the model tests use part of the queue's API")]
    pub(crate) mod queue;
}

/// The other module the queue imports: its chunks' memory, as in the library.
#[path = "../src/sys"]
mod sys {
    #[allow(dead_code, reason = "the queue uses part of it")]
    #[allow(unsafe_code, reason = "the mappings, as in the library")]
    pub(crate) mod memory;
}

use engine::queue::{ChunkQueue, Closed, Order};

/// Reads `n` bytes as the FUSE file does: from the front chunk itself when
/// it holds exactly `n`, else by copying.
fn read(q: &ChunkQueue, n: usize) -> Vec<u8> {
    if let Some(mut c) = q.take_front(n) {
        let got = c.unread().to_vec();
        c.consume(n);
        q.recycle([c]);
        return got;
    }
    let mut buf = vec![0u8; n];
    q.take_exact(&mut buf).unwrap();
    buf
}

/// Runs `model` under shuttle's random scheduler and its PCT scheduler
/// (depth 3), 1000 schedules each.
fn check(model: fn()) {
    shuttle::check_random(model, 1000);
    shuttle::check_pct(model, 1000, 3);
}

const CHUNK: usize = 8;

/// A queue of `chunks` chunks of [`CHUNK`] bytes, letting only
/// `alloc_limit` chunks ever be allocated if given (memory exhausted).
fn queue(chunks: usize, alloc_limit: Option<usize>) -> Arc<ChunkQueue> {
    let q = Arc::new(ChunkQueue::new(CHUNK, CHUNK * chunks));
    if let Some(n) = alloc_limit {
        q.limit_allocations(n);
    }
    assert_eq!(q.small_reserve(), if chunks >= 8 { CHUNK } else { 0 });
    q
}

/// Starts `count` producers that fill until the queue closes (or, with
/// `limit`, after that many chunks each). Producer `p` writes `p` in the
/// top bit of each byte and its own sequence number below, so a byte seen
/// twice is a byte handed out twice.
fn producers(q: &Arc<ChunkQueue>, count: u8, limit: Option<usize>) -> Vec<thread::JoinHandle<()>> {
    (0..count)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || {
                let mut n = 0u8;
                let mut made = 0;
                let mut batch = Vec::new();
                while limit.is_none_or(|l| made < l) && q.reserve(2, &mut batch).is_ok() {
                    if let Some(l) = limit {
                        let keep = (l - made).min(batch.len());
                        q.unreserve(&mut batch.split_off(keep));
                    }
                    for c in &mut batch {
                        c.refill(|b| {
                            for x in b.iter_mut() {
                                *x = (p << 7) | (n & 0x7f);
                                n = n.wrapping_add(1);
                            }
                        });
                    }
                    made += batch.len();
                    q.push(&mut batch);
                }
            })
        })
        .collect()
}

/// A consumer like the FIFO writer: takes whole chunks (asking for `want`
/// bytes at a time) until it has at least `at_least` bytes.
fn take_chunks(q: &ChunkQueue, want: usize, at_least: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut pending = VecDeque::new();
    while got.len() < at_least {
        q.take_chunks(want, &mut pending).unwrap();
        for c in &mut pending {
            let n = c.len();
            got.extend_from_slice(c.unread());
            c.consume(n);
        }
        q.recycle(pending.drain(..));
    }
    got
}

/// Asserts that no byte occurs twice in `outputs` (see [`producers`]).
fn assert_each_byte_once(outputs: &[&[u8]]) {
    let mut seen = HashSet::new();
    for x in outputs.iter().flat_map(|o| o.iter()) {
        assert!(seen.insert(*x), "byte {x:#04x} handed out twice");
    }
}

/// Closes the queue and joins its producers.
fn close(q: &ChunkQueue, producers: Vec<thread::JoinHandle<()>>) {
    q.close();
    for p in producers {
        p.join().unwrap();
    }
}

/// Two producers, an exact taker (reading like the FUSE file) and a chunk
/// taker at once: no byte is handed out twice, and none is lost from a
/// read (each gets all it asked for).
fn no_byte_twice() {
    let q = queue(3, None);
    let made = producers(&q, 2, None);
    let (q1, q2) = (q.clone(), q.clone());
    let exact = thread::spawn(move || [3usize, 8, 5].map(|n| read(&q1, n)).concat());
    let chunks = thread::spawn(move || take_chunks(&q2, 6, 20));
    let (a, b) = (exact.join().unwrap(), chunks.join().unwrap());
    assert_eq!(a.len(), 16);
    assert!(b.len() >= 20);
    close(&q, made);
    assert_each_byte_once(&[&a, &b]);
}

#[test]
fn no_byte_is_handed_out_twice() {
    check(no_byte_twice);
}

/// A read longer than the whole queue (37 bytes of a 24-byte queue, taken
/// three held chunks at a time under test) completes, in one producer's
/// order (`Order::Made`, as seeded mode runs), while a chunk taker competes.
fn long_read() {
    let q = Arc::new(ChunkQueue::with_order(CHUNK, CHUNK * 3, Order::Made));
    let made = producers(&q, 1, None);
    let q2 = q.clone();
    let chunks = thread::spawn(move || take_chunks(&q2, 6, 8));
    let a = read(&q, 37);
    let b = chunks.join().unwrap();
    close(&q, made);
    assert_eq!(a.len(), 37);
    assert!(a.windows(2).all(|w| w[0] < w[1]), "out of order: {a:?}");
    assert_each_byte_once(&[&a, &b]);
}

#[test]
fn a_read_longer_than_the_queue_completes() {
    check(long_read);
}

/// `Order::Made` (seeded mode) with readers of all three kinds at once:
/// each gets the one producer's stream in order, a rising run of its
/// sequence numbers, and no byte goes to two of them.
fn made_order() {
    let q = Arc::new(ChunkQueue::with_order(CHUNK, CHUNK * 3, Order::Made));
    let made = producers(&q, 1, None);
    let (q1, q2) = (q.clone(), q.clone());
    let exact = thread::spawn(move || [3usize, 8, 5, 8].map(|n| read(&q1, n)).concat());
    let chunks = thread::spawn(move || take_chunks(&q2, 6, 20));
    let long = read(&q, 30);
    let (a, b) = (exact.join().unwrap(), chunks.join().unwrap());
    close(&q, made);
    for out in [&a, &b, &long] {
        assert!(out.windows(2).all(|w| w[0] < w[1]), "out of order: {out:?}");
    }
    assert_each_byte_once(&[&a, &b, &long]);
}

#[test]
fn made_order_hands_each_reader_the_stream_in_order() {
    check(made_order);
}

/// With 8 chunks of capacity the last chunk's worth is the small-read
/// reserve: a greedy chunk taker leaves it alone, so a small read gets it
/// even when the producer has made its last chunk.
fn reserve() {
    let q = queue(8, None);
    let made = producers(&q, 1, Some(8));
    let q2 = q.clone();
    let greedy = thread::spawn(move || {
        let mut pending = VecDeque::new();
        let mut got = 0;
        while let Ok(n) = q2.take_chunks(64, &mut pending) {
            got += n;
            for c in &mut pending {
                let n = c.len();
                c.consume(n);
            }
            q2.recycle(pending.drain(..));
        }
        got
    });
    let small = read(&q, CHUNK);
    assert_eq!(small.len(), CHUNK);
    for p in made {
        p.join().unwrap();
    }
    q.close();
    assert!(greedy.join().unwrap() <= 7 * CHUNK, "took the reserve");
}

#[test]
fn bulk_takers_leave_the_small_read_reserve() {
    check(reserve);
}

/// Memory runs out after one or two chunks: producers wait for recycled
/// chunks, and a lost wake-up there would be a deadlock (which shuttle
/// reports).
fn out_of_memory() {
    for (count, limit) in [(1, 1), (2, 2)] {
        let q = queue(3, Some(limit));
        let made = producers(&q, count, None);
        let q2 = q.clone();
        let chunks = thread::spawn(move || take_chunks(&q2, 6, 20));
        let a = [3usize, 8, 5, 37].map(|n| read(&q, n)).concat();
        let b = chunks.join().unwrap();
        close(&q, made);
        assert_eq!(a.len(), 53);
        assert_each_byte_once(&[&a, &b]);
    }
}

#[test]
fn producers_out_of_memory_wait_for_recycled_chunks() {
    check(out_of_memory);
}

/// Closing wakes every waiter: consumers waiting on an empty queue and a
/// producer waiting for room in a full one all return, and nothing is
/// taken afterwards.
fn close_wakes() {
    let empty = queue(3, None);
    let q1 = empty.clone();
    let exact = thread::spawn(move || q1.take_exact(&mut [0u8; 5]));
    let q2 = empty.clone();
    let chunks = thread::spawn(move || q2.take_chunks(6, &mut VecDeque::new()));
    let full = queue(3, None);
    let q3 = full.clone();
    let producer = thread::spawn(move || {
        let mut batch = Vec::new();
        while q3.reserve(1, &mut batch).is_ok() {
            batch.iter_mut().for_each(|c| c.refill(|b| b.fill(1)));
            q3.push(&mut batch);
        }
    });
    empty.close();
    full.close();
    assert_eq!(exact.join().unwrap(), Err(Closed));
    assert_eq!(chunks.join().unwrap(), Err(Closed));
    producer.join().unwrap();
    assert_eq!(full.take_exact(&mut [0u8; 1]), Err(Closed));
}

#[test]
fn close_wakes_every_waiter() {
    check(close_wakes);
}

/// A wipe (VM fork) while a producer fills and both kinds of consumer
/// take: every byte carries the epoch its chunk was reserved in, and no
/// take ever mixes epochs or goes back to an older one, so nothing made
/// before a wipe comes out after it; nobody deadlocks.
fn wipe() {
    let q = Arc::new(ChunkQueue::new(CHUNK, CHUNK * 3));
    let qp = q.clone();
    let producer = thread::spawn(move || {
        let mut batch = Vec::new();
        while qp.reserve(2, &mut batch).is_ok() {
            for c in &mut batch {
                let tag = u8::try_from(c.epoch()).unwrap();
                c.refill(|b| b.fill(tag));
            }
            qp.push(&mut batch);
        }
    });
    let q1 = q.clone();
    let exact = thread::spawn(move || {
        let mut last = 0;
        for n in [3usize, 29, 5] {
            let buf = read(&q1, n);
            assert!(buf.iter().all(|&b| b == buf[0]), "a read mixed epochs");
            assert!(buf[0] >= last, "a read went back to an old epoch");
            last = buf[0];
        }
    });
    let q2 = q.clone();
    let chunks = thread::spawn(move || {
        let mut last = 0;
        let mut pending = VecDeque::new();
        for _ in 0..3 {
            q2.take_chunks(6, &mut pending).unwrap();
            for c in &mut pending {
                let epoch = u8::try_from(c.epoch()).unwrap();
                assert!(c.unread().iter().all(|&b| b == epoch));
                assert!(epoch >= last, "a chunk from an old epoch");
                last = epoch;
                let n = c.len();
                c.consume(n);
            }
            q2.recycle(pending.drain(..));
        }
    });
    assert_eq!(q.wipe().0, 1);
    exact.join().unwrap();
    chunks.join().unwrap();
    q.close();
    producer.join().unwrap();
}

#[test]
fn a_wipe_lets_no_older_byte_out() {
    check(wipe);
}
