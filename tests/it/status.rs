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
            "pilfered: no pilfered daemon serves {m}: nothing is mounted there ({m} does not exist)\n",
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

/// `pilfered status --mount DIR`, which must end within 10 s; (status,
/// stderr).
fn status_within_10s(dir: &std::path::Path) -> (Option<i32>, String) {
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::common::BIN)
        .args(["status", "--interval", "0", "--mount"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    let ended = wait_until(Duration::from_secs(10), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "pilfered status on {} still running after 10 s",
            dir.display()
        );
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status.unwrap().code(), err)
}

/// Issue 20: a `stats` that is not the daemon's (a FIFO, which hung it; a
/// symlink to /dev/zero, which it read without end; a file of terminal
/// escapes, which it printed raw) is refused at once, in one line, with
/// every control character escaped.
#[test]
fn a_stats_file_that_is_not_the_daemons_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo_dir = dir.path().join("fifo");
    std::fs::create_dir(&fifo_dir).unwrap();
    nix::unistd::mkfifo(
        &fifo_dir.join("stats"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let zero_dir = dir.path().join("zero");
    std::fs::create_dir(&zero_dir).unwrap();
    std::os::unix::fs::symlink("/dev/zero", zero_dir.join("stats")).unwrap();
    let escapes = dir.path().join("esc\x1b]0;owned\x07");
    std::fs::create_dir(&escapes).unwrap();
    std::fs::write(escapes.join("stats"), "\x1b[2J\x1b]0;owned\x07 1\n").unwrap();
    for d in [&fifo_dir, &zero_dir] {
        let (code, err) = status_within_10s(d);
        assert_eq!(
            err,
            format!(
                "pilfered: no pilfered daemon serves {}: nothing is mounted there\n",
                d.display()
            )
        );
        assert_eq!(code, Some(1));
    }
    let (code, err) = status_within_10s(&escapes);
    assert_eq!(
        err,
        format!(
            "pilfered: no pilfered daemon serves {}/esc\\x1b]0;owned\\x07: nothing is mounted there\n",
            dir.path().display()
        )
    );
    assert_eq!(code, Some(1));
}

/// The report shows the VM-fork counters.
#[test]
fn reports_vm_forks() {
    if !fuse_available() {
        return;
    }
    let d = Daemon::start(&["--no-fifo"]);
    let (code, out, _) = run(&[
        "status",
        "--mount",
        d.mount.to_str().unwrap(),
        "--interval",
        "0",
    ]);
    assert_eq!(code, 0);
    // (0 unless another test forks the VM meanwhile, machine-wide.)
    let forks = field(&out, "VM forks");
    assert!(forks.ends_with(" discarded)"), "{out}");
    assert!(
        forks.split(' ').next().unwrap().parse::<u64>().is_ok(),
        "{out}"
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
    // with ECONNABORTED or ECANCELED, later ones with ENOTCONN: each is the
    // kernel's own word for a daemon that is gone.
    let err = ["Software caused connection abort", "Operation canceled"]
        .iter()
        .fold(err, |e, why| {
            e.replace(why, "Transport endpoint is not connected")
        });
    assert_eq!(
        err,
        format!(
            "pilfered: no pilfered daemon serves {m}: {m}/stats: Transport endpoint is not connected (the daemon died and left its mount behind; 'pilfered-umount {m}' or 'umount -l {m}' clears it)\n"
        )
    );
    // The guard detaches the stale mount.
}

/// Issue 27: a user the daemon does not serve is told that permission was
/// denied and how to share, not that no daemon serves the mount: as nobody
/// beside root's daemon, and as a non-member beside `--group users`, whose
/// members get the report.
#[test]
fn a_user_not_served_is_told_how_to_share() {
    use crate::common::{MEMBER, NON_MEMBER, SHARED_GROUP, open_dir};
    if !fuse_available() {
        return;
    }
    let status_as = |who: &[&str], m: &str| {
        let out = std::process::Command::new("setpriv")
            .args(who)
            .args([
                crate::common::BIN,
                "status",
                "--interval",
                "0",
                "--mount",
                m,
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (
            out.status.code(),
            err,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for group in [None, Some(SHARED_GROUP)] {
        let dir = open_dir();
        let (mount, fifo) = (dir.path().join("mnt"), dir.path().join("fifo"));
        let mut extra = vec!["--no-fifo"];
        extra.extend(group.map(|g| ["--group", g]).into_iter().flatten());
        let d = Daemon::start_at(dir, mount, fifo, &extra);
        let m = d.mount.to_str().unwrap();
        let (code, err, _) = status_as(&NON_MEMBER, m);
        assert_eq!(
            (code, err),
            (
                Some(1),
                format!(
                    "pilfered: {m}/stats: Permission denied: the pilfered daemon there lets only its own user (or its --group) read; start it with --group NAME and be a member of NAME, or with --allow-other\n"
                )
            ),
            "--group {group:?}"
        );
        if group.is_some() {
            let (code, err, out) = status_as(&MEMBER, m);
            assert_eq!((code, err.as_str()), (Some(0), ""));
            assert_eq!(field(&out, "mount"), m);
        }
    }
}
