//! The chunk queue under shuttle's randomized schedulers: the same
//! `src/engine/queue.rs`, compiled here against `shuttle::sync`, so every lock,
//! wait and notify is a point where shuttle may switch threads. A lost
//! wake-up shows up as a deadlock report; a replayed byte as a failed assert.

use std::collections::{HashSet, VecDeque};

use shuttle::sync::Arc;
use shuttle::thread;

/// `src/engine/` as this file compiles it: the queue, and in place of its
/// sibling `sync` (the only module it imports) shuttle's primitives.
#[path = "../src/engine"]
mod engine {
    pub(crate) mod sync {
        pub(crate) use shuttle::sync::{Condvar, Mutex, MutexGuard};
    }
    #[allow(dead_code, reason = "the model tests use part of the queue's API")]
    #[allow(unsafe_code, reason = "the queue's Block, as in the library")]
    pub(crate) mod queue;
}

use engine::queue::{ChunkQueue, Closed};

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

/// `producers` producers numbering their bytes, one exact taker (reading
/// like the FUSE file: see [`read`]) and one chunk taker; small sizes so
/// that the queue fills, drains and wakes often.
/// The exact taker's last read is longer than the queue (and, as
/// `take_exact` holds three chunks at a time under test, takes several
/// rounds of copying outside the lock).
/// With 8 or more chunks of capacity the chunk taker must also leave the
/// small-read reserve alone.
///
/// With `alloc_limit`, only that many chunks can ever be allocated, so
/// producers must wait for recycled ones (memory exhausted).
fn scenario(producers: u8, chunks: usize, alloc_limit: Option<usize>) {
    const CHUNK: usize = 8;
    let q = Arc::new(ChunkQueue::new(CHUNK, CHUNK * chunks));
    if let Some(n) = alloc_limit {
        q.limit_allocations(n);
    }
    assert_eq!(q.small_reserve(), if chunks >= 8 { CHUNK } else { 0 });
    let producers: Vec<_> = (0..producers)
        .map(|p| {
            let q = q.clone();
            thread::spawn(move || {
                let mut n = 0u8;
                let mut batch = Vec::new();
                while q.reserve(2, &mut batch).is_ok() {
                    for c in batch.iter_mut() {
                        c.refill(|b| {
                            for x in b.iter_mut() {
                                // Producer in the top bit, sequence below.
                                *x = (p << 7) | (n & 0x7f);
                                n = n.wrapping_add(1);
                            }
                        });
                    }
                    q.push(&mut batch);
                }
            })
        })
        .collect();
    let q1 = q.clone();
    let exact = thread::spawn(move || {
        let mut got = Vec::new();
        for n in [3usize, 8, 5, 37] {
            got.extend(read(&q1, n));
        }
        got
    });
    let q2 = q.clone();
    let chunks = thread::spawn(move || {
        let mut got = Vec::new();
        let mut pending = VecDeque::new();
        while got.len() < 20 {
            q2.take_chunks(6, &mut pending).unwrap();
            for c in pending.iter_mut() {
                let n = c.len();
                got.extend_from_slice(c.unread());
                c.consume(n);
            }
            q2.recycle(pending.drain(..));
        }
        got
    });
    let a = exact.join().unwrap();
    let b = chunks.join().unwrap();
    assert_eq!(a.len(), 53);
    assert!(b.len() >= 20);
    q.close();
    for p in producers {
        p.join().unwrap();
    }
    // Each producer's sequence is strictly increasing (mod 128) in the
    // bytes it made, so a byte seen twice is a byte handed out twice.
    let mut seen = HashSet::new();
    for x in a.iter().chain(b.iter()) {
        assert!(seen.insert(*x), "byte {x:#04x} handed out twice");
    }
    assert_eq!(q.take_exact(&mut [0u8; 1]), Err(Closed));
}

/// A wipe (VM fork) while a producer fills and both kinds of consumer
/// take: every byte carries the epoch its chunk was reserved in, and no
/// take ever mixes epochs or goes back to an older one, so nothing made
/// before a wipe comes out after it; nobody deadlocks.
fn wipe_scenario() {
    const CHUNK: usize = 8;
    let q = Arc::new(ChunkQueue::new(CHUNK, CHUNK * 3));
    let qp = q.clone();
    let producer = thread::spawn(move || {
        let mut batch = Vec::new();
        while qp.reserve(2, &mut batch).is_ok() {
            for c in batch.iter_mut() {
                let tag = c.epoch() as u8;
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
            for c in pending.iter_mut() {
                assert!(c.unread().iter().all(|&b| b == c.epoch() as u8));
                assert!(c.epoch() as u8 >= last, "a chunk from an old epoch");
                last = c.epoch() as u8;
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
fn random_schedules_one_producer() {
    shuttle::check_random(|| scenario(1, 3, None), 1000);
}

#[test]
fn random_schedules_two_producers() {
    shuttle::check_random(|| scenario(2, 3, None), 1000);
}

#[test]
fn random_schedules_with_small_read_reserve() {
    shuttle::check_random(|| scenario(1, 8, None), 1000);
}

/// Out of memory after one or two chunks: producers wait for recycled
/// chunks, and a lost wake-up there would be a deadlock.
#[test]
fn random_schedules_out_of_memory() {
    shuttle::check_random(|| scenario(1, 3, Some(1)), 1000);
    shuttle::check_random(|| scenario(2, 3, Some(2)), 1000);
}

#[test]
fn random_schedules_with_a_wipe() {
    shuttle::check_random(wipe_scenario, 1000);
}

#[test]
fn pct_schedules() {
    shuttle::check_pct(|| scenario(1, 3, None), 1000, 3);
    shuttle::check_pct(|| scenario(2, 3, None), 1000, 3);
    shuttle::check_pct(|| scenario(2, 8, None), 1000, 3);
    shuttle::check_pct(|| scenario(2, 3, Some(1)), 1000, 3);
    shuttle::check_pct(wipe_scenario, 1000, 3);
}
