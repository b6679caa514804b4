//! Counters shared by every part of the daemon, rendered as `name value`
//! lines for the `stats` file.
//!
//! Every counter is updated exactly once per event with a relaxed atomic add,
//! so the figures are exact, not sampled; a snapshot taken while traffic flows
//! may of course mix counters from slightly different instants.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::queue::ChunkQueue;

/// The daemon's counters. See the README for what each one means.
#[derive(Debug)]
pub struct Stats {
    pub bytes_generated: AtomicU64,
    pub bytes_served_fuse: AtomicU64,
    pub bytes_served_fifo: AtomicU64,
    pub fuse_reads: AtomicU64,
    pub fifo_writev_calls: AtomicU64,
    pub fifo_partial_writes: AtomicU64,
    pub reseeds: AtomicU64,
    started: Instant,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            bytes_generated: AtomicU64::new(0),
            bytes_served_fuse: AtomicU64::new(0),
            bytes_served_fifo: AtomicU64::new(0),
            fuse_reads: AtomicU64::new(0),
            fifo_writev_calls: AtomicU64::new(0),
            fifo_partial_writes: AtomicU64::new(0),
            reseeds: AtomicU64::new(0),
            started: Instant::now(),
        }
    }
}

/// Adds `n` to a counter.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// The counters and the queue's state as `name value` lines.
    pub fn render(&self, queue: &ChunkQueue) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let lines: [(&str, u64); 12] = [
            ("bytes_generated", get(&self.bytes_generated)),
            ("bytes_served_fuse", get(&self.bytes_served_fuse)),
            ("bytes_served_fifo", get(&self.bytes_served_fifo)),
            ("queue_bytes", queue.queued_bytes() as u64),
            ("queue_capacity", queue.capacity() as u64),
            ("chunk_size", queue.chunk_size() as u64),
            ("fuse_reads", get(&self.fuse_reads)),
            ("fifo_writev_calls", get(&self.fifo_writev_calls)),
            ("fifo_partial_writes", get(&self.fifo_partial_writes)),
            ("consumer_waits", queue.consumer_waits()),
            ("reseeds", get(&self.reseeds)),
            ("uptime_seconds", self.started.elapsed().as_secs()),
        ];
        let mut out = String::new();
        for (name, value) in lines {
            writeln!(out, "{name} {value}").expect("writing to a String");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_counter_once() {
        let stats = Stats::default();
        add(&stats.bytes_served_fuse, 4096);
        add(&stats.fuse_reads, 1);
        let q = ChunkQueue::new(64, 1024);
        let text = stats.render(&q);
        let pairs: Vec<(&str, &str)> = text
            .lines()
            .map(|l| l.split_once(' ').expect("name value"))
            .collect();
        assert_eq!(pairs.len(), 12);
        assert!(pairs.contains(&("bytes_served_fuse", "4096")));
        assert!(pairs.contains(&("fuse_reads", "1")));
        assert!(pairs.contains(&("queue_capacity", "1024")));
        assert!(pairs.contains(&("queue_bytes", "0")));
        let mut names: Vec<_> = pairs.iter().map(|p| p.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 12);
    }
}
