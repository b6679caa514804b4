//! The daemon's counters, named once: the list below makes the live
//! [`Stats`], the [`Snapshot`] that the `stats` file holds, and the code that
//! renders and parses that file, so adding a counter is a one-line change.
//!
//! Every event counter is updated exactly once per event with a relaxed
//! atomic add, so the figures are exact, not sampled; a snapshot taken while
//! traffic flows may of course mix counters from slightly different
//! instants. Gauges are read from the queue and the clock when a snapshot is
//! taken.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use log::info;

use crate::engine::queue::ChunkQueue;
use crate::error::printable;
use crate::units::{format_bytes, format_rate};

macro_rules! counters {
    (
        events { $( $(#[$event_doc:meta])* $event:ident, )* }
        gauges { $( $(#[$gauge_doc:meta])* $gauge:ident, )* }
    ) => {
        /// The daemon's live event counters, shared by every thread.
        #[derive(Debug)]
        pub(crate) struct Stats {
            $( $(#[$event_doc])* pub(crate) $event: AtomicU64, )*
            started: Instant,
        }

        impl Default for Stats {
            fn default() -> Self {
                Stats {
                    $( $event: AtomicU64::new(0), )*
                    started: Instant::now(),
                }
            }
        }

        /// One reading of every counter: what the `stats` file holds, one
        /// `name value` line each, in this order.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct Snapshot {
            $( $(#[$event_doc])* pub $event: u64, )*
            $( $(#[$gauge_doc])* pub $gauge: u64, )*
        }

        impl Snapshot {
            /// Every counter's name and value, in the file's order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![
                    $( (stringify!($event), self.$event), )*
                    $( (stringify!($gauge), self.$gauge), )*
                ]
            }

            /// The event counters, which never go down while a daemon runs.
            fn events(&self) -> Vec<u64> {
                vec![ $( self.$event, )* ]
            }

            fn field_mut(&mut self, name: &str) -> Option<&mut u64> {
                match name {
                    $( stringify!($event) => Some(&mut self.$event), )*
                    $( stringify!($gauge) => Some(&mut self.$gauge), )*
                    _ => None,
                }
            }
        }

        impl Stats {
            fn load_events(&self, into: &mut Snapshot) {
                $( into.$event = self.$event.load(Relaxed); )*
            }
        }
    };
}

counters! {
    events {
        /// Bytes the generators made.
        bytes_generated,
        /// Bytes handed to readers of the FUSE file.
        bytes_served_fuse,
        /// Bytes written into the FIFO's pipe.
        bytes_served_fifo,
        /// FUSE read requests answered.
        fuse_reads,
        /// FUSE requests (of any kind) answered over io_uring.
        fuse_uring_requests,
        /// `writev` calls on the FIFO.
        fifo_writev_calls,
        /// `writev` calls that took less than was offered.
        fifo_partial_writes,
        /// Times a generator took a fresh key.
        reseeds,
        /// VM forks (restores from a snapshot) handled.
        vm_forks,
        /// Bytes wiped unserved on VM forks: queued, pending for the FIFO, in the pipe.
        bytes_discarded,
    }
    gauges {
        /// Unread bytes in the queue.
        queue_bytes,
        /// Most bytes the queue holds.
        queue_capacity,
        /// Size of each chunk.
        chunk_size,
        /// Times a reader found the queue empty and waited.
        consumer_waits,
        /// Whole seconds since the daemon started.
        uptime_seconds,
        /// Kernel queues served over io_uring: 0 while the FUSE file is
        /// served over `/dev/fuse` (or not at all).
        fuse_uring_queues,
    }
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Relaxed);
}

impl Stats {
    /// Every counter now, with the gauges read from `queue`.
    pub(crate) fn snapshot(&self, queue: &ChunkQueue) -> Snapshot {
        let mut s = Snapshot {
            queue_bytes: queue.queued_bytes() as u64,
            queue_capacity: queue.capacity() as u64,
            chunk_size: queue.chunk_size() as u64,
            consumer_waits: queue.consumer_waits(),
            uptime_seconds: self.started.elapsed().as_secs(),
            ..Snapshot::default()
        };
        self.load_events(&mut s);
        s
    }
}

impl Snapshot {
    /// The `stats` file's text: one `name value` line per counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, value) in self.fields() {
            writeln!(out, "{name} {value}").expect("writing to a String");
        }
        out
    }

    /// Parses a `stats` file as a newer `pilfered status` may meet an older
    /// daemon's: unknown names are ignored (a newer daemon may add
    /// counters), and a missing counter reads as 0 and is named in the
    /// list returned with it. A file with none of them is no stats file.
    /// Messages show the file's control characters escaped.
    pub fn parse_lenient(text: &str) -> Result<(Snapshot, Vec<&'static str>), String> {
        let mut s = Snapshot::default();
        let mut seen = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = line
                .split_once(' ')
                .and_then(|(name, value)| Some((name, value.trim().parse::<u64>().ok()?)));
            let Some((name, value)) = parsed else {
                return Err(format!("unexpected line '{}'", printable(line)));
            };
            if let Some(field) = s.field_mut(name) {
                *field = value;
                seen.push(name.to_string());
            }
        }
        let fields = s.fields();
        let missing: Vec<&'static str> = fields
            .iter()
            .map(|(name, _)| *name)
            .filter(|name| !seen.iter().any(|n| n == name))
            .collect();
        if missing.len() == fields.len() {
            return Err("no counter in it".into());
        }
        Ok((s, missing))
    }

    /// Parses a `stats` file of this very version: like
    /// [`Snapshot::parse_lenient`], but a missing counter is an error naming
    /// it.
    pub fn parse(text: &str) -> Result<Snapshot, String> {
        let (s, missing) = Snapshot::parse_lenient(text)?;
        match missing.first() {
            Some(name) => Err(format!("no '{name}' line")),
            None => Ok(s),
        }
    }

    /// Whether `later` cannot come from the same daemon run as `self`:
    /// its uptime or an event counter went down.
    pub fn restarted_before(&self, later: &Snapshot) -> bool {
        later.uptime_seconds < self.uptime_seconds
            || later
                .events()
                .iter()
                .zip(self.events())
                .any(|(b, a)| *b < a)
    }
}

/// The throughput line that `serve -v` logs every few seconds.
pub(crate) struct Report {
    /// How often to log.
    pub every: Duration,
    last: Snapshot,
    at: Instant,
}

impl Report {
    /// Starts measuring from now.
    pub(crate) fn new(stats: &Stats, queue: &ChunkQueue, every: Duration) -> Report {
        Report {
            every,
            last: stats.snapshot(queue),
            at: Instant::now(),
        }
    }

    /// Logs the rates since the last line, and the queue's fill.
    pub(crate) fn log(&mut self, stats: &Stats, queue: &ChunkQueue) {
        let now = stats.snapshot(queue);
        let secs = self.at.elapsed().as_secs_f64().max(1e-3);
        let rate = |f: fn(&Snapshot) -> u64| format_rate((f(&now) - f(&self.last)) as f64 / secs);
        info!(
            "throughput: FUSE {}, FIFO {}, generated {}; queue {} of {}",
            rate(|s| s.bytes_served_fuse),
            rate(|s| s.bytes_served_fifo),
            rate(|s| s.bytes_generated),
            format_bytes(now.queue_bytes),
            format_bytes(now.queue_capacity),
        );
        self.last = now;
        self.at = Instant::now();
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
        let text = stats.snapshot(&q).render();
        let pairs: Vec<(&str, &str)> = text
            .lines()
            .map(|l| l.split_once(' ').expect("name value"))
            .collect();
        assert_eq!(pairs.len(), 16);
        assert!(pairs.contains(&("bytes_served_fuse", "4096")));
        assert!(pairs.contains(&("fuse_reads", "1")));
        assert!(pairs.contains(&("queue_capacity", "1024")));
        assert!(pairs.contains(&("queue_bytes", "0")));
        let mut names: Vec<_> = pairs.iter().map(|p| p.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 16);
    }

    #[test]
    fn parse_reads_what_render_writes() {
        let mut s = Snapshot::default();
        for (i, (name, _)) in Snapshot::default().fields().into_iter().enumerate() {
            *s.field_mut(name).unwrap() = 1000 + i as u64;
        }
        assert_eq!(Snapshot::parse(&s.render()), Ok(s));
        // Newer daemons may add counters: ignored.
        let more = s.render() + "some_future_counter 7\n";
        assert_eq!(Snapshot::parse(&more), Ok(s));
    }

    /// An older daemon's file lacks the newer counters: read as 0 and
    /// named, not refused. Nothing of the file is echoed raw.
    #[test]
    fn parse_lenient_accepts_an_older_daemons_file() {
        let s = Snapshot {
            vm_forks: 3,
            ..Snapshot::default()
        };
        let old: String = s
            .render()
            .lines()
            .filter(|l| !l.starts_with("vm_forks") && !l.starts_with("bytes_discarded"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            Snapshot::parse_lenient(&old),
            Ok((Snapshot::default(), vec!["vm_forks", "bytes_discarded"]))
        );
        assert_eq!(Snapshot::parse(&old), Err("no 'vm_forks' line".into()));
        assert_eq!(
            Snapshot::parse_lenient("x 1\n"),
            Err("no counter in it".into())
        );
        assert_eq!(
            Snapshot::parse_lenient("\u{1b}]0;owned\u{7}\n"),
            Err("unexpected line '\\x1b]0;owned\\x07'".into())
        );
    }

    #[test]
    fn restarts_show_as_counters_going_down() {
        let first = Snapshot {
            uptime_seconds: 10,
            bytes_generated: 100,
            ..Snapshot::default()
        };
        let mut later = first;
        later.uptime_seconds = 11;
        later.bytes_generated = 200;
        assert!(!first.restarted_before(&later));
        later.bytes_generated = 50;
        assert!(first.restarted_before(&later));
        later.bytes_generated = 200;
        later.uptime_seconds = 0;
        assert!(first.restarted_before(&later));
    }
}
