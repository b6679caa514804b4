//! Helper of `benches/throughput.sh`: the ceiling one generator sets, with
//! no queue and no reader. The daemon's own [`Generator`] fills 4 KiB
//! chunks, a batch of [`BATCH_BYTES`] at a time with its key erased after
//! each, as a generator thread does, cycling through 16 MiB (the default
//! queue) so that it writes to memory rather than to a buffer that stays in
//! cache.
//!
//! Usage: `keystream [BYTES]` (default 2 GiB); prints MB/s on stdout.

use std::time::Instant;

use pilfered::internal::{BATCH_BYTES, Generator, Key, Rounds};

const CHUNK: usize = 4 << 10;
const MEMORY: usize = 16 << 20;

fn main() {
    let bytes: usize = std::env::args()
        .nth(1)
        .map_or(2 << 30, |b| b.parse().expect("BYTES is a number"));
    let key = Key::from_os().expect("a key from the OS");
    let mut generator = Generator::from_key_erasing(&key, Rounds::R20);
    let mut memory = vec![0u8; MEMORY];
    // Touch every page first: the daemon's chunks are reused, not fresh.
    generator.fill(&mut memory);
    let start = Instant::now();
    let mut made = 0;
    while made < bytes {
        for batch in memory.chunks_mut(BATCH_BYTES) {
            for chunk in batch.chunks_mut(CHUNK) {
                generator.fill(chunk);
            }
            generator.erase_key();
        }
        made += MEMORY;
    }
    let seconds = start.elapsed().as_secs_f64();
    std::hint::black_box(&memory);
    println!("{:.0}", made as f64 / seconds / 1e6);
}
