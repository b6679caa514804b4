//! `pilfered status`: the daemon's `stats` file turned into a summary for
//! people, with units, rates and the queue's fill.
//!
//! The `stats` file holds exact counters and the uptime in whole seconds. One
//! sample gives totals and averages since start; a second sample a moment
//! later gives the current rates, measured over the time that really passed
//! between the two reads. The formatting is pure functions, tested below.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use crate::error::{Error, describe};
use crate::mounts;

/// Options of `pilfered status`.
#[derive(Args)]
pub struct StatusArgs {
    /// Mount point of the daemon to report on (the directory holding `bits`
    /// and `stats`).
    #[arg(long, value_name = "DIR", default_value = "/mnt/pilfered")]
    pub mount: PathBuf,

    /// Seconds between the two samples that the current rates are measured
    /// over; 0 takes one sample and shows only averages since start.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_interval, allow_negative_numbers = true)]
    pub interval: Duration,
}

/// Longest sample interval accepted.
const MAX_INTERVAL_SECS: f64 = 3600.0;

/// Parses `--interval`: seconds, fractions allowed (`0.5`).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if (0.0..=MAX_INTERVAL_SECS).contains(&secs) => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!(
            "expected a number of seconds from 0 to {MAX_INTERVAL_SECS}, like 1 or 0.5"
        )),
    }
}

/// One reading of the `stats` file: the counters `status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub bytes_generated: u64,
    pub bytes_served_fuse: u64,
    pub bytes_served_fifo: u64,
    pub queue_bytes: u64,
    pub queue_capacity: u64,
    pub fuse_reads: u64,
    pub fifo_writev_calls: u64,
    pub fifo_partial_writes: u64,
    pub consumer_waits: u64,
    pub reseeds: u64,
    pub uptime_seconds: u64,
    /// Optional: older daemons may not report it.
    pub chunk_size: Option<u64>,
}

impl Snapshot {
    /// Parses the `name value` lines of a `stats` file. Unknown names are
    /// ignored (newer daemons may add counters); a missing one is an error
    /// naming it.
    pub fn parse(text: &str) -> Result<Snapshot, String> {
        let mut values = HashMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = line
                .split_once(' ')
                .and_then(|(name, value)| Some((name, value.trim().parse::<u64>().ok()?)));
            match parsed {
                Some((name, value)) => values.insert(name, value),
                None => return Err(format!("unexpected line '{line}'")),
            };
        }
        let get = |name: &str| {
            values
                .get(name)
                .copied()
                .ok_or_else(|| format!("no '{name}' line"))
        };
        Ok(Snapshot {
            bytes_generated: get("bytes_generated")?,
            bytes_served_fuse: get("bytes_served_fuse")?,
            bytes_served_fifo: get("bytes_served_fifo")?,
            queue_bytes: get("queue_bytes")?,
            queue_capacity: get("queue_capacity")?,
            fuse_reads: get("fuse_reads")?,
            fifo_writev_calls: get("fifo_writev_calls")?,
            fifo_partial_writes: get("fifo_partial_writes")?,
            consumer_waits: get("consumer_waits")?,
            reseeds: get("reseeds")?,
            uptime_seconds: get("uptime_seconds")?,
            chunk_size: get("chunk_size").ok(),
        })
    }

    /// The counters that only ever grow, for comparing two samples.
    fn monotonic(&self) -> [u64; 8] {
        [
            self.bytes_generated,
            self.bytes_served_fuse,
            self.bytes_served_fifo,
            self.fuse_reads,
            self.fifo_writev_calls,
            self.fifo_partial_writes,
            self.consumer_waits,
            self.reseeds,
        ]
    }
}

/// A second sample taken `elapsed` after the first.
#[derive(Debug, Clone, Copy)]
pub struct Later {
    pub snapshot: Snapshot,
    pub elapsed: Duration,
}

/// Runs `pilfered status`.
pub fn run(args: StatusArgs) -> Result<(), Error> {
    let first = read_snapshot(&args.mount)?;
    let later = if args.interval.is_zero() {
        None
    } else {
        let started = Instant::now();
        std::thread::sleep(args.interval);
        let snapshot = read_snapshot(&args.mount)?;
        Some(Later {
            snapshot,
            elapsed: started.elapsed(),
        })
    };
    let text = render(&args.mount, &first, later.as_ref());
    match io::stdout().lock().write_all(text.as_bytes()) {
        // A closed pipe (`pilfered status | head -1`) is not an error.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Error::runtime(format!("stdout: {}", describe(&e))))
        }
        _ => Ok(()),
    }
}

/// Reads and parses `DIR/stats`, explaining why no daemon answers if none
/// does.
fn read_snapshot(dir: &Path) -> Result<Snapshot, Error> {
    let path = dir.join("stats");
    let none = |why: String| {
        Error::runtime(format!(
            "no pilfered daemon serves {}: {why}",
            dir.display()
        ))
    };
    let text = std::fs::read_to_string(&path).map_err(|e| none(why_unreadable(dir, &e)))?;
    Snapshot::parse(&text).map_err(|why| {
        none(format!(
            "{} is not a pilfered stats file ({why})",
            path.display()
        ))
    })
}

/// Why `DIR/stats` could not be read, in the user's terms.
fn why_unreadable(dir: &Path, e: &io::Error) -> String {
    let path = dir.join("stats");
    if e.raw_os_error() == Some(libc::ENOTCONN) {
        return format!(
            "{}: {} (the daemon died and left its mount behind; 'pilfered-umount {}' or 'umount -l {}' clears it)",
            path.display(),
            describe(e),
            dir.display(),
            dir.display()
        );
    }
    if e.kind() == io::ErrorKind::NotFound {
        match std::fs::metadata(dir) {
            Err(e) => return format!("{}: {}", dir.display(), describe(&e)),
            Ok(m) if !m.is_dir() => return format!("{} is not a directory", dir.display()),
            Ok(_) => {}
        }
        let mounted = dir
            .canonicalize()
            .ok()
            .and_then(|c| mounts::mount_at(&c).ok().flatten());
        return match mounted {
            None => "nothing is mounted there".to_string(),
            Some(m) => format!(
                "{} ({}) is mounted there, not pilfered",
                m.source, m.fs_type
            ),
        };
    }
    format!("{}: {}", path.display(), describe(e))
}

/// The report for people: totals with units, rates now (when a second
/// sample exists) and on average since start, queue fill and uptime.
pub fn render(dir: &Path, first: &Snapshot, later: Option<&Later>) -> String {
    let last = later.map_or(first, |l| &l.snapshot);
    // A daemon restarted between the samples: its counters started again.
    let restarted = later.is_some_and(|l| {
        l.snapshot.uptime_seconds < first.uptime_seconds
            || l.snapshot
                .monotonic()
                .iter()
                .zip(first.monotonic())
                .any(|(b, a)| *b < a)
    });
    let window = later.filter(|_| !restarted).map(|l| l.elapsed);
    let now = |f: fn(&Snapshot) -> u64| {
        window.map(|w| (f(last) - f(first)) as f64 / w.as_secs_f64().max(1e-3))
    };
    let average = |f: fn(&Snapshot) -> u64| {
        (last.uptime_seconds > 0).then(|| f(last) as f64 / last.uptime_seconds as f64)
    };
    let flow = |f: fn(&Snapshot) -> u64| {
        let mut parts = Vec::new();
        if let Some(r) = now(f) {
            parts.push(format!("{} now", format_rate(r)));
        }
        if let Some(r) = average(f) {
            parts.push(format!("{} average", format_rate(r)));
        }
        if parts.is_empty() {
            format_bytes(f(last))
        } else {
            format!("{} ({})", format_bytes(f(last)), parts.join(", "))
        }
    };

    let mut rows: Vec<(&str, String)> = vec![
        ("mount", dir.display().to_string()),
        ("uptime", format_duration(last.uptime_seconds)),
        (
            "generated",
            format!("{}, {} reseeds", flow(|s| s.bytes_generated), last.reseeds),
        ),
        (
            "served via FUSE",
            format!(
                "{} in {} reads",
                flow(|s| s.bytes_served_fuse),
                last.fuse_reads
            ),
        ),
        (
            "served via FIFO",
            format!(
                "{} in {} writev calls, {} partial",
                flow(|s| s.bytes_served_fifo),
                last.fifo_writev_calls,
                last.fifo_partial_writes
            ),
        ),
    ];
    let mut queue = format!(
        "{} of {} ({})",
        format_bytes(last.queue_bytes),
        format_bytes(last.queue_capacity),
        format_percent(last.queue_bytes, last.queue_capacity)
    );
    if let Some(chunk) = last.chunk_size {
        write!(queue, " in chunks of {}", format_bytes(chunk)).expect("writing to a String");
    }
    rows.push(("queue", queue));
    let mut waits = format!("{} (readers found the queue empty)", last.consumer_waits);
    if let (Some(l), false) = (later, restarted) {
        waits = format!(
            "{}, {} in the last {:.1} s",
            waits,
            last.consumer_waits - first.consumer_waits,
            l.elapsed.as_secs_f64()
        );
    }
    rows.push(("consumer waits", waits));
    if restarted {
        rows.push((
            "note",
            "the daemon restarted between the two samples; no current rates".to_string(),
        ));
    }

    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in rows {
        writeln!(out, "{:<width$} {value}", format!("{label}:")).expect("writing to a String");
    }
    out
}

const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// A byte count for people, in powers of 1024 with three significant
/// digits: `512 B`, `4 KiB`, `15.9 MiB`, `12.3 GiB`. Exact multiples of a
/// unit show no decimals (`16 MiB`).
pub fn format_bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    let exp = ((63 - n.leading_zeros()) / 10).min(UNITS.len() as u32) as usize;
    let unit = 1u64 << (10 * exp);
    if n.is_multiple_of(unit) {
        return format!("{} {}", n / unit, UNITS[exp - 1]);
    }
    scaled(n as f64, "")
}

/// A rate in bytes per second, like [`format_bytes`]: `540 MiB/s`.
pub fn format_rate(bytes_per_second: f64) -> String {
    if bytes_per_second < 1023.5 {
        return format!("{:.0} B/s", bytes_per_second.max(0.0));
    }
    scaled(bytes_per_second, "/s")
}

/// `v` (at least 1023.5) in the largest binary unit it reaches, with three
/// significant digits.
fn scaled(v: f64, suffix: &str) -> String {
    let mut exp = 0;
    let mut x = v;
    // Move up while the value would print as 1024 or more of this unit.
    while exp < UNITS.len() && x >= 1023.5 {
        x /= 1024.0;
        exp += 1;
    }
    let text = if x < 9.995 {
        format!("{x:.2}")
    } else if x < 99.95 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    };
    format!("{text} {}{suffix}", UNITS[exp - 1])
}

/// A fill level as a whole percentage, rounded down, so that `100%` means
/// exactly full.
pub fn format_percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_string();
    }
    format!("{}%", (part as u128 * 100 / whole as u128))
}

/// A duration for people: `45s`, `3m 05s`, `1h 02m 03s`, `2d 03h 04m 05s`.
pub fn format_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m {s:02}s")
    } else if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1 KiB");
        assert_eq!(format_bytes(1536), "1.50 KiB");
        assert_eq!(format_bytes(4096), "4 KiB");
        assert_eq!(format_bytes(16 << 20), "16 MiB");
        assert_eq!(format_bytes((159 << 20) / 10), "15.9 MiB");
        assert_eq!(format_bytes(13_207_024_435), "12.3 GiB");
        assert_eq!(format_bytes(123_456_789), "118 MiB");
        // Rounding never shows 1024 of a unit: it moves to the next one.
        assert_eq!(format_bytes((1 << 20) - 1), "1.00 MiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates() {
        assert_eq!(format_rate(0.0), "0 B/s");
        assert_eq!(format_rate(999.4), "999 B/s");
        assert_eq!(format_rate(1023.6), "1.00 KiB/s");
        assert_eq!(format_rate(540.0 * 1048576.0), "540 MiB/s");
        assert_eq!(format_rate(48.04 * 1048576.0), "48.0 MiB/s");
        assert_eq!(format_rate(1.234 * 1073741824.0), "1.23 GiB/s");
        assert_eq!(format_rate(9.999 * 1048576.0), "10.0 MiB/s");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(185), "3m 05s");
        assert_eq!(format_duration(3723), "1h 02m 03s");
        assert_eq!(
            format_duration(2 * 86_400 + 3 * 3600 + 4 * 60 + 5),
            "2d 03h 04m 05s"
        );
    }

    #[test]
    fn percent_is_rounded_down() {
        assert_eq!(format_percent(0, 16), "0%");
        assert_eq!(format_percent(15_999, 16_000), "99%");
        assert_eq!(format_percent(16, 16), "100%");
        assert_eq!(format_percent(1, 0), "-");
        assert_eq!(format_percent(u64::MAX, u64::MAX), "100%");
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("0"), Ok(Duration::ZERO));
        for bad in ["-1", "x", "", "NaN", "inf", "3601"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    const STATS: &str = "\
bytes_generated 13207024435
bytes_served_fuse 12000000000
bytes_served_fifo 1190247219
queue_bytes 16670720
queue_capacity 16777216
chunk_size 4096
fuse_reads 11444
fifo_writev_calls 4567
fifo_partial_writes 12
consumer_waits 3
reseeds 0
uptime_seconds 3723
some_future_counter 7
";

    #[test]
    fn parses_stats_and_names_what_is_missing() {
        let s = Snapshot::parse(STATS).unwrap();
        assert_eq!(s.bytes_served_fuse, 12_000_000_000);
        assert_eq!(s.chunk_size, Some(4096));
        assert_eq!(s.uptime_seconds, 3723);
        let without = STATS.replace("queue_capacity 16777216\n", "");
        assert_eq!(
            Snapshot::parse(&without),
            Err("no 'queue_capacity' line".into())
        );
        assert_eq!(
            Snapshot::parse("bytes_generated lots\n"),
            Err("unexpected line 'bytes_generated lots'".into())
        );
        let no_chunk = STATS.replace("chunk_size 4096\n", "");
        assert_eq!(Snapshot::parse(&no_chunk).unwrap().chunk_size, None);
    }

    #[test]
    fn report_with_two_samples() {
        let first = Snapshot::parse(STATS).unwrap();
        let mut second = first;
        second.bytes_generated += 540 << 20;
        second.bytes_served_fuse += 540 << 20;
        second.fuse_reads += 540;
        second.consumer_waits += 2;
        second.uptime_seconds += 1;
        let later = Later {
            snapshot: second,
            elapsed: Duration::from_secs(1),
        };
        let text = render(Path::new("/mnt/pilfered"), &first, Some(&later));
        assert_eq!(
            text,
            "\
mount:           /mnt/pilfered
uptime:          1h 02m 04s
generated:       12.8 GiB (540 MiB/s now, 3.53 MiB/s average), 0 reseeds
served via FUSE: 11.7 GiB (540 MiB/s now, 3.22 MiB/s average) in 11984 reads
served via FIFO: 1.11 GiB (0 B/s now, 312 KiB/s average) in 4567 writev calls, 12 partial
queue:           15.9 MiB of 16 MiB (99%) in chunks of 4 KiB
consumer waits:  5 (readers found the queue empty), 2 in the last 1.0 s
"
        );
    }

    #[test]
    fn report_with_one_sample_and_no_uptime_yet() {
        let mut s = Snapshot::parse(STATS).unwrap();
        s.uptime_seconds = 0;
        s.chunk_size = None;
        let text = render(Path::new("/m"), &s, None);
        assert!(
            text.contains("served via FUSE: 11.2 GiB in 11444 reads\n"),
            "{text}"
        );
        assert!(
            text.contains("queue:           15.9 MiB of 16 MiB (99%)\n"),
            "{text}"
        );
        assert!(
            text.contains("consumer waits:  3 (readers found the queue empty)\n"),
            "{text}"
        );
        assert!(text.contains("uptime:          0s\n"), "{text}");
    }

    #[test]
    fn report_across_a_restart_shows_no_current_rates() {
        let first = Snapshot::parse(STATS).unwrap();
        let second = Snapshot {
            uptime_seconds: 0,
            bytes_generated: 4096,
            ..first
        };
        let later = Later {
            snapshot: second,
            elapsed: Duration::from_secs(1),
        };
        let text = render(Path::new("/m"), &first, Some(&later));
        assert!(!text.contains(" now"), "{text}");
        assert!(text.contains("note:"), "{text}");
    }
}
