//! Issue 10's attacks on mounts and paths, reproduced against the built
//! daemon: simultaneous starts, outside detaches, paths another user
//! controls, and what a crash leaves behind.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::common::{BIN, Daemon, fuse_available, on_both_transports, open_dir, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pilfered::internal::mounts;

const NOBODY: u32 = 65534;

/// `pilfered serve ARGS` with its own state directory, stderr captured.
fn serve(args: &[&str], rundir: &Path) -> Child {
    Command::new(BIN)
        .arg("serve")
        .args(args)
        .env("PILFERED_RUNDIR", rundir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn exited(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let mut status = None;
    wait_until(within, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status
}

fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text
}

fn pilfered_mounts_at(path: &Path) -> usize {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mounts::parse_mountinfo(&text)
        .iter()
        .filter(|m| m.mount_point == path && m.fs_type == "fuse.pilfered")
        .count()
}

/// Stops a daemon with SIGTERM and expects a clean exit 0.
fn stop(child: &mut Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = exited(child, Duration::from_secs(5)).expect("daemon stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", stderr_of(child));
}

/// Guard: kills leftover daemons and detaches anything left under `dir`.
struct Cleanup(Vec<Child>, PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mounts::parse_mountinfo(&text).iter().rev() {
            if m.mount_point.starts_with(&self.1) {
                let _ = mounts::detach(&m.mount_point);
            }
        }
    }
}

/// Several daemons started at the same moment on one existing directory:
/// exactly one mounts, the others are refused with one line, and stopping
/// the winner leaves nothing mounted.
#[test]
fn simultaneous_starts_mount_at_most_once() {
    if !fuse_available() {
        return;
    }
    let dir = open_dir();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    for round in 0..5 {
        let mut guard = Cleanup(Vec::new(), dir.path().to_path_buf());
        for _ in 0..4 {
            guard
                .0
                .push(serve(&["--mount", m, "--no-fifo"], dir.path()));
        }
        // Losers exit by themselves; the winner serves until stopped.
        assert!(
            wait_until(Duration::from_secs(20), || {
                guard
                    .0
                    .iter_mut()
                    .filter_map(|c| c.try_wait().unwrap().is_none().then_some(()))
                    .count()
                    == 1
                    && pilfered_mounts_at(&mnt) == 1
                    && nix::sys::statvfs::statvfs(&mnt).is_ok()
            }),
            "round {round}: not exactly one daemon mounted"
        );
        for c in &mut guard.0 {
            if let Some(status) = c.try_wait().unwrap() {
                let err = stderr_of(c);
                // A runtime conflict, not a usage error (issue 20).
                assert_eq!(status.code(), Some(1), "round {round}: {err}");
                assert!(
                    err == format!(
                        "pilfered: --mount {m}: another pilfered is starting or serving there; stop it or choose another directory\n"
                    ) || err
                        == format!(
                            "pilfered: --mount {m}: pilfered (fuse.pilfered) is already mounted there; unmount it first or choose another directory\n"
                        ),
                    "round {round}: {err}"
                );
            }
        }
        assert_eq!(pilfered_mounts_at(&mnt), 1, "round {round}: stacked");
        let alive = guard
            .0
            .iter_mut()
            .position(|c| c.try_wait().unwrap().is_none())
            .unwrap();
        let mut winner = guard.0.remove(alive);
        stop(&mut winner);
        assert_eq!(pilfered_mounts_at(&mnt), 0, "round {round}");
        assert!(mnt.is_dir(), "a directory the user made must stay");
    }
}

on_both_transports! {
    /// `umount -l` from outside while a reader holds `bits` open, and another
    /// file system mounted there at once: the daemon notices it lost its mount,
    /// exits 0, and leaves the other mount alone.
    fn an_outside_detach_stops_the_daemon_and_spares_other_mounts(t: Transport) {
        if !fuse_available() {
            return;
        }
        // A mount point the user made, so that it stays when the daemon goes.
        let dir = open_dir();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let fifo = dir.path().join("fifo");
        let mut d = Daemon::start_at(dir, mnt, fifo, &[t.args()[0], t.args()[1], "--no-fifo"]);
        let mut reader = File::open(d.bits()).unwrap();
        let mut buf = [0u8; 64];
        reader.read_exact(&mut buf).unwrap();
        let lazy = Command::new("umount")
            .arg("-l")
            .arg(&d.mount)
            .status()
            .unwrap();
        assert!(lazy.success());
        let tmpfs = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(&d.mount)
            .status()
            .unwrap();
        assert!(tmpfs.success());
        let child = d.child.as_mut().unwrap();
        let status = exited(child, Duration::from_secs(5));
        d.child = None;
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "daemon did not exit cleanly; log: {}",
            d.log_text()
        );
        let there = mounts::mount_at(&d.mount).unwrap();
        assert_eq!(
            there.map(|m| m.fs_type),
            Some("tmpfs".to_string()),
            "the daemon unmounted a mount that was not its own"
        );
        assert!(
            d.log_text()
                .contains("unmounted or detached from outside: shutting down"),
            "{}",
            d.log_text()
        );
        // The reader is released with an error, not a hang.
        assert!(reader.read(&mut buf).is_err());
        assert!(mounts::detach(&d.mount).is_ok());
    }
}

/// A mount point below a directory another user owns is refused before
/// anything is made: that user could swap the directory for a symlink
/// between the check and the mount and so hide any directory of root's.
#[test]
fn mount_points_other_users_control_are_refused() {
    let dir = open_dir();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fifo = dir.path().join("fifo");
    let f = fifo.to_str().unwrap();
    let cases = [
        (
            theirs.join("mnt"),
            format!(
                "{} is owned by uid 65534, who could swap what the daemon makes there; use a directory owned by you or root",
                theirs.display()
            ),
        ),
        (
            theirs.clone(),
            format!(
                "{} is owned by uid 65534, who could swap what the daemon makes there; use a directory owned by you or root",
                theirs.display()
            ),
        ),
        (
            open.join("mnt"),
            format!(
                "{} is writable by other users (mode 0777) and not sticky, so they could swap what the daemon makes there; use another directory",
                open.display()
            ),
        ),
    ];
    for (mnt, why) in cases {
        let m = mnt.to_str().unwrap();
        crate::common::refused(
            &["serve", "--mount", m, "--fifo", f],
            2,
            &format!("--mount {m}: {why}"),
        );
        assert!(!fifo.exists());
    }
    assert!(!theirs.join("mnt").exists() && !open.join("mnt").exists());
}

/// A symlink another user planted on the way to the FIFO (here in a sticky
/// directory, like /tmp) is not followed: no FIFO appears at its target.
#[test]
fn fifo_paths_through_another_users_symlink_are_refused() {
    let dir = open_dir();
    let sticky = dir.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    let link = sticky.join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &link,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        None,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .unwrap();
    let fifo = link.join("fifo");
    let f = fifo.to_str().unwrap();
    crate::common::refused(
        &["serve", "--no-fuse", "--fifo", f],
        2,
        &format!(
            "--fifo {f}: {} is owned by uid 65534, who could swap what the daemon makes there; use a directory owned by you or root",
            link.display()
        ),
    );
    assert!(
        !target.join("fifo").exists(),
        "FIFO made at the link's target"
    );
    // The same link of root's own is followed, to the real directory.
    let ours = sticky.join("ours");
    std::os::unix::fs::symlink(&target, &ours).unwrap();
    let rundir = tempfile::tempdir().unwrap();
    let mut guard = Cleanup(Vec::new(), dir.path().to_path_buf());
    let mut child = serve(
        &["--no-fuse", "--fifo", ours.join("fifo").to_str().unwrap()],
        rundir.path(),
    );
    assert!(
        wait_until(Duration::from_secs(10), || target.join("fifo").exists()),
        "{}",
        stderr_of(&mut child)
    );
    stop(&mut child);
    assert!(!target.join("fifo").exists());
    guard.0.clear();
}

/// Another user swaps a directory and a symlink to one of root's
/// directories at the mount path in a sticky directory while root starts
/// the daemon, over and over: root's mount never lands on the symlink's
/// target, and no start leaves a mount behind.
#[test]
fn swapping_the_mount_path_never_redirects_the_mount() {
    if !fuse_available() {
        return;
    }
    let dir = open_dir();
    let sticky = dir.path().join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    std::fs::set_permissions(&sticky, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    let spot = sticky.join("m");
    let swapper = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c"])
        .arg(format!(
            "while :; do mkdir {s} 2>/dev/null; mv -T {s} {s}.d 2>/dev/null; ln -s {v} {s} 2>/dev/null; rm -f {s}; rmdir {s}.d 2>/dev/null; done",
            s = spot.display(),
            v = victim.display()
        ))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut guard = Cleanup(vec![swapper], dir.path().to_path_buf());
    let rundir = tempfile::tempdir().unwrap();
    let m = spot.to_str().unwrap();
    for _ in 0..30 {
        let mut child = serve(&["--mount", m, "--no-fifo"], rundir.path());
        // Refused at once, or it made and mounted its own directory there:
        // whichever comes first, within 3 s.
        let mut status = None;
        wait_until(Duration::from_secs(3), || {
            status = child.try_wait().unwrap();
            status.is_some() || pilfered_mounts_at(&spot) > 0 || pilfered_mounts_at(&victim) > 0
        });
        assert_eq!(pilfered_mounts_at(&victim), 0, "mounted on the victim");
        match status {
            Some(status) => assert_ne!(status.code(), Some(0), "{}", stderr_of(&mut child)),
            None => {
                assert_eq!(pilfered_mounts_at(&spot), 1);
                stop(&mut child);
            }
        }
        assert_eq!(pilfered_mounts_at(&spot), 0, "a start left a mount");
        assert_eq!(pilfered_mounts_at(&victim), 0, "mounted on the victim");
    }
    let _ = guard.0[0].kill();
}

/// After kill -9, a restart on the same paths takes over the FIFO and the
/// mount directory the dead daemon made, and a clean stop removes them and
/// their records. What the user made stays, whatever happens.
#[test]
fn a_clean_stop_after_a_crash_leaves_nothing_behind() {
    if !fuse_available() {
        return;
    }
    for user_made in [false, true] {
        let dir = open_dir();
        let rundir = tempfile::tempdir().unwrap();
        let (mnt, fifo) = (dir.path().join("mnt"), dir.path().join("fifo"));
        if user_made {
            std::fs::create_dir(&mnt).unwrap();
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        let args = [
            "--mount",
            mnt.to_str().unwrap(),
            "--fifo",
            fifo.to_str().unwrap(),
        ];
        let mut guard = Cleanup(Vec::new(), dir.path().to_path_buf());
        let ready = |mnt: &Path| nix::sys::statvfs::statvfs(&mnt.join("bits")).is_ok();
        let mut first = serve(&args, rundir.path());
        assert!(wait_until(Duration::from_secs(10), || ready(&mnt) && fifo.exists()));
        first.kill().unwrap();
        first.wait().unwrap();
        let mut second = serve(&args, rundir.path());
        assert!(
            wait_until(Duration::from_secs(10), || ready(&mnt)),
            "restart failed: {}",
            stderr_of(&mut second)
        );
        stop(&mut second);
        assert_eq!(pilfered_mounts_at(&mnt), 0);
        assert_eq!(
            mnt.exists(),
            user_made,
            "mount directory (user made: {user_made})"
        );
        assert_eq!(fifo.exists(), user_made, "FIFO (user made: {user_made})");
        let records = std::fs::read_dir(rundir.path()).unwrap().count();
        assert_eq!(records, 0, "records left behind");
        guard.0.clear();
    }
}

/// SIGTERM while the daemon is still starting ends in a clean state too.
#[test]
fn a_sigterm_during_start_up_leaves_nothing_behind() {
    if !fuse_available() {
        return;
    }
    let dir = open_dir();
    let rundir = tempfile::tempdir().unwrap();
    let (mnt, fifo) = (dir.path().join("mnt"), dir.path().join("fifo"));
    let args = [
        "--mount",
        mnt.to_str().unwrap(),
        "--fifo",
        fifo.to_str().unwrap(),
    ];
    let _guard = Cleanup(Vec::new(), dir.path().to_path_buf());
    for i in 0..20 {
        let mut child = serve(&args, rundir.path());
        // Once right away, later ones after more and more of the start:
        // when the signal comes is what this test varies.
        std::thread::sleep(Duration::from_millis(i * 10));
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let status = exited(&mut child, Duration::from_secs(10)).expect("exits on SIGTERM");
        assert!(
            status.code() == Some(0) || status.code().is_none(),
            "run {i}: {status:?} {}",
            stderr_of(&mut child)
        );
        assert_eq!(pilfered_mounts_at(&mnt), 0, "run {i}: mount left");
        assert!(!mnt.exists(), "run {i}: mount directory left");
        assert!(!fifo.exists(), "run {i}: FIFO left");
    }
}
