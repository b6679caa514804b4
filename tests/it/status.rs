//! `pilfered status` against a real daemon, and its errors when none runs.

use std::time::Duration;

use crate::common::{Daemon, fuse_available, read_blocks, run, wait_until};
use nix::sys::signal::{Signal, kill};
use pilfered::internal::format_bytes;

/// The value after `label:` in the report.
fn field<'a>(report: &'a str, label: &str) -> &'a str {
    report
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no '{label}:' line in:\n{report}"))
        .trim()
}

#[test]
fn reports_what_readers_got() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&["--no-fifo", "--queue-capacity", "4M"]);
    let m = d.mount.to_str().unwrap();
    // 3 MiB in 4 reads (each under 1 MiB, so one FUSE request each), so
    // the report's numbers are known exactly.
    read_blocks(&d.bits(), 768 << 10, 3 << 20, true);

    let (code, out, err) = run(&["status", "--mount", m, "--interval", "0"]);
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert_eq!(field(&out, "mount"), m);
    let fuse = field(&out, "served via FUSE");
    assert!(fuse.starts_with("3 MiB"), "{fuse}");
    assert!(fuse.ends_with(" in 4 reads"), "{fuse}");
    assert!(
        !fuse.contains(" now"),
        "one sample has no current rate: {fuse}"
    );
    assert!(field(&out, "served via FIFO").starts_with("0 B"), "{out}");
    let queue = field(&out, "queue");
    assert!(queue.contains(" of 4 MiB ("), "{queue}");
    assert!(queue.ends_with(" in chunks of 4 KiB"), "{queue}");
    assert!(field(&out, "uptime").ends_with('s'), "{out}");

    // Two samples while a reader streams: a current rate appears.
    let bits = d.bits();
    let reader = std::thread::spawn(move || read_blocks(&bits, 64 << 10, 32 << 20, true));
    let (code, out, _) = run(&["status", "--mount", m, "--interval", "0.3"]);
    reader.join().unwrap();
    assert_eq!(code, 0);
    // (The average needs a whole second of uptime, which it may not have.)
    assert!(field(&out, "served via FUSE").contains("/s now"), "{out}");
    assert!(
        field(&out, "consumer waits").contains(" in the last 0.3 s"),
        "{out}"
    );
    let served = d.stats()["bytes_served_fuse"];
    assert_eq!(served, (3 << 20) + (32 << 20));
    let (_, out, _) = run(&["status", "--mount", m, "--interval", "0"]);
    assert!(
        field(&out, "served via FUSE").starts_with(&format_bytes(served)),
        "{out}"
    );
}

#[test]
fn no_daemon_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (code, out, err) = run(&["status", "--mount", &d.to_string(), "--interval", "0"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!("pilfered: no pilfered daemon serves {d}: nothing is mounted there\n")
    );
    let missing = dir.path().join("nope");
    let (code, _, err) = run(&["status", "--mount", missing.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "pilfered: no pilfered daemon serves {m}: {m}: No such file or directory\n",
            m = missing.display()
        )
    );
    let (code, _, err) = run(&["status", "--mount", "/proc"]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "pilfered: no pilfered daemon serves /proc: proc (proc) is mounted there, not pilfered\n"
    );
    let (code, _, err) = run(&["status", "--interval", "-1"]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "pilfered: invalid value '-1' for '--interval <SECS>': expected a number of seconds from 0 to 3600, like 1 or 0.5\n"
    );
}

/// A daemon killed with SIGKILL leaves a stale mount: the error says so and
/// how to clear it.
#[test]
fn stale_mount_is_explained() {
    if !fuse_available() {
        return;
    }
    let mut d = Daemon::start(&["--no-fifo"]);
    kill(d.pid(), Signal::SIGKILL).unwrap();
    let mut child = d.child.take().unwrap();
    assert!(wait_until(Duration::from_secs(5), || child
        .try_wait()
        .unwrap()
        .is_some()));
    let m = d.mount.display().to_string();
    let (code, _, err) = run(&["status", "--mount", &m]);
    assert_eq!(code, 1);
    // A request caught in the teardown of an io_uring connection fails
    // with ECONNABORTED, later ones with ENOTCONN: either is the kernel's
    // own word for a daemon that is gone.
    let said = |why: &str| {
        format!(
            "pilfered: no pilfered daemon serves {m}: {m}/stats: {why} (the daemon died and left its mount behind; 'pilfered-umount {m}' or 'umount -l {m}' clears it)\n"
        )
    };
    assert!(
        err == said("Transport endpoint is not connected")
            || err == said("Software caused connection abort")
            || err == said("Operation canceled"),
        "{err}"
    );
    // The guard detaches the stale mount.
}
