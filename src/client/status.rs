//! `pilfered status`: the daemon's `stats` file turned into a summary for
//! people, with units, rates and the queue's fill.
//!
//! The `stats` file holds exact counters and the uptime in whole seconds. One
//! sample gives totals and averages since start; a second sample a moment
//! later gives the current rates, measured over the time that really passed
//! between the two reads. The formatting is pure functions, tested below.

use std::fmt::Write as _;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::engine::stats::Snapshot;
use crate::error::{Error, describe, printable};
use crate::sys::mounts;
use crate::units::{format_bytes, format_duration, format_percent, format_rate};

/// A second sample taken `elapsed` after the first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Later {
    pub snapshot: Snapshot,
    pub elapsed: Duration,
}

/// Runs `pilfered status` on the daemon mounted at `mount`: one sample,
/// and with a non-zero `interval` a second one that long after.
pub(crate) fn run(mount: &Path, interval: Duration) -> Result<(), Error> {
    let (first, mut missing) = read_snapshot(mount)?;
    let later = if interval.is_zero() {
        None
    } else {
        let started = Instant::now();
        std::thread::sleep(interval);
        let (snapshot, now_missing) = read_snapshot(mount)?;
        missing = now_missing;
        Some(Later {
            snapshot,
            elapsed: started.elapsed(),
        })
    };
    let text = render(mount, &first, later.as_ref(), &missing);
    match io::stdout().lock().write_all(text.as_bytes()) {
        // A closed pipe (`pilfered status | head -1`) is not an error.
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Error::runtime(format!("stdout: {}", describe(&e))))
        }
        _ => Ok(()),
    }
}

/// Most of a `stats` file read: a real one is well under 1 KiB.
const STATS_MAX: u64 = 64 << 10;

/// Reads and parses `DIR/stats`, explaining why no daemon answers if none
/// does. Only a regular file on a `fuse.pilfered` mount at `DIR` counts: it
/// is opened without blocking (a FIFO there cannot hang us) or following a
/// symlink, and read to at most [`STATS_MAX`] bytes.
fn read_snapshot(dir: &Path) -> Result<(Snapshot, Vec<&'static str>), Error> {
    let path = dir.join("stats");
    let shown = |p: &Path| printable(&p.display().to_string());
    let none =
        |why: String| Error::runtime(format!("no pilfered daemon serves {}: {why}", shown(dir)));
    let mount_dev = pilfered_mount(dir).map_err(|why| why.map_or_else(|| denied(dir), none))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| unreadable(dir, &e))?;
    let meta = file.metadata().map_err(|e| unreadable(dir, &e))?;
    if !meta.is_file() || meta.dev() != mount_dev {
        return Err(none(format!(
            "{} is not the daemon's stats file (not a regular file of the mount)",
            shown(&path)
        )));
    }
    let mut bytes = Vec::new();
    file.take(STATS_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(dir, &e))?;
    if bytes.len() as u64 > STATS_MAX {
        return Err(none(format!(
            "{} is larger than {STATS_MAX} bytes, not a pilfered stats file",
            shown(&path)
        )));
    }
    Snapshot::parse_lenient(&String::from_utf8_lossy(&bytes)).map_err(|why| {
        none(format!(
            "{} is not a pilfered stats file ({why})",
            shown(&path)
        ))
    })
}

/// The device number of the `fuse.pilfered` mount at `dir`, or why there
/// is none, in the user's terms (`None`: a pilfered mount is there, but
/// its daemon lets us in no further than the mount table).
fn pilfered_mount(dir: &Path) -> Result<u64, Option<String>> {
    let shown = printable(&dir.display().to_string());
    let meta = match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => m,
        Ok(_) => return Err(Some(format!("{shown} is not a directory"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Some(format!(
                "nothing is mounted there ({shown} does not exist)"
            )));
        }
        // Only the mounting user may even look at a FUSE mount without
        // allow_other: the mount table says whose it is.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let mounted = std::path::absolute(dir)
                .ok()
                .and_then(|a| mounts::mount_at(&a).ok().flatten());
            return Err(match mounted {
                Some(m) if m.fs_type == mounts::FS_TYPE => None,
                _ => Some(why_unreadable(dir, &e)),
            });
        }
        Err(e) => return Err(Some(why_unreadable(dir, &e))),
    };
    let mounted = dir
        .canonicalize()
        .ok()
        .and_then(|c| mounts::mount_at(&c).ok().flatten());
    match mounted {
        None => Err(Some("nothing is mounted there".to_string())),
        Some(m) if m.fs_type == mounts::FS_TYPE => Ok(meta.dev()),
        Some(m) => Err(Some(printable(&format!(
            "{} ({}) is mounted there, not pilfered",
            m.source, m.fs_type
        )))),
    }
}

/// `DIR/stats` could not be read: permission denied (a daemon is there),
/// or why no daemon answers.
fn unreadable(dir: &Path, e: &io::Error) -> Error {
    if e.kind() == io::ErrorKind::PermissionDenied {
        return denied(dir);
    }
    let shown = printable(&dir.display().to_string());
    Error::runtime(format!(
        "no pilfered daemon serves {shown}: {}",
        why_unreadable(dir, e)
    ))
}

/// A pilfered daemon serves `dir`, but not to us.
fn denied(dir: &Path) -> Error {
    let d = printable(&dir.display().to_string());
    Error::runtime(format!(
        "{d}/stats: Permission denied: the pilfered daemon there lets only its own user (or its --group) read; start it with --group NAME and be a member of NAME, or with --allow-other"
    ))
}

/// Why `DIR/stats` could not be read, in the user's terms.
fn why_unreadable(dir: &Path, e: &io::Error) -> String {
    let d = printable(&dir.display().to_string());
    if e.raw_os_error().is_some_and(mounts::daemon_gone) {
        return format!(
            "{d}/stats: {} (the daemon died and left its mount behind; 'pilfered-umount {d}' or 'umount -l {d}' clears it)",
            describe(e),
        );
    }
    format!("{d}/stats: {}", describe(e))
}

/// The report for people: totals with units, rates now (when a second
/// sample exists) and on average since start, queue fill, VM forks and
/// uptime; `missing` names the counters the daemon does not report.
pub(crate) fn render(
    dir: &Path,
    first: &Snapshot,
    later: Option<&Later>,
    missing: &[&str],
) -> String {
    // A daemon restarted between the samples: its counters started again.
    let restarted = later.is_some_and(|l| first.restarted_before(&l.snapshot));
    let flows = Flows {
        first,
        last: later.map_or(first, |l| &l.snapshot),
        window: later.filter(|_| !restarted).map(|l| l.elapsed),
    };
    let last = flows.last;
    let mut rows: Vec<(&str, String)> = vec![
        ("mount", printable(&dir.display().to_string())),
        ("uptime", format_duration(last.uptime_seconds)),
        (
            "generated",
            format!(
                "{}, {} reseeds",
                flows.flow(|s| s.bytes_generated),
                last.reseeds
            ),
        ),
        (
            "served via FUSE",
            format!(
                "{} in {} reads",
                flows.flow(|s| s.bytes_served_fuse),
                last.fuse_reads
            ),
        ),
        ("FUSE transport", transport(last)),
        (
            "served via FIFO",
            format!(
                "{} in {} writev calls, {} partial",
                flows.flow(|s| s.bytes_served_fifo),
                last.fifo_writev_calls,
                last.fifo_partial_writes
            ),
        ),
        (
            "queue",
            format!(
                "{} of {} ({}) in chunks of {}",
                format_bytes(last.queue_bytes),
                format_bytes(last.queue_capacity),
                format_percent(last.queue_bytes, last.queue_capacity),
                format_bytes(last.chunk_size)
            ),
        ),
    ];
    let mut waits = format!("{} (readers found the queue empty)", last.consumer_waits);
    if let Some(window) = flows.window {
        write!(
            waits,
            ", {} in the last {:.1} s",
            last.consumer_waits - first.consumer_waits,
            window.as_secs_f64()
        )
        .expect("writing to a String");
    }
    rows.push(("consumer waits", waits));
    rows.push((
        "VM forks",
        format!(
            "{} ({} discarded)",
            last.vm_forks,
            format_bytes(last.bytes_discarded)
        ),
    ));
    if !missing.is_empty() {
        rows.push((
            "note",
            format!(
                "this daemon does not report {} (it is older than this pilfered); shown as 0",
                missing.join(", ")
            ),
        ));
    }
    if restarted {
        rows.push((
            "note",
            "the daemon restarted between the two samples; no current rates".to_string(),
        ));
    }
    aligned(&rows)
}

/// How the FUSE file is served: over io_uring (with how many kernel queues
/// and requests so far) or over `/dev/fuse`.
fn transport(s: &Snapshot) -> String {
    match s.fuse_uring_queues {
        0 => "/dev/fuse".to_string(),
        queues => format!(
            "io_uring ({queues} queues), {} requests over it",
            s.fuse_uring_requests
        ),
    }
}

/// Two samples of one daemon run, or one.
struct Flows<'a> {
    first: &'a Snapshot,
    last: &'a Snapshot,
    /// Time between the samples, when there are two of the same run.
    window: Option<Duration>,
}

impl Flows<'_> {
    /// A total with its current rate (over the window) and its average
    /// since start, where each can be known.
    fn flow(&self, counter: fn(&Snapshot) -> u64) -> String {
        let total = counter(self.last);
        let mut rates = Vec::new();
        if let Some(w) = self.window {
            let moved = total - counter(self.first);
            rates.push(format!(
                "{} now",
                format_rate(moved as f64 / w.as_secs_f64().max(1e-3))
            ));
        }
        if self.last.uptime_seconds > 0 {
            let average = total as f64 / self.last.uptime_seconds as f64;
            rates.push(format!("{} average", format_rate(average)));
        }
        if rates.is_empty() {
            format_bytes(total)
        } else {
            format!("{} ({})", format_bytes(total), rates.join(", "))
        }
    }
}

/// `label: value` lines with the values aligned.
fn aligned(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (label, value) in rows {
        writeln!(out, "{:<width$} {value}", format!("{label}:")).expect("writing to a String");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "\
bytes_generated 13207024435
bytes_served_fuse 12000000000
bytes_served_fifo 1190247219
queue_bytes 16670720
queue_capacity 16777216
chunk_size 4096
fuse_reads 11444
fuse_uring_requests 0
fifo_writev_calls 4567
fifo_partial_writes 12
consumer_waits 3
reseeds 0
vm_forks 0
bytes_discarded 0
uptime_seconds 3723
fuse_uring_queues 0
some_future_counter 7
";

    #[test]
    fn parses_stats_and_names_what_is_missing() {
        let s = Snapshot::parse(STATS).unwrap();
        assert_eq!(s.bytes_served_fuse, 12_000_000_000);
        assert_eq!(s.chunk_size, 4096);
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
        assert_eq!(
            Snapshot::parse(&no_chunk),
            Err("no 'chunk_size' line".into())
        );
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
        let text = render(Path::new("/mnt/pilfered"), &first, Some(&later), &[]);
        assert_eq!(
            text,
            "\
mount:           /mnt/pilfered
uptime:          1h 02m 04s
generated:       12.8 GiB (566.2 MB/s now, 3.7 MB/s average), 0 reseeds
served via FUSE: 11.7 GiB (566.2 MB/s now, 3.4 MB/s average) in 11984 reads
FUSE transport:  /dev/fuse
served via FIFO: 1.11 GiB (0.0 MB/s now, 0.3 MB/s average) in 4567 writev calls, 12 partial
queue:           15.9 MiB of 16 MiB (99%) in chunks of 4 KiB
consumer waits:  5 (readers found the queue empty), 2 in the last 1.0 s
VM forks:        0 (0 B discarded)
"
        );
    }

    #[test]
    fn report_with_one_sample_and_no_uptime_yet() {
        let mut s = Snapshot::parse(STATS).unwrap();
        s.uptime_seconds = 0;
        s.chunk_size = 64 << 10;
        let text = render(Path::new("/m"), &s, None, &["vm_forks"]);
        assert!(
            text.contains("served via FUSE: 11.2 GiB in 11444 reads\n"),
            "{text}"
        );
        assert!(
            text.contains("queue:           15.9 MiB of 16 MiB (99%) in chunks of 64 KiB\n"),
            "{text}"
        );
        assert!(
            text.contains("consumer waits:  3 (readers found the queue empty)\n"),
            "{text}"
        );
        assert!(text.contains("uptime:          0s\n"), "{text}");
        assert!(
            text.contains(
                "note:            this daemon does not report vm_forks (it is older than this pilfered); shown as 0\n"
            ),
            "{text}"
        );
        assert!(text.contains("FUSE transport:  /dev/fuse\n"), "{text}");
        s.fuse_uring_queues = 2;
        s.fuse_uring_requests = 11500;
        let text = render(Path::new("/m"), &s, None, &[]);
        assert!(
            text.contains("FUSE transport:  io_uring (2 queues), 11500 requests over it\n"),
            "{text}"
        );
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
        let text = render(Path::new("/m"), &first, Some(&later), &[]);
        assert!(!text.contains(" now"), "{text}");
        assert!(text.contains("note:"), "{text}");
    }
}
